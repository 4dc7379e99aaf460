import type { CoreDeps } from './deps.js';
import { SmartError } from './errors.js';
import type { OpenSession } from './session.js';
import { fhirBaseUrl } from './session.js';
import type { Query } from './query.js';

/**
 * Characters a FHIR path segment may use: resource types, logical ids (`[A-Za-z0-9\-.]`), `_history`,
 * `$operation` names. No `%` at all, so no encoded separator or double encoding can get through.
 */
const SEGMENT = /^[A-Za-z0-9\-._~$]+$/;
const MAX_PATH_LENGTH = 2048;

/**
 * Resolves the path after `/fhir/` against the session's FHIR base, which the result must stay
 * under (DESIGN invariant 7, SMART-FHIR-01/03). Refused before any network call: absolute URLs,
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
  for (const [name, values] of Object.entries(query)) {
    for (const value of values ?? []) target.searchParams.append(name, value);
  }
  return target;
}

/** Request headers a FHIR client may send through; cookies and Authorization never pass. */
const FORWARDED_REQUEST_HEADERS = ['accept', 'prefer', 'if-none-match', 'if-modified-since'] as const;
/** Response headers passed back; upstream Set-Cookie never is. */
const FORWARDED_RESPONSE_HEADERS = ['content-type', 'etag', 'last-modified', 'cache-control'] as const;

export interface ProxyRequest {
  readonly method: string;
  readonly rawPath: string | undefined;
  readonly query: Query;
  readonly headers: Readonly<Record<string, string | undefined>>;
}

export interface ProxyResponse {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: Uint8Array;
}

export const PROXY_TIMEOUT_MS = 30_000;

const JSON_TYPE = /^application\/(fhir\+)?json\b/i;

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
  for (const link of bundle.link ?? []) link.url = rewrite(link.url);
  for (const entry of bundle.entry ?? []) entry.fullUrl = rewrite(entry.fullUrl);
}

/**
 * Forwards a read or search to the session's FHIR server with its bearer token (SMART-FHIR-01).
 * Status and body pass through; connection failures are 502, timeouts 504.
 */
export async function forwardFhirRequest(session: OpenSession, request: ProxyRequest, deps: CoreDeps): Promise<ProxyResponse> {
  if (request.method !== 'GET') {
    throw new SmartError('METHOD_NOT_ALLOWED', `${request.method} is not forwarded; this version of the proxy supports reads and searches (GET)`);
  }
  const iss = session.record.iss;
  const target = resolveProxyTarget(iss, request.rawPath, request.query);
  const headers: Record<string, string> = { authorization: `Bearer ${session.secrets.accessToken}`, accept: 'application/fhir+json' };
  for (const name of FORWARDED_REQUEST_HEADERS) {
    const value = request.headers[name];
    if (value !== undefined) headers[name] = value;
  }
  let response: Response;
  try {
    response = await deps.http(target.href, {
      method: 'GET',
      headers,
      redirect: 'manual',
      signal: AbortSignal.timeout(PROXY_TIMEOUT_MS),
    });
  } catch (cause) {
    const timedOut = cause instanceof Error && (cause.name === 'TimeoutError' || cause.name === 'AbortError');
    throw timedOut
      ? new SmartError('UPSTREAM_TIMEOUT', 'the FHIR server did not answer in time', { cause })
      : new SmartError('UPSTREAM_UNAVAILABLE', 'the FHIR server could not be reached', { cause });
  }
  const outHeaders: Record<string, string> = {};
  for (const name of FORWARDED_RESPONSE_HEADERS) {
    const value = response.headers.get(name);
    if (value !== null) outHeaders[name] = value;
  }
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await response.arrayBuffer());
  } catch (cause) {
    throw new SmartError('UPSTREAM_UNAVAILABLE', 'the FHIR server connection failed while reading the response', { cause });
  }
  if (JSON_TYPE.test(outHeaders['content-type'] ?? '') && bytes.length > 0) {
    try {
      const parsed: unknown = JSON.parse(Buffer.from(bytes).toString('utf8'));
      if (isBundle(parsed)) {
        rewriteBundleUrls(parsed, iss, fhirBaseUrl(deps.config, session.sessionId));
        bytes = new Uint8Array(Buffer.from(JSON.stringify(parsed), 'utf8'));
      }
    } catch {
      // Not JSON after all: pass the bytes through untouched.
    }
  }
  return { status: response.status, headers: outHeaders, body: bytes };
}
