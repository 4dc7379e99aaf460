import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Stack } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PROJECT_ROOT, SmartLaunch } from '../../infra/constructs/smart-launch.js';
import { addCustomerStacks, environmentFromProcess } from '../../infra/customer-stacks.js';
import { CustomerFilesError, loadCustomers } from '../../infra/customers.js';
import { cookieSiteProblem, parseDeployableConfigText } from '../../shared/config/cookie-site.js';
import { ConfigError, parseConfigText } from '../../shared/config/schema.js';
import { awsConfig, resourcesOf, SECRET_ARN, testApp } from './helpers.js';
import { importsOf, resolveSpecifier, ROOT } from '../repo/import-graph.js';

let dir: string;

function customerFile(customer: string, overrides: Record<string, unknown> = {}): string {
  return JSON.stringify({
    customer,
    publicUrl: `https://smart.${customer}.example`,
    app: { url: `https://app.${customer}.example/` },
    issuers: [{ iss: `https://ehr.${customer}.example/fhir`, clientId: 'app', clientAuth: 'none', scope: 'launch openid', default: true }],
    ...overrides,
  });
}

function write(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  if (name.endsWith('.json') && !name.endsWith('.stack.json')) {
    // The account's API Gateway logging role exists (see the tests of that check below).
    writeFileSync(file.replace(/\.json$/, '.stack.json'), JSON.stringify({ apiGatewayCloudWatchRoleExists: true }));
  }
  return file;
}

function problemsOf(action: () => unknown): readonly string[] {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(CustomerFilesError);
    return (error as CustomerFilesError).problems;
  }
  throw new Error('expected a CustomerFilesError');
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'smart-launch-customers-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('customer files', () => {
  it('accepts the sample customer file for a deployed stack', () => {
    // Act
    const [example, ...rest] = loadCustomers({ dir: join(PROJECT_ROOT, 'customers') });
    // Assert
    expect(rest).toHaveLength(0);
    expect(example!.config.customer).toBe('example-health');
    expect(example!.config.issuers.some((i) => i.clientAuth === 'client_secret_basic')).toBe(true);
    expect(example!.options.customDomain?.domainName).toBe(new URL(example!.config.publicUrl).hostname);
  });

  it('builds two independent stacks from two customer files', () => {
    // Arrange
    write('alpha.json', customerFile('alpha'));
    write('beta.json', customerFile('beta'));
    const app = testApp();
    // Act
    const stacks = addCustomerStacks(app, { dir });
    // Annotations first: it synthesizes the app (forced), and the templates then come from that synth instead of a second one.
    const annotations = Annotations.fromStack(stacks[0]!);
    // Assert
    expect(stacks.map((s) => s.stackName).sort()).toEqual(['SmartLaunch-alpha', 'SmartLaunch-beta']);
    const [a, b] = stacks.map((s) => Template.fromStack(s).toJSON() as { Resources: Record<string, { Type: string; Properties?: Record<string, unknown> }> });
    for (const [mine, theirs, other] of [[a!, b!, 'beta'], [b!, a!, 'alpha']] as const) {
      const text = JSON.stringify(mine);
      // Nothing of the other customer, no cross-stack import, no shared named resource.
      expect(text).not.toContain(other);
      expect(text).not.toContain('Fn::ImportValue');
      expect(Object.values(mine.Resources).filter((r) => r.Type === 'AWS::DynamoDB::Table')).toHaveLength(1);
      expect(Object.values(mine.Resources).filter((r) => r.Type === 'AWS::KMS::Key')).toHaveLength(4); // tokens, table, observability, audit
      const aliases = (t: typeof mine) => Object.values(t.Resources).filter((r) => r.Type === 'AWS::KMS::Alias').map((r) => r.Properties?.AliasName);
      expect(aliases(mine).filter((name) => aliases(theirs).includes(name))).toEqual([]);
    }
    for (const stack of stacks) expect(stack.dependencies).toEqual([]);
    // Neither has a custom domain: synth says that publicUrl must be routed to the API some other way.
    annotations.hasWarning('/SmartLaunch-alpha/SmartLaunch', Match.stringLikeRegexp('publicUrl https://smart.alpha.example is not an execute-api URL'));
  });

  it('builds only the customer named on the command line', () => {
    write('alpha.json', customerFile('alpha'));
    write('beta.json', customerFile('beta'));
    expect(loadCustomers({ dir, only: 'beta' }).map((s) => s.config.customer)).toEqual(['beta']);
    expect(loadCustomers({ dir, only: 'alpha.json' }).map((s) => s.config.customer)).toEqual(['alpha']);
    expect(problemsOf(() => loadCustomers({ dir, only: 'gamma' }))[0]).toMatch(/gamma\.json: no such customer file/);
  });

  it('fails with every problem of an invalid file, each with its JSON path', () => {
    // Arrange: a secret in clear, an http issuer, and two default issuers.
    const file = write(
      'broken.json',
      customerFile('broken', {
        issuers: [
          { iss: 'http://ehr.broken.example/fhir', clientId: 'a', clientAuth: 'none', scope: 'launch', default: true },
          { iss: 'https://ehr2.broken.example/fhir', clientId: 'b', clientAuth: 'client_secret_basic', clientSecret: 's3cr3t-in-clear', scope: 'launch', default: true },
        ],
      }),
    );
    // Act
    const problems = problemsOf(() => loadCustomers({ dir }));
    // Assert
    expect(problems[0]).toBe(`${file}:`);
    expect(problems).toContain('  - $.issuers[0].iss: iss must use https in a deployed stack');
    expect(problems).toContain('  - $.issuers[1].clientSecret: in a deployed stack clientSecret must be a Secrets Manager secret ARN, never the secret itself');
    expect(problems).toContain('  - $.issuers: at most one issuer may be "default": true');
    // The secret itself is never echoed back.
    expect(problems.join('\n')).not.toContain('s3cr3t-in-clear');
  });

  it('refuses, at synth, a publicUrl and app.url on different sites with the cookie-site rule\'s message; the functions\' parse leaves it to synth', () => {
    const text = customerFile('acme', { publicUrl: 'https://abc123.execute-api.us-east-1.amazonaws.com/prod' });
    const file = write('acme.json', text);
    // Act
    const problems = problemsOf(() => loadCustomers({ dir }));
    // Assert: the same problem, at the same path, as the rule reports anywhere (cookie-site.ts).
    expect(problems[0]).toBe(`${file}:`);
    expect(problems[1]).toBe(`  - $.app.url: ${cookieSiteProblem('https://abc123.execute-api.us-east-1.amazonaws.com/prod', 'https://app.acme.example/')}`);
    expect(problems[1]).toMatch(/^ {2}- \$\.app\.url: app\.url \(site acme\.example\) and publicUrl \(site abc123\.execute-api\.us-east-1\.amazonaws\.com\) are on different sites, .*SESSION_NOT_BOUND/);
    expect(() => parseDeployableConfigText(text, file)).toThrow(ConfigError);
    // A function parses the config it was deployed with, which synth validated: no Public Suffix List there.
    expect(parseConfigText(text, 'aws', file).publicUrl).toBe('https://abc123.execute-api.us-east-1.amazonaws.com/prod');
  });

  it('reports the problems of all invalid files at once, and rejects a customer defined twice', () => {
    write('a.json', customerFile('dup'));
    write('b.json', customerFile('dup'));
    write('c.json', '{ not json');
    write('d.stack.json', JSON.stringify({ webAclArn: 'nope', extra: true }));
    const problems = problemsOf(() => loadCustomers({ dir })).join('\n');
    expect(problems).toMatch(/c\.json:\n {2}- \$: not valid JSON/);
    expect(problems).toMatch(/b\.json: customer "dup" is already defined in .*a\.json/);
    expect(problems).toMatch(/d\.stack\.json: stack options without a customer file d\.json/);
  });

  it('validates stack options and turns them into construct props', () => {
    write('acme.json', customerFile('acme'));
    const options = write('acme.stack.json', JSON.stringify({ webAclArn: 'arn:aws:wafv2:us-east-1:1:global/webacl/x', reservedConcurrency: { launch: 0 }, surprise: 1 }));
    const problems = problemsOf(() => loadCustomers({ dir }));
    expect(problems).toContain(`${options}: $.webAclArn: webAclArn must be a REGIONAL WAFv2 web ACL ARN`);
    expect(problems.some((p) => p.startsWith(`${options}: $.reservedConcurrency.launch:`))).toBe(true);
    expect(problems.some((p) => p.startsWith(`${options}: $: Unrecognized key`))).toBe(true);
  });

  it('sets the assertion key rotation and the audit readers from the stack file (SMART-REG-04)', () => {
    // Arrange: a private_key_jwt customer in step 1 of a rotation, with one audit reader.
    write(
      'jwt.json',
      customerFile('jwt', {
        issuers: [{ iss: 'https://ehr.jwt.example/fhir', clientId: 'app', clientAuth: 'private_key_jwt', scope: 'launch openid', default: true }],
      }),
    );
    write(
      'jwt.stack.json',
      JSON.stringify({
        apiGatewayCloudWatchRoleExists: true,
        assertionKeys: { generation: 2, publishNext: true },
        auditReaderRoleArns: ['arn:aws:iam::111111111111:role/security-review'],
      }),
    );
    // Act
    const [stack] = addCustomerStacks(testApp(), { dir });
    // Assert: generation 2 signs, generation 3 is published, and the audit trail has exactly that reader.
    const template = Template.fromStack(stack!);
    const keys = Object.keys(resourcesOf(template, 'AWS::KMS::Key')).filter((id) => id.includes('ClientAssertion'));
    expect(keys.map((id) => id.replace(/[A-F0-9]{8}$/, '').replace(/^.*Keys/, '')).sort()).toEqual(['ClientAssertionRS384G2', 'ClientAssertionRS384G3']);
    const readers = Object.values(resourcesOf(template, 'AWS::IAM::ManagedPolicy')).filter((p) => JSON.stringify(p.Properties).includes('ReadAuditTrail'));
    expect(readers.map((p) => p.Properties?.Roles)).toEqual([['security-review']]);
  });

  it('refuses an assertion key rotation it cannot apply, each with its fix', () => {
    // Arrange: a generation that is not a whole number, a stray member, a role that is not a role ARN...
    write('acme.json', customerFile('acme'));
    const options = write(
      'acme.stack.json',
      JSON.stringify({ apiGatewayCloudWatchRoleExists: true, assertionKeys: { generation: 0, publishnext: true }, auditReaderRoleArns: ['security-review'] }),
    );
    // ...and a well-formed rotation for a customer without private_key_jwt.
    write('plain.json', customerFile('plain'));
    const plain = write('plain.stack.json', JSON.stringify({ apiGatewayCloudWatchRoleExists: true, assertionKeys: { publishNext: true } }));
    // Act
    const problems = problemsOf(() => loadCustomers({ dir }));
    // Assert
    expect(problems).toContain(
      `${options}: $.assertionKeys.generation: assertionKeys.generation must be 1 or more (generation 1 is the first key; raise it by one per rotation)`,
    );
    expect(problems.some((p) => p.startsWith(`${options}: $.assertionKeys: Unrecognized key`) && p.includes('publishnext'))).toBe(true);
    expect(problems).toContain(`${options}: $.auditReaderRoleArns[0]: auditReaderRoleArns must hold IAM role ARNs (arn:aws:iam::<account>:role/<name>)`);
    expect(problems.find((p) => p.startsWith(`${plain}: $.assertionKeys:`))).toMatch(/no issuer of plain\.json uses "clientAuth": "private_key_jwt"/);
  });

  it('validates customer files without loading CDK, so the app reports a bad file before it loads aws-cdk-lib', () => {
    // Arrange: every file infra/customers.ts loads, following its relative imports (app.ts imports it statically).
    const seen = new Set<string>();
    const pending = ['infra/customers.ts'];
    while (pending.length > 0) {
      const file = pending.pop()!;
      if (seen.has(file)) continue;
      seen.add(file);
      pending.push(...importsOf(readFileSync(join(ROOT, file), 'utf8')).map((specifier) => resolveSpecifier(file, specifier)));
    }
    // Act: the packages they import (type-only imports are erased and load nothing).
    const packages = [...seen].flatMap((file) =>
      [...readFileSync(join(ROOT, file), 'utf8').matchAll(/^import (?!type )[^'"]*?['"]([^'".][^'"]*)['"]/gm)].map((m) => `${file}: ${m[1]!}`),
    );
    // Assert
    expect(seen.has('infra/customers.ts')).toBe(true);
    expect(packages.filter((p) => /: (aws-cdk-lib|constructs|cdk-nag|@cdklabs\/)/.test(p))).toEqual([]);
  });

  it('synthesizes environment-agnostic stacks unless the CLI resolved an account or region', () => {
    expect(environmentFromProcess({})).toBeUndefined();
    expect(environmentFromProcess({ CDK_DEFAULT_REGION: 'eu-west-1' })).toEqual({ region: 'eu-west-1' });
    expect(environmentFromProcess({ CDK_DEFAULT_ACCOUNT: '111111111111', CDK_DEFAULT_REGION: 'us-east-1' })).toEqual({
      account: '111111111111',
      region: 'us-east-1',
    });
  });
});

describe('SmartLaunch props', () => {
  it('rejects a custom domain that does not serve publicUrl, listing every problem', () => {
    const stack = new Stack(testApp(), 'S');
    expect(
      () =>
        new SmartLaunch(stack, 'SmartLaunch', {
          config: awsConfig('acme', { publicUrl: 'https://smart.acme.example/a/b' }),
          api: { customDomain: { domainName: 'other.example', certificateArn: 'arn:aws:acm:us-east-1:111111111111:certificate/x' } },
          functions: { launch: { reservedConcurrency: 0 } },
        }),
    ).toThrowError(
      [
        'SmartLaunch for "acme" is misconfigured:',
        '  - api.customDomain.domainName "other.example" must be the host of publicUrl (smart.acme.example)',
        '  - publicUrl may have at most one path segment on a custom domain ("/a/b")',
        '  - functions.launch.reservedConcurrency must be a positive integer (got 0)',
      ].join('\n'),
    );
  });

  it('maps a one-segment publicUrl path to the base path of the custom domain', () => {
    const stack = new Stack(testApp(), 'S');
    new SmartLaunch(stack, 'SmartLaunch', {
      config: awsConfig('acme', { publicUrl: 'https://smart.acme.example/ehr' }),
      api: { customDomain: { domainName: 'smart.acme.example', certificateArn: 'arn:aws:acm:us-east-1:111111111111:certificate/x' } },
    });
    Template.fromStack(stack).hasResourceProperties('AWS::ApiGateway::BasePathMapping', { BasePath: 'ehr' });
  });

  it('refuses a config too large for the Lambda environment', () => {
    const issuers = Array.from({ length: 40 }, (_, i) => ({
      iss: `https://ehr${i}.acme.example/fhir/r4/with/a/rather/long/path`,
      clientId: `client-${i}-${'x'.repeat(20)}`,
      clientAuth: 'client_secret_basic',
      clientSecret: SECRET_ARN,
      scope: 'launch openid fhirUser patient/*.rs offline_access',
    }));
    const stack = new Stack(testApp(), 'S');
    expect(() => new SmartLaunch(stack, 'SmartLaunch', { config: awsConfig('acme', { issuers }) })).toThrowError(
      /Lambda environments hold 4 KB in total/,
    );
  });

  it('grants nothing from Secrets Manager when no issuer has a secret', () => {
    const stack = new Stack(testApp(), 'S');
    const config = awsConfig('acme', {
      issuers: [{ iss: 'https://ehr.acme.example/fhir', clientId: 'a', clientAuth: 'none', scope: 'launch', default: true }],
    });
    new SmartLaunch(stack, 'SmartLaunch', { config });
    const text = JSON.stringify(resourcesOf(Template.fromStack(stack), 'AWS::IAM::ManagedPolicy'));
    expect(text).not.toContain('secretsmanager:');
  });
});
