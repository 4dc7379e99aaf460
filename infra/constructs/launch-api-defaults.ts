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

/**
 * API Gateway's integration timeout for every route, set explicitly on each integration so the
 * template shows it: 29 s is the REST API default maximum (more needs a quota increase). The
 * functions read it (`SMART_LAUNCH_INTEGRATION_TIMEOUT_MS`) and answer before it expires.
 */
export const DEFAULT_INTEGRATION_TIMEOUT_SECONDS = 29;

/**
 * The per-client rate-based WAF rule of the stack's own web ACL: requests per client IP over any
 * 5-minute window (WAF's evaluation window), then 429 until the rate falls. 3000 per 5 minutes is
 * 10 requests per second sustained: far above one person's app (a sign-in is 2 requests, a chart
 * view a few dozen FHIR reads), while a hospital's NAT address shared by a ward still fits.
 */
export const DEFAULT_CLIENT_RATE_LIMIT_PER_5_MINUTES = 3000;

/**
 * The largest request body the stack's web ACL lets through (by Content-Length), with a JSON 413
 * of its own above it: a body beyond about 4.7 MB no longer fits Lambda's 6 MB invoke payload once
 * API Gateway has base64-encoded it (catch-all binary media type), and would get API Gateway's
 * bare error instead. The functions refuse anything over 4 MiB themselves (`REQUEST_TOO_LARGE`).
 */
export const WAF_MAX_REQUEST_BODY_BYTES = 4_500_000;

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
