import { SmartError } from '../errors.js';
import type { InteractionKind } from './interactions.js';
import { scanBundle } from './bundle-scan.js';
import { DECODED_CODINGS } from './requests.js';

/*
 * Response rules of the FHIR proxy: the EHR's links, Location headers and Bundle URLs rewritten to
 * the proxy's base, its answer read whole and bounded, and every answer hardened (no-store, a
 * sandboxing CSP, active content downloaded instead of rendered).
 */

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

export function responseHeaders(response: Response, upstreamBase: string, proxyBase: string): Record<string, string> {
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

export function isAbort(cause: unknown): boolean {
  return cause instanceof Error && (cause.name === 'TimeoutError' || cause.name === 'AbortError');
}

/** Reads the whole body, refusing one over `limit` bytes (checked on Content-Length first, then while reading). */
export async function readBody(response: Response, limit: number): Promise<Uint8Array> {
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

/**
 * Rewrites a JSON Bundle's URLs; any other body passes byte for byte.
 *
 * What is rewritten is decided on the Bundle as JSON (its `link[].url` and `entry[].fullUrl` values
 * under the base), but the Bundle is not re-serialised when the bytes allow an exact splice: when no
 * string of the answer uses a `\u` or `\/` escape, every JSON string value starting with the base appears in the
 * bytes as `"` + base (a quote not itself escaped). If those occurrences are exactly as many as the
 * values to rewrite, they are those values (each target shows verbatim, so a count that matches leaves
 * no room for another string), and replacing the base in each one gives the same JSON
 * value as rewriting the parsed Bundle, in the EHR's own formatting, without serialising the whole
 * Bundle again. The values to rewrite are then counted by a walk over the bytes (`scanBundle`, which
 * builds nothing), not by parsing. Otherwise (escapes, the base in other strings or in keys, keys the
 * walk would have to guess about) the Bundle is parsed, and rewritten and serialised as before.
 */
export function rewriteBody(bytes: Uint8Array, contentType: string | undefined, upstreamBase: string, proxyBase: string): Uint8Array {
  if (bytes.length === 0 || !JSON_RESPONSE.test(contentType ?? '')) return bytes;
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // Nothing to rewrite when the base does not occur at all (also in its `\/`-escaped JSON form).
  const base = upstreamBase.replace(/\/+$/, '');
  if (!buffer.includes(base) && !buffer.includes(base.replaceAll('/', '\\/'))) return bytes;
  // Only a Bundle is rewritten, and its `resourceType` value shows as the bytes `"Bundle"` unless
  // spelled with a `\u` escape: an answer with neither (a resource read) is passed on unparsed.
  if (!buffer.includes('"Bundle"') && !buffer.includes('\\u')) return bytes;
  const prefix = `${base}/`;
  // Only `\/` and `\u` escapes could spell a character of a plain base: with neither present, every
  // string starting with the base shows it verbatim.
  const spliceable = PLAIN_BASE.test(prefix) && PLAIN_BASE.test(proxyBase) && !buffer.includes('\\u') && !buffer.includes('\\/');
  let scanned = false;
  if (spliceable) {
    const scan = scanBundle(buffer, Buffer.from(prefix, 'utf8'));
    if (scan !== undefined && scan !== 'invalid') {
      if (!scan.bundle) return bytes;
      const spliced = spliceBundleUrls(buffer, scan.targets, prefix, proxyBase);
      if (spliced !== undefined) return spliced;
      scanned = true;
    }
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(buffer.toString('utf8'));
  } catch {
    return bytes; // Not JSON after all: pass the bytes through untouched.
  }
  if (!isBundle(parsed)) return bytes;
  if (spliceable && !scanned) {
    const spliced = spliceBundleUrls(buffer, targetsOf(parsed, prefix), prefix, proxyBase);
    if (spliced !== undefined) return spliced;
  }
  rewriteBundleUrls(parsed, upstreamBase, proxyBase);
  return new Uint8Array(Buffer.from(JSON.stringify(parsed), 'utf8'));
}

/** The `link[].url` and `entry[].fullUrl` values of a parsed Bundle that start with `prefix`. */
function targetsOf(bundle: Bundle, prefix: string): number {
  let targets = 0;
  for (const link of Array.isArray(bundle.link) ? bundle.link : []) if (link && typeof link === 'object' && typeof link.url === 'string' && link.url.startsWith(prefix)) targets++;
  for (const entry of Array.isArray(bundle.entry) ? bundle.entry : []) {
    if (entry && typeof entry === 'object' && typeof entry.fullUrl === 'string' && entry.fullUrl.startsWith(prefix)) targets++;
  }
  return targets;
}

/** Characters a base URL may hold for the splice to be exact: none that JSON escapes. */
const PLAIN_BASE = /^[\x21\x23-\x5b\x5d-\x7e]+$/;

/**
 * The splice of `rewriteBody`: `"` + `prefix` replaced at each string start that has it, when those are
 * exactly `targets` (the Bundle's values to rewrite); `undefined` when they are not.
 */
function spliceBundleUrls(buffer: Buffer, targets: number, prefix: string, proxyBase: string): Uint8Array | undefined {
  const needle = Buffer.from(`"${prefix}`, 'utf8');
  const at: number[] = [];
  for (let i = buffer.indexOf(needle); i >= 0; i = buffer.indexOf(needle, i + needle.length)) {
    // A quote preceded by an odd run of backslashes is inside a string, not the start of one.
    let slashes = 0;
    while (i - slashes - 1 >= 0 && buffer[i - slashes - 1] === 0x5c) slashes++;
    if (slashes % 2 === 0) at.push(i);
  }
  if (at.length !== targets) return undefined;
  if (targets === 0) return buffer;
  const replacement = Buffer.from(`"${proxyBase}/`, 'utf8');
  const out = Buffer.allocUnsafe(buffer.length + targets * (replacement.length - needle.length));
  let read = 0;
  let write = 0;
  for (const i of at) {
    write += buffer.copy(out, write, read, i);
    write += replacement.copy(out, write);
    read = i + needle.length;
  }
  buffer.copy(out, write, read);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}
