import { Stack } from 'aws-cdk-lib';
import type * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';
import type { FunctionName } from '../../shared/http/routes.js';
import { FUNCTION_ACCESS } from './permissions.js';
import {
  DEFAULT_THRESHOLDS,
  JWKS_KEY_UNREADABLE_METRIC,
  METRIC_NAMESPACE_PREFIX,
  TOKEN_ENDPOINT_CODES,
  TOKEN_ENDPOINT_METRIC,
  type AlarmThresholds,
} from './monitoring-defaults.js';
import type { SmartFunction } from './smart-function.js';
import { OPS_METRICS, type OpsMetricName } from '../../shared/ops/metrics.js';

export interface MonitoringProps {
  readonly customer: string;
  readonly functions: Readonly<Record<FunctionName, SmartFunction>>;
  readonly stage: apigw.Stage;
  readonly table: dynamodb.Table;
  readonly topicKey: kms.IKey;
  /** Subscribed to the alarm topic (SNS sends a confirmation mail first). */
  readonly alarmEmail?: string;
  readonly thresholds?: Partial<AlarmThresholds>;
  /** The customer's issuers: the per-issuer metrics (`shared/ops/metrics.ts`) are graphed and alarmed for each. */
  readonly issuers?: readonly string[];
}

/** Alarms to an encrypted SNS topic, log metric filters for token-endpoint failures, one dashboard. */
export class Monitoring extends Construct {
  readonly topic: sns.Topic;
  readonly alarms: cloudwatch.Alarm[] = [];
  readonly dashboard: cloudwatch.Dashboard;
  readonly metricNamespace: string;

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    const t = { ...DEFAULT_THRESHOLDS, ...props.thresholds, tokenEndpoint: { ...DEFAULT_THRESHOLDS.tokenEndpoint, ...props.thresholds?.tokenEndpoint } };
    const stack = Stack.of(this);
    this.metricNamespace = `${METRIC_NAMESPACE_PREFIX}/${props.customer}`;

    this.topic = new sns.Topic(this, 'Alarms', {
      displayName: `smart-launch ${props.customer} alarms`,
      masterKey: props.topicKey,
      enforceSSL: true,
    });
    // A topic policy replaces the default one: name the alarms of this account explicitly.
    this.topic.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'CloudWatchAlarmsOfThisAccount',
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['sns:Publish'],
        resources: [this.topic.topicArn],
        conditions: {
          ArnLike: { 'aws:SourceArn': `arn:${stack.partition}:cloudwatch:${stack.region}:${stack.account}:alarm:*` },
          StringEquals: { 'aws:SourceAccount': stack.account },
        },
      }),
    );
    if (props.alarmEmail) this.topic.addSubscription(new subscriptions.EmailSubscription(props.alarmEmail));
    const action = new actions.SnsAction(this.topic);

    const alarm = (alarmId: string, metric: cloudwatch.IMetric, threshold: number, description: string) => {
      const created = new cloudwatch.Alarm(this, alarmId, {
        metric,
        threshold,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription: `smart-launch ${props.customer}: ${description}`,
      });
      created.addAlarmAction(action);
      created.addOkAction(action);
      this.alarms.push(created);
      return created;
    };

    // --- API ---------------------------------------------------------------------------------
    const requests = props.stage.metricCount({ period: t.period, statistic: 'Sum' });
    const serverErrors = props.stage.metricServerError({ period: t.period, statistic: 'Sum' });
    const clientErrors = props.stage.metricClientError({ period: t.period, statistic: 'Sum' });
    const errorRate = new cloudwatch.MathExpression({
      expression: `IF(requests >= ${t.minRequests}, 100 * errors / requests, 0)`,
      usingMetrics: { requests, errors: serverErrors },
      period: t.period,
      label: '5xx %',
    });
    alarm('Api5xxRate', errorRate, t.api5xxPercent, `API 5xx answers above ${t.api5xxPercent}% of requests`);

    // --- Functions -----------------------------------------------------------------------------
    const tokenPattern = logs.FilterPattern.all(
      logs.FilterPattern.any(
        logs.FilterPattern.stringValue('$.level', '=', 'ERROR'),
        logs.FilterPattern.stringValue('$.level', '=', 'WARN'),
      ),
      logs.FilterPattern.any(...TOKEN_ENDPOINT_CODES.map((code) => logs.FilterPattern.stringValue('$.code', '=', code))),
    );
    for (const [name, fn] of Object.entries(props.functions) as Array<[FunctionName, SmartFunction]>) {
      const alarmName = pascal(name);
      alarm(`${alarmName}Errors`, fn.function.metricErrors({ period: t.period, statistic: 'Sum' }), t.lambdaErrors, `${name} function errors (crashes or timeouts)`);
      alarm(`${alarmName}Throttles`, fn.function.metricThrottles({ period: t.period, statistic: 'Sum' }), t.lambdaThrottles, `${name} function throttled`);
      // Only functions that call the EHR's token endpoint log its failures (not the JWKS function).
      if (!FUNCTION_ACCESS[name].clientSecrets) continue;
      fn.logGroup.addMetricFilter('TokenEndpointFailures', {
        filterPattern: tokenPattern,
        metricNamespace: this.metricNamespace,
        metricName: TOKEN_ENDPOINT_METRIC,
        metricValue: '1',
        dimensions: { Code: '$.code' },
      });
    }
    const tokenMetric = (code: string) =>
      new cloudwatch.Metric({
        namespace: this.metricNamespace,
        metricName: TOKEN_ENDPOINT_METRIC,
        dimensionsMap: { Code: code },
        statistic: 'Sum',
        period: t.period,
        label: code,
      });
    for (const code of TOKEN_ENDPOINT_CODES) {
      const threshold = t.tokenEndpoint[code];
      if (threshold !== undefined) alarm(`TokenEndpoint${pascal(code)}`, tokenMetric(code), threshold, `EHR token endpoint: ${code}`);
    }

    // --- Table ---------------------------------------------------------------------------------
    const operations = [dynamodb.Operation.GET_ITEM, dynamodb.Operation.PUT_ITEM, dynamodb.Operation.DELETE_ITEM, dynamodb.Operation.UPDATE_ITEM];
    const dynamoThrottles = props.table.metricThrottledRequestsForOperations({ operations, period: t.period });
    alarm('TableThrottles', dynamoThrottles, t.dynamoThrottles, 'DynamoDB requests throttled');

    // --- Client keys (EMF of the JWKS function) --------------------------------------------------
    // A key it cannot read is left out of the published set: EHRs then refuse assertions signed with
    // it (docs/runbooks/jwks-key-unreadable.md).
    const jwksUnreadable = new cloudwatch.Metric({
      namespace: this.metricNamespace,
      metricName: JWKS_KEY_UNREADABLE_METRIC,
      dimensionsMap: { Function: 'jwks' },
      statistic: 'Sum',
      period: t.period,
      label: 'unreadable keys',
    });
    alarm('JwksKeyUnreadable', jwksUnreadable, t.jwksKeyUnreadable, 'a client assertion key is unreadable: the JWKS route leaves it out (docs/runbooks/jwks-key-unreadable.md)');

    // --- Per issuer (EMF from the functions, shared/ops/metrics.ts) ------------------------------
    const opsMetric = (name: OpsMetricName, dimensionsMap: Record<string, string>, statistic = 'Sum', label?: string) => {
      const expected = [...OPS_METRICS[name]].sort();
      if (JSON.stringify(Object.keys(dimensionsMap).sort()) !== JSON.stringify(expected)) throw new Error(`metric ${name} has dimensions ${expected.join(', ')}`);
      return new cloudwatch.Metric({ namespace: this.metricNamespace, metricName: name, dimensionsMap, statistic, period: t.period, ...(label ? { label } : {}) });
    };
    const issuerRows: cloudwatch.IWidget[][] = [];
    (props.issuers ?? []).forEach((iss, index) => {
      const Issuer = iss;
      const n = index + 1;
      const launches = new cloudwatch.MathExpression({
        expression: `SUM([ehr, standalone])`,
        usingMetrics: { ehr: opsMetric('Launches', { Issuer, Mode: 'ehr' }), standalone: opsMetric('Launches', { Issuer, Mode: 'standalone' }) },
        period: t.period,
        label: 'launches',
      });
      const failures = opsMetric('LaunchFailures', { Issuer }, 'Sum', 'launch failures');
      const failureRate = new cloudwatch.MathExpression({
        expression: `IF(launches >= ${t.minLaunches}, 100 * failures / launches, 0)`,
        usingMetrics: { launches, failures },
        period: t.period,
        label: 'launch failure %',
      });
      alarm(`Issuer${n}LaunchFailureRate`, failureRate, t.launchFailurePercent, `launch failures above ${t.launchFailurePercent}% of launches at ${iss}`);
      const upstreamErrors = opsMetric('UpstreamErrors', { Issuer }, 'Sum', 'upstream errors');
      alarm(`Issuer${n}UpstreamErrors`, upstreamErrors, t.upstreamErrors, `FHIR server errors (5xx, timeouts, unreachable) at ${iss}`);
      const interactions = ['read', 'search-type', 'search-compartment', 'capabilities'];
      issuerRows.push([
        new cloudwatch.GraphWidget({
          title: `${iss}: launches and failures`,
          left: [launches, failures, opsMetric('Callbacks', { Issuer, Outcome: 'success' }, 'Sum', 'signed in')],
          right: [failureRate],
          width: 6,
        }),
        new cloudwatch.GraphWidget({
          title: `${iss}: token requests`,
          left: [
            opsMetric('TokenRequests', { Issuer, Grant: 'authorization_code', Outcome: 'success' }, 'Sum', 'code: success'),
            opsMetric('TokenRequests', { Issuer, Grant: 'refresh_token', Outcome: 'success' }, 'Sum', 'refresh: success'),
            ...TOKEN_ENDPOINT_CODES.map((code) => opsMetric('TokenRequests', { Issuer, Grant: 'authorization_code', Outcome: code }, 'Sum', `code: ${code}`)),
            ...['REFRESH_REJECTED', 'REFRESH_UNAVAILABLE'].map((code) => opsMetric('TokenRequests', { Issuer, Grant: 'refresh_token', Outcome: code }, 'Sum', `refresh: ${code}`)),
          ],
          width: 6,
        }),
        new cloudwatch.GraphWidget({
          title: `${iss}: proxied requests`,
          left: [
            ...interactions.map((interaction) => opsMetric('ProxyRequests', { Issuer, Interaction: interaction, StatusClass: '2xx' }, 'Sum', `${interaction} 2xx`)),
            ...['4xx', '5xx'].map((statusClass) => opsMetric('ProxyRequests', { Issuer, Interaction: 'read', StatusClass: statusClass }, 'Sum', `read ${statusClass}`)),
            upstreamErrors,
          ],
          width: 6,
        }),
        new cloudwatch.GraphWidget({
          title: `${iss}: upstream latency and session ends`,
          left: [opsMetric('UpstreamLatency', { Issuer }, 'p50', 'latency p50'), opsMetric('UpstreamLatency', { Issuer }, 'p99', 'latency p99')],
          right: [
            opsMetric('SessionEnds', { Issuer, Cause: 'logout' }, 'Sum', 'logouts'),
            opsMetric('SessionEnds', { Issuer, Cause: 'refresh-rejected' }, 'Sum', 'ended: refresh refused'),
            opsMetric('Refreshes', { Issuer, Outcome: 'success' }, 'Sum', 'refreshes'),
            opsMetric('Refreshes', { Issuer, Outcome: 'REFRESH_BUSY' }, 'Sum', 'refresh waits given up'),
          ],
          width: 6,
        }),
      ]);
    });

    // --- Dashboard -----------------------------------------------------------------------------
    const fns = Object.entries(props.functions) as Array<[FunctionName, SmartFunction]>;
    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      widgets: [
        [
          new cloudwatch.GraphWidget({ title: 'API requests and errors', left: [requests, clientErrors, serverErrors], width: 8 }),
          new cloudwatch.GraphWidget({ title: 'API 5xx %', left: [errorRate], width: 8 }),
          new cloudwatch.GraphWidget({
            title: 'API latency (p50 / p99)',
            left: [
              props.stage.metricLatency({ period: t.period, statistic: 'p50' }),
              props.stage.metricLatency({ period: t.period, statistic: 'p99' }),
              props.stage.metricIntegrationLatency({ period: t.period, statistic: 'p99' }),
            ],
            width: 8,
          }),
        ],
        [
          new cloudwatch.GraphWidget({ title: 'Invocations', left: fns.map(([n, f]) => f.function.metricInvocations({ period: t.period, label: n })), width: 6 }),
          new cloudwatch.GraphWidget({ title: 'Errors', left: fns.map(([n, f]) => f.function.metricErrors({ period: t.period, label: n })), width: 6 }),
          new cloudwatch.GraphWidget({ title: 'Throttles', left: fns.map(([n, f]) => f.function.metricThrottles({ period: t.period, label: n })), width: 6 }),
          new cloudwatch.GraphWidget({
            title: 'Duration p99',
            left: fns.map(([n, f]) => f.function.metricDuration({ period: t.period, statistic: 'p99', label: n })),
            width: 6,
          }),
        ],
        [
          new cloudwatch.GraphWidget({ title: 'Token endpoint failures', left: TOKEN_ENDPOINT_CODES.map(tokenMetric), width: 8 }),
          new cloudwatch.GraphWidget({ title: 'DynamoDB throttled requests', left: [dynamoThrottles], width: 8 }),
          new cloudwatch.GraphWidget({
            title: 'DynamoDB capacity consumed',
            left: [props.table.metricConsumedReadCapacityUnits({ period: t.period }), props.table.metricConsumedWriteCapacityUnits({ period: t.period })],
            width: 8,
          }),
        ],
        [new cloudwatch.GraphWidget({ title: 'JWKS: unreadable client keys', left: [jwksUnreadable], width: 8 })],
        ...issuerRows,
        [new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: this.alarms, width: 24 })],
      ],
    });
  }
}

function pascal(value: string): string {
  return value
    .toLowerCase()
    .split(/[-_]/)
    .map((part) => part.charAt(0).toUpperCase() + part.slice(1))
    .join('');
}
