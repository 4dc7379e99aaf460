import { RemovalPolicy } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';
import { TABLE } from '../../shared/adapters/table.js';
import { DEFAULT_TABLE } from './session-table-defaults.js';

export interface SessionTableProps {
  readonly encryptionKey: kms.IKey;
  readonly overrides?: Partial<Pick<dynamodb.TableProps, 'deletionProtection' | 'pointInTimeRecoverySpecification' | 'tableClass'>>;
}

/**
 * The one table of `shared/adapters/table.ts` (partition key `pk`, TTL `ttl`).
 *
 * `Table` (AWS::DynamoDB::Table) rather than `TableV2` (AWS::DynamoDB::GlobalTable): a single-region
 * table needs no global-table resource, and cdk-nag's DynamoDB rules (PITR, backup plan) only
 * inspect AWS::DynamoDB::Table; with TableV2 they would pass without checking anything.
 */
export class SessionTable extends Construct {
  readonly table: dynamodb.Table;

  constructor(scope: Construct, id: string, props: SessionTableProps) {
    super(scope, id);
    this.table = new dynamodb.Table(this, 'Table', {
      ...DEFAULT_TABLE,
      ...props.overrides,
      partitionKey: { name: TABLE.partitionKey, type: dynamodb.AttributeType.STRING },
      timeToLiveAttribute: TABLE.ttlAttribute,
      encryption: dynamodb.TableEncryption.CUSTOMER_MANAGED,
      encryptionKey: props.encryptionKey,
      removalPolicy: RemovalPolicy.RETAIN,
    });
  }
}
