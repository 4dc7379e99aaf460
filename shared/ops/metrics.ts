import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import type { MiddlewareObj } from '@middy/core';
import type { Config } from '../config/schema.js';
import { toSmartError } from '../core/errors.js';
import type { ApiEvent, ApiResult } from '../http/api-event.js';
import { auditFactsOf, auditActionsOf, outcomeOf, sessionEndNoted, waitedForRefresh } from '../audit/trail.js';

/**
 * Operational metrics (CloudWatch embedded metric format through Powertools Metrics), per issuer:
 * the same facts the audit trail notes, counted without who or which patient. Every metric has its
 * own dimension set; `infra/constructs/monitoring.ts` graphs and alarms on exactly these.
 */

export { METRIC_NAMESPACE_PREFIX, metricNamespace, OPS_METRICS } from './metric-points.js';
export type { MetricPoint, MetricsSink, OpsMetricName } from './metric-points.js';
import { type MetricPoint, type MetricsSink, type OpsMetricName } from './metric-points.js';

export class EmfMetrics implements MetricsSink {
  readonly #metrics: Metrics;

  constructor(namespace: string, serviceName: string) {
    this.#metrics = new Metrics({ namespace, serviceName });
  }

  publish(points: readonly MetricPoint[]): void {
    for (const point of points) {
      const single = this.#metrics.singleMetric();
      single.clearDefaultDimensions();
      single.addDimensions({ ...point.dimensions });
      single.addMetric(point.name, point.unit === 'Count' ? MetricUnit.Count : MetricUnit.Milliseconds, point.value);
    }
  }
}

/** An issuer as a dimension value: only allow-listed issuers, so a caller cannot mint dimensions. */
export function issuerDimension(config: Config, iss: string | undefined): string {
  return iss !== undefined && config.issuers.some((issuer) => issuer.iss === iss) ? iss : 'unknown';
}

const TOKEN_ENDPOINT_CODES = new Set(['TOKEN_ENDPOINT_UNAVAILABLE', 'CLIENT_AUTH_FAILED', 'TOKEN_REQUEST_REJECTED', 'TOKEN_RESPONSE_INVALID']);
const UPSTREAM_FAILURE_CODES = new Set(['UPSTREAM_UNAVAILABLE', 'UPSTREAM_TIMEOUT']);

const upstreamTimes = new WeakMap<ApiEvent, number>();
/** The EHR's time for this request's FHIR call, for `UpstreamLatency`. */
export function noteUpstreamMs(event: ApiEvent, ms: number): void {
  upstreamTimes.set(event, ms);
}

export type RouteGroup = 'launch' | 'sessions' | 'fhir';

/** The metric points of one finished request (pure: facts in, points out). */
export function metricPoints(input: {
  readonly group: RouteGroup;
  readonly event: ApiEvent;
  readonly config: Config;
  readonly status: number;
  readonly error: unknown;
}): MetricPoint[] {
  const { group, event, config, status } = input;
  const facts = auditFactsOf(event);
  const code = input.error === undefined ? undefined : toSmartError(input.error);
  const outcome = code === undefined ? 'success' : outcomeOf(code);
  // A failed callback knows its issuer only through the restart link it offers.
  const retryIss = code?.retryUrl === undefined ? undefined : (new URL(code.retryUrl).searchParams.get('iss') ?? undefined);
  const queryIss = event.queryStringParameters?.iss ?? undefined;
  const Issuer = issuerDimension(config, facts.iss ?? retryIss ?? (group === 'launch' ? queryIss : undefined));
  const count = (name: OpsMetricName, dimensions: Record<string, string>, value = 1): MetricPoint => ({ name, dimensions, value, unit: 'Count' });
  const points: MetricPoint[] = [];
  for (const action of auditActionsOf(event)) {
    if (action.action === 'refresh') {
      const refreshOutcome = action.code ?? 'success';
      points.push(count('Refreshes', { Issuer, Outcome: refreshOutcome }));
      if (action.code === undefined || TOKEN_ENDPOINT_CODES.has(action.code) || action.code === 'REFRESH_REJECTED' || action.code === 'REFRESH_UNAVAILABLE') {
        points.push(count('TokenRequests', { Issuer, Grant: 'refresh_token', Outcome: refreshOutcome }));
      }
    }
    if (action.action === 'session-end') points.push(count('SessionEnds', { Issuer, Cause: action.facts.cause ?? 'unknown' }));
  }
  if (waitedForRefresh(event)) points.push(count('Refreshes', { Issuer, Outcome: 'waited' }));
  switch (group) {
    case 'launch': {
      if (event.resource === '/callback') {
        points.push(count('Callbacks', { Issuer, Outcome: outcome }));
        if (code === undefined || TOKEN_ENDPOINT_CODES.has(code.code)) points.push(count('TokenRequests', { Issuer, Grant: 'authorization_code', Outcome: outcome }));
        if (code !== undefined) points.push(count('LaunchFailures', { Issuer }));
      } else if (code === undefined) {
        points.push(count('Launches', { Issuer, Mode: facts.launchMode ?? 'unknown' }));
      } else {
        points.push(count('LaunchFailures', { Issuer }));
      }
      break;
    }
    case 'sessions': {
      if (event.httpMethod === 'POST' && event.resource === '/sessions/{id}/refresh' && !waitedForRefresh(event)) {
        points.push(count('Refreshes', { Issuer, Outcome: outcome }));
        if (code === undefined || TOKEN_ENDPOINT_CODES.has(code.code) || outcome === 'REFRESH_REJECTED' || code.code === 'REFRESH_UNAVAILABLE') {
          points.push(count('TokenRequests', { Issuer, Grant: 'refresh_token', Outcome: outcome }));
        }
        // Counted above already when the request's refresher noted the end.
        if (outcome === 'REFRESH_REJECTED' && !sessionEndNoted(event)) points.push(count('SessionEnds', { Issuer, Cause: 'refresh-rejected' }));
      }
      if (event.httpMethod === 'POST' && event.resource === '/sessions/{id}/logout' && code === undefined) {
        points.push(count('SessionEnds', { Issuer, Cause: 'logout' }));
      }
      break;
    }
    case 'fhir': {
      if (event.httpMethod === 'OPTIONS') break;
      points.push(count('ProxyRequests', { Issuer, Interaction: facts.interaction ?? 'unknown', StatusClass: `${Math.floor(status / 100)}xx` }));
      const ms = upstreamTimes.get(event);
      if (ms !== undefined) points.push({ name: 'UpstreamLatency', dimensions: { Issuer }, value: ms, unit: 'Milliseconds' });
      const upstreamFailed = (facts.upstreamStatus !== undefined && facts.upstreamStatus >= 500) || (code !== undefined && UPSTREAM_FAILURE_CODES.has(code.code));
      if (upstreamFailed) points.push(count('UpstreamErrors', { Issuer }));
      break;
    }
  }
  return points;
}

/** The middy middleware publishing a request's metric points when it ends, successful or not. */
export function opsMetrics(getConfig: () => Promise<{ config: Config; metrics?: MetricsSink | undefined }>, group: RouteGroup): MiddlewareObj<ApiEvent, ApiResult> {
  const finish = async (event: ApiEvent, status: number, error: unknown) => {
    const { config, metrics } = await getConfig();
    if (metrics === undefined) return;
    metrics.publish(metricPoints({ group, event, config, status, error }));
  };
  return {
    after: async (request) => finish(request.event, request.response?.statusCode ?? 200, undefined),
    onError: async (request) => finish(request.event, request.response?.statusCode ?? toSmartError(request.error).status, request.error),
  };
}
