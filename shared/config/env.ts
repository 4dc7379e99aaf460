/**
 * Names of the environment variables the deployed functions read. The CDK construct sets them from
 * this same constant, so the two cannot drift apart.
 */
export const ENV = {
  /** The validated customer config, as JSON. */
  config: 'SMART_LAUNCH_CONFIG',
  tableName: 'SMART_LAUNCH_TABLE',
  kmsKeyId: 'SMART_LAUNCH_KMS_KEY_ID',
} as const;
