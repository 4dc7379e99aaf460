import { proxyOptionsOf, type ProxyOptions, type WriteInteraction } from '../config/schema.js';
import { timeoutSignal } from './clock.js';
import type { CoreDeps } from './deps.js';
import { bounded, SmartError } from './errors.js';
import type { Query } from './query.js';
import { decideScopes, otherPatientTarget, parseGrantedScopes, type Permission } from './scopes.js';
import type { OpenSession } from './session.js';
import { fhirBaseUrl } from './urls.js';

/*
 * The FHIR proxy (docs/design.md §2, `ANY /sessions/{id}/fhir/{path+}`): one implementation, used by the
 * buffered and the streaming Lambda handler alike. It decides everything before the EHR is
 * contacted (path, method, interaction, headers, body, scopes, patient), forwards with the session's
 * bearer token to the session's FHIR base only (invariant 7, SMART-FHIR-01/03, BFF-07), and reads the
 * EHR's whole answer before anything is sent on, so a client gets either the complete answer or a
 * clear OperationOutcome, never a truncated body.
 */

// ---------------------------------------------------------------------------------------------
// Paths (invariant 7)
// ---------------------------------------------------------------------------------------------

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
  const base = new URL(fhirBase.replace(/\/+$/, '') + '/');
  const target = new URL(segments.join('/'), base);
  if (target.origin !== base.origin || !target.pathname.startsWith(base.pathname)) {
    throw new SmartError('PROXY_PATH_REJECTED', 'the FHIR path resolves outside the session\'s FHIR server');
  }
  const search = encodeFhirQuery(query);
  if (search !== '') target.search = search;
  return target;
}

// ---------------------------------------------------------------------------------------------
// Interactions
// ---------------------------------------------------------------------------------------------

/** Methods forwarded at all; anything else (HEAD, OPTIONS, TRACE, CONNECT, …) is refused. */
export const PROXY_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

export type InteractionKind =
  | 'capabilities'
  | 'read'
  | 'vread'
  | 'search-type'
  | 'search-system'
  | 'search-compartment'
  | 'history-instance'
  | 'history-type'
  | 'history-system'
  | 'operation-system'
  | 'operation-type'
  | 'operation-instance'
  | 'create'
  | 'update'
  | 'patch'
  | 'delete';

export interface FhirInteraction {
  readonly kind: InteractionKind;
  /** The resource type the scopes are checked on; `undefined` at system level. */
  readonly resourceType: string | undefined;
  /** `[type, id]` of the path's instance (or of the compartment, for `Patient/1/Observation`). */
  readonly pathType: string | undefined;
  readonly pathId: string | undefined;
  /** The scope permission the interaction needs; `undefined` for `metadata`. */
  readonly permission: Permission | undefined;
  /** The write it is, when it is one (`issuers[].writes`). */
  readonly write: WriteInteraction | undefined;
  /** A search whose parameters may come in a form body (`POST …/_search`). */
  readonly formSearch: boolean;
}

const TYPE = /^[A-Z][A-Za-z]{0,63}$/;
const ID = /^[A-Za-z0-9\-.]{1,256}$/;
const OPERATION = /^\$[A-Za-z][A-Za-z0-9\-_.]{0,63}$/;

function interaction(
  kind: InteractionKind,
  resourceType: string | undefined,
  permission: Permission | undefined,
  extra: Partial<Pick<FhirInteraction, 'pathType' | 'pathId' | 'write' | 'formSearch'>> = {},
): FhirInteraction {
  return { kind, resourceType, permission, pathType: extra.pathType ?? resourceType, pathId: extra.pathId, write: extra.write, formSearch: extra.formSearch ?? false };
}

function methodNotAllowed(method: string, what: string, allow: string): SmartError {
  return new SmartError('METHOD_NOT_ALLOWED', `${method} is not a FHIR interaction on ${what}`, {
    hint: `Use ${allow} on ${what}.`,
    details: { allow },
  });
}

/**
 * Names the FHIR RESTful interaction of a method and path (FHIR R4 §3.1.0 "RESTful API"), or refuses
 * it: a path that is not one of the interaction shapes is a 400, a method the shape does not take a 405.
 */
export function classifyInteraction(method: string, rawPath: string, hasQuery: boolean): FhirInteraction {
  const s = rawPath.split('/');
  const [a, b, c, d] = s;
  const invalid = () =>
    new SmartError('PROXY_REQUEST_INVALID', 'the FHIR path is not a FHIR RESTful interaction ([type], [type]/[id], …/_history, …/$operation, metadata)');
  if (s.length === 1 && a !== undefined) {
    if (a === 'metadata') {
      if (method !== 'GET') throw methodNotAllowed(method, 'metadata', 'GET');
      return interaction('capabilities', undefined, undefined);
    }
    if (a === '_history') {
      if (method !== 'GET') throw methodNotAllowed(method, '_history', 'GET');
      return interaction('history-system', undefined, 's');
    }
    if (a === '_search') {
      if (method !== 'POST') throw methodNotAllowed(method, '_search', 'POST');
      return interaction('search-system', undefined, 's', { formSearch: true });
    }
    if (OPERATION.test(a)) {
      if (method !== 'GET' && method !== 'POST') throw methodNotAllowed(method, 'an operation', 'GET, POST');
      return interaction('operation-system', undefined, 's');
    }
    if (!TYPE.test(a)) throw invalid();
    switch (method) {
      case 'GET':
        return interaction('search-type', a, 's');
      case 'POST':
        return interaction('create', a, 'c', { write: 'create' });
      case 'PUT':
        if (!hasQuery) throw new SmartError('PROXY_REQUEST_INVALID', 'an update needs an id ([type]/[id]) or search parameters (conditional update)');
        return interaction('update', a, 'u', { write: 'update' });
      case 'PATCH':
        if (!hasQuery) throw new SmartError('PROXY_REQUEST_INVALID', 'a patch needs an id ([type]/[id]) or search parameters (conditional patch)');
        return interaction('patch', a, 'u', { write: 'patch' });
      case 'DELETE':
        if (!hasQuery) throw new SmartError('PROXY_REQUEST_INVALID', 'a delete needs an id ([type]/[id]) or search parameters (conditional delete)');
        return interaction('delete', a, 'd', { write: 'delete' });
      default:
        throw methodNotAllowed(method, 'a resource type', 'GET, POST, PUT, PATCH, DELETE');
    }
  }
  if (a === undefined || !TYPE.test(a) || b === undefined) throw invalid();
  if (s.length === 2) {
    if (b === '_search') {
      if (method === 'POST') return interaction('search-type', a, 's', { formSearch: true });
      if (method === 'GET') return interaction('search-type', a, 's');
      throw methodNotAllowed(method, '[type]/_search', 'GET, POST');
    }
    if (b === '_history') {
      if (method !== 'GET') throw methodNotAllowed(method, '[type]/_history', 'GET');
      return interaction('history-type', a, 's');
    }
    if (OPERATION.test(b)) {
      if (method !== 'GET' && method !== 'POST') throw methodNotAllowed(method, 'an operation', 'GET, POST');
      return interaction('operation-type', a, 's');
    }
    if (!ID.test(b)) throw invalid();
    const at = { pathType: a, pathId: b };
    switch (method) {
      case 'GET':
        return interaction('read', a, 'r', at);
      case 'PUT':
        return interaction('update', a, 'u', { ...at, write: 'update' });
      case 'PATCH':
        return interaction('patch', a, 'u', { ...at, write: 'patch' });
      case 'DELETE':
        return interaction('delete', a, 'd', { ...at, write: 'delete' });
      default:
        throw methodNotAllowed(method, '[type]/[id]', 'GET, PUT, PATCH, DELETE');
    }
  }
  if (!ID.test(b) || c === undefined) throw invalid();
  const at = { pathType: a, pathId: b };
  if (s.length === 3) {
    if (c === '_history') {
      if (method !== 'GET') throw methodNotAllowed(method, '[type]/[id]/_history', 'GET');
      return interaction('history-instance', a, 'r', at);
    }
    if (OPERATION.test(c)) {
      if (method !== 'GET' && method !== 'POST') throw methodNotAllowed(method, 'an operation', 'GET, POST');
      return interaction('operation-instance', a, 'r', at);
    }
    if (TYPE.test(c)) {
      if (method !== 'GET') throw methodNotAllowed(method, 'a compartment search', 'GET');
      return interaction('search-compartment', c, 's', at);
    }
    throw invalid();
  }
  if (s.length === 4 && c === '_history' && d !== undefined && ID.test(d)) {
    if (method !== 'GET') throw methodNotAllowed(method, '[type]/[id]/_history/[vid]', 'GET');
    return interaction('vread', a, 'r', at);
  }
  throw invalid();
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/** Request headers a FHIR client may send through; cookies and Authorization never pass (SMART-FHIR-03). */
export const FORWARDED_REQUEST_HEADERS = [
  'accept',
  'accept-encoding',
  'content-type',
  'prefer',
  'if-match',
  'if-none-match',
  'if-modified-since',
  'if-none-exist',
] as const;
/** Of those, the ones a request may carry once only. */
const SINGLE_HEADERS = new Set(['content-type', 'if-match', 'if-modified-since', 'if-none-exist']);
const MAX_HEADER_LENGTH = 4096;
// eslint-disable-next-line no-control-regex
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** Content codings Node's fetch decodes; another one would reach the client still encoded but unlabelled. */
const DECODED_CODINGS = new Set(['gzip', 'x-gzip', 'deflate', 'br', 'identity', '*']);

export interface ProxyRequest {
  readonly method: string;
  readonly rawPath: string | undefined;
  readonly query: Query;
  /** Lower-case names; a repeated header as a list. */
  readonly headers: Readonly<Record<string, string | readonly string[] | undefined>>;
  /** The request body, decoded once (API Gateway's base64); absent or empty when there is none. */
  readonly body?: Uint8Array | undefined;
}

function forwardedHeaders(request: ProxyRequest): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of FORWARDED_REQUEST_HEADERS) {
    const raw = request.headers[name];
    if (raw === undefined) continue;
    const values = typeof raw === 'string' ? [raw] : [...raw];
    if (values.length === 0) continue;
    if (values.length > 1 && SINGLE_HEADERS.has(name)) {
      throw new SmartError('PROXY_REQUEST_INVALID', `the ${name} header must appear once`);
    }
    const value = values.join(', ');
    if (value.length > MAX_HEADER_LENGTH) throw new SmartError('PROXY_REQUEST_INVALID', `the ${name} header is longer than ${MAX_HEADER_LENGTH} characters`);
    if (!HEADER_VALUE.test(value)) throw new SmartError('PROXY_REQUEST_INVALID', `the ${name} header contains control characters`);
    if (name === 'accept-encoding') {
      const kept = value
        .split(',')
        .map((part) => part.trim())
        .filter((part) => DECODED_CODINGS.has(part.split(';')[0]!.trim().toLowerCase()));
      if (kept.length > 0) out[name] = kept.join(', ');
      continue;
    }
    out[name] = value;
  }
  // Default to FHIR JSON, as every FHIR client library asks for (`_format` still overrides).
  out.accept ??= 'application/fhir+json';
  return out;
}

const FORM_TYPE = /^application\/x-www-form-urlencoded\s*(;|$)/i;
const JSON_TYPE = /^application\/([\w.+-]*\+)?json\s*(;|$)/i;
const FHIR_JSON_TYPE = /^application\/(fhir\+)?json\s*(;|$)/i;
const JSON_PATCH_TYPE = /^application\/json-patch\+json\s*(;|$)/i;

interface CheckedBody {
  /** Search parameters of a form body (`_search`), decoded. */
  readonly formParams: ReadonlyArray<readonly [string, string]>;
}

function decodeUtf8(body: Uint8Array, what: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw new SmartError('PROXY_REQUEST_INVALID', `the ${what} body is not valid UTF-8`);
  }
}

function parseJsonBody(body: Uint8Array): unknown {
  try {
    return JSON.parse(decodeUtf8(body, 'JSON'));
  } catch (cause) {
    if (cause instanceof SmartError) throw cause;
    throw new SmartError('PROXY_REQUEST_INVALID', 'the request body is labelled JSON but is not valid JSON');
  }
}

/**
 * Checks a request body against its interaction before anything is forwarded: only POST, PUT and
 * PATCH carry one; its size is bounded; `_search` takes a form body; JSON bodies must parse, and a
 * created or updated resource must be of the path's type (and id).
 */
function checkBody(kind: FhirInteraction, request: ProxyRequest, contentType: string | undefined, options: ProxyOptions): CheckedBody {
  const body = request.body ?? new Uint8Array(0);
  const limit = options.maxRequestKilobytes * 1024;
  if (body.length > limit) {
    throw new SmartError('REQUEST_TOO_LARGE', `the request body is larger than ${options.maxRequestKilobytes} KB`);
  }
  if (request.method === 'GET' || request.method === 'DELETE') {
    if (body.length > 0) throw new SmartError('PROXY_REQUEST_INVALID', `a ${request.method} request must not carry a body`);
    return { formParams: [] };
  }
  if (body.length > 0 && contentType === undefined) {
    throw new SmartError('MEDIA_TYPE_UNSUPPORTED', 'the request body has no Content-Type');
  }
  if (kind.formSearch) {
    if (body.length === 0) return { formParams: [] };
    if (!FORM_TYPE.test(contentType ?? '')) {
      throw new SmartError('MEDIA_TYPE_UNSUPPORTED', 'a _search body must be application/x-www-form-urlencoded');
    }
    return { formParams: [...new URLSearchParams(decodeUtf8(body, 'form'))] };
  }
  if (kind.write === 'create' || kind.write === 'update' || kind.write === 'patch') {
    if (body.length === 0) throw new SmartError('PROXY_REQUEST_INVALID', `a ${kind.write} needs a body`);
  }
  if (!JSON_TYPE.test(contentType ?? '')) return { formParams: [] };
  const json = parseJsonBody(body);
  if (kind.write === 'patch') {
    if (JSON_PATCH_TYPE.test(contentType ?? '') ? !Array.isArray(json) : (json as { resourceType?: unknown } | null)?.resourceType !== 'Parameters') {
      throw new SmartError('PROXY_REQUEST_INVALID', 'a patch body must be a JSON Patch array (application/json-patch+json) or a FHIRPath Patch Parameters resource');
    }
  } else if ((kind.write === 'create' || kind.write === 'update') && FHIR_JSON_TYPE.test(contentType ?? '')) {
    const resource = json as { resourceType?: unknown; id?: unknown } | null;
    if (typeof resource !== 'object' || resource === null || Array.isArray(resource) || typeof resource.resourceType !== 'string') {
      throw new SmartError('PROXY_REQUEST_INVALID', `a ${kind.write} body must be a FHIR resource (a JSON object with resourceType)`);
    }
    if (resource.resourceType !== kind.resourceType) {
      throw new SmartError('PROXY_REQUEST_INVALID', `the body is a ${bounded(resource.resourceType)}, but the path names ${kind.resourceType ?? 'no type'}`);
    }
    if (kind.write === 'update' && kind.pathId !== undefined && resource.id !== undefined && resource.id !== kind.pathId) {
      throw new SmartError('PROXY_REQUEST_INVALID', 'the id in the body differs from the id in the path');
    }
  }
  return { formParams: [] };
}

function queryPairs(query: Query): Array<readonly [string, string]> {
  const pairs: Array<readonly [string, string]> = [];
  for (const [name, values] of Object.entries(query)) for (const value of values ?? []) pairs.push([name, value]);
  return pairs;
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;
const MAX_QUERY_PARAMETERS = 200;
const MAX_QUERY_LENGTH = 8192;

function checkQuery(query: Query): void {
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

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

export interface ProxyResponse {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: Uint8Array;
  /** Facts for the request log (no ids, no PHI). */
  readonly meta: {
    readonly interaction: InteractionKind;
    readonly resourceType: string | undefined;
    readonly attempts: number;
    readonly upstreamMs: number;
  };
}

/** Response headers passed back (Location ones rewritten); upstream Set-Cookie never is. */
const FORWARDED_RESPONSE_HEADERS = ['content-type', 'etag', 'last-modified', 'cache-control', 'retry-after'] as const;
const LOCATION_HEADERS = ['location', 'content-location'] as const;

const JSON_RESPONSE = /^application\/([\w.+-]*\+)?json\b/i;

/**
 * Bundles carry absolute URLs of the EHR's FHIR server (`link[].url`, `entry[].fullUrl`): those under
 * the session's FHIR base are rewritten to the proxy's base, so paging goes through the proxy.
 * Parsed as JSON, never string-replaced; URLs elsewhere are left as they are and never followed.
 */
type Bundle = { resourceType: 'Bundle'; link?: Array<{ url?: unknown }>; entry?: Array<{ fullUrl?: unknown }> };

function isBundle(body: unknown): body is Bundle {
  return typeof body === 'object' && body !== null && (body as { resourceType?: unknown }).resourceType === 'Bundle';
}

export function rewriteBundleUrls(bundle: Bundle, upstreamBase: string, proxyBase: string): void {
  const prefix = upstreamBase.replace(/\/+$/, '') + '/';
  const rewrite = (url: unknown) => (typeof url === 'string' && url.startsWith(prefix) ? `${proxyBase}/${url.slice(prefix.length)}` : url);
  for (const link of Array.isArray(bundle.link) ? bundle.link : []) if (link && typeof link === 'object') link.url = rewrite(link.url);
  for (const entry of Array.isArray(bundle.entry) ? bundle.entry : []) if (entry && typeof entry === 'object') entry.fullUrl = rewrite(entry.fullUrl);
}

/**
 * A `Location`/`Content-Location` from the EHR: resolved against the FHIR base; under it, rewritten to
 * the proxy base; anywhere else, dropped (the browser is never pointed at another server, and the
 * proxy never follows it).
 */
export function rewriteLocation(value: string, upstreamBase: string, proxyBase: string): string | undefined {
  const base = upstreamBase.replace(/\/+$/, '') + '/';
  let url: URL;
  try {
    url = new URL(value, base);
  } catch {
    return undefined;
  }
  return url.href.startsWith(base) ? `${proxyBase}/${url.href.slice(base.length)}` : undefined;
}

/**
 * Every proxied answer is kept out of every cache (SMART-TOKEN-08): it is patient data under a URL
 * that carries a session id, and after logout a shared clinical workstation must not serve it again
 * from the browser's HTTP cache. The EHR's own Cache-Control is therefore never forwarded.
 */
export const PROXY_CACHE_CONTROL = 'no-store';

/**
 * The EHR's content is data, never an active document of the API's origin: `sandbox` gives any
 * document the browser renders from a proxied answer a unique opaque origin with scripts, forms,
 * plugins and popups off, and `default-src 'none'` lets it load nothing (so it cannot read the
 * binding cookie, the session or anything else of this origin).
 */
export const PROXY_CSP = "sandbox; default-src 'none'; base-uri 'none'; form-action 'none'";

/**
 * Types a browser renders as an active document (script, markup that may embed script, style
 * sheets that may exfiltrate): HTML, XHTML, SVG, any XML (XHTML-namespaced elements run script in
 * an XML document), XSLT, JavaScript, and `multipart/x-mixed-replace`. A navigation to one of them
 * downloads it (`Content-Disposition: attachment`) instead of rendering it; `fetch` and XHR, which
 * FHIR clients use, ignore the header and get the bytes unchanged.
 */
const ACTIVE_TYPE = /^\s*(text\/html|application\/xhtml\+xml|image\/svg\+xml|text\/xml|application\/xml|application\/[\w.+-]*\+xml|text\/xsl|application\/xslt\+xml|text\/(javascript|ecmascript|jscript|livescript)|application\/(x-)?(javascript|ecmascript)|text\/css|multipart\/)/i;

/** True when a browser would render a body of this Content-Type (or of none, or an unparsable one) as active content. */
export function isActiveContentType(contentType: string | undefined): boolean {
  if (contentType === undefined || contentType.trim() === '') return true;
  if (!/^\s*[\w.+-]+\/[\w.+-]+\s*(;|$)/.test(contentType)) return true;
  return ACTIVE_TYPE.test(contentType);
}

/** Headers that neutralise the EHR's content on the API's origin (see `PROXY_CSP`, `isActiveContentType`). */
export function neutralisingHeaders(contentType: string | undefined): Record<string, string> {
  return {
    'cache-control': PROXY_CACHE_CONTROL,
    'content-security-policy': PROXY_CSP,
    'x-content-type-options': 'nosniff',
    ...(isActiveContentType(contentType) ? { 'content-disposition': 'attachment' } : {}),
  };
}

function responseHeaders(response: Response, upstreamBase: string, proxyBase: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of FORWARDED_RESPONSE_HEADERS) {
    const value = response.headers.get(name);
    if (value !== null && name !== 'cache-control') out[name] = value;
  }
  for (const name of LOCATION_HEADERS) {
    const value = response.headers.get(name);
    const rewritten = value === null ? undefined : rewriteLocation(value, upstreamBase, proxyBase);
    if (rewritten !== undefined) out[name] = rewritten;
  }
  // Node's fetch decodes gzip, deflate and br (and drops nothing but the coding): the bytes are then
  // decoded and the upstream Content-Encoding/Length are stale, so neither is forwarded. A coding it
  // cannot decode reaches us still encoded, and is labelled as such.
  const coding = response.headers.get('content-encoding');
  if (coding !== null && !coding.split(',').every((c) => DECODED_CODINGS.has(c.trim().toLowerCase()))) out['content-encoding'] = coding;
  return { ...out, ...neutralisingHeaders(out['content-type']) };
}

function isAbort(cause: unknown): boolean {
  return cause instanceof Error && (cause.name === 'TimeoutError' || cause.name === 'AbortError');
}

/** Reads the whole body, refusing one over `limit` bytes (checked on Content-Length first, then while reading). */
async function readBody(response: Response, limit: number): Promise<Uint8Array> {
  const tooLarge = () =>
    new SmartError('RESPONSE_TOO_LARGE', `the FHIR server's answer is larger than ${Math.floor(limit / (1024 * 1024))} MB`, {
      details: { limitBytes: limit },
    });
  const declared = Number(response.headers.get('content-length') ?? NaN);
  if (response.headers.get('content-encoding') === null && Number.isFinite(declared) && declared > limit) {
    await response.body?.cancel().catch(() => undefined);
    throw tooLarge();
  }
  if (response.body === null) return new Uint8Array(0);
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.length;
      if (size > limit) {
        await reader.cancel().catch(() => undefined);
        throw tooLarge();
      }
      chunks.push(value);
    }
  } catch (cause) {
    if (cause instanceof SmartError) throw cause;
    throw isAbort(cause)
      ? new SmartError('UPSTREAM_TIMEOUT', 'the FHIR server did not finish its answer in time', { cause })
      : new SmartError('UPSTREAM_UNAVAILABLE', 'the FHIR server connection failed while reading the response', { cause });
  }
  if (chunks.length === 1) return chunks[0] as Uint8Array;
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** Rewrites a JSON Bundle's URLs; any other body passes byte for byte. */
function rewriteBody(bytes: Uint8Array, contentType: string | undefined, upstreamBase: string, proxyBase: string): Uint8Array {
  if (bytes.length === 0 || !JSON_RESPONSE.test(contentType ?? '')) return bytes;
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // Nothing to rewrite when the base does not occur at all (also in its `\/`-escaped JSON form).
  const base = upstreamBase.replace(/\/+$/, '');
  if (!buffer.includes(base) && !buffer.includes(base.replaceAll('/', '\\/'))) return bytes;
  let parsed: unknown;
  try {
    parsed = JSON.parse(buffer.toString('utf8'));
  } catch {
    return bytes; // Not JSON after all: pass the bytes through untouched.
  }
  if (!isBundle(parsed)) return bytes;
  rewriteBundleUrls(parsed, upstreamBase, proxyBase);
  return new Uint8Array(Buffer.from(JSON.stringify(parsed), 'utf8'));
}

// ---------------------------------------------------------------------------------------------
// Forwarding
// ---------------------------------------------------------------------------------------------

/**
 * Renews the session's access token when needed (`shared/core/refresh.ts` `ensureFreshSession`):
 * before forwarding, and once more with `force` after the EHR answered 401.
 */
export type SessionRefresher = (session: OpenSession, deps: CoreDeps, options?: { force?: boolean }) => Promise<OpenSession>;

/** Forwards with the token the session holds; never refreshes (sign-in, tests). */
export const keepSession: SessionRefresher = async (session) => session;

export interface ForwardOptions {
  /** Token renewal; the handlers pass `ensureFreshSession`. Default: none (the EHR's 401 then ends the session's use). */
  readonly refresh?: SessionRefresher;
  /** The transport's own ceiling on the answer (buffered Lambda responses); the issuer's `maxResponseMegabytes` otherwise. */
  readonly maxResponseBytes?: number;
}

/** The issuer configuration of a session (its `iss` is matched exactly, as at launch). */
function optionsFor(session: OpenSession, deps: CoreDeps): ProxyOptions {
  return proxyOptionsOf(deps.config.issuers.find((issuer) => issuer.iss === session.record.iss));
}

/** What the request is and whether it may be forwarded; throws the refusal otherwise. Contacts nothing. */
export function checkProxyRequest(session: OpenSession, request: ProxyRequest, deps: CoreDeps): { target: URL; kind: FhirInteraction; headers: Record<string, string>; options: ProxyOptions } {
  const method = request.method.toUpperCase();
  if (!(PROXY_METHODS as readonly string[]).includes(method)) {
    throw new SmartError('METHOD_NOT_ALLOWED', `${method} is not forwarded to the FHIR server`, {
      hint: 'The FHIR proxy forwards GET, POST, PUT, PATCH and DELETE.',
      details: { allow: PROXY_METHODS.join(', ') },
    });
  }
  const iss = session.record.iss;
  const target = resolveProxyTarget(iss, request.rawPath, request.query);
  checkQuery(request.query);
  const hasQuery = Object.keys(request.query).length > 0;
  const kind = classifyInteraction(method, request.rawPath as string, hasQuery);
  const options = optionsFor(session, deps);
  if (kind.write !== undefined && !options.writes.has(kind.write)) {
    throw new SmartError('WRITES_DISABLED', `${kind.write} is not enabled for this EHR`, { details: { interaction: kind.write } });
  }
  const headers = forwardedHeaders({ ...request, method });
  const { formParams } = checkBody(kind, { ...request, method }, headers['content-type'], options);

  const patient = session.secrets.context.patient;
  const params = [...queryPairs(request.query), ...formParams];
  let patientLevel: boolean;
  if (options.enforceScopes && kind.permission !== undefined) {
    const granted = parseGrantedScopes(session.secrets.scope);
    const decision = decideScopes(granted, { resourceType: kind.resourceType, permission: kind.permission, params }, patient !== undefined);
    if (!decision.allowed) {
      throw new SmartError('SCOPE_INSUFFICIENT', `the granted scopes do not permit this request: ${decision.reason}`, {
        hint: `The session needs the scope ${decision.missing}, which the EHR did not grant at sign-in. Ask for it in the issuer's "scope" and sign in again.`,
        details: { missingScope: decision.missing },
      });
    }
    patientLevel = decision.patientLevel;
  } else {
    const granted = parseGrantedScopes(session.secrets.scope).resource;
    patientLevel = granted.length > 0 && granted.every((s) => s.level === 'patient');
  }
  if (options.confineToPatient && patient !== undefined && patientLevel && kind.permission !== undefined) {
    const other = otherPatientTarget({ pathType: kind.pathType, pathId: kind.pathId, params }, patient, iss);
    if (other !== undefined) {
      throw new SmartError('PATIENT_MISMATCH', `this session is for one patient, and ${other}`);
    }
  }
  return { target, kind, headers, options };
}

/**
 * Forwards a FHIR request to the session's FHIR server with its bearer token (SMART-FHIR-01): every
 * check of `checkProxyRequest` first, then the token renewal, then one request, and after a 401 one
 * forced renewal and one retry (SMART-FHIR-04; a 401 means the EHR did not act, so even a write is
 * safe to send again). Status and body pass through; connection failures are 502, timeouts 504, a
 * second 401 is a 401 with a relaunch hint.
 */
export async function forwardFhirRequest(
  session: OpenSession,
  request: ProxyRequest,
  deps: CoreDeps,
  forward: ForwardOptions = {},
): Promise<ProxyResponse> {
  const { target, kind, headers, options } = checkProxyRequest(session, request, deps);
  const refresh = forward.refresh ?? keepSession;
  const limit = Math.min(forward.maxResponseBytes ?? Number.POSITIVE_INFINITY, options.maxResponseMegabytes * 1024 * 1024);
  const method = request.method.toUpperCase();
  const body = request.body !== undefined && request.body.length > 0 ? request.body : undefined;
  const iss = session.record.iss;

  let current = await refresh(session, deps);
  // One budget for the whole exchange with the EHR: both attempts and reading the answer.
  const signal = timeoutSignal(deps.clock, options.timeoutSeconds * 1000);
  const started = deps.clock.now();
  let attempts = 0;
  let response: Response;
  for (;;) {
    attempts++;
    try {
      response = await deps.http(target.href, {
        method,
        headers: { ...headers, authorization: `Bearer ${current.secrets.accessToken}` },
        ...(body !== undefined ? { body: body as BodyInit } : {}),
        redirect: 'manual',
        signal,
      });
    } catch (cause) {
      throw isAbort(cause)
        ? new SmartError('UPSTREAM_TIMEOUT', 'the FHIR server did not answer in time', { cause })
        : new SmartError('UPSTREAM_UNAVAILABLE', 'the FHIR server could not be reached', { cause });
    }
    if (response.status !== 401) break;
    await response.body?.cancel().catch(() => undefined);
    if (attempts > 1) {
      throw new SmartError('UPSTREAM_UNAUTHORIZED', 'the FHIR server refused the session\'s access token, also after renewing it');
    }
    current = await refresh(current, deps, { force: true });
  }
  const proxyBase = fhirBaseUrl(deps.config, session.sessionId);
  const outHeaders = responseHeaders(response, iss, proxyBase);
  const raw = await readBody(response, limit);
  const bytes = rewriteBody(raw, outHeaders['content-type'], iss, proxyBase);
  if (bytes.length > limit) throw new SmartError('RESPONSE_TOO_LARGE', 'the FHIR server\'s answer is larger than the proxy can deliver');
  return {
    status: response.status,
    headers: outHeaders,
    body: bytes,
    meta: { interaction: kind.kind, resourceType: kind.resourceType, attempts, upstreamMs: deps.clock.now() - started },
  };
}

// ---------------------------------------------------------------------------------------------
// Sign-in check
// ---------------------------------------------------------------------------------------------

export type PatientAccess =
  | { readonly status: 'verified'; readonly patient: string }
  /** Nothing to check (no patient in context), or the granted scopes do not include reading Patient. */
  | { readonly status: 'not-checked'; readonly reason: 'no-patient' | 'no-patient-scope' };

/**
 * At sign-in, reads the launch's Patient once through the proxy's own rules to confirm it exists and
 * the grant reaches it (SMART-CTX-01). Called by the callback once the session is open.
 * - `verified`: the EHR answered the Patient with that id.
 * - `not-checked`: the launch names no patient, or the granted scopes cannot read Patient (an app
 *   with only `patient/Observation.rs` can still work; the EHR decides on each request).
 * - throws `PATIENT_NOT_ACCESSIBLE` (403) when the EHR refuses or does not know the patient (401,
 *   403, 404, 410 or another 4xx, or a 200 that is not that Patient); `UPSTREAM_UNAVAILABLE` /
 *   `UPSTREAM_TIMEOUT` when the EHR cannot be reached or fails (5xx).
 * The access token is used as it is (no renewal): it was issued moments ago.
 */
export async function verifyPatientAccess(session: OpenSession, deps: CoreDeps): Promise<PatientAccess> {
  const patient = session.secrets.context.patient;
  if (patient === undefined) return { status: 'not-checked', reason: 'no-patient' };
  if (!ID.test(patient)) {
    throw new SmartError('PATIENT_NOT_ACCESSIBLE', 'the launch names a patient whose id is not a FHIR id');
  }
  const options = optionsFor(session, deps);
  if (options.enforceScopes) {
    const decision = decideScopes(parseGrantedScopes(session.secrets.scope), { resourceType: 'Patient', permission: 'r', params: [] }, true);
    if (!decision.allowed) return { status: 'not-checked', reason: 'no-patient-scope' };
  }
  let response: ProxyResponse;
  try {
    response = await forwardFhirRequest(
      session,
      { method: 'GET', rawPath: `Patient/${patient}`, query: {}, headers: { accept: 'application/fhir+json' } },
      deps,
      { refresh: keepSession, maxResponseBytes: 8 * 1024 * 1024 },
    );
  } catch (cause) {
    if (cause instanceof SmartError && (cause.code === 'UPSTREAM_UNAUTHORIZED' || cause.code === 'RESPONSE_TOO_LARGE')) {
      throw new SmartError('PATIENT_NOT_ACCESSIBLE', 'the FHIR server did not let this sign-in read the launch\'s patient', { cause });
    }
    throw cause;
  }
  if (response.status >= 500) {
    throw new SmartError('UPSTREAM_UNAVAILABLE', `the FHIR server answered ${response.status} when reading the launch's patient`, { details: { upstreamStatus: response.status } });
  }
  if (response.status !== 200) {
    throw new SmartError('PATIENT_NOT_ACCESSIBLE', `the FHIR server answered ${response.status} when reading the launch's patient`, { details: { upstreamStatus: response.status } });
  }
  let resource: { resourceType?: unknown; id?: unknown } | undefined;
  try {
    resource = JSON.parse(Buffer.from(response.body).toString('utf8')) as { resourceType?: unknown; id?: unknown };
  } catch {
    resource = undefined;
  }
  if (resource?.resourceType !== 'Patient' || resource.id !== patient) {
    throw new SmartError('PATIENT_NOT_ACCESSIBLE', 'the FHIR server did not answer the launch\'s patient with that Patient');
  }
  return { status: 'verified', patient };
}
