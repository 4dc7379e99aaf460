import { proxyOptionsOf, type ProxyOptions } from '../../config/schema.js';
import { timeoutSignal } from '../clock.js';
import type { CoreDeps } from '../deps.js';
import { SmartError } from '../errors.js';
import { issuerOf } from '../issuers.js';
import { ensureFreshSession } from '../refresh.js';
import type { OpenSession } from '../session.js';
import { fhirBaseUrl } from '../urls.js';
import { checkScopesAndPatient } from './confinement.js';
import { classifyInteraction, PROXY_METHODS, type FhirInteraction } from './interactions.js';
import { checkQuery, conditionalCreateQuery, encodeFhirQuery, queryPairs, resolveProxyTarget } from './paths.js';
import { checkBody, forwardedHeaders, type ProxyRequest } from './requests.js';
import { isAbort, readBody, responseHeaders, rewriteBody, type ProxyResponse } from './responses.js';

/*
 * The FHIR proxy (docs/design.md §2, `ANY /sessions/{id}/fhir/{path+}`): one implementation, used by the
 * buffered and the streaming Lambda handler alike. It decides everything before the EHR is
 * contacted (path, method, interaction, headers, body, scopes, patient), forwards with the session's
 * bearer token to the session's FHIR base only (invariant 7, SMART-FHIR-01/03, BFF-07), and reads the
 * EHR's whole answer before anything is sent on, so a client gets either the complete answer or a
 * clear OperationOutcome, never a truncated body.
 */

/**
 * Renews the session's access token when needed (`shared/core/refresh.ts` `ensureFreshSession`):
 * before forwarding, and once more with `force` after the EHR answered 401.
 */
export type SessionRefresher = (session: OpenSession, deps: CoreDeps, options?: { force?: boolean }) => Promise<OpenSession>;

/** Forwards with the token the session holds; never renews (the sign-in check, whose token is moments old). */
export const keepSession: SessionRefresher = async (session) => session;

export interface ForwardOptions {
  /**
   * Token renewal. Default: `ensureFreshSession`, so every caller renews a due token and retries once
   * after a 401. The handler wraps it to audit renewals; `keepSession` turns renewal off.
   */
  readonly refresh?: SessionRefresher;
  /** The transport's own ceiling on the answer (buffered Lambda responses); the issuer's `maxResponseMegabytes` otherwise. */
  readonly maxResponseBytes?: number;
}

export interface CheckedProxyRequest {
  readonly target: URL;
  readonly interaction: FhirInteraction;
  readonly headers: Record<string, string>;
  readonly options: ProxyOptions;
}

/** `WRITES_DISABLED` for a write (`issuers[].writes`) this EHR's config does not enable. */
export function checkWriteEnabled(interaction: FhirInteraction, options: ProxyOptions): void {
  if (interaction.write !== undefined && !options.writes.has(interaction.write)) {
    throw new SmartError('WRITES_DISABLED', `${interaction.write} is not enabled for this EHR`, { details: { interaction: interaction.write } });
  }
}

/** What the request is and whether it may be forwarded; throws the refusal otherwise. Contacts nothing. */
export function checkProxyRequest(session: OpenSession, request: ProxyRequest, deps: CoreDeps): CheckedProxyRequest {
  const method = request.method.toUpperCase();
  if (!(PROXY_METHODS as readonly string[]).includes(method)) {
    throw new SmartError('METHOD_NOT_ALLOWED', `${method} is not forwarded to the FHIR server`, {
      hint: 'The FHIR proxy forwards GET, POST, PUT, PATCH and DELETE.',
      details: { allow: PROXY_METHODS.join(', ') },
    });
  }
  const target = resolveProxyTarget(session.record.iss, request.rawPath, request.query);
  checkQuery(request.query);
  const hasQuery = Object.keys(request.query).length > 0;
  const interaction = classifyInteraction(method, request.rawPath as string, hasQuery);
  const options = proxyOptionsOf(issuerOf(deps.config, session.record.iss));
  checkWriteEnabled(interaction, options);
  const headers = forwardedHeaders({ ...request, method });
  const { formParams } = checkBody(interaction, { ...request, method }, headers['content-type'], options);
  // If-None-Exist is a search the EHR runs (and may answer with what it found): confined like the query, sent as checked.
  const conditional = headers['if-none-exist'] === undefined ? undefined : conditionalCreateQuery(headers['if-none-exist']);
  if (conditional !== undefined) headers['if-none-exist'] = encodeFhirQuery(conditional);
  checkScopesAndPatient(session, interaction, [...queryPairs(request.query), ...formParams, ...queryPairs(conditional ?? {})], options);
  return { target, interaction, headers, options };
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
  /** Already checked (a batch or transaction, `bundle-requests.ts`); by default `checkProxyRequest`. */
  checked: CheckedProxyRequest = checkProxyRequest(session, request, deps),
): Promise<ProxyResponse> {
  const { target, interaction, headers, options } = checked;
  const refresh = forward.refresh ?? ensureFreshSession;
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
    meta: { interaction: interaction.kind, resourceType: interaction.resourceType, attempts, upstreamMs: deps.clock.now() - started },
  };
}
