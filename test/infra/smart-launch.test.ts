import { Match, Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { ENV } from '../../shared/config/env.js';
import { parseConfigText } from '../../shared/config/schema.js';
import { TABLE } from '../../shared/adapters/table.js';
import { encryptionContext, sessionKey, transactionKey } from '../../shared/core/sealed-records.js';
import { ROUTES, type FunctionName } from '../../shared/http/routes.js';
import { FUNCTION_ACCESS, KEY_PREFIX, secretResourceArns } from '../../infra/constructs/permissions.js';
import { SmartLaunchStack } from '../../infra/stacks/smart-launch-stack.js';
import { asArray, awsConfig, resourcesOf, SECRET_ARN, testApp, type Statement } from './helpers.js';

const config = awsConfig('acme-health');

let template: Template;
/** Function logical id → function name (from its service-name variable). */
const functionIds = new Map<string, FunctionName>();

beforeAll(() => {
  // Arrange (once: a synth is the slow part)
  const app = testApp();
  const stack = new SmartLaunchStack(app, 'SmartLaunch-acme-health', {
    config,
    smartLaunch: {
      api: {
        customDomain: { domainName: 'smart.acme-health.example', certificateArn: 'arn:aws:acm:us-east-1:111111111111:certificate/abc-123' },
        webAclArn: 'arn:aws:wafv2:us-east-1:111111111111:regional/webacl/acme/1234',
      },
      alarmEmail: 'oncall@acme-health.example',
    },
  });
  template = Template.fromStack(stack);
  for (const [id, fn] of Object.entries(resourcesOf(template, 'AWS::Lambda::Function'))) {
    const variables = (fn.Properties?.Environment as { Variables: Record<string, string> }).Variables;
    functionIds.set(id, variables.POWERTOOLS_SERVICE_NAME!.replace(/^smart-launch-/, '') as FunctionName);
  }
});

describe('session table', () => {
  it('is encrypted with its own customer-managed key, keyed by pk, with TTL on ttl', () => {
    const keys = resourcesOf(template, 'AWS::KMS::Key');
    const tableKeyId = Object.keys(keys).find((id) => id.includes('KeysTable'));
    expect(tableKeyId).toBeDefined();
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      KeySchema: [{ AttributeName: TABLE.partitionKey, KeyType: 'HASH' }],
      AttributeDefinitions: [{ AttributeName: TABLE.partitionKey, AttributeType: 'S' }],
      TimeToLiveSpecification: { AttributeName: TABLE.ttlAttribute, Enabled: true },
      SSESpecification: { SSEEnabled: true, SSEType: 'KMS', KMSMasterKeyId: { 'Fn::GetAtt': [tableKeyId, 'Arn'] } },
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      DeletionProtectionEnabled: true,
      BillingMode: 'PAY_PER_REQUEST',
    });
  });

  it('is retained when the stack goes away', () => {
    template.hasResource('AWS::DynamoDB::Table', { DeletionPolicy: 'Retain', UpdateReplacePolicy: 'Retain' });
  });
});

describe('KMS keys', () => {
  it('has four rotating, retained keys with per-customer aliases', () => {
    const keys = resourcesOf(template, 'AWS::KMS::Key');
    expect(Object.keys(keys)).toHaveLength(4);
    for (const key of Object.values(keys)) {
      expect(key.Properties?.EnableKeyRotation).toBe(true);
      expect(key.DeletionPolicy).toBe('Retain');
    }
    const aliases = Object.values(resourcesOf(template, 'AWS::KMS::Alias')).map((a) => a.Properties?.AliasName);
    expect(aliases.sort()).toEqual([
      'alias/smart-launch/acme-health/audit',
      'alias/smart-launch/acme-health/observability',
      'alias/smart-launch/acme-health/table',
      'alias/smart-launch/acme-health/tokens',
    ]);
  });
});

describe('functions', () => {
  it('has one function per function name of ROUTES', () => {
    expect([...functionIds.values()].sort()).toEqual([...new Set(ROUTES.map((r) => r.fn))].sort());
  });

  it('runs every function as ESM on nodejs24.x, ARM64, with the ENV variables set', () => {
    for (const [id, fn] of Object.entries(resourcesOf(template, 'AWS::Lambda::Function'))) {
      const p = fn.Properties!;
      if (functionIds.get(id) === 'jwks') {
        // SMART-REG-04: the JWKS function sees the assertion key ids only (none without private_key_jwt)
        // and the metric namespace it counts an unreadable key in: no config, no table, no token key.
        expect(Object.keys((p.Environment as { Variables: Record<string, unknown> }).Variables).sort()).toEqual([
          'POWERTOOLS_SERVICE_NAME',
          ENV.metricNamespace,
        ]);
        continue;
      }
      expect(p.Runtime).toBe('nodejs24.x');
      expect(p.Architectures).toEqual(['arm64']);
      expect(p.Handler).toBe('index.handler');
      const variables = (p.Environment as { Variables: Record<string, unknown> }).Variables;
      expect(Object.keys(variables).sort()).toEqual(
        [ENV.config, ENV.tableName, ENV.kmsKeyId, ENV.integrationTimeoutMs, ENV.auditLogGroup, 'POWERTOOLS_SERVICE_NAME'].sort(),
      );
      // The functions re-validate the config at cold start: it must pass the same AWS schema.
      expect(parseConfigText(variables[ENV.config] as string, 'aws', 'env')).toEqual(config);
      expect(variables[ENV.tableName]).toEqual({ Ref: expect.stringMatching(/SessionTable/) });
      expect(variables[ENV.kmsKeyId]).toEqual({ 'Fn::GetAtt': [expect.stringMatching(/KeysTokens/), 'Arn'] });
    }
  });

  it('runs no function with --enable-source-maps (no NODE_OPTIONS): no cold start reads and parses the bundle map', () => {
    // The maps still ship; an unexpected error's log line maps its frames when it is written (test/cold-start/stack-frames.test.ts).
    const functions = Object.values(resourcesOf(template, 'AWS::Lambda::Function'));
    expect(functions.length).toBe(4);
    for (const fn of functions) {
      const variables = (fn.Properties!.Environment as { Variables: Record<string, unknown> }).Variables;
      expect(variables.NODE_OPTIONS).toBeUndefined();
      expect(JSON.stringify(variables)).not.toContain('source-maps');
    }
  });

  it('gives the FHIR proxy at least 30 s and every function its own log group', () => {
    const logGroups = new Set<string>();
    for (const [id, fn] of Object.entries(resourcesOf(template, 'AWS::Lambda::Function'))) {
      const p = fn.Properties!;
      if (functionIds.get(id) === 'fhir-proxy') expect(p.Timeout).toBeGreaterThanOrEqual(30);
      const group = (p.LoggingConfig as { LogGroup: { Ref: string } }).LogGroup.Ref;
      logGroups.add(group);
    }
    expect(logGroups.size).toBe(4);
  });

  it('keeps every log group encrypted and time-limited', () => {
    // The audit trail's group has its own key and retention (test/ops/audit-infra.test.ts).
    const groups = Object.values(resourcesOf(template, 'AWS::Logs::LogGroup')).filter((g) => g.Properties?.LogGroupName !== '/smart-launch/acme-health/audit');
    expect(groups).toHaveLength(5); // four functions + API access log
    for (const group of groups) {
      expect(group.Properties?.RetentionInDays).toBe(365);
      expect(group.Properties?.KmsKeyId).toEqual({ 'Fn::GetAtt': [expect.stringMatching(/KeysObservability/), 'Arn'] });
    }
  });
});

describe('IAM', () => {
  function policiesByFunction(): Map<FunctionName, Statement[]> {
    const roleToFunction = new Map<string, FunctionName>();
    for (const [id, fn] of Object.entries(resourcesOf(template, 'AWS::Lambda::Function'))) {
      const role = (fn.Properties!.Role as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0];
      roleToFunction.set(role, functionIds.get(id)!);
    }
    const result = new Map<FunctionName, Statement[]>();
    for (const policy of Object.values(resourcesOf(template, 'AWS::IAM::ManagedPolicy'))) {
      const roles = policy.Properties!.Roles as Array<{ Ref: string }>;
      expect(roles).toHaveLength(1);
      const fn = roleToFunction.get(roles[0]!.Ref)!;
      result.set(fn, (policy.Properties!.PolicyDocument as { Statement: Statement[] }).Statement);
    }
    return result;
  }

  it('uses no inline policy and no AWS managed policy', () => {
    expect(Object.keys(resourcesOf(template, 'AWS::IAM::Policy'))).toHaveLength(0);
    for (const role of Object.values(resourcesOf(template, 'AWS::IAM::Role'))) {
      expect(role.Properties?.ManagedPolicyArns).toBeUndefined();
      expect(role.Properties?.Policies).toBeUndefined();
    }
  });

  it('grants each function exactly the actions it uses', () => {
    const expected: Record<FunctionName, string[]> = {
      launch: ['dynamodb:DeleteItem', 'dynamodb:PutItem', 'kms:Decrypt', 'kms:GenerateDataKey', 'secretsmanager:GetSecretValue'],
      // PutItem (jti#) and Scan: POST /backchannel-logout.
      sessions: ['dynamodb:DeleteItem', 'dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:Scan', 'dynamodb:UpdateItem', 'kms:Decrypt', 'secretsmanager:GetSecretValue'],
      'fhir-proxy': ['dynamodb:DeleteItem', 'dynamodb:GetItem', 'dynamodb:UpdateItem', 'kms:Decrypt', 'secretsmanager:GetSecretValue'],
      // Without a private_key_jwt issuer there is no assertion key: the JWKS function may only log.
      jwks: [],
    };
    const policies = policiesByFunction();
    expect([...policies.keys()].sort()).toEqual(Object.keys(expected).sort());
    for (const [fn, statements] of policies) {
      const own = statements.filter((s) => !['WriteOwnLogs', 'TableKeyViaDynamoDB', 'AppendAuditTrail', 'WriteTraces'].includes(s.Sid ?? ''));
      const actions = [...new Set(own.flatMap((s) => asArray(s.Action)))].sort();
      expect(actions, fn).toEqual(expected[fn]);
    }
  });

  it('has no wildcard action and no "*" resource anywhere', () => {
    for (const statements of policiesByFunction().values()) {
      for (const s of statements) {
        expect(s.Effect).toBe('Allow');
        for (const action of asArray(s.Action)) expect(action).not.toContain('*');
        // X-Ray's two write actions take no resource but "*" (infra/constructs/tracing.ts).
        if (s.Sid === 'WriteTraces') continue;
        for (const resource of asArray(s.Resource)) expect(resource).not.toBe('*');
      }
    }
    const everything = JSON.stringify(template.toJSON());
    expect(everything).not.toMatch(/"Action":"\*"/);
  });

  it('binds the token key to this customer\'s encryption context', () => {
    const probe = encryptionContext(config, sessionKey('x'));
    for (const [fn, statements] of policiesByFunction()) {
      const kms = statements.filter((s) => asArray(s.Action).some((a) => a.startsWith('kms:')) && s.Sid === 'TokenEnvelopeKey');
      if (FUNCTION_ACCESS[fn].tokenKey.length === 0) {
        expect(kms, fn).toHaveLength(0);
        continue;
      }
      expect(kms, fn).toHaveLength(1);
      expect(kms[0]!.Resource).toEqual({ 'Fn::GetAtt': [expect.stringMatching(/KeysTokens/), 'Arn'] });
      expect(kms[0]!.Condition).toEqual({
        StringEquals: { 'kms:EncryptionContext:service': probe.service, 'kms:EncryptionContext:customer': 'acme-health' },
        StringLike: { 'kms:EncryptionContext:session': 'ses#*' },
        'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': ['customer', 'service', 'session'] },
        Null: { 'kms:EncryptionContext:session': 'false' },
      });
      expect(asArray(kms[0]!.Action).sort()).toEqual([...FUNCTION_ACCESS[fn].tokenKey].sort());
    }
  });

  it('uses the table key only through DynamoDB', () => {
    for (const [fn, statements] of policiesByFunction()) {
      if (FUNCTION_ACCESS[fn].table.length === 0) {
        expect(statements.find((s) => s.Sid === 'TableKeyViaDynamoDB'), fn).toBeUndefined();
        continue;
      }
      const tableKey = statements.find((s) => s.Sid === 'TableKeyViaDynamoDB')!;
      expect(tableKey.Resource).toEqual({ 'Fn::GetAtt': [expect.stringMatching(/KeysTable/), 'Arn'] });
      expect(JSON.stringify(tableKey.Condition)).toContain('kms:ViaService');
    }
  });

  it('limits table items to the key prefixes each function uses', () => {
    expect(KEY_PREFIX).toEqual({ transaction: 'txn#', session: 'ses#', logoutJti: 'jti#' });
    expect(transactionKey('s').startsWith(KEY_PREFIX.transaction)).toBe(true);
    const policies = policiesByFunction();
    const leading = (fn: FunctionName, action: string) =>
      policies
        .get(fn)!
        .filter((s) => asArray(s.Action).includes(action))
        .flatMap((s) => asArray(s.Condition?.['ForAllValues:StringLike']?.['dynamodb:LeadingKeys'] as string[]));
    expect(leading('launch', 'dynamodb:PutItem').sort()).toEqual(['ses#*', 'txn#*']);
    expect(leading('launch', 'dynamodb:DeleteItem')).toEqual(['txn#*']);
    expect(leading('sessions', 'dynamodb:GetItem')).toEqual(['ses#*']);
    expect(leading('sessions', 'dynamodb:DeleteItem')).toEqual(['ses#*']);
    expect(leading('sessions', 'dynamodb:PutItem')).toEqual(['jti#*']);
    expect(leading('fhir-proxy', 'dynamodb:UpdateItem')).toEqual(['ses#*']);
  });

  it('reads only the configured client secrets (code exchange, refresh and revocation authenticate the client)', () => {
    const policies = policiesByFunction();
    for (const fn of ['launch', 'sessions', 'fhir-proxy'] as const) {
      const secrets = policies.get(fn)!.find((s) => s.Sid === 'ClientSecrets')!;
      expect(secrets.Resource, fn).toEqual([SECRET_ARN, `${SECRET_ARN}-??????`]);
    }
  });

  it('grants a partial secret ARN whose name ends like a suffix as well as a full one', () => {
    // `ehr-client` ends in "-" and six characters, like the random suffix of a full ARN.
    const partial = 'arn:aws:secretsmanager:us-east-1:111111111111:secret:smart-launch/x/ehr-client';
    expect(secretResourceArns(partial)).toEqual([partial, `${partial}-??????`]);
    const full = 'arn:aws:secretsmanager:us-east-1:111111111111:secret:smart-launch/x/ehr-client-AbCdEf';
    expect(secretResourceArns(full)).toContain(full);
  });
});

describe('REST API', () => {
  it('serves exactly the routes of ROUTES, each a Lambda proxy to its function', () => {
    const resources = resourcesOf(template, 'AWS::ApiGateway::Resource');
    const pathOf = (id: string): string => {
      const r = resources[id]!.Properties!;
      const parent = r.ParentId as { Ref?: string };
      return `${parent.Ref ? pathOf(parent.Ref) : ''}/${String(r.PathPart)}`;
    };
    const served = Object.values(resourcesOf(template, 'AWS::ApiGateway::Method')).map((m) => {
      const p = m.Properties!;
      const integration = p.Integration as { Type: string; Uri: unknown };
      expect(integration.Type).toBe('AWS_PROXY');
      const uri = JSON.stringify(integration.Uri);
      const fns = [...functionIds].filter(([id]) => uri.includes(`"${id}"`)).map(([, name]) => name);
      expect(fns).toHaveLength(1);
      expect(p.AuthorizationType).toBe('NONE');
      return `${String(p.HttpMethod)} ${pathOf((p.ResourceId as { Ref: string }).Ref)} -> ${fns[0]}`;
    });
    expect(served.sort()).toEqual(ROUTES.map((r) => `${r.method} ${r.resource} -> ${r.fn}`).sort());
  });

  it('passes binary bodies through and throttles the stage and the sign-in routes', () => {
    template.hasResourceProperties('AWS::ApiGateway::RestApi', {
      Name: 'smart-launch-acme-health',
      BinaryMediaTypes: ['*/*'],
      EndpointConfiguration: { Types: ['REGIONAL'] },
    });
    template.hasResourceProperties('AWS::ApiGateway::Stage', {
      TracingEnabled: false,
      MethodSettings: Match.arrayWith([
        Match.objectLike({ HttpMethod: '*', ResourcePath: '/*', LoggingLevel: 'OFF', DataTraceEnabled: false, ThrottlingRateLimit: 100, ThrottlingBurstLimit: 200 }),
        Match.objectLike({ HttpMethod: 'GET', ResourcePath: '/~1launch', ThrottlingRateLimit: 20 }),
        Match.objectLike({ HttpMethod: 'GET', ResourcePath: '/~1callback', ThrottlingRateLimit: 20 }),
      ]),
    });
  });

  it('writes JSON access logs without paths, query strings, headers or cookies', () => {
    const stage = Object.values(resourcesOf(template, 'AWS::ApiGateway::Stage'))[0]!;
    const format = (stage.Properties!.AccessLogSetting as { Format: string }).Format;
    const fields = JSON.parse(format) as Record<string, string>;
    expect(fields).toMatchObject({
      requestId: '$context.requestId',
      httpMethod: '$context.httpMethod',
      resourcePath: '$context.resourcePath',
      status: '$context.status',
      responseLatency: '$context.responseLatency',
      integrationLatency: '$context.integrationLatency',
      ip: '$context.identity.sourceIp',
    });
    expect(format).not.toMatch(/\$context\.path|\$context\.requestOverride|\$input|\$method|querystring|cookie|header|authorizer/i);
    const identity = Object.values(fields).filter((v) => v.startsWith('$context.identity.'));
    expect(identity).toEqual(['$context.identity.sourceIp']);
  });

  it('maps the custom domain with TLS 1.2 and associates the web ACL with the stage', () => {
    template.hasResourceProperties('AWS::ApiGateway::DomainName', {
      DomainName: 'smart.acme-health.example',
      RegionalCertificateArn: 'arn:aws:acm:us-east-1:111111111111:certificate/abc-123',
      SecurityPolicy: 'TLS_1_2',
      EndpointConfiguration: { Types: ['REGIONAL'] },
    });
    template.resourceCountIs('AWS::ApiGateway::BasePathMapping', 1);
    template.hasResourceProperties('AWS::WAFv2::WebACLAssociation', {
      WebACLArn: 'arn:aws:wafv2:us-east-1:111111111111:regional/webacl/acme/1234',
    });
  });

  it('outputs the launch URL, redirect URI, JWKS URL and the API URL', () => {
    template.hasOutput('LaunchUrl', { Value: 'https://smart.acme-health.example/launch' });
    template.hasOutput('RedirectUri', { Value: 'https://smart.acme-health.example/callback' });
    template.hasOutput('JwksUrl', { Value: 'https://smart.acme-health.example/.well-known/jwks.json' });
    template.hasOutput('ApiUrl', { Value: Match.anyValue() });
    template.hasOutput('CustomDomainTarget', { Value: Match.anyValue() });
  });
});

describe('operations', () => {
  it('sends every alarm to the encrypted topic, which mails on-call', () => {
    template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: Match.anyValue() });
    template.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'oncall@acme-health.example' });
    const alarms = Object.values(resourcesOf(template, 'AWS::CloudWatch::Alarm'));
    // API 5xx, errors + throttles per function (8), three token-endpoint codes, table throttles,
    // launch failure rate and upstream errors per issuer (2 × 2), unreadable JWKS keys.
    expect(alarms).toHaveLength(18);
    for (const alarm of alarms) expect(alarm.Properties?.AlarmActions).toHaveLength(1);
  });

  it('alarms on the JWKS function\'s JwksKeyUnreadable EMF metric at the first unreadable key, and graphs it', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Metrics: [
        Match.objectLike({
          MetricStat: {
            Metric: { Namespace: 'SmartLaunch/acme-health', MetricName: 'JwksKeyUnreadable', Dimensions: [{ Name: 'Function', Value: 'jwks' }] },
            Period: 300,
            Stat: 'Sum',
          },
        }),
      ],
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      TreatMissingData: 'notBreaching',
      AlarmDescription: Match.stringLikeRegexp('docs/runbooks/jwks-key-unreadable.md'),
      AlarmActions: [Match.anyValue()],
    });
    const [dashboard] = Object.values(resourcesOf(template, 'AWS::CloudWatch::Dashboard'));
    expect(JSON.stringify(dashboard!.Properties!.DashboardBody)).toContain('JWKS: unreadable client keys');
  });

  it('counts token-endpoint failures from the functions\' JSON logs', () => {
    const filters = Object.values(resourcesOf(template, 'AWS::Logs::MetricFilter'));
    expect(filters).toHaveLength(3);
    for (const filter of filters) {
      // Matches the Powertools lines of errorResponse(): {"level":"WARN",...,"code":"TOKEN_REQUEST_REJECTED",...}
      expect(filter.Properties!.FilterPattern).toBe(
        '{ (($.level = "ERROR") || ($.level = "WARN")) && (($.code = "TOKEN_ENDPOINT_UNAVAILABLE") || ' +
          '($.code = "CLIENT_AUTH_FAILED") || ($.code = "TOKEN_REQUEST_REJECTED")) }',
      );
      expect(filter.Properties!.MetricTransformations).toEqual([
        expect.objectContaining({ MetricNamespace: 'SmartLaunch/acme-health', MetricName: 'TokenEndpointFailures', Dimensions: [{ Key: 'Code', Value: '$.code' }] }),
      ]);
    }
    template.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
  });
});
