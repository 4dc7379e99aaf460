import { Duration } from 'aws-cdk-lib';
import type { ErrorCode } from '../../shared/core/errors.js';

/** Alarm thresholds; each can be overridden through `MonitoringProps.thresholds`. */
export interface AlarmThresholds {
  /** API 5xx answers, in percent of requests over `period` (only once `minRequests` arrived). */
  readonly api5xxPercent: number;
  readonly minRequests: number;
  /** Invocations that crashed or timed out (the handlers turn every handled error into a response). */
  readonly lambdaErrors: number;
  readonly lambdaThrottles: number;
  readonly dynamoThrottles: number;
  /** Log lines per token-endpoint failure code over `period`. */
  readonly tokenEndpoint: Readonly<Partial<Record<TokenEndpointCode, number>>>;
  readonly period: Duration;
  /** Launches of one issuer that did not end signed in, in percent of its launches (once `minLaunches` started). */
  readonly launchFailurePercent: number;
  readonly minLaunches: number;
  /** Proxied requests one issuer's FHIR server failed (5xx, timeout, unreachable) over `period`. */
  readonly upstreamErrors: number;
  /** Client assertion keys the JWKS route could not read over `period` (it serves the others). */
  readonly jwksKeyUnreadable: number;
}

/**
 * Failure codes of calls to an EHR's token endpoint (sign-in now; refresh later), as the handlers
 * log them (`"code"` with level ERROR or WARN). A metric filter counts them per code.
 */
export const TOKEN_ENDPOINT_CODES = ['TOKEN_ENDPOINT_UNAVAILABLE', 'CLIENT_AUTH_FAILED', 'TOKEN_REQUEST_REJECTED'] as const satisfies readonly ErrorCode[];
export type TokenEndpointCode = (typeof TOKEN_ENDPOINT_CODES)[number];

export const DEFAULT_THRESHOLDS: AlarmThresholds = {
  api5xxPercent: 5,
  minRequests: 20,
  lambdaErrors: 1,
  lambdaThrottles: 1,
  dynamoThrottles: 1,
  tokenEndpoint: {
    // The EHR rejects our client credentials: a configuration fault, every sign-in fails. Page at once.
    CLIENT_AUTH_FAILED: 1,
    // The EHR's token service is down or unreachable.
    TOKEN_ENDPOINT_UNAVAILABLE: 3,
    // Codes refused (expired, reused, mismatched redirect): a few are normal, a burst is not.
    TOKEN_REQUEST_REJECTED: 10,
  },
  period: Duration.minutes(5),
  launchFailurePercent: 20,
  minLaunches: 5,
  upstreamErrors: 5,
  // A key the JWKS route cannot read (grant removed, disabled, pending deletion): EHRs stop seeing it.
  jwksKeyUnreadable: 1,
};

export const METRIC_NAMESPACE_PREFIX = 'SmartLaunch';
export const TOKEN_ENDPOINT_METRIC = 'TokenEndpointFailures';
/** EMF of the JWKS function (functions/jwks/handler.ts), dimension `Function` = `jwks`. */
export const JWKS_KEY_UNREADABLE_METRIC = 'JwksKeyUnreadable';
