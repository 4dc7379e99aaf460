import type { ProxyOptions } from '../../config/schema.js';
import { bounded, SmartError } from '../errors.js';
import type { Query } from '../query.js';
import type { FhirInteraction } from './interactions.js';

/*
 * Request rules of the FHIR proxy: which client headers pass (never cookies or Authorization,
 * SMART-FHIR-03) and which bodies each interaction takes, checked before the EHR is contacted.
 */

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
export const DECODED_CODINGS = new Set(['gzip', 'x-gzip', 'deflate', 'br', 'identity', '*']);

export interface ProxyRequest {
  readonly method: string;
  readonly rawPath: string | undefined;
  readonly query: Query;
  /** Lower-case names; a repeated header as a list. */
  readonly headers: Readonly<Record<string, string | readonly string[] | undefined>>;
  /** The request body, decoded once (API Gateway's base64); absent or empty when there is none. */
  readonly body?: Uint8Array | undefined;
}

export function forwardedHeaders(request: ProxyRequest): Record<string, string> {
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
/** FHIR JSON or plain JSON, with or without parameters. */
export const FHIR_JSON_TYPE = /^application\/(fhir\+)?json\s*(;|$)/i;
const JSON_PATCH_TYPE = /^application\/json-patch\+json\s*(;|$)/i;

export interface CheckedBody {
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
export function checkBody(kind: FhirInteraction, request: ProxyRequest, contentType: string | undefined, options: ProxyOptions): CheckedBody {
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
