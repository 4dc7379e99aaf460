import { Tracer } from '@aws-lambda-powertools/tracer';
import { captureLambdaHandler } from '@aws-lambda-powertools/tracer/middleware';
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
export const tracer = new Tracer({ serviceName: 'smart-launch', captureHTTPsRequests: false });

/** A subsegment per EHR call, named by host, with method and status only. */
export function tracedHttp(http: HttpClient, active: Tracer = tracer): HttpClient {
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

/** The handler subsegment (no response captured) and the correlation id annotation. */
export function tracing(active: Tracer = tracer): MiddlewareObj<ApiEvent, ApiResult>[] {
  return [
    captureLambdaHandler(active, { captureResponse: false }) as MiddlewareObj<ApiEvent, ApiResult>,
    {
      before: async (request) => {
        if (active.isTracingEnabled()) active.putAnnotation('correlation_id', correlationIdOf(request.event));
      },
    },
  ];
}
