import type { Tracer } from '@aws-lambda-powertools/tracer';
import type { MiddlewareObj } from '@middy/core';
import type { HttpClient } from '../core/ports.js';
import { correlationIdOf, type ApiEvent, type ApiResult } from '../http/api-event.js';

/**
 * X-Ray traces (Powertools Tracer) around every outbound call: the AWS SDK clients (DynamoDB, KMS,
 * Secrets Manager, CloudWatch Logs) through `captureAWSv3Client`, and every call to an EHR through
 * `tracedHttp`. Active only inside Lambda with active tracing on; a no-op elsewhere.
 *
 * What a trace may hold is chosen here, as for logs: the EHR's host, the method and the status, the
 * AWS operation and resource names; never a path, a query, a header or a body (so no session id,
 * code, token or patient id). Automatic HTTP capture is off for that reason: it records full URLs.
 * The request's correlation id is an annotation, so a trace is found from a log line or audit record.
 */
/**
 * Whether this process traces at all: Powertools' own rule (inside Lambda, i.e. `AWS_EXECUTION_ENV`
 * set, neither SAM local nor the Amplify mock, and `POWERTOOLS_TRACE_ENABLED` not `false`).
 */
export function tracingWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  const execution = env.AWS_EXECUTION_ENV ?? '';
  return execution !== '' && execution !== 'AWS_Lambda_amplify-mock' && (env.AWS_SAM_LOCAL ?? '') === '' && (env.POWERTOOLS_TRACE_ENABLED ?? '').toLowerCase() !== 'false';
}

/**
 * The parts of the Tracer the handlers use; where tracing is off, a no-op stands in for it. Loading
 * the Powertools Tracer loads the X-Ray SDK, which installs a process-wide async hook (cls-hooked)
 * that taxes every promise the process creates, and costs module load at every cold start: it is
 * therefore loaded only where it will trace (in Lambda with tracing on, where the hook carries the
 * trace context and is the price of tracing). Locally and in tests it is never loaded.
 */
type ActiveTracer = Pick<Tracer, 'isTracingEnabled' | 'getSegment' | 'putAnnotation' | 'captureAWSv3Client'>;

const NO_TRACER: ActiveTracer = {
  isTracingEnabled: () => false,
  getSegment: () => undefined,
  putAnnotation: () => undefined,
  captureAWSv3Client: <T>(client: T) => client,
};

const powertools = tracingWanted()
  ? await Promise.all([import('@aws-lambda-powertools/tracer'), import('@aws-lambda-powertools/tracer/middleware')])
  : undefined;

export const tracer: ActiveTracer = powertools ? new powertools[0].Tracer({ serviceName: 'smart-launch', captureHTTPsRequests: false }) : NO_TRACER;

/** A subsegment per EHR call, named by host, with method and status only. */
export function tracedHttp(http: HttpClient, active: ActiveTracer = tracer): HttpClient {
  return async (url, init) => {
    if (!active.isTracingEnabled()) return http(url, init);
    const host = new URL(url).host;
    const subsegment = active.getSegment()?.addNewSubsegment(`EHR ${host}`);
    if (subsegment) {
      subsegment.namespace = 'remote';
      subsegment.addAnnotation('ehr_host', host);
      subsegment.addAnnotation('method', (init?.method ?? 'GET').toUpperCase());
    }
    try {
      const response = await http(url, init);
      subsegment?.addAnnotation('status', response.status);
      if (response.status >= 500) subsegment?.addFaultFlag();
      else if (response.status >= 400) subsegment?.addErrorFlag();
      return response;
    } catch (error) {
      subsegment?.addFaultFlag();
      subsegment?.addAnnotation('failure', error instanceof Error ? error.name : 'unknown');
      throw error;
    } finally {
      subsegment?.close();
    }
  };
}

/** The handler subsegment (no response captured) and the correlation id annotation; nothing where tracing is off. */
export function tracing(active: ActiveTracer = tracer): MiddlewareObj<ApiEvent, ApiResult>[] {
  if (powertools === undefined) return [];
  return [
    powertools[1].captureLambdaHandler(active as Tracer, { captureResponse: false }) as MiddlewareObj<ApiEvent, ApiResult>,
    {
      before: async (request) => {
        if (active.isTracingEnabled()) active.putAnnotation('correlation_id', correlationIdOf(request.event));
      },
    },
  ];
}
