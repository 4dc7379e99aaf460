import { SmartError } from '../errors.js';
import type { Query } from '../query.js';
import { boundedMemo } from '../memo.js';

/*
 * Path and query rules of the FHIR proxy (invariant 7, SMART-FHIR-01/03): what may follow `/fhir/`,
 * how it resolves under the session's FHIR base, and how the query is re-encoded for the EHR.
 */


/**
 * Characters a FHIR path segment may use: resource types, logical ids (`[A-Za-z0-9\-.]`), `_history`,
 * `$operation` names. No `%` at all, so no encoded separator or double encoding can get through.
 */
const SEGMENT = /^[A-Za-z0-9\-._~$]+$/;
const MAX_PATH_LENGTH = 2048;

/** Characters left as they are in a forwarded query (RFC 3986 query characters FHIR gives meaning to). */
const QUERY_LITERAL = /%(2C|7C|3A|2F|24|40)/g;
const QUERY_LITERALS: Readonly<Record<string, string>> = { '2C': ',', '7C': '|', '3A': ':', '2F': '/', '24': '$', '40': '@' };

/** A UTF-16 surrogate without its pair: no URL can carry it (encodeURIComponent throws URIError). */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function encodeQueryPart(value: string): string {
  if (LONE_SURROGATE.test(value)) throw new SmartError('PROXY_REQUEST_INVALID', 'the query string is not well-formed Unicode');
  return encodeURIComponent(value).replace(QUERY_LITERAL, (_, hex: string) => QUERY_LITERALS[hex] as string);
}

/**
 * Re-encodes the query API Gateway decoded (`multiValueQueryStringParameters`) so the EHR reads the
 * same parameters: each name and value percent-encoded (`%20` for spaces, `%2B` for `+`, `%26`,
 * `%3D`, `%23`, `%25`, non-ASCII as UTF-8), while `,` `|` `:` `/` `$` `@` stay literal, as FHIR
 * clients send them (OR-lists, `system|code`, modifiers, references). Repeated parameters keep their
 * order. What cannot round-trip: API Gateway decodes the query as form data, so an unencoded `+`
 * arrives as a space (clients must send `%2B`, as FHIR libraries do), and `%2C` becomes a plain `,`
 * (FHIR's own escape for a literal comma, `\,`, survives).
 */
export function encodeFhirQuery(query: Query): string {
  const parts: string[] = [];
  for (const [name, values] of Object.entries(query)) {
    for (const value of values ?? []) parts.push(`${encodeQueryPart(name)}=${encodeQueryPart(value)}`);
  }
  return parts.join('&');
}

/** Each FHIR base as a URL with one trailing slash, parsed once per distinct base (only read, never handed out). */
const baseUrlOf = boundedMemo(256, (fhirBase) => new URL(fhirBase.replace(/\/+$/, '') + '/'));

/**
 * Resolves the path after `/fhir/` against the session's FHIR base, which the result must stay
 * under (invariant 7, SMART-FHIR-01/03). Refused before any network call: absolute URLs,
 * `..` and `.` segments, `//`, backslashes, percent-encoded anything, and oversize paths.
 */
export function resolveProxyTarget(fhirBase: string, rawPath: string | undefined, query: Query): URL {
  if (rawPath === undefined || rawPath.length === 0) {
    throw new SmartError('PROXY_PATH_REJECTED', 'the FHIR path after /fhir/ is empty');
  }
  if (rawPath.length > MAX_PATH_LENGTH) {
    throw new SmartError('PROXY_PATH_REJECTED', `the FHIR path is longer than ${MAX_PATH_LENGTH} characters`);
  }
  const segments = rawPath.split('/');
  for (const segment of segments) {
    if (segment === '' || segment === '.' || segment === '..' || !SEGMENT.test(segment)) {
      throw new SmartError('PROXY_PATH_REJECTED', 'the FHIR path must be relative segments of letters, digits, "-", ".", "_", "~" or "$"');
    }
  }
  const base = baseUrlOf(fhirBase);
  const target = new URL(segments.join('/'), base);
  if (target.origin !== base.origin || !target.pathname.startsWith(base.pathname)) {
    throw new SmartError('PROXY_PATH_REJECTED', 'the FHIR path resolves outside the session\'s FHIR server');
  }
  const search = encodeFhirQuery(query);
  if (search !== '') target.search = search;
  return target;
}

/** A URL's search part (without `?`) as a query, repeated parameters kept in order. */
export function parseSearch(search: string): Query {
  const query: Record<string, string[]> = {};
  for (const [name, item] of new URLSearchParams(search)) (query[name] ??= []).push(item);
  return query;
}

/**
 * The search parameters of a conditional create (`If-None-Exist` header, `Bundle.entry.request.ifNoneExist`):
 * the EHR runs them as a search, so they get the query's checks and patient confinement like any
 * other search, and go out re-encoded from what was checked. A leading `[type]?` is dropped.
 */
export function conditionalCreateQuery(value: string): Query {
  const query = parseSearch(value.includes('?') ? value.slice(value.indexOf('?') + 1) : value);
  checkQuery(query);
  return query;
}

export function queryPairs(query: Query): Array<readonly [string, string]> {
  const pairs: Array<readonly [string, string]> = [];
  for (const [name, values] of Object.entries(query)) for (const value of values ?? []) pairs.push([name, value]);
  return pairs;
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;
const MAX_QUERY_PARAMETERS = 200;
const MAX_QUERY_LENGTH = 8192;

export function checkQuery(query: Query): void {
  const pairs = queryPairs(query);
  if (pairs.length > MAX_QUERY_PARAMETERS) throw new SmartError('PROXY_REQUEST_INVALID', `more than ${MAX_QUERY_PARAMETERS} query parameters`);
  let length = 0;
  for (const [name, value] of pairs) {
    if (name === '') throw new SmartError('PROXY_REQUEST_INVALID', 'a query parameter has no name');
    if (CONTROL.test(name) || CONTROL.test(value)) throw new SmartError('PROXY_REQUEST_INVALID', 'the query string contains control characters');
    length += name.length + value.length + 2;
  }
  if (length > MAX_QUERY_LENGTH) throw new SmartError('PROXY_REQUEST_INVALID', `the query string is longer than ${MAX_QUERY_LENGTH} characters`);
}
