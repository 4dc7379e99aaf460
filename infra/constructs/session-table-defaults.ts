import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';

/**
 * The table's defaults. Session data is short-lived (hours), so capacity is on demand; PITR and
 * deletion protection guard against an accidental wipe of every live session at once.
 */
export const DEFAULT_TABLE = {
  billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
  pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
  deletionProtection: true,
  tableClass: dynamodb.TableClass.STANDARD,
} as const;
