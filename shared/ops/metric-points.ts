/**
 * The operational metrics' names, dimensions and sink port, without any implementation: the core's
 * dependencies name the sink by this module, and `metrics.ts` (Powertools EMF) implements it.
 */

export const METRIC_NAMESPACE_PREFIX = 'SmartLaunch';
export const metricNamespace = (customer: string) => `${METRIC_NAMESPACE_PREFIX}/${customer}`;

/** Metric names and their dimensions (in this order). */
export const OPS_METRICS = {
  /** `GET /launch` answered with a redirect to the EHR. */
  Launches: ['Issuer', 'Mode'],
  /** `GET /launch` or `/callback` failed (a launch that did not end signed in, by the page it showed). */
  LaunchFailures: ['Issuer'],
  /** `/callback` outcomes: `success` or the error code. */
  Callbacks: ['Issuer', 'Outcome'],
  /** Token endpoint calls: grant `authorization_code` or `refresh_token`; outcome `success` or the error code. */
  TokenRequests: ['Issuer', 'Grant', 'Outcome'],
  /**
   * Refreshes (explicit or before a proxied request): `success` or the error code; `waited` = used the
   * tokens another request's refresh stored (the single flight), `REFRESH_BUSY` = gave up waiting.
   */
  Refreshes: ['Issuer', 'Outcome'],
  /** Proxied FHIR requests by interaction and status class (`2xx` … `5xx`). */
  ProxyRequests: ['Issuer', 'Interaction', 'StatusClass'],
  /** Time the EHR's FHIR server took, milliseconds. */
  UpstreamLatency: ['Issuer'],
  /** Proxied requests the EHR failed: it answered 5xx, timed out or was unreachable. */
  UpstreamErrors: ['Issuer'],
  /** Sessions ended, by cause: `logout`, `refresh-rejected` (`operator` ends are in the audit trail). */
  SessionEnds: ['Issuer', 'Cause'],
} as const satisfies Record<string, readonly string[]>;
export type OpsMetricName = keyof typeof OPS_METRICS;

export interface MetricPoint {
  readonly name: OpsMetricName;
  readonly dimensions: Readonly<Record<string, string>>;
  readonly value: number;
  readonly unit: 'Count' | 'Milliseconds';
}

/** Where metric points go: EMF on stdout in Lambda (CloudWatch extracts them from the log). */
export interface MetricsSink {
  publish(points: readonly MetricPoint[]): void;
}

/** EMF through Powertools Metrics: one EMF line per point, so every metric keeps its own dimension set. */
