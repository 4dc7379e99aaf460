import { awsDeps } from '../../shared/runtime/aws-deps.js';
import type { CoreDeps } from '../../shared/core/deps.js';
import { forwardFhirRequest } from '../../shared/core/proxy.js';
import { openSession } from '../../shared/core/session.js';
import { apiHandler } from '../../shared/http/api-handler.js';
import { cookieOf, queryOf, type ApiEvent } from '../../shared/http/api-event.js';
import { BINDING_COOKIE } from '../../shared/http/cookies.js';
import { createLogger } from '../../shared/http/logger.js';
import { BASE_HEADERS } from '../../shared/http/responses.js';

const logger = createLogger('smart-launch-fhir-proxy');

const TEXT_TYPE = /^(application\/([\w.+-]*json|[\w.+-]*xml)|text\/)/i;

/** The FHIR path after `/sessions/{id}/fhir/`, taken from the raw request path (still percent-encoded). */
function fhirPath(event: ApiEvent): string | undefined {
  const marker = `/sessions/${event.pathParameters?.id ?? ''}/fhir/`;
  const index = event.path.indexOf(marker);
  return index >= 0 ? event.path.slice(index + marker.length) : event.pathParameters?.proxy;
}

/** `ANY /sessions/{id}/fhir/{proxy+}`: errors are FHIR OperationOutcomes. */
export function createFhirProxyHandler(getDeps: () => Promise<CoreDeps>) {
  return apiHandler('fhir-proxy', 'fhir', logger, async (event) => {
    const deps = await getDeps();
    const session = await openSession(event.pathParameters?.id, cookieOf(event, BINDING_COOKIE), deps);
    const headers: Record<string, string | undefined> = {};
    for (const [name, value] of Object.entries(event.headers ?? {})) headers[name.toLowerCase()] = value;
    const started = Date.now();
    const upstream = await forwardFhirRequest(
      session,
      { method: event.httpMethod, rawPath: fhirPath(event), query: queryOf(event), headers },
      deps,
    );
    logger.info('fhir request forwarded', { upstreamStatus: upstream.status, upstreamMs: Date.now() - started });
    const text = TEXT_TYPE.test(upstream.headers['content-type'] ?? 'application/json');
    return {
      statusCode: upstream.status,
      headers: { ...BASE_HEADERS, ...upstream.headers },
      body: Buffer.from(upstream.body).toString(text ? 'utf8' : 'base64'),
      isBase64Encoded: !text,
    };
  });
}

export const handler = createFhirProxyHandler(awsDeps);
