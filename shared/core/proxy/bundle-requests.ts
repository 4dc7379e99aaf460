import { proxyOptionsOf, type ProxyOptions } from '../../config/schema.js';
import type { CoreDeps } from '../deps.js';
import { bounded, isSmartError, operationOutcomeOf, SmartError } from '../errors.js';
import { issuerOf } from '../issuers.js';
import type { OpenSession } from '../session.js';
import { fhirBaseUrl } from '../urls.js';
import { checkScopesAndPatient } from './confinement.js';
import { checkWriteEnabled, forwardFhirRequest, type CheckedProxyRequest, type ForwardOptions } from './forward.js';
import { classifyInteraction, PROXY_METHODS, type FhirInteraction } from './interactions.js';
import { checkQuery, conditionalCreateQuery, encodeFhirQuery, parseSearch, queryPairs, resolveProxyTarget } from './paths.js';
import { FHIR_JSON_TYPE, forwardedHeaders, type ProxyRequest } from './requests.js';
import { rewriteBundleUrls, rewriteLocation, type ProxyResponse } from './responses.js';

/*
 * Batch and transaction Bundles (FHIR R4 §3.1.0.11), `POST` to the session's FHIR base. Each entry is
 * the single request it describes and gets the checks that request would get (path, method,
 * interaction, writes enabled, its resource, scopes, patient confinement) before the EHR is
 * contacted. A batch may partly succeed: refused entries are not sent, and the answer carries an
 * OperationOutcome entry for each at its original position. A transaction is all-or-nothing: one
 * refused entry refuses the whole transaction, naming the entry. Entry URLs and references on the
 * proxy's base go to the EHR as the EHR's base; the answer's links, fullUrls and locations come back
 * on the proxy's base.
 */

/** The most entries a batch or transaction may have (`BUNDLE_TOO_LARGE` above). */
export const MAX_BUNDLE_ENTRIES = 200;

/** A request to the FHIR base itself (`/sessions/{id}/fhir` or `/sessions/{id}/fhir/`). */
export function isBundleRequest(request: ProxyRequest): boolean {
  return request.rawPath === undefined || request.rawPath === '';
}

type Json = Record<string, unknown>;

/** The deepest nesting of objects and arrays a Bundle may have (FHIR resources use a few dozen levels at most). */
export const MAX_BUNDLE_DEPTH = 100;

/** The deepest nesting of `{`/`[` in JSON text (outside strings), in one pass without recursion. */
export function jsonDepth(text: string): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let at = 0; at < text.length; at++) {
    const char = text.charCodeAt(at);
    if (inString) {
      if (char === 0x5c) at++; // a backslash escapes the next character
      else if (char === 0x22) inString = false;
    } else if (char === 0x22) inString = true;
    else if (char === 0x7b || char === 0x5b) deepest = Math.max(deepest, ++depth);
    else if (char === 0x7d || char === 0x5d) depth--;
  }
  return deepest;
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function withoutSlash(url: string): string {
  return url.replace(/\/+$/, '');
}

/**
 * An entry's `request.url` as a path relative to the FHIR base: relative as sent, or absolute on the
 * proxy's base or on the EHR's base (stripped). Any other absolute URL is refused (invariant 7).
 */
function relativeEntryUrl(url: string, iss: string, proxyBase: string): string {
  for (const base of [proxyBase, iss]) {
    const prefix = `${withoutSlash(base)}/`;
    if (url.startsWith(prefix)) return url.slice(prefix.length);
  }
  if (URL.canParse(url) || url.startsWith('/') || url.startsWith('\\')) {
    throw new SmartError('PROXY_PATH_REJECTED', 'an entry URL must be relative to the FHIR base ([type], [type]/[id]…) or under the session\'s FHIR base');
  }
  return url;
}

/**
 * What one entry is, or its refusal (thrown): the same checks a single request with that method, URL
 * and body gets from `checkProxyRequest`.
 */
export function checkBundleEntry(
  session: OpenSession,
  entry: unknown,
  options: ProxyOptions,
  proxyBase: string,
): { interaction: FhirInteraction; method: string; path: string; ifNoneExist: string | undefined } {
  const request = isObject(entry) ? entry.request : undefined;
  if (!isObject(request) || typeof request.method !== 'string' || typeof request.url !== 'string') {
    throw new SmartError('PROXY_REQUEST_INVALID', 'a batch or transaction entry needs request.method and request.url');
  }
  const method = request.method.toUpperCase();
  if (!(PROXY_METHODS as readonly string[]).includes(method)) {
    throw new SmartError('METHOD_NOT_ALLOWED', `${bounded(method)} is not forwarded to the FHIR server`, { details: { allow: PROXY_METHODS.join(', ') } });
  }
  const relative = relativeEntryUrl(request.url, session.record.iss, proxyBase);
  const [path = '', search = ''] = relative.split(/\?(.*)/s, 2);
  const query = parseSearch(search);
  resolveProxyTarget(session.record.iss, path, query);
  checkQuery(query);
  const interaction = classifyInteraction(method, path, Object.keys(query).length > 0);
  checkWriteEnabled(interaction, options);
  checkEntryResource(interaction, method, (entry as Json).resource);
  // A conditional create's ifNoneExist is a search the EHR runs (and may answer with what it found):
  // checked and confined like the URL's own parameters.
  const ifNoneExist = request.ifNoneExist;
  if (ifNoneExist !== undefined && (typeof ifNoneExist !== 'string' || interaction.write !== 'create')) {
    throw new SmartError('PROXY_REQUEST_INVALID', 'request.ifNoneExist must be a string of search parameters, on a create entry only');
  }
  const conditional = ifNoneExist === undefined ? undefined : conditionalCreateQuery(ifNoneExist);
  checkScopesAndPatient(session, interaction, [...queryPairs(query), ...queryPairs(conditional ?? {})], options);
  // The query goes out re-encoded from what was checked, so the EHR reads the parameters the scopes were checked on.
  const encoded = encodeFhirQuery(query);
  return { interaction, method, path: encoded === '' ? path : `${path}?${encoded}`, ifNoneExist: conditional === undefined ? undefined : encodeFhirQuery(conditional) };
}

/** The entry's resource against its interaction, as `checkBody` checks a single request's body. */
function checkEntryResource(interaction: FhirInteraction, method: string, resource: unknown): void {
  if (method === 'GET' || method === 'DELETE') {
    if (resource !== undefined) throw new SmartError('PROXY_REQUEST_INVALID', `a ${method} entry must not carry a resource`);
    return;
  }
  if (resource !== undefined && (!isObject(resource) || typeof resource.resourceType !== 'string')) {
    throw new SmartError('PROXY_REQUEST_INVALID', 'an entry resource must be a FHIR resource (a JSON object with resourceType)');
  }
  const write = interaction.write;
  if (write === 'create' || write === 'update' || write === 'patch') {
    if (resource === undefined) throw new SmartError('PROXY_REQUEST_INVALID', `a ${write} entry needs a resource`);
  }
  if (write === 'patch') {
    if (resource?.resourceType !== 'Parameters' && resource?.resourceType !== 'Binary') {
      throw new SmartError('PROXY_REQUEST_INVALID', 'a patch entry must carry a FHIRPath Patch Parameters or a JSON Patch Binary resource');
    }
  } else if ((write === 'create' || write === 'update') && isObject(resource)) {
    if (resource.resourceType !== interaction.resourceType) {
      throw new SmartError('PROXY_REQUEST_INVALID', `the entry resource is a ${bounded(String(resource.resourceType))}, but its URL names ${interaction.resourceType ?? 'no type'}`);
    }
    if (write === 'update' && interaction.pathId !== undefined && resource.id !== undefined && resource.id !== interaction.pathId) {
      throw new SmartError('PROXY_REQUEST_INVALID', 'the id of the entry resource differs from the id in its URL');
    }
  }
}

/** Every string in `value` (deeply) that is on `from` rewritten onto `to` (references, fullUrls). */
function rebase(value: unknown, from: string, to: string): unknown {
  const prefix = `${withoutSlash(from)}/`;
  if (typeof value === 'string') return value.startsWith(prefix) ? `${withoutSlash(to)}/${value.slice(prefix.length)}` : value;
  if (Array.isArray(value)) return value.map((item) => rebase(item, from, to));
  if (isObject(value)) return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, rebase(item, from, to)]));
  return value;
}

/** A refused entry's place in a batch-response: its status and an OperationOutcome with our code. */
export function refusalEntry(error: SmartError): Json {
  return { response: { status: String(error.status), outcome: operationOutcomeOf(error) } };
}

/** The whole Bundle request checked: its JSON, type and size, each entry's verdict. Contacts nothing. */
export function checkBundleRequest(session: OpenSession, request: ProxyRequest, deps: CoreDeps) {
  const method = request.method.toUpperCase();
  if (method !== 'POST') {
    throw new SmartError('METHOD_NOT_ALLOWED', `${bounded(method)} is not a FHIR interaction on the FHIR base`, {
      hint: 'POST a batch or transaction Bundle to the FHIR base; other interactions need a path ([type], [type]/[id], metadata…).',
      details: { allow: 'POST' },
    });
  }
  const options = proxyOptionsOf(issuerOf(deps.config, session.record.iss));
  checkQuery(request.query);
  const headers = forwardedHeaders({ ...request, method });
  const body = request.body ?? new Uint8Array(0);
  if (body.length > options.maxRequestKilobytes * 1024) {
    throw new SmartError('REQUEST_TOO_LARGE', `the request body is larger than ${options.maxRequestKilobytes} KB`);
  }
  if (!FHIR_JSON_TYPE.test(headers['content-type'] ?? '')) {
    throw new SmartError('MEDIA_TYPE_UNSUPPORTED', 'a batch or transaction Bundle must be sent as FHIR JSON (Content-Type: application/fhir+json)');
  }
  let bundle: unknown;
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(body);
    // Before parsing: the Bundle is walked (rewritten, serialized) recursively, and a deeper one would overflow the stack.
    if (jsonDepth(text) > MAX_BUNDLE_DEPTH) throw new SmartError('PROXY_REQUEST_INVALID', `the Bundle is nested more than ${MAX_BUNDLE_DEPTH} levels deep`);
    bundle = JSON.parse(text);
  } catch (error) {
    if (isSmartError(error)) throw error;
    throw new SmartError('PROXY_REQUEST_INVALID', 'the request body is not valid JSON');
  }
  if (!isObject(bundle) || bundle.resourceType !== 'Bundle' || (bundle.type !== 'batch' && bundle.type !== 'transaction')) {
    throw new SmartError('PROXY_REQUEST_INVALID', 'a POST to the FHIR base takes a Bundle of type "batch" or "transaction"');
  }
  const type = bundle.type;
  if (bundle.entry !== undefined && !Array.isArray(bundle.entry)) throw new SmartError('PROXY_REQUEST_INVALID', 'Bundle.entry must be an array');
  const entries: unknown[] = bundle.entry ?? [];
  if (entries.length > MAX_BUNDLE_ENTRIES) {
    throw new SmartError('BUNDLE_TOO_LARGE', `the ${type} has ${entries.length} entries; at most ${MAX_BUNDLE_ENTRIES} are forwarded`, {
      details: { entries: entries.length, limit: MAX_BUNDLE_ENTRIES },
    });
  }
  const proxyBase = fhirBaseUrl(deps.config, session.sessionId);
  const verdicts = entries.map((entry, index) => {
    try {
      const { method: checkedMethod, path, ifNoneExist } = checkBundleEntry(session, entry, options, proxyBase);
      return { index, entry, method: checkedMethod, path, ifNoneExist };
    } catch (error) {
      if (!isSmartError(error)) throw error;
      if (type === 'transaction') {
        // All or nothing: the first refused entry refuses the transaction, and says which it is.
        throw new SmartError(error.code, `transaction entry ${index}: ${error.message}`, {
          hint: `${error.hint} A transaction is all-or-nothing: fix or remove entry ${index}.`,
          details: { ...error.details, entry: index },
        });
      }
      return { index, entry, refused: error };
    }
  });
  return { type, bundle, verdicts, headers, options, proxyBase };
}

/**
 * Forwards a batch or transaction Bundle (see the module comment): checked entry by entry, sent
 * with the proxy's exchange (`forwardFhirRequest`: token renewal, one retry after a 401, timeout,
 * size limit), the answer's links and locations rewritten to the proxy's base, and, for a batch,
 * the refused entries merged back at their positions.
 */
export async function forwardBundleRequest(session: OpenSession, request: ProxyRequest, deps: CoreDeps, forward: ForwardOptions = {}): Promise<ProxyResponse> {
  const { type, bundle, verdicts, headers, options, proxyBase } = checkBundleRequest(session, request, deps);
  const iss = session.record.iss;
  const kind = type === 'batch' ? 'batch' : 'transaction';
  const interaction: FhirInteraction = { kind, resourceType: undefined, pathType: undefined, pathId: undefined, permission: undefined, write: undefined, formSearch: false };
  const sent = verdicts.filter((verdict) => verdict.refused === undefined);
  const refused = verdicts.filter((verdict) => verdict.refused !== undefined);

  if (sent.length === 0 && refused.length > 0) {
    // Nothing left to send: the EHR is not contacted.
    const answer = { resourceType: 'Bundle', type: 'batch-response', entry: refused.map((verdict) => refusalEntry(verdict.refused as SmartError)) };
    return {
      status: 200,
      headers: { 'content-type': 'application/fhir+json; charset=utf-8', 'cache-control': 'no-store' },
      body: new TextEncoder().encode(JSON.stringify(answer)),
      meta: { interaction: kind, resourceType: undefined, attempts: 0, upstreamMs: 0 },
    };
  }

  const outgoing = {
    ...(rebase(bundle, proxyBase, iss) as Json),
    entry: sent.map((verdict) => {
      const entry = rebase(verdict.entry, proxyBase, iss) as Json;
      // Method, URL and ifNoneExist go out as they were checked.
      const checkedRequest: Json = { ...(entry.request as Json), method: verdict.method, url: verdict.path };
      if (verdict.ifNoneExist !== undefined) checkedRequest.ifNoneExist = verdict.ifNoneExist;
      return { ...entry, request: checkedRequest };
    }),
  };
  const target = new URL(withoutSlash(iss));
  const search = encodeFhirQuery(request.query);
  if (search !== '') target.search = search;
  const checked: CheckedProxyRequest = { target, interaction, headers: { ...headers, 'content-type': 'application/fhir+json' }, options };
  const body = new TextEncoder().encode(JSON.stringify(outgoing));
  const upstream = await forwardFhirRequest(session, { ...request, body }, deps, forward, checked);
  return { ...upstream, body: rewriteAnswer(upstream, iss, proxyBase, verdicts.map((verdict) => verdict.refused)) };
}

/**
 * The EHR's batch-response or transaction-response: `entry[].response.location` and the links and
 * fullUrls of searchsets answered in entries, under the EHR's base, rewritten to the proxy's (the
 * answer's own links and fullUrls already are), and a batch's refused entries put back
 * at their positions. Any other answer (an error, XML) passes as it is.
 */
function rewriteAnswer(upstream: ProxyResponse, iss: string, proxyBase: string, refusals: ReadonlyArray<SmartError | undefined>): Uint8Array {
  if (upstream.status !== 200 || !/json/i.test(upstream.headers['content-type'] ?? '')) return upstream.body;
  let answer: unknown;
  try {
    answer = JSON.parse(new TextDecoder().decode(upstream.body));
  } catch {
    return upstream.body;
  }
  if (!isObject(answer) || answer.resourceType !== 'Bundle' || !Array.isArray(answer.entry)) return upstream.body;
  // A link to the base itself (`self` of a batch-response); links under it are already rewritten.
  for (const link of Array.isArray(answer.link) ? answer.link : []) {
    if (isObject(link) && typeof link.url === 'string' && withoutSlash(link.url) === withoutSlash(iss)) link.url = proxyBase;
  }
  for (const entry of answer.entry) {
    // A search answered in an entry is a searchset: its paging links and fullUrls go through the proxy too.
    const resource = isObject(entry) ? entry.resource : undefined;
    if (isObject(resource) && resource.resourceType === 'Bundle') rewriteBundleUrls(resource as Parameters<typeof rewriteBundleUrls>[0], iss, proxyBase);
    const response = isObject(entry) ? entry.response : undefined;
    if (isObject(response) && typeof response.location === 'string' && URL.canParse(response.location)) {
      response.location = rewriteLocation(response.location, iss, proxyBase);
    }
  }
  if (answer.type === 'batch-response' && refusals.some((refusal) => refusal !== undefined)) {
    const answered = [...answer.entry];
    answer.entry = refusals.map((refusal) => (refusal !== undefined ? refusalEntry(refusal) : answered.shift())).filter((entry) => entry !== undefined);
  }
  return new TextEncoder().encode(JSON.stringify(answer));
}
