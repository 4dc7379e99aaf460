import * as logs from 'aws-cdk-lib/aws-logs';

/** Defaults of the REST API; every one can be overridden through `LaunchApiProps`. */

export const DEFAULT_STAGE_NAME = 'prod';

/** Stage-wide throttling (requests per second, burst): a backstop for one customer's stack. */
export const DEFAULT_STAGE_THROTTLING = { rateLimit: 100, burstLimit: 200 } as const;

/**
 * Per-method throttling (REST API `MethodSetting`s, keyed `/{resource path}/{METHOD}`). Sign-ins are
 * paced by people, so `/launch` and `/callback` get a lower ceiling than the FHIR proxy: a flood of
 * launches (each one a KMS GenerateDataKey and an EHR discovery fetch) cannot starve the proxy.
 */
export const DEFAULT_METHOD_THROTTLING: Readonly<Record<string, { rateLimit: number; burstLimit: number }>> = {
  '/launch/GET': { rateLimit: 20, burstLimit: 40 },
  '/callback/GET': { rateLimit: 20, burstLimit: 40 },
};

/**
 * Handlers set `isBase64Encoded` for binary FHIR bodies (Binary, attachments). API Gateway turns the
 * base64 back into bytes only when the request's `Accept` matches a binary media type, hence the
 * catch-all type (any type and subtype).
 * Side effect: request bodies also reach the functions base64-encoded (`isBase64Encoded: true`).
 */
export const DEFAULT_BINARY_MEDIA_TYPES = ['*/*'];

export const DEFAULT_ACCESS_LOG_RETENTION = logs.RetentionDays.ONE_YEAR;

/**
 * The access log line: JSON, one per request. Deliberately absent: `$context.path` and anything
 * with the query string (the callback carries `code` and `state`; paths carry session ids),
 * headers, cookies, `$context.requestOverride.*`, `$input.*`, and every `$context.identity.*`
 * field except the source IP (the others carry user agents, Cognito ids, API keys or caller ARNs).
 * `resourcePath` is the route template (`/sessions/{id}/fhir/{proxy+}`), never the ids in it.
 */
export function accessLogFields(includeSourceIp: boolean): Record<string, string> {
  return {
    requestId: '$context.requestId',
    requestTimeEpoch: '$context.requestTimeEpoch',
    httpMethod: '$context.httpMethod',
    resourcePath: '$context.resourcePath',
    status: '$context.status',
    protocol: '$context.protocol',
    responseLength: '$context.responseLength',
    responseLatency: '$context.responseLatency',
    integrationLatency: '$context.integrationLatency',
    integrationStatus: '$context.integration.status',
    errorType: '$context.error.responseType',
    wafResponseCode: '$context.wafResponseCode',
    ...(includeSourceIp ? { ip: '$context.identity.sourceIp' } : {}),
  };
}
