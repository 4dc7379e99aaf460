import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';
import type { SigningAlg } from '../../shared/config/schema.js';

/**
 * Rotation of the `private_key_jwt` keys (asymmetric KMS keys have no automatic rotation):
 * 1. `publishNext: true` creates generation + 1 beside the current keys and publishes it in the
 *    JWKS; assertions are still signed with `generation`. Deploy, and wait until every EHR has
 *    re-fetched the JWKS (the JWKS says `max-age=300`; EHRs may cache longer, allow a day).
 * 2. `generation: n + 1` (and `publishNext` off): the new keys sign; the old ones leave the JWKS
 *    (assertions live two minutes, so nothing signed with them is still in flight). The old keys
 *    are retained in the account (RETAIN); schedule their deletion once nothing refers to them.
 */
export interface AssertionKeyRotation {
  /** The generation of keys that sign (default 1). */
  readonly generation?: number;
  /** Create and publish the next generation's keys too (step 1 of a rotation). */
  readonly publishNext?: boolean;
}

export interface SmartLaunchKeysProps {
  readonly customer: string;
  /** Days a scheduled key deletion waits (7-30). */
  readonly pendingWindow?: Duration;
  /** The `private_key_jwt` algorithms the config signs with: one asymmetric key each (none: no key). */
  readonly assertionAlgs?: readonly SigningAlg[];
  readonly assertionRotation?: AssertionKeyRotation;
}

/** KMS key spec of each assertion algorithm (AWS-06): RSA 3072 for RS384, NIST P-384 for ES384. */
export const ASSERTION_KEY_SPEC: Readonly<Record<SigningAlg, kms.KeySpec>> = {
  RS384: kms.KeySpec.RSA_3072,
  ES384: kms.KeySpec.ECC_NIST_P384,
};

/**
 * One symmetric customer-managed key per purpose, each rotated yearly and retained with the stack
 * (deleting a key makes everything under it unreadable, so that is a deliberate manual act):
 * - `tokens`: envelope encryption of the session records (the functions' KMS calls);
 * - `table`: DynamoDB server-side encryption of the table;
 * - `observability`: the stack's CloudWatch log groups and its SNS alarm topic.
 * Separate keys keep the grants apart: a role that may decrypt log data can open no session.
 */
export class SmartLaunchKeys extends Construct {
  readonly tokens: kms.Key;
  readonly table: kms.Key;
  readonly observability: kms.Key;
  /** The asymmetric keys that sign `private_key_jwt` assertions now, by algorithm (empty without `private_key_jwt`). */
  readonly assertion: Readonly<Partial<Record<SigningAlg, kms.Key>>>;
  /** Their successors, published in the JWKS during a rotation (`assertionRotation.publishNext`). */
  readonly assertionNext: readonly kms.Key[];

  constructor(scope: Construct, id: string, props: SmartLaunchKeysProps) {
    super(scope, id);
    const common = {
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
      pendingWindow: props.pendingWindow ?? Duration.days(30),
    };
    const alias = (purpose: string) => `alias/smart-launch/${props.customer}/${purpose}`;

    this.tokens = new kms.Key(this, 'Tokens', {
      ...common,
      alias: alias('tokens'),
      description: `smart-launch ${props.customer}: envelope encryption of session tokens (encryption context service/customer/session)`,
    });
    this.table = new kms.Key(this, 'Table', {
      ...common,
      alias: alias('table'),
      description: `smart-launch ${props.customer}: DynamoDB table encryption at rest`,
    });
    this.observability = new kms.Key(this, 'Observability', {
      ...common,
      alias: alias('observability'),
      description: `smart-launch ${props.customer}: CloudWatch Logs and the alarm topic`,
    });

    // private_key_jwt: one asymmetric SIGN_VERIFY key per algorithm in use; the private key never
    // leaves KMS (SMART-CAUTH-08). Default key policy (the account administers it); the functions get
    // kms:Sign / kms:GetPublicKey through their own IAM policies (permissions.ts).
    const generation = props.assertionRotation?.generation ?? 1;
    if (!Number.isInteger(generation) || generation < 1) throw new Error(`assertion key generation must be a positive integer (got ${generation})`);
    const assertionKey = (alg: SigningAlg, gen: number, role: 'current' | 'next') => {
      const name = `ClientAssertion${alg}${gen === 1 ? '' : `G${gen}`}`;
      const key = new kms.Key(this, name, {
        keySpec: ASSERTION_KEY_SPEC[alg],
        keyUsage: kms.KeyUsage.SIGN_VERIFY,
        // KMS cannot rotate asymmetric keys itself: rotation is `assertionRotation` (see above).
        enableKeyRotation: false,
        removalPolicy: RemovalPolicy.RETAIN,
        pendingWindow: common.pendingWindow,
        description: `smart-launch ${props.customer}: ${alg} private_key_jwt client assertions, generation ${gen}`,
      });
      // Alias construct ids follow the role, not the generation: moving to the next generation
      // retargets the same alias in place instead of creating a second alias of the same name.
      new kms.Alias(this, `ClientAssertion${alg}${role === 'next' ? 'Next' : ''}Alias`, {
        aliasName: alias(`client-assertion-${alg.toLowerCase()}${role === 'next' ? '-next' : ''}`),
        targetKey: key,
      });
      return key;
    };
    const algs = [...new Set(props.assertionAlgs ?? [])];
    const assertion: Partial<Record<SigningAlg, kms.Key>> = {};
    for (const alg of algs) assertion[alg] = assertionKey(alg, generation, 'current');
    this.assertion = assertion;
    this.assertionNext = props.assertionRotation?.publishNext ? algs.map((alg) => assertionKey(alg, generation + 1, 'next')) : [];

    const stack = Stack.of(this);
    // CloudWatch Logs encrypts with the key of a log group on the service's side; the condition
    // keeps it to log groups of this account and region.
    // https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/encrypt-log-data-kms.html
    this.observability.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'CloudWatchLogsOfThisAccount',
        principals: [new iam.ServicePrincipal(`logs.${stack.region}.amazonaws.com`)],
        actions: ['kms:Encrypt*', 'kms:Decrypt*', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:Describe*'],
        resources: ['*'],
        conditions: {
          ArnLike: {
            'kms:EncryptionContext:aws:logs:arn': `arn:${stack.partition}:logs:${stack.region}:${stack.account}:log-group:*`,
          },
        },
      }),
    );
    // CloudWatch alarms publish to the encrypted SNS topic; SNS asks KMS on the alarm's behalf.
    // This is the statement AWS documents, without conditions: who may publish is decided by the
    // topic policy (this account's alarms only), and these two actions open nothing by themselves.
    // https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html
    this.observability.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'CloudWatchAlarmsToEncryptedTopic',
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        resources: ['*'],
      }),
    );
  }
}
