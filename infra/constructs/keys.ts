import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';

export interface SmartLaunchKeysProps {
  readonly customer: string;
  /** Days a scheduled key deletion waits (7-30). */
  readonly pendingWindow?: Duration;
}

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
