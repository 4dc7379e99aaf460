import { Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { AUDIT_READ_ACTIONS, AUDIT_WRITE_ACTIONS, DEFAULT_AUDIT_RETENTION } from '../../infra/constructs/audit-log.js';
import { METRIC_NAMESPACE_PREFIX as INFRA_PREFIX } from '../../infra/constructs/monitoring-defaults.js';
import { SmartLaunchStack } from '../../infra/stacks/smart-launch-stack.js';
import { ENV } from '../../shared/config/env.js';
import { METRIC_NAMESPACE_PREFIX, OPS_METRICS } from '../../shared/ops/metrics.js';
import { acmeHealthStack, asArray, awsConfig, resourcesOf, testApp, type Statement } from '../infra/helpers.js';

const config = awsConfig('acme-health');
let template: Template;

beforeAll(() => {
  // The default stack of this config, shared with the other files that read it (helpers.ts).
  template = acmeHealthStack().template;
});

const AUDIT_GROUP = '/smart-launch/acme-health/audit';

describe('audit trail infrastructure', () => {
  it('keeps the trail in its own log group, under its own rotating key, six years, retained', () => {
    const [id, group] = Object.entries(resourcesOf(template, 'AWS::Logs::LogGroup')).find(([, g]) => g.Properties?.LogGroupName === AUDIT_GROUP)!;
    expect(id).toMatch(/AuditLog/);
    expect(group.Properties?.RetentionInDays).toBe(Number(DEFAULT_AUDIT_RETENTION));
    expect(group.Properties?.RetentionInDays).toBe(2192);
    expect(group.DeletionPolicy).toBe('Retain');
    const keyRef = (group.Properties?.KmsKeyId as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0];
    expect(keyRef).toMatch(/AuditLogKey/);
    const key = resourcesOf(template, 'AWS::KMS::Key')[keyRef]!;
    expect(key.Properties?.EnableKeyRotation).toBe(true);
    expect(key.DeletionPolicy).toBe('Retain');
    // CloudWatch Logs may use this key for the audit group only; no other log group uses it.
    const statements = (key.Properties?.KeyPolicy as { Statement: Statement[] }).Statement;
    const logs = statements.find((s) => s.Sid === 'CloudWatchLogsForTheAuditTrailOnly')!;
    expect(JSON.stringify(logs.Condition)).toContain(`log-group:${AUDIT_GROUP}`);
    const others = Object.values(resourcesOf(template, 'AWS::Logs::LogGroup')).filter((g) => g.Properties?.LogGroupName !== AUDIT_GROUP);
    expect(others.length).toBeGreaterThan(0);
    for (const other of others) expect(JSON.stringify(other.Properties?.KmsKeyId)).not.toContain(keyRef);
  });

  it('lets the API functions append to it and read nothing; nobody else gets a grant unless named', () => {
    const functions = resourcesOf(template, 'AWS::Lambda::Function');
    const writers = new Set<string>();
    for (const fn of Object.values(functions)) {
      const variables = (fn.Properties?.Environment as { Variables: Record<string, unknown> }).Variables;
      if (variables[ENV.auditLogGroup] !== undefined) {
        expect(variables[ENV.auditLogGroup]).toBe(AUDIT_GROUP);
        writers.add((fn.Properties?.Role as { 'Fn::GetAtt': [string] })['Fn::GetAtt'][0]);
      }
    }
    expect(writers.size).toBe(3);
    const everyStatement: Statement[] = [];
    for (const policy of Object.values(resourcesOf(template, 'AWS::IAM::ManagedPolicy'))) {
      const statements = (policy.Properties!.PolicyDocument as { Statement: Statement[] }).Statement;
      everyStatement.push(...statements);
      const append = statements.filter((s) => s.Sid === 'AppendAuditTrail');
      const role = (policy.Properties!.Roles as Array<{ Ref: string }>)[0]!.Ref;
      expect(append, role).toHaveLength(writers.has(role) ? 1 : 0);
      if (append[0]) {
        expect([...asArray(append[0].Action)].sort()).toEqual([...AUDIT_WRITE_ACTIONS].sort());
        expect(JSON.stringify(append[0].Resource)).toMatch(/AuditLogLogGroup/);
      }
    }
    for (const s of everyStatement) for (const action of asArray(s.Action)) expect(AUDIT_READ_ACTIONS as readonly string[]).not.toContain(action);
  });

  it('alarms per issuer on launch failure rate and upstream errors, from the EMF metrics the functions publish', () => {
    expect(INFRA_PREFIX).toBe(METRIC_NAMESPACE_PREFIX);
    const alarms = Object.values(resourcesOf(template, 'AWS::CloudWatch::Alarm'));
    for (const iss of config.issuers.map((i) => i.iss)) {
      const failureRate = alarms.find((a) => String(a.Properties?.AlarmDescription).includes(`launch failures above`) && String(a.Properties?.AlarmDescription).endsWith(iss))!;
      const queries = failureRate.Properties?.Metrics as Array<{ Id: string; Expression?: string; MetricStat?: { Metric: { MetricName: string; Namespace: string; Dimensions: Array<{ Name: string; Value: string }> } } }>;
      expect(queries.find((q) => q.Expression?.includes('100 * failures / launches'))).toBeDefined();
      const stats = queries.filter((q) => q.MetricStat).map((q) => q.MetricStat!.Metric);
      expect(stats.map((m) => m.MetricName).sort()).toEqual(['LaunchFailures', 'Launches', 'Launches']);
      for (const metric of stats) {
        expect(metric.Namespace).toBe('SmartLaunch/acme-health');
        expect(metric.Dimensions.map((d) => d.Name).sort()).toEqual([...OPS_METRICS[metric.MetricName as keyof typeof OPS_METRICS]].sort());
        expect(metric.Dimensions.find((d) => d.Name === 'Issuer')!.Value).toBe(iss);
      }
      const upstream = alarms.find((a) => String(a.Properties?.AlarmDescription).includes('FHIR server errors') && String(a.Properties?.AlarmDescription).endsWith(iss))!;
      expect(upstream.Properties).toMatchObject({ Threshold: 5, ComparisonOperator: 'GreaterThanOrEqualToThreshold', TreatMissingData: 'notBreaching' });
      expect(upstream.Properties?.Metrics).toEqual([
        expect.objectContaining({
          MetricStat: { Metric: { MetricName: 'UpstreamErrors', Namespace: 'SmartLaunch/acme-health', Dimensions: [{ Name: 'Issuer', Value: iss }] }, Period: 300, Stat: 'Sum' },
        }),
      ]);
      expect(upstream.Properties?.AlarmActions).toHaveLength(1);
    }
  });

  it('graphs every per-issuer metric on the dashboard, for each issuer', () => {
    const [dashboard] = Object.values(resourcesOf(template, 'AWS::CloudWatch::Dashboard'));
    const body = JSON.stringify(dashboard!.Properties?.DashboardBody);
    for (const iss of config.issuers.map((i) => i.iss)) {
      expect(body).toContain(`${iss}: launches and failures`);
      for (const name of Object.keys(OPS_METRICS)) {
        const lines = body.split('[\\"SmartLaunch/acme-health\\",').filter((part) => part.startsWith(`\\"${name}\\"`) && part.includes(`\\"Issuer\\",\\"${iss}\\"`));
        expect(lines.length, `${name} for ${iss}`).toBeGreaterThan(0);
      }
    }
  });
});

describe('tracing infrastructure', () => {
  it('turns on active X-Ray tracing for every function, with the two write actions X-Ray needs and nothing more', () => {
    const functions = Object.values(resourcesOf(template, 'AWS::Lambda::Function'));
    const traced = functions.filter((fn) => (fn.Properties?.TracingConfig as { Mode?: string } | undefined)?.Mode === 'Active');
    expect(traced.map((fn) => (fn.Properties?.Environment as { Variables: Record<string, string> }).Variables.POWERTOOLS_SERVICE_NAME).sort()).toEqual(
      ['smart-launch-fhir-proxy', 'smart-launch-jwks', 'smart-launch-launch', 'smart-launch-sessions'],
    );
    const statements = Object.values(resourcesOf(template, 'AWS::IAM::ManagedPolicy')).flatMap((p) => (p.Properties!.PolicyDocument as { Statement: Statement[] }).Statement);
    const traces = statements.filter((s) => s.Sid === 'WriteTraces');
    expect(traces).toHaveLength(4);
    for (const s of traces) expect([...asArray(s.Action)].sort()).toEqual(['xray:PutTelemetryRecords', 'xray:PutTraceSegments']);
    // The stage itself keeps X-Ray off (its segments would record URLs).
    for (const stage of Object.values(resourcesOf(template, 'AWS::ApiGateway::Stage'))) expect(stage.Properties?.TracingEnabled).not.toBe(true);
  });
});

describe('audit trail readers', () => {
  it('grants read (export, query) on the audit group only to the roles named, nothing that writes or deletes', () => {
    const named = Template.fromStack(
      new SmartLaunchStack(testApp(), 'SmartLaunch-acme-health', { config, smartLaunch: { auditReaderRoleArns: ['arn:aws:iam::111111111111:role/security-review'] } }),
    );
    const readers = Object.values(resourcesOf(named, 'AWS::IAM::ManagedPolicy')).filter((p) => JSON.stringify(p.Properties).includes('ReadAuditTrail'));
    expect(readers).toHaveLength(1);
    expect(readers[0]!.Properties?.Roles).toEqual(['security-review']);
    const [statement] = (readers[0]!.Properties!.PolicyDocument as { Statement: Statement[] }).Statement;
    expect(asArray(statement!.Action).sort()).toEqual([...AUDIT_READ_ACTIONS].sort());
    expect(JSON.stringify(statement!.Resource)).toMatch(/AuditLogLogGroup/);
  });
});
