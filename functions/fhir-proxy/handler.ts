import type { Context } from 'aws-lambda';
import { awsDeps } from '../../shared/runtime/aws-deps.js';
import type { CoreDeps } from '../../shared/core/deps.js';
import { SmartError } from '../../shared/core/errors.js';
import { forwardBundleRequest, forwardFhirRequest, isBundleRequest, type ProxyRequest, type ProxyResponse } from '../../shared/core/proxy/index.js';
import { ensureFreshSession } from '../../shared/core/refresh.js';
import { cachingRefresher, openProxySession } from '../../shared/core/proxy-session.js';
import { apiHandler } from '../../shared/http/api-handler.js';
import { cookieOf, queryOf, type ApiEvent, type ApiResult } from '../../shared/http/api-event.js';
import { BINDING_COOKIE } from '../../shared/http/cookies.js';
import { requestHeaders } from '../../shared/http/headers.js';
import { createLogger } from '../../shared/http/logger.js';
import { BASE_HEADERS } from '../../shared/http/responses.js';
import { noteCompletion, renderError } from '../../shared/http/error-response.js';
import { DEADLINE_MARGIN_MS, deadlineScope, invocationDeadline } from '../../shared/runtime/deadline.js';
import { auditedRefresher, auditTrail, noteAudit, sessionFacts, writeAuditAfterResponse } from '../../shared/audit/trail.js';
import { tracing } from '../../shared/ops/tracing.js';
import { noteUpstreamMs, opsMetrics } from '../../shared/ops/metrics.js';
import { streamifyResponse, writeStreamedResponse, type ResponseStream, type StreamingHandler } from '../../shared/http/streaming.js';
import { streamingCapBytes } from './streaming.js';

const logger = createLogger('smart-launch-fhir-proxy');

/**
 * The largest FHIR answer the buffered handler returns: Lambda's synchronous response is at most 6 MB
 * of JSON, and a binary body travels base64-encoded (4/3 larger), a JSON body with its quotes escaped.
 * Larger answers need the streaming handler (the deployed default); here they get RESPONSE_TOO_LARGE.
 */
export const BUFFERED_RESPONSE_LIMIT_BYTES = 4 * 1024 * 1024;

/** The largest request body anyone may send, before the session (and its issuer's limit) is known. */
const ABSOLUTE_REQUEST_LIMIT_BYTES = 4096 * 1024;

const TEXT_TYPE = /^(application\/([\w.+-]*json|[\w.+-]*xml|x-www-form-urlencoded)|text\/)/i;

/** The FHIR path after `/sessions/{id}/fhir/`, taken from the raw request path (still percent-encoded). */
function fhirPath(event: ApiEvent): string | undefined {
  const marker = `/sessions/${event.pathParameters?.id ?? ''}/fhir/`;
  const index = event.path.indexOf(marker);
  return index >= 0 ? event.path.slice(index + marker.length) : event.pathParameters?.proxy;
}

/** The body API Gateway hands over (base64 when `isBase64Encoded`, which the catch-all binary media type makes the rule), decoded once. */
function bodyOf(event: ApiEvent, limitBytes: number): Uint8Array | undefined {
  if (event.body === null || event.body === undefined || event.body === '') return undefined;
  const size = event.isBase64Encoded ? Math.floor((event.body.length * 3) / 4) - (event.body.endsWith('==') ? 2 : event.body.endsWith('=') ? 1 : 0) : Buffer.byteLength(event.body, 'utf8');
  if (size > limitBytes) throw new SmartError('REQUEST_TOO_LARGE', `the request body is larger than ${Math.floor(limitBytes / 1024)} KB`);
  return new Uint8Array(event.isBase64Encoded ? Buffer.from(event.body, 'base64') : Buffer.from(event.body, 'utf8'));
}

/**
 * The one proxy path both handlers share: open the session (cookie-bound; kept in this container for
 * `session.proxyCacheSeconds`, `shared/core/proxy-session.ts`), decode the request once,
 * forward it (`shared/core/proxy/`), with the token renewed by `ensureFreshSession` before the
 * request and, forced, once after a 401.
 */
async function proxy(event: ApiEvent, deps: CoreDeps, maxResponseBytes: number | undefined): Promise<ProxyResponse> {
  // Decoded once, and an oversize body refused before any store or KMS call.
  const body = bodyOf(event, ABSOLUTE_REQUEST_LIMIT_BYTES);
  const session = await openProxySession(event.pathParameters?.id, cookieOf(event, BINDING_COOKIE), deps);
  noteAudit(event, sessionFacts(deps, session));
  const request: ProxyRequest = { method: event.httpMethod, rawPath: fhirPath(event), query: queryOf(event), headers: requestHeaders(event), body };
  const upstream = await (isBundleRequest(request) ? forwardBundleRequest : forwardFhirRequest)(session, request, deps, {
    refresh: cachingRefresher(auditedRefresher(event, ensureFreshSession)),
    ...(maxResponseBytes !== undefined ? { maxResponseBytes } : {}),
  });
  noteAudit(event, { interaction: upstream.meta.interaction, resourceType: upstream.meta.resourceType, upstreamStatus: upstream.status });
  noteUpstreamMs(event, upstream.meta.upstreamMs);
  // The request's one log line (written when it completes, with its status).
  noteCompletion(event, 'fhir request forwarded', {
    upstreamStatus: upstream.status,
    upstreamMs: upstream.meta.upstreamMs,
    interaction: upstream.meta.interaction,
    resourceType: upstream.meta.resourceType,
    attempts: upstream.meta.attempts,
    bytes: upstream.body.length,
  });
  return upstream;
}

function isUtf8(bytes: Uint8Array): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    return true;
  } catch {
    return false;
  }
}

/** Raw bodies of results the streaming handler writes as they are (no base64 round trip). */
const rawBodies = new WeakMap<ApiResult, Uint8Array>();

type Transport = 'buffered' | 'stream';

function proxyRoute(getDeps: () => Promise<CoreDeps>, transport: Transport) {
  return apiHandler('fhir-proxy', 'fhir', logger, async (event, context) => {
    // The EHR exchange (refresh included) ends before Lambda's or API Gateway's clock does: a clear
    // 504/503 then, never a cut-off (for a streaming integration API Gateway's clock runs to the first byte).
    const scope = deadlineScope(await getDeps(), invocationDeadline(event, context, Date.now()));
    let upstream: ProxyResponse;
    try {
      upstream = await proxy(event, scope.deps, transport === 'buffered' ? BUFFERED_RESPONSE_LIMIT_BYTES : undefined);
    } finally {
      // The EHR's answer is read whole (or the exchange failed): its timers are not needed any more.
      scope.release();
    }
    const headers = { ...BASE_HEADERS, ...upstream.headers };
    if (transport === 'stream') {
      const result: ApiResult = { statusCode: upstream.status, headers, body: '' };
      rawBodies.set(result, upstream.body);
      return result;
    }
    const text = TEXT_TYPE.test(upstream.headers['content-type'] ?? '') && isUtf8(upstream.body);
    return {
      statusCode: upstream.status,
      headers,
      body: Buffer.from(upstream.body).toString(text ? 'utf8' : 'base64'),
      isBase64Encoded: !text,
    };
  }, { corsConfig: async () => (await getDeps()).config, observe: [...tracing(), auditTrail(getDeps, logger, (event) => (event.httpMethod === 'OPTIONS' ? undefined : 'fhir'), { afterResponse: transport === 'stream' }), opsMetrics(getDeps, 'fhir')] });
}

/**
 * `ANY /sessions/{id}/fhir/{proxy+}` with a buffered (payload v1) answer: errors are FHIR
 * OperationOutcomes, and answers over 4 MB get RESPONSE_TOO_LARGE. For integrations without
 * response streaming; the deployed stack uses `createStreamingFhirProxyHandler`.
 */
export function createFhirProxyHandler(getDeps: () => Promise<CoreDeps>) {
  return proxyRoute(getDeps, 'buffered');
}

/**
 * The same route as a Lambda response-streaming handler (API Gateway `ResponseTransferMode.STREAM`):
 * the same middy stack and proxy produce the answer, which is then written whole as prelude + raw
 * body, up to the issuer's `proxy.maxResponseMegabytes` (default 64) and to what can still be streamed
 * before the function times out (`streamingCapBytes`): a larger answer is a 502 RESPONSE_TOO_LARGE.
 * The answer is complete in memory before the prelude goes out, so a failure (an EHR connection
 * dropping mid-body, an answer over the limit) is still a clean OperationOutcome, never a truncated body.
 */
export function createStreamingFhirProxyHandler(getDeps: () => Promise<CoreDeps>): StreamingHandler {
  const route = proxyRoute(getDeps, 'stream');
  return streamifyResponse(async (event: ApiEvent, responseStream: ResponseStream, context: Context) => {
    try {
      await streamAnswer(event, responseStream, context);
    } finally {
      // The client has the whole answer; the request's audit records are written before the invocation ends.
      await writeAuditAfterResponse(event);
    }
  });

  async function streamAnswer(event: ApiEvent, responseStream: ResponseStream, context: Context): Promise<void> {
    let result = await route(event, context);
    const raw = rawBodies.get(result);
    let body = raw ?? new Uint8Array(Buffer.from(result.body ?? '', result.isBase64Encoded ? 'base64' : 'utf8'));
    // Never start a 200 that cannot finish: the body must stream whole in the time the function has left.
    const secondsLeft = (context.getRemainingTimeInMillis() - DEADLINE_MARGIN_MS) / 1000;
    if (body.length > streamingCapBytes(secondsLeft)) {
      logger.error('answer too large to stream in the time left', { bytes: body.length, secondsLeft: Math.floor(secondsLeft) });
      const correlationId = String(result.headers?.['x-correlation-id'] ?? event.requestContext?.requestId ?? 'unknown');
      const refused = renderError(
        new SmartError('RESPONSE_TOO_LARGE', `the FHIR server's answer (${body.length} bytes) cannot be streamed whole before the function times out`),
        'fhir',
        correlationId,
      );
      const kept = Object.fromEntries(Object.entries(result.headers ?? {}).filter(([name]) => /^(access-control-|vary$)/i.test(name)));
      result = { ...refused, headers: { ...refused.headers, ...kept } };
      body = new Uint8Array(Buffer.from(result.body ?? '', 'utf8'));
    }
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(result.headers ?? {})) headers[name] = String(value);
    const multiValueHeaders: Record<string, string[]> = {};
    for (const [name, values] of Object.entries(result.multiValueHeaders ?? {})) multiValueHeaders[name] = values.map(String);
    await writeStreamedResponse(
      responseStream,
      { statusCode: result.statusCode, headers, ...(Object.keys(multiValueHeaders).length > 0 ? { multiValueHeaders } : {}) },
      body,
    );
  }
}

/**
 * The deployed entry point (`index.handler`): a response-streaming handler, for the STREAM integration
 * `infra/constructs/launch-api.ts` gives this route. A function invoked without streaming must use
 * `bufferedHandler` instead (answers up to 4 MB).
 */
export const handler = createStreamingFhirProxyHandler(awsDeps);
/** The buffered (payload v1) entry point, for an integration in BUFFERED mode. */
export const bufferedHandler = createFhirProxyHandler(awsDeps);
