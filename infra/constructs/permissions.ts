import { Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type { Config } from '../../shared/config/schema.js';
import { encryptionContext, logoutJtiRecordKey, sessionKey, transactionKey } from '../../shared/core/sealed-records.js';
import type { FunctionName } from '../../shared/http/routes.js';

/**
 * What each function may do, and nothing else (docs/design.md §3: least privilege per function). Everything here is
 * derived from the code the functions run (`shared/core/records.ts`, `shared/adapters/*`), so a
 * change of key prefix or encryption context cannot silently drift away from the IAM conditions.
 */

/** The partition-key prefix of a record kind, taken from the key builders themselves (`txn#`, `ses#`). */
function prefixOf(key: string): string {
  const hash = key.indexOf('#');
  if (hash <= 0) throw new Error(`record key "${key}" has no "kind#" prefix; the IAM leading-key conditions depend on one`);
  return key.slice(0, hash + 1);
}

export const KEY_PREFIX = {
  transaction: prefixOf(transactionKey('probe')),
  session: prefixOf(sessionKey('probe')),
  logoutJti: prefixOf(logoutJtiRecordKey('probe')),
} as const;

type TableAction = 'dynamodb:GetItem' | 'dynamodb:PutItem' | 'dynamodb:DeleteItem' | 'dynamodb:UpdateItem';
type TokenKeyAction = 'kms:GenerateDataKey' | 'kms:Decrypt';

export interface FunctionAccess {
  /** DynamoDB item actions, each limited to the partition-key prefixes it is used on. */
  readonly table: ReadonlyArray<{ readonly actions: readonly TableAction[]; readonly keyPrefixes: readonly string[] }>;
  /**
   * `dynamodb:Scan` of the table (filtered to one issuer's sessions): a Scan has no partition key, so
   * no leading-key condition can apply. Only where a request must find sessions by what is sealed in them.
   */
  readonly scanTable?: boolean;
  /** Envelope-encryption calls on the token key (always under the encryption-context condition). */
  readonly tokenKey: readonly TokenKeyAction[];
  /** Reads the client secrets the config names (Secrets Manager `GetSecretValue`). */
  readonly clientSecrets: boolean;
  /**
   * The `private_key_jwt` assertion keys (asymmetric KMS keys), when the stack has any: `sign` =
   * `kms:Sign` (RAW, the two assertion algorithms only) + `kms:GetPublicKey` (for the `kid`) on the
   * keys that sign now; `publish` = `kms:GetPublicKey` on every published key (current and next).
   */
  readonly assertionKeys: 'sign' | 'publish' | 'none';
}

/** The calls each handler makes (`shared/runtime/aws-deps.ts` → adapters), per function. */
export const FUNCTION_ACCESS: Readonly<Record<FunctionName, FunctionAccess>> = {
  // GET /launch: GenerateDataKey + PutItem(txn#). GET /callback: DeleteItem(txn#) (the single-use
  // `takeTransaction`), Decrypt, the token request (client secret), PutItem(ses#).
  launch: {
    table: [
      { actions: ['dynamodb:PutItem'], keyPrefixes: [KEY_PREFIX.transaction, KEY_PREFIX.session] },
      { actions: ['dynamodb:DeleteItem'], keyPrefixes: [KEY_PREFIX.transaction] },
    ],
    tokenKey: ['kms:GenerateDataKey', 'kms:Decrypt'],
    clientSecrets: true,
    assertionKeys: 'sign',
  },
  // GET /sessions/{id}: GetItem + Decrypt. POST /sessions/{id}/refresh: the refresh lease and its
  // completion are conditional UpdateItems (invariant 8); a refused refresh deletes the
  // session. POST /sessions/{id}/logout: revocation at the EHR (client authentication) + DeleteItem.
  // POST /backchannel-logout: PutItem(jti#) against replay, a Scan of the issuer's sessions, Decrypt,
  // revocation and DeleteItem(ses#) of each matching session.
  sessions: {
    table: [
      { actions: ['dynamodb:GetItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'], keyPrefixes: [KEY_PREFIX.session] },
      { actions: ['dynamodb:PutItem'], keyPrefixes: [KEY_PREFIX.logoutJti] },
    ],
    scanTable: true,
    tokenKey: ['kms:Decrypt'],
    clientSecrets: true,
    assertionKeys: 'sign',
  },
  // ANY /sessions/{id}/fhir/{proxy+}: GetItem + Decrypt; refreshing near expiry or after an upstream
  // 401 takes the same lease (UpdateItem), authenticates the client, and deletes a session whose
  // refresh the EHR refused.
  'fhir-proxy': {
    table: [{ actions: ['dynamodb:GetItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'], keyPrefixes: [KEY_PREFIX.session] }],
    tokenKey: ['kms:Decrypt'],
    clientSecrets: true,
    assertionKeys: 'sign',
  },
  // GET /.well-known/jwks.json: GetPublicKey of each published assertion key (once per container);
  // no table, no token key, no secret.
  jwks: {
    table: [],
    tokenKey: [],
    clientSecrets: false,
    assertionKeys: 'publish',
  },
};

/**
 * The IAM condition that only lets the token key be used with this customer's encryption context:
 * exactly the keys `encryptionContext()` produces, `service` and `customer` pinned, and the record
 * name a session key. A ciphertext of another customer or service cannot be opened with this role.
 */
export function encryptionContextCondition(config: Config): Record<string, Record<string, unknown>> {
  const probe = encryptionContext(config, sessionKey('probe'));
  const keys = Object.keys(probe).sort();
  for (const required of ['service', 'customer', 'session']) {
    if (!keys.includes(required)) throw new Error(`encryption context has no "${required}" key; update the KMS conditions`);
  }
  return {
    StringEquals: {
      'kms:EncryptionContext:service': probe.service,
      'kms:EncryptionContext:customer': probe.customer,
    },
    StringLike: { 'kms:EncryptionContext:session': `${KEY_PREFIX.session}*` },
    'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': keys },
    // ForAllValues is vacuously true on an empty context: insist that the session key is present.
    Null: { 'kms:EncryptionContext:session': 'false' },
  };
}

/**
 * IAM matches a secret's full ARN, which ends in `-` and six random characters; a config may name it
 * by its partial ARN (the name alone). The two cannot be told apart by looking (a name such as
 * `smart-launch/acme/ehr-client` also ends in `-` and six characters), so the grant names both: the
 * ARN as written (a full ARN) and the ARN plus `-??????` (a partial ARN: that name, any suffix).
 */
export function secretResourceArns(arn: string): string[] {
  return [arn, `${arn}-??????`];
}

export interface PolicyTargets {
  readonly config: Config;
  readonly tableArn: string;
  readonly tableKeyArn: string;
  readonly tokenKeyArn: string;
  readonly logGroupArn: string;
  /** Customer-managed keys that encrypt the client secrets, when not `aws/secretsmanager`. */
  readonly secretKeyArns?: readonly string[];
  /** The asymmetric `private_key_jwt` keys: those that sign now, and every published one (current + next). */
  readonly assertionKeyArns?: { readonly signing: readonly string[]; readonly published: readonly string[] };
}

/** The KMS signing algorithms of client assertions (RS384, ES384: `shared/adapters/kms-signer.ts`). */
export const ASSERTION_SIGNING_ALGORITHMS = ['RSASSA_PKCS1_V1_5_SHA_384', 'ECDSA_SHA_384'] as const;

/** Every statement of one function's policy: no wildcard action, no `*` resource. */
export function functionPolicyStatements(scope: Stack, fn: FunctionName, targets: PolicyTargets): iam.PolicyStatement[] {
  const access = FUNCTION_ACCESS[fn];
  const statements: iam.PolicyStatement[] = [
    new iam.PolicyStatement({
      sid: 'WriteOwnLogs',
      actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
      resources: [targets.logGroupArn],
    }),
  ];

  access.table.forEach((grant, index) => {
    statements.push(
      new iam.PolicyStatement({
        sid: `TableItems${index}`,
        actions: [...grant.actions],
        resources: [targets.tableArn],
        conditions: {
          'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': grant.keyPrefixes.map((p) => `${p}*`) },
        },
      }),
    );
  });

  if (access.scanTable) {
    statements.push(new iam.PolicyStatement({ sid: 'TableScan', actions: ['dynamodb:Scan'], resources: [targets.tableArn] }));
  }

  // The table is encrypted under its own customer-managed key. DynamoDB uses that key on behalf of
  // the caller, so the caller needs it too, but only through DynamoDB (never directly).
  if (access.table.length > 0) {
    statements.push(
      new iam.PolicyStatement({
        sid: 'TableKeyViaDynamoDB',
        actions: ['kms:Decrypt', 'kms:DescribeKey', 'kms:Encrypt', 'kms:GenerateDataKey'],
        resources: [targets.tableKeyArn],
        conditions: { StringEquals: { 'kms:ViaService': `dynamodb.${scope.region}.${scope.urlSuffix}` } },
      }),
    );
  }

  if (access.tokenKey.length > 0) {
    statements.push(
      new iam.PolicyStatement({
        sid: 'TokenEnvelopeKey',
        actions: [...access.tokenKey],
        resources: [targets.tokenKeyArn],
        conditions: encryptionContextCondition(targets.config),
      }),
    );
  }

  // private_key_jwt (AWS-06): the private keys never leave KMS; a role may only have KMS sign raw
  // JWS signing inputs with the two assertion algorithms, and read public keys (for `kid` and JWKS).
  const assertionKeys = targets.assertionKeyArns;
  if (access.assertionKeys === 'sign' && assertionKeys !== undefined && assertionKeys.signing.length > 0) {
    statements.push(
      new iam.PolicyStatement({
        sid: 'ClientAssertionSign',
        actions: ['kms:Sign'],
        resources: [...assertionKeys.signing],
        conditions: {
          StringEquals: { 'kms:MessageType': 'RAW', 'kms:SigningAlgorithm': [...ASSERTION_SIGNING_ALGORITHMS] },
        },
      }),
      new iam.PolicyStatement({
        sid: 'ClientAssertionPublicKeys',
        actions: ['kms:GetPublicKey'],
        resources: [...assertionKeys.signing],
      }),
    );
  }
  if (access.assertionKeys === 'publish' && assertionKeys !== undefined && assertionKeys.published.length > 0) {
    statements.push(
      new iam.PolicyStatement({
        sid: 'ClientAssertionPublicKeys',
        actions: ['kms:GetPublicKey'],
        resources: [...assertionKeys.published],
      }),
    );
  }

  const secretArns = [
    ...new Set(targets.config.issuers.flatMap((issuer) => (issuer.clientSecret === undefined ? [] : [issuer.clientSecret]))),
  ];
  if (access.clientSecrets && secretArns.length > 0) {
    statements.push(
      new iam.PolicyStatement({
        sid: 'ClientSecrets',
        actions: ['secretsmanager:GetSecretValue'],
        resources: secretArns.flatMap(secretResourceArns),
      }),
    );
    const keys = targets.secretKeyArns ?? [];
    if (keys.length > 0) {
      statements.push(
        new iam.PolicyStatement({
          sid: 'ClientSecretKeysViaSecretsManager',
          actions: ['kms:Decrypt'],
          resources: [...keys],
          conditions: { StringLike: { 'kms:ViaService': `secretsmanager.*.${scope.urlSuffix}` } },
        }),
      );
    }
  }
  return statements;
}
