/**
 * Names of the environment variables the deployed functions read. The CDK construct sets them from
 * this same constant, so the two cannot drift apart.
 */
export const ENV = {
  /** The validated customer config, as JSON. */
  config: 'SMART_LAUNCH_CONFIG',
  tableName: 'SMART_LAUNCH_TABLE',
  kmsKeyId: 'SMART_LAUNCH_KMS_KEY_ID',
  /** ARN of the asymmetric KMS key (RSA) that signs RS384 client assertions now (`private_key_jwt`). */
  signingKeyRs384: 'SMART_LAUNCH_SIGNING_KEY_RS384',
  /** ARN of the asymmetric KMS key (ECC_NIST_P384) that signs ES384 client assertions now. */
  signingKeyEs384: 'SMART_LAUNCH_SIGNING_KEY_ES384',
  /** Comma-separated ARNs of keys published in the JWKS without signing yet: the successors of a rotation. */
  signingKeysNext: 'SMART_LAUNCH_SIGNING_KEYS_NEXT',
  /** API Gateway's integration timeout of the function's routes, in ms: the handlers answer before it. */
  integrationTimeoutMs: 'SMART_LAUNCH_INTEGRATION_TIMEOUT_MS',
  /** Name of the dedicated audit log group; unset: no audit trail is written. */
  auditLogGroup: 'SMART_LAUNCH_AUDIT_LOG_GROUP',
  /** The stack's metric namespace, for functions that do not read the config (`jwks`). */
  metricNamespace: 'SMART_LAUNCH_METRIC_NAMESPACE',
} as const;
