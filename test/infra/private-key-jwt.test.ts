import { type App, type PolicyValidationPluginReport } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { ENV } from '../../shared/config/env.js';
import { parseConfig, type Config } from '../../shared/config/schema.js';
import type { FunctionName } from '../../shared/http/routes.js';
import type { SmartLaunchProps } from '../../infra/constructs/smart-launch.js';
import { nagPacks } from '../../infra/nag.js';
import { SmartLaunchStack } from '../../infra/stacks/smart-launch-stack.js';
import { asArray, resourcesOf, SECRET_ARN, testApp, type Statement } from './helpers.js';

/** A customer with one RS384 and one ES384 private_key_jwt EHR, a client_secret_basic one and a public one. */
function jwtConfig(algs: ReadonlyArray<'RS384' | 'ES384'> = ['RS384', 'ES384']): Config {
  return parseConfig(
    {
      customer: 'jwt-health',
      publicUrl: 'https://abc123.execute-api.us-east-1.amazonaws.com/prod',
      cookie: { browserBinding: false },
      app: { url: 'https://app.jwt-health.example/' },
      issuers: [
        ...algs.map((alg, i) => ({
          iss: `https://ehr${i}.jwt-health.example/fhir/r4`,
          clientId: `jwt-app-${i}`,
          clientAuth: 'private_key_jwt',
          ...(alg === 'ES384' ? { signingAlg: 'ES384' } : {}),
          scope: 'launch openid fhirUser patient/*.rs offline_access',
          ...(i === 0 ? { default: true } : {}),
        })),
        { iss: 'https://basic.jwt-health.example/fhir', clientId: 'basic-app', clientAuth: 'client_secret_basic', clientSecret: SECRET_ARN, scope: 'launch openid' },
      ],
    },
    'aws',
    '(test)',
  );
}

function synth(config: Config, smartLaunch: Omit<SmartLaunchProps, 'config'> = {}): { app: App; template: Template } {
  const app = testApp();
  const stack = new SmartLaunchStack(app, 'SmartLaunch-jwt-health', { config, smartLaunch });
  return { app, template: Template.fromStack(stack) };
}

function functionsOf(template: Template): Map<FunctionName, { variables: Record<string, unknown>; statements: Statement[] }> {
  const policies = resourcesOf(template, 'AWS::IAM::ManagedPolicy');
  const out = new Map<FunctionName, { variables: Record<string, unknown>; statements: Statement[] }>();
  for (const fn of Object.values(resourcesOf(template, 'AWS::Lambda::Function'))) {
    const variables = (fn.Properties!.Environment as { Variables: Record<string, unknown> }).Variables;
    const role = (fn.Properties!.Role as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0];
    const policy = Object.values(policies).find((p) => (p.Properties!.Roles as Array<{ Ref: string }>)[0]!.Ref === role)!;
    out.set(String(variables.POWERTOOLS_SERVICE_NAME).replace(/^smart-launch-/, '') as FunctionName, {
      variables,
      statements: (policy.Properties!.PolicyDocument as { Statement: Statement[] }).Statement,
    });
  }
  return out;
}

const keyRef = (logicalIdPart: string) => ({ 'Fn::GetAtt': [expect.stringMatching(new RegExp(`Keys${logicalIdPart}[A-F0-9]{8}$`)), 'Arn'] });

/** The resources of a statement are exactly these keys, in any order (CDK sorts them). */
function expectKeys(resource: unknown, parts: string[]): void {
  const resources = asArray(resource);
  expect(resources).toHaveLength(parts.length);
  expect(resources).toEqual(expect.arrayContaining(parts.map(keyRef)));
}

describe('private_key_jwt in the CDK stack (AWS-06, SMART-CAUTH-08)', () => {
  const { app, template } = synth(jwtConfig());

  it('creates one non-exportable asymmetric KMS key per assertion algorithm, retained, with an alias each', () => {
    const asymmetric = Object.entries(resourcesOf(template, 'AWS::KMS::Key')).filter(([, k]) => k.Properties?.KeySpec !== undefined);
    expect(asymmetric.map(([, k]) => [k.Properties!.KeySpec, k.Properties!.KeyUsage]).sort()).toEqual([
      ['ECC_NIST_P384', 'SIGN_VERIFY'],
      ['RSA_3072', 'SIGN_VERIFY'],
    ]);
    for (const [, key] of asymmetric) {
      // KMS cannot rotate asymmetric keys; rotation is the construct's assertionKeys generations.
      expect(key.Properties!.EnableKeyRotation).toBe(false);
      expect(key.DeletionPolicy).toBe('Retain');
    }
    const aliases = Object.values(resourcesOf(template, 'AWS::KMS::Alias')).map((a) => a.Properties?.AliasName);
    expect(aliases).toEqual(expect.arrayContaining(['alias/smart-launch/jwt-health/client-assertion-rs384', 'alias/smart-launch/jwt-health/client-assertion-es384']));
  });

  it('creates only the key of the algorithm in use, and none without private_key_jwt', () => {
    const rsOnly = synth(jwtConfig(['RS384'])).template;
    expect(Object.values(resourcesOf(rsOnly, 'AWS::KMS::Key')).map((k) => k.Properties?.KeySpec).filter(Boolean)).toEqual(['RSA_3072']);
    const esOnly = synth(jwtConfig(['ES384'])).template;
    expect(Object.values(resourcesOf(esOnly, 'AWS::KMS::Key')).map((k) => k.Properties?.KeySpec).filter(Boolean)).toEqual(['ECC_NIST_P384']);
    const none = synth(jwtConfig([])).template;
    expect(Object.values(resourcesOf(none, 'AWS::KMS::Key')).map((k) => k.Properties?.KeySpec).filter(Boolean)).toEqual([]);
  });

  it('grants kms:Sign (RAW, RS384/ES384 algorithms only) and kms:GetPublicKey on the assertion keys to the functions that authenticate, GetPublicKey alone to jwks', () => {
    const functions = functionsOf(template);
    const expected: Record<FunctionName, string[]> = {
      launch: ['dynamodb:DeleteItem', 'dynamodb:PutItem', 'kms:Decrypt', 'kms:GenerateDataKey', 'kms:GetPublicKey', 'kms:Sign', 'secretsmanager:GetSecretValue'],
      sessions: ['dynamodb:DeleteItem', 'dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:Scan', 'dynamodb:UpdateItem', 'kms:Decrypt', 'kms:GetPublicKey', 'kms:Sign', 'secretsmanager:GetSecretValue'],
      'fhir-proxy': ['dynamodb:DeleteItem', 'dynamodb:GetItem', 'dynamodb:UpdateItem', 'kms:Decrypt', 'kms:GetPublicKey', 'kms:Sign', 'secretsmanager:GetSecretValue'],
      jwks: ['kms:GetPublicKey'],
    };
    expect([...functions.keys()].sort()).toEqual(Object.keys(expected).sort());
    for (const [fn, { statements }] of functions) {
      const own = statements.filter((s) => !['WriteOwnLogs', 'TableKeyViaDynamoDB', 'AppendAuditTrail', 'WriteTraces'].includes(s.Sid ?? ''));
      expect([...new Set(own.flatMap((s) => asArray(s.Action)))].sort(), fn).toEqual(expected[fn]);
      for (const s of own) for (const resource of asArray(s.Resource)) expect(resource).not.toBe('*');
      const sign = statements.find((s) => s.Sid === 'ClientAssertionSign');
      if (fn === 'jwks') {
        expect(sign).toBeUndefined();
        expect(statements.map((s) => s.Sid)).toEqual(['WriteOwnLogs', 'ClientAssertionPublicKeys', 'WriteTraces']);
      } else {
        expect(sign!.Action).toBe('kms:Sign');
        expectKeys(sign!.Resource, ['ClientAssertionRS384', 'ClientAssertionES384']);
        expect(sign!.Condition).toEqual({ StringEquals: { 'kms:MessageType': 'RAW', 'kms:SigningAlgorithm': ['RSASSA_PKCS1_V1_5_SHA_384', 'ECDSA_SHA_384'] } });
      }
      const publicKeys = statements.find((s) => s.Sid === 'ClientAssertionPublicKeys')!;
      expectKeys(publicKeys.Resource, ['ClientAssertionRS384', 'ClientAssertionES384']);
    }
  });

  it('tells the signing functions their key ids, and the jwks function its key ids only', () => {
    for (const [fn, { variables }] of functionsOf(template)) {
      expect(variables[ENV.signingKeyRs384], fn).toEqual(keyRef('ClientAssertionRS384'));
      expect(variables[ENV.signingKeyEs384], fn).toEqual(keyRef('ClientAssertionES384'));
      expect(variables[ENV.signingKeysNext], fn).toBeUndefined();
      if (fn === 'jwks') {
        expect(Object.keys(variables).sort()).toEqual([ENV.signingKeyEs384, ENV.signingKeyRs384, 'POWERTOOLS_SERVICE_NAME', ENV.metricNamespace].sort());
        expect(variables[ENV.metricNamespace]).toBe('SmartLaunch/jwt-health');
      } else {
        expect(variables[ENV.config]).toBeDefined();
      }
    }
  });

  it('routes GET /.well-known/jwks.json to the jwks function', () => {
    const resources = Object.values(resourcesOf(template, 'AWS::ApiGateway::Resource')).map((r) => r.Properties?.PathPart);
    expect(resources).toEqual(expect.arrayContaining(['.well-known', 'jwks.json']));
  });

  it('has no unacknowledged cdk-nag finding (AwsSolutions + HIPAA Security)', () => {
    app.synth();
    const findings = nagPacks(app).flatMap((pack) =>
      (pack.validateScope(app) as PolicyValidationPluginReport).violations.flatMap((v) => v.violatingResources.map((r) => `${v.ruleName} ${r.constructPath ?? ''}`)),
    );
    expect(findings).toEqual([]);
  });
});

describe('assertion key rotation (SMART-REG-04: the successor is published before it signs)', () => {
  it('step 1, publishNext: creates the next keys, publishes them through jwks, and still signs with the current ones', () => {
    const { template, app } = synth(jwtConfig(['RS384']), { assertionKeys: { publishNext: true } });

    const keys = Object.keys(resourcesOf(template, 'AWS::KMS::Key')).filter((id) => id.includes('ClientAssertion'));
    expect(keys.map((id) => id.replace(/[A-F0-9]{8}$/, '').replace(/^.*Keys/, '')).sort()).toEqual(['ClientAssertionRS384', 'ClientAssertionRS384G2']);
    const aliases = Object.values(resourcesOf(template, 'AWS::KMS::Alias')).map((a) => a.Properties?.AliasName);
    expect(aliases).toEqual(expect.arrayContaining(['alias/smart-launch/jwt-health/client-assertion-rs384', 'alias/smart-launch/jwt-health/client-assertion-rs384-next']));
    const functions = functionsOf(template);
    expect(functions.get('jwks')!.variables[ENV.signingKeysNext]).toEqual(keyRef('ClientAssertionRS384G2'));
    expectKeys(functions.get('jwks')!.statements.find((s) => s.Sid === 'ClientAssertionPublicKeys')!.Resource, ['ClientAssertionRS384', 'ClientAssertionRS384G2']);
    for (const fn of ['launch', 'sessions', 'fhir-proxy'] as const) {
      expect(functions.get(fn)!.variables[ENV.signingKeyRs384]).toEqual(keyRef('ClientAssertionRS384'));
      expectKeys(functions.get(fn)!.statements.find((s) => s.Sid === 'ClientAssertionSign')!.Resource, ['ClientAssertionRS384']);
    }
    app.synth();
    expect(nagPacks(app).flatMap((pack) => (pack.validateScope(app) as PolicyValidationPluginReport).violations)).toEqual([]);
  });

  it('step 2, generation 2: the new keys sign, the current alias moves to them in place, the old keys leave the template', () => {
    const { template } = synth(jwtConfig(['RS384']), { assertionKeys: { generation: 2 } });

    const keys = Object.keys(resourcesOf(template, 'AWS::KMS::Key')).filter((id) => id.includes('ClientAssertion'));
    expect(keys.map((id) => id.replace(/[A-F0-9]{8}$/, '').replace(/^.*Keys/, ''))).toEqual(['ClientAssertionRS384G2']);
    const alias = Object.entries(resourcesOf(template, 'AWS::KMS::Alias')).find(([, a]) => String(a.Properties?.AliasName).endsWith('client-assertion-rs384'))!;
    // Same logical id as generation 1's alias: CloudFormation retargets it instead of creating a duplicate name.
    expect(alias[0]).toMatch(/KeysClientAssertionRS384Alias[A-F0-9]{8}$/);
    expect(functionsOf(template).get('launch')!.variables[ENV.signingKeyRs384]).toEqual(keyRef('ClientAssertionRS384G2'));
  });

  it('refuses a generation that is not a positive integer', () => {
    expect(() => synth(jwtConfig(['RS384']), { assertionKeys: { generation: 0 } })).toThrow(/generation must be a positive integer/);
  });
});
