import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CfnOutput, Duration, Fn, Stack } from 'aws-cdk-lib';
import { controlTowerRules, GUARD_DISABLED_RULES, guardRulesFor, guardRuleTypes } from '../../infra/nag.js';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { contentLengthAtLeast } from '../../infra/constructs/launch-api.js';
import { DEFAULT_CLIENT_RATE_LIMIT_PER_5_MINUTES, DEFAULT_INTEGRATION_TIMEOUT_SECONDS, WAF_MAX_REQUEST_BODY_BYTES } from '../../infra/constructs/launch-api-defaults.js';
import { DEFAULT_RESERVED_CONCURRENCY } from '../../infra/constructs/smart-function-defaults.js';
import { SmartLaunch, type SmartLaunchProps } from '../../infra/constructs/smart-launch.js';
import { addCustomerStacks } from '../../infra/customer-stacks.js';
import { CustomerFilesError, loadCustomers } from '../../infra/customers.js';
import { SmartLaunchStack } from '../../infra/stacks/smart-launch-stack.js';
import { templateProblems } from '../../infra/template-checks.js';
import { streamingCapBytes } from '../../functions/fhir-proxy/streaming.js';
import { parseDeployableConfig, siteOf } from '../../shared/config/cookie-site.js';
import { ConfigError, parseConfig, PROXY_DEFAULTS } from '../../shared/config/schema.js';
import { ENV } from '../../shared/config/env.js';
import { awsConfig, resourcesOf, sampleCustomerStack, testApp } from './helpers.js';

type Json = Record<string, unknown>;

function stackOf(smartLaunch: Omit<SmartLaunchProps, 'config'> = {}, configOverrides: Json = {}, env?: { region: string; account: string }) {
  const app = testApp();
  return new SmartLaunchStack(app, 'SmartLaunch-acme-health', {
    config: awsConfig('acme-health', configOverrides),
    smartLaunch,
    ...(env ? { env } : {}),
  });
}

function misconfiguration(action: () => unknown): string {
  try {
    action();
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error('expected the stack to be refused');
}

const DOMAIN = { domainName: 'smart.acme-health.example', certificateArn: 'arn:aws:acm:us-east-1:111111111111:certificate/abc-123' };

let sample: Json;
beforeAll(() => {
  // The sample customer exactly as `cdk synth` builds it (custom domain included), built once per
  // worker and frozen (helpers.ts): a test that changes it works on a copy.
  sample = sampleCustomerStack().json;
});

describe('template checks beyond cdk-nag (literal-only fields, limits, timeouts)', () => {
  it('finds nothing in the sample customer stack', () => {
    expect(templateProblems(sample)).toEqual([]);
  });

  it('gives every output a literal description, the custom domain target included', () => {
    const outputs = sample.Outputs as Record<string, { Description: unknown }>;
    expect(outputs.CustomDomainTarget).toBeDefined();
    for (const [id, output] of Object.entries(outputs)) if (output.Description !== undefined) expect(typeof output.Description, id).toBe('string');
    expect(outputs.CustomDomainTarget!.Description).toContain('smart.example-health.org');
  });

  it('reports an output description that is not a literal, an integration without a timeout and a function shorter than it', () => {
    // The sample template plus an output whose description is a token, as CDK renders one (a stack of
    // its own: synthesizing one output costs nothing next to a second SmartLaunch stack).
    const template = structuredClone(sample);
    const outputs = new Stack(testApp(), 'Outputs');
    new CfnOutput(outputs, 'Joined', { value: 'x', description: Fn.join('', ['a', outputs.region]) });
    const joined = (Template.fromStack(outputs).toJSON() as { Outputs: Json }).Outputs.Joined;
    expect(joined).toEqual({ Value: 'x', Description: { 'Fn::Join': ['', ['a', { Ref: 'AWS::Region' }]] } });
    (template.Outputs as Json).Joined = joined;
    const resources = template.Resources as Record<string, { Type: string; Properties: Json }>;
    const method = Object.values(resources).find((r) => r.Type === 'AWS::ApiGateway::Method' && JSON.stringify(r.Properties).includes('response-streaming'))!;
    delete (method.Properties.Integration as Json).TimeoutInMillis;
    const launch = Object.values(resources).find((r) => r.Type === 'AWS::Lambda::Function' && JSON.stringify(r.Properties).includes('smart-launch-launch'))!;
    launch.Properties.Timeout = 10;
    const rules = templateProblems(template).map((p) => `${p.rule} ${p.location}`);
    expect(rules).toContain('literal-only Outputs.Joined.Description');
    expect(rules.filter((r) => r.startsWith('timeouts'))).toHaveLength(3); // the proxy's missing timeout, /launch and /callback
  });

  it('reports a Lambda environment over 4 KB', () => {
    const template = structuredClone(sample);
    const fn = Object.values(template.Resources as Record<string, { Type: string; Properties: Json }>).find((r) => r.Type === 'AWS::Lambda::Function')!;
    (fn.Properties.Environment as { Variables: Json }).Variables.PADDING = 'x'.repeat(4096);
    expect(templateProblems(template).map((p) => p.rule)).toContain('limits');
  });
});

describe('API Gateway account logging role (access logs need it)', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'smart-launch-role-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const customer = JSON.stringify({
    customer: 'alpha',
    publicUrl: 'https://smart.alpha.example',
    app: { url: 'https://app.alpha.example/' },
    issuers: [{ iss: 'https://ehr.alpha.example/fhir', clientId: 'app', clientAuth: 'none', scope: 'launch openid' }],
  });

  it('refuses a customer that neither creates the role nor confirms it exists, naming the check and both fixes', () => {
    writeFileSync(join(dir, 'alpha.json'), customer);
    let problems: readonly string[] = [];
    try {
      loadCustomers({ dir });
    } catch (error) {
      problems = (error as CustomerFilesError).problems;
    }
    expect(problems.join('\n')).toMatch(/aws apigateway get-account --query cloudwatchRoleArn/);
    expect(problems.join('\n')).toMatch(/"apiGatewayCloudWatchRoleExists": true/);
    expect(problems.join('\n')).toMatch(/"createApiGatewayCloudWatchRole": true/);
  });

  it('creates the account role only when asked, and accepts a confirmed existing one', () => {
    writeFileSync(join(dir, 'alpha.json'), customer);
    writeFileSync(join(dir, 'alpha.stack.json'), JSON.stringify({ createApiGatewayCloudWatchRole: true }));
    const [created] = addCustomerStacks(testApp(), { dir });
    expect(Object.keys(resourcesOf(Template.fromStack(created!), 'AWS::ApiGateway::Account'))).toHaveLength(1);
    writeFileSync(join(dir, 'alpha.stack.json'), JSON.stringify({ apiGatewayCloudWatchRoleExists: true }));
    const [existing] = addCustomerStacks(testApp(), { dir });
    // Annotations first: it synthesizes (forced), and the template then comes from that synth instead of a second one.
    const warnings = Annotations.fromStack(existing!).findWarning('*', Match.stringLikeRegexp('CloudWatch Logs role'));
    expect(Object.keys(resourcesOf(Template.fromStack(existing!), 'AWS::ApiGateway::Account'))).toHaveLength(0);
    expect(warnings).toEqual([]);
  });

  it('gives a team embedding the construct in its own app the same check: a synth warning naming both props', () => {
    const errorsOf = (api: SmartLaunchProps['api']) => {
      const stack = new Stack(testApp(), 'Embedded', { env: { account: '111111111111', region: 'us-east-1' } });
      new SmartLaunch(stack, 'SmartLaunch', { config: awsConfig('acme'), ...(api ? { api } : {}) });
      return Annotations.fromStack(stack)
        .findWarning('*', Match.stringLikeRegexp('CloudWatch Logs role'))
        .map((e) => `${e.id}: ${String(e.entry.data)}`);
    };
    const [error, ...more] = errorsOf(undefined);
    expect(more).toEqual([]);
    expect(error).toMatch(/^\/Embedded\/SmartLaunch\/Api: the stage writes access logs, which needs the account's API Gateway CloudWatch Logs role/);
    expect(error).toMatch(/aws apigateway get-account --query cloudwatchRoleArn/);
    expect(error).toMatch(/api: \{ cloudWatchRoleExists: true \}/);
    expect(error).toMatch(/api: \{ createCloudWatchRole: true \}/);
    expect(errorsOf({ cloudWatchRoleExists: true })).toEqual([]);
    expect(errorsOf({ createCloudWatchRole: true })).toEqual([]);
  });
});

describe('timeouts that fit together (API Gateway, Lambda, the code\'s upstream calls)', () => {
  it('states every integration timeout and gives every function a second more, the proxy also its streaming time', () => {
    const resources = sample.Resources as Record<string, { Type: string; Properties: Json }>;
    const methods = Object.values(resources).filter((r) => r.Type === 'AWS::ApiGateway::Method' && (r.Properties.Integration as Json | undefined)?.Type === 'AWS_PROXY');
    for (const method of methods) expect((method.Properties.Integration as Json).TimeoutInMillis).toBe(DEFAULT_INTEGRATION_TIMEOUT_SECONDS * 1000);
    const proxy = Object.values(resources).find((r) => r.Type === 'AWS::Lambda::Function' && JSON.stringify(r.Properties).includes('smart-launch-fhir-proxy'))!;
    const streamSeconds = (proxy.Properties.Timeout as number) - DEFAULT_INTEGRATION_TIMEOUT_SECONDS - 2;
    expect(streamingCapBytes(streamSeconds)).toBeGreaterThanOrEqual(PROXY_DEFAULTS.maxResponseMegabytes * 1024 * 1024);
    const variables = (proxy.Properties.Environment as { Variables: Json }).Variables;
    expect(variables[ENV.integrationTimeoutMs]).toBe(String(DEFAULT_INTEGRATION_TIMEOUT_SECONDS * 1000));
  });

  it('raises the proxy\'s function timeout with a raised proxyIntegrationTimeoutSeconds', () => {
    const dir = mkdtempSync(join(tmpdir(), 'smart-launch-timeout-'));
    try {
      writeFileSync(join(dir, 'alpha.json'), JSON.stringify({ customer: 'alpha', publicUrl: 'https://smart.alpha.example', app: { url: 'https://app.alpha.example/' }, issuers: [{ iss: 'https://ehr.alpha.example/fhir', clientId: 'a', clientAuth: 'none', scope: 'launch' }] }));
      writeFileSync(join(dir, 'alpha.stack.json'), JSON.stringify({ apiGatewayCloudWatchRoleExists: true, proxyIntegrationTimeoutSeconds: 60 }));
      const [stack] = addCustomerStacks(testApp(), { dir });
      const template = Template.fromStack(stack!).toJSON() as Json;
      expect(templateProblems(template)).toEqual([]);
      const proxy = Object.values(template.Resources as Record<string, { Type: string; Properties: Json }>).find((r) => r.Type === 'AWS::Lambda::Function' && JSON.stringify(r.Properties).includes('smart-launch-fhir-proxy'))!;
      // 60 s to the first byte + 2 s + (64 MB - 6 MB) at 2 MB/s.
      expect(proxy.Properties.Timeout).toBe(Math.ceil(60 + 2 + (64 * 1024 * 1024 - 6_000_000) / 2_000_000));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a response limit the proxy cannot stream in its time, naming both fixes', () => {
    const message = misconfiguration(() =>
      stackOf({}, { issuers: [{ iss: 'https://ehr.acme.example/fhir', clientId: 'a', clientAuth: 'none', scope: 'launch', proxy: { maxResponseMegabytes: 190 } }] }),
    );
    expect(message).toMatch(/issuers\[0\]\.proxy\.maxResponseMegabytes \(190\) cannot be streamed whole/);
    expect(message).toMatch(/raise functions\.fhir-proxy\.timeout to \d+ s/);
  });

  it('refuses a function timeout shorter than API Gateway\'s, an EHR timeout longer than it and a lease that cannot fit', () => {
    const message = misconfiguration(() =>
      stackOf(
        { functions: { sessions: { timeout: Duration.seconds(10) } } },
        {
          issuers: [{ iss: 'https://ehr.acme.example/fhir', clientId: 'a', clientAuth: 'none', scope: 'launch', proxy: { timeoutSeconds: 60 } }],
          session: { refreshLeaseSeconds: 40 },
        },
      ),
    );
    expect(message).toMatch(/functions\.sessions\.timeout \(10 s\) must be at least API Gateway's integration timeout \(29 s\) \+ 1 s.*raise it to 30 s/);
    expect(message).toMatch(/issuers\[0\]\.proxy\.timeoutSeconds \(60 s\) does not fit.*lower it to 27 s/);
    expect(message).toMatch(/session\.refreshLeaseSeconds \(40 s\).*lower it to 25 s/);
  });
});

describe('request bodies too large for the 6 MB invoke payload', () => {
  it('blocks them in the stack\'s web ACL with a JSON 413 instead of API Gateway\'s bare error', () => {
    const acl = Object.values(resourcesOf(Template.fromJSON(sample), 'AWS::WAFv2::WebACL'))[0]!;
    const rule = (acl.Properties!.Rules as Array<{ Name: string; Statement: Json; Action: Json }>).find((r) => r.Name === 'request-body-size')!;
    expect(JSON.stringify(rule.Action)).toContain('"ResponseCode":413');
    const regex = new RegExp((rule.Statement.RegexMatchStatement as { RegexString: string }).RegexString);
    for (const n of [WAF_MAX_REQUEST_BODY_BYTES, WAF_MAX_REQUEST_BODY_BYTES + 1, 4_700_000, 5_999_999, 10_000_000, 123_456_789]) expect(regex.test(String(n)), String(n)).toBe(true);
    for (const n of [0, 1, 4_194_304, WAF_MAX_REQUEST_BODY_BYTES - 1, 999_999]) expect(regex.test(String(n)), String(n)).toBe(false);
    expect(contentLengthAtLeast(100)).toBe('^([2-9]\\d{2}|1[1-9]\\d{1}|10[1-9]|100|[1-9]\\d{3,})$');
  });
});

describe('API Gateway\'s own errors are readable cross-origin', () => {
  it('sends the app origin\'s CORS headers on 4xx, 5xx, throttling and unknown routes', () => {
    const responses = Object.values(resourcesOf(Template.fromJSON(sample), 'AWS::ApiGateway::GatewayResponse')).map((r) => r.Properties as Json);
    const types = responses.map((r) => r.ResponseType);
    expect(types).toEqual(expect.arrayContaining(['DEFAULT_4XX', 'DEFAULT_5XX', 'THROTTLED', 'MISSING_AUTHENTICATION_TOKEN']));
    for (const response of responses) {
      expect(response.ResponseParameters, String(response.ResponseType)).toMatchObject({
        'gatewayresponse.header.Access-Control-Allow-Origin': "'https://app.example-health.org'",
        'gatewayresponse.header.Access-Control-Allow-Credentials': "'true'",
        'gatewayresponse.header.Vary': "'Origin'",
      });
    }
  });

  it('adds no CORS header when the app is served from the API\'s own origin', () => {
    const stack = stackOf({ api: { customDomain: DOMAIN } }, { app: { url: 'https://smart.acme-health.example/app/' } });
    const responses = Object.values(resourcesOf(Template.fromStack(stack), 'AWS::ApiGateway::GatewayResponse'));
    for (const response of responses) expect(JSON.stringify(response.Properties)).not.toContain('Access-Control');
  });
});

describe('cookie sites: where publicUrl and app.url may live (aws)', () => {
  const base = (publicUrl: string, appUrl: string, cookie: Json = {}) => ({
    customer: 'acme',
    publicUrl,
    app: { url: appUrl },
    issuers: [{ iss: 'https://ehr.acme.example/fhir', clientId: 'a', clientAuth: 'none', scope: 'launch' }],
    cookie,
  });
  const problems = (value: unknown, mode: 'aws' | 'local' = 'aws'): string[] => {
    try {
      if (mode === 'aws') parseDeployableConfig(value, '(test)');
      else parseConfig(value, mode, '(test)');
      return [];
    } catch (error) {
      return [...(error as ConfigError).problems];
    }
  };

  it('refuses publicUrl on the execute-api host with the app on another site, naming the problem and the fix', () => {
    const [problem] = problems(base('https://abc123.execute-api.us-east-1.amazonaws.com/prod', 'https://app.acme.example/'));
    expect(problem).toMatch(/^\$\.app\.url: .*different sites.*SESSION_NOT_BOUND.*Fix: serve publicUrl from a custom domain on the app's site \(e\.g\. https:\/\/smart\.acme\.example/);
    expect(problems(base('https://abc123.execute-api.us-east-1.amazonaws.com/prod', 'https://app.acme.example/', { sameSite: 'None' }))).toHaveLength(1);
  });

  it('accepts the same site (any SameSite), or no browser binding, and leaves local runs alone', () => {
    expect(problems(base('https://smart.acme.example', 'https://app.acme.example/'))).toEqual([]);
    expect(problems(base('https://smart.acme.co.uk', 'https://app.acme.co.uk/', { sameSite: 'None' }))).toEqual([]);
    expect(problems(base('https://abc123.execute-api.us-east-1.amazonaws.com/prod', 'https://app.acme.example/', { browserBinding: false }))).toEqual([]);
    expect(problems(base('https://smart.acme.co.uk', 'https://app.other.co.uk/'))).toHaveLength(1);
    expect(problems(base('http://localhost:3000', 'http://127.0.0.1:5173/'), 'local')).toEqual([]);
    expect(siteOf('d111.cloudfront.net')).toBe('d111.cloudfront.net');
  });

  it('files hosts under their Public Suffix List site, private suffixes included', () => {
    // Multi-label suffixes of the ICANN section.
    expect(siteOf('app.acme.co.uk')).toBe('acme.co.uk');
    expect(siteOf('smart.eu.acme.com.au')).toBe('acme.com.au');
    expect(siteOf('APP.Acme.Example.COM.')).toBe('example.com');
    // Private section: every customer of a shared host is a site of its own.
    expect(siteOf('acme.github.io')).toBe('acme.github.io');
    expect(siteOf('app.acme.github.io')).toBe('acme.github.io');
    expect(siteOf('bucket.s3.amazonaws.com')).toBe('bucket.s3.amazonaws.com');
    expect(siteOf('abc123.execute-api.us-east-1.amazonaws.com')).toBe('abc123.execute-api.us-east-1.amazonaws.com');
    expect(siteOf('abc123.execute-api.eu-west-3.amazonaws.com')).toBe('abc123.execute-api.eu-west-3.amazonaws.com');
    // Addresses, localhost and bare suffixes stay themselves.
    expect(siteOf('127.0.0.1')).toBe('127.0.0.1');
    expect(siteOf('localhost')).toBe('localhost');
    expect(siteOf('github.io')).toBe('github.io');
  });

  it('refuses two hosts of one shared suffix and accepts two hosts of one registrable domain under a multi-label suffix', () => {
    // Two GitHub Pages sites, two buckets, two APIs: different owners, different sites.
    expect(problems(base('https://smart.acme.github.io', 'https://acme.github.io/app/'))).toEqual([]);
    expect(problems(base('https://acme.github.io', 'https://other.github.io/'))).toHaveLength(1);
    expect(problems(base('https://a.s3.amazonaws.com', 'https://b.s3.amazonaws.com/'))).toHaveLength(1);
    expect(problems(base('https://abc123.execute-api.us-east-1.amazonaws.com/prod', 'https://def456.execute-api.us-east-1.amazonaws.com/'))).toHaveLength(1);
    expect(problems(base('https://smart.acme.com.au', 'https://portal.acme.com.au/'))).toEqual([]);
    expect(problems(base('https://smart.acme.com.au', 'https://portal.other.com.au/'))).toHaveLength(1);
  });
});

describe('client secrets: partial ARNs and regions', () => {
  it('refuses a secret in another region than the stack\'s, naming the replication fix', () => {
    const message = misconfiguration(() => stackOf({}, {}, { region: 'eu-west-1', account: '111111111111' }));
    expect(message).toMatch(/issuers\[0\]\.clientSecret is a secret in us-east-1, but the stack deploys to eu-west-1/);
    expect(message).toMatch(/replicate-secret-to-regions/);
    expect(() => stackOf({}, {}, { region: 'us-east-1', account: '111111111111' })).not.toThrow();
  });
});

describe('concurrency: one slow EHR cannot starve other customers', () => {
  it('reserves concurrency for every function that calls the EHR, bounded per stack', () => {
    const functions = Object.values(resourcesOf(Template.fromJSON(sample), 'AWS::Lambda::Function'));
    const reserved = Object.fromEntries(
      functions.map((fn) => [String((fn.Properties!.Environment as { Variables: Json }).Variables.POWERTOOLS_SERVICE_NAME).replace('smart-launch-', ''), fn.Properties!.ReservedConcurrentExecutions]),
    );
    expect(reserved).toEqual({ ...DEFAULT_RESERVED_CONCURRENCY, jwks: undefined });
    const perStack = Object.values(DEFAULT_RESERVED_CONCURRENCY).reduce((a, b) => a + b, 0);
    expect(perStack).toBeLessThanOrEqual(100);
  });

  it('lets a stack override or drop a reservation', () => {
    const template = Template.fromStack(stackOf({ functions: { 'fhir-proxy': { reservedConcurrency: 80 }, launch: { reservedConcurrency: false } } }));
    const byName = Object.fromEntries(
      Object.values(resourcesOf(template, 'AWS::Lambda::Function')).map((fn) => [String((fn.Properties!.Environment as { Variables: Json }).Variables.POWERTOOLS_SERVICE_NAME), fn.Properties!.ReservedConcurrentExecutions]),
    );
    expect(byName['smart-launch-fhir-proxy']).toBe(80);
    expect(byName['smart-launch-launch']).toBeUndefined();
  });
});

describe('per-client WAF rate rule', () => {
  it('is on by default with the documented limit per client IP, associated with the stage', () => {
    const template = Template.fromJSON(sample);
    const acls = Object.entries(resourcesOf(template, 'AWS::WAFv2::WebACL'));
    expect(acls).toHaveLength(1);
    const [aclId, acl] = acls[0]!;
    const rule = (acl.Properties!.Rules as Array<{ Name: string; Statement: Json; Action: Json }>).find((r) => r.Name === 'per-client-rate')!;
    expect(rule.Statement.RateBasedStatement).toEqual({ Limit: DEFAULT_CLIENT_RATE_LIMIT_PER_5_MINUTES, EvaluationWindowSec: 300, AggregateKeyType: 'IP' });
    expect(JSON.stringify(rule.Action)).toContain('"ResponseCode":429');
    template.hasResourceProperties('AWS::WAFv2::WebACLAssociation', { WebACLArn: { 'Fn::GetAtt': [aclId, 'Arn'] } });
  });

  it('takes its limit from the stack options, can be turned off, and gives way to an ACL of the customer\'s own', () => {
    const limitOf = (stack: Stack) =>
      Object.values(resourcesOf(Template.fromStack(stack), 'AWS::WAFv2::WebACL')).map(
        (acl) => ((acl.Properties!.Rules as Array<{ Name: string; Statement: { RateBasedStatement?: { Limit: number } } }>).find((r) => r.Name === 'per-client-rate')!).Statement.RateBasedStatement!.Limit,
      );
    expect(limitOf(stackOf({ api: { clientRateLimit: 500 } }))).toEqual([500]);
    expect(limitOf(stackOf({ api: { clientRateLimit: false } }))).toEqual([]);
    const own = stackOf({ api: { webAclArn: 'arn:aws:wafv2:us-east-1:111111111111:regional/webacl/acme/1' } });
    expect(limitOf(own)).toEqual([]);
    Template.fromStack(own).hasResourceProperties('AWS::WAFv2::WebACLAssociation', { WebACLArn: 'arn:aws:wafv2:us-east-1:111111111111:regional/webacl/acme/1' });
  });

  it('is settable in customers/<name>.stack.json', () => {
    const dir = mkdtempSync(join(tmpdir(), 'smart-launch-waf-'));
    try {
      writeFileSync(join(dir, 'alpha.json'), JSON.stringify({ customer: 'alpha', publicUrl: 'https://smart.alpha.example', app: { url: 'https://app.alpha.example/' }, issuers: [{ iss: 'https://ehr.alpha.example/fhir', clientId: 'a', clientAuth: 'none', scope: 'launch' }] }));
      writeFileSync(join(dir, 'alpha.stack.json'), JSON.stringify({ apiGatewayCloudWatchRoleExists: true, clientRateLimit: 1200 }));
      const [stack] = addCustomerStacks(testApp(), { dir });
      const acl = Object.values(resourcesOf(Template.fromStack(stack!), 'AWS::WAFv2::WebACL'))[0]!;
      expect(JSON.stringify(acl.Properties!.Rules)).toContain('"Limit":1200');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('cfn-guard (Control Tower proactive controls) at synth', () => {
  // The disabled controls run on the real synth's template in synth.test.ts, where the synth runs.
  it('gives cfn-guard only the rules that check a resource type of the template, and can read what every shipped rule checks', () => {
    // Arrange: every shipped rule selects what it checks by literal types, so none is run on every template.
    const rules = controlTowerRules();
    expect(rules.length).toBeGreaterThan(200);
    for (const rule of rules) expect(guardRuleTypes(rule.text), rule.name).toEqual(expect.arrayContaining([expect.stringMatching(/^AWS::\w+::\w+$/)]));
    expect(guardRuleTypes(rules.find((r) => r.name === 'ct-eks-pr-2')!.text)).toEqual(['AWS::EKS::Cluster']);
    // A selection of another shape, or none, makes the rule run always.
    expect(guardRuleTypes('let all = Resources.*[ Properties.Tags exists ]')).toBeUndefined();
    expect(guardRuleTypes('let X = "AWS::S3::Bucket"\nlet b = Resources.*[ Type == %X or Type == %Y ]')).toBeUndefined();
    expect(guardRuleTypes('rule r { Parameters exists }')).toBeUndefined();
    expect(guardRuleTypes("let A = 'AWS::IAM::Role'\nlet B = \"AWS::IAM::User\"\nlet p = Resources.*[\n  Type == %A or\n  Type == %B\n]")).toEqual(['AWS::IAM::Role', 'AWS::IAM::User']);
    // Act
    const forBuckets = guardRulesFor(new Set(['AWS::S3::Bucket']));
    const forSample = guardRulesFor(new Set(['AWS::Lambda::Function', 'AWS::KMS::Key', 'AWS::ApiGateway::Stage']));
    // Assert: the S3 controls and no other service's; a disabled control never, even when its type is present.
    expect(forBuckets.length).toBeGreaterThan(5);
    expect(forBuckets.every((path) => /[\\/]s3[\\/]ct-s3-pr-\d+\.guard$/.test(path))).toBe(true);
    expect(forSample.some((path) => path.includes('ct-kms-pr-1'))).toBe(true);
    for (const disabled of Object.keys(GUARD_DISABLED_RULES)) expect(forSample.some((path) => path.endsWith(`${disabled}.guard`))).toBe(false);
    expect(guardRulesFor(new Set())).toEqual([]);
  });
});
