import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { ENV } from '../../shared/config/env.js';
import type { SmartFunction } from './smart-function.js';

/** HIPAA keeps security documentation six years (45 CFR 164.316(b)(2)); the audit trail follows by default. */
export const DEFAULT_AUDIT_RETENTION = logs.RetentionDays.SIX_YEARS;

/** The audit log group of a customer: a fixed name, so its key policy can name exactly it. */
export const auditLogGroupName = (customer: string) => `/smart-launch/${customer}/audit`;

/** What may read the trail: export and query, nothing that writes or deletes. */
export const AUDIT_READ_ACTIONS = ['logs:DescribeLogStreams', 'logs:FilterLogEvents', 'logs:GetLogEvents', 'logs:StartQuery'] as const;
/** What the functions may do with it: append only. */
export const AUDIT_WRITE_ACTIONS = ['logs:CreateLogStream', 'logs:PutLogEvents'] as const;

export interface AuditLogProps {
  readonly customer: string;
  /** The functions that write audit records (sign-in, refresh, logout, proxied FHIR): append only. */
  readonly writers: readonly SmartFunction[];
  /** Roles of the people or tools that may read the trail (security review, SIEM export); nobody else gets a grant. */
  readonly readers?: readonly iam.IRole[];
  readonly retention?: logs.RetentionDays;
}

/**
 * The audit trail of a customer stack, apart from the operational logs: its own log group
 * (`/smart-launch/{customer}/audit`), its own rotating KMS key that CloudWatch Logs may use for this
 * log group only, its own retention (six years by default), retained when the stack goes away.
 * The functions may only append (`CreateLogStream`, `PutLogEvents` on this group); reading is a
 * separate managed policy given to the `readers` named, never to the functions.
 */
export class AuditLog extends Construct {
  readonly key: kms.Key;
  readonly logGroup: logs.LogGroup;
  readonly readPolicy: iam.ManagedPolicy | undefined;

  constructor(scope: Construct, id: string, props: AuditLogProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const name = auditLogGroupName(props.customer);
    const arn = `arn:${stack.partition}:logs:${stack.region}:${stack.account}:log-group:${name}`;
    this.key = new kms.Key(this, 'Key', {
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
      pendingWindow: Duration.days(30),
      alias: `alias/smart-launch/${props.customer}/audit`,
      description: `smart-launch ${props.customer}: the audit trail log group ${name}`,
    });
    // CloudWatch Logs encrypts on the service side, for this one log group only.
    // https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/encrypt-log-data-kms.html
    this.key.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'CloudWatchLogsForTheAuditTrailOnly',
        principals: [new iam.ServicePrincipal(`logs.${stack.region}.amazonaws.com`)],
        actions: ['kms:Encrypt*', 'kms:Decrypt*', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:Describe*'],
        resources: ['*'],
        conditions: { ArnEquals: { 'kms:EncryptionContext:aws:logs:arn': arn } },
      }),
    );
    this.logGroup = new logs.LogGroup(this, 'LogGroup', {
      logGroupName: name,
      encryptionKey: this.key,
      retention: props.retention ?? DEFAULT_AUDIT_RETENTION,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    for (const writer of props.writers) {
      writer.policy.addStatements(
        new iam.PolicyStatement({
          sid: 'AppendAuditTrail',
          actions: [...AUDIT_WRITE_ACTIONS],
          // The group's ARN attribute (`…:log-group:{name}:*`) covers its streams and nothing else.
          resources: [this.logGroup.logGroupArn],
        }),
      );
      writer.function.addEnvironment(ENV.auditLogGroup, name);
    }
    this.readPolicy =
      props.readers && props.readers.length > 0
        ? new iam.ManagedPolicy(this, 'ReadPolicy', {
            description: `smart-launch ${props.customer}: read the audit trail (export, query)`,
            statements: [new iam.PolicyStatement({ sid: 'ReadAuditTrail', actions: [...AUDIT_READ_ACTIONS], resources: [this.logGroup.logGroupArn] })],
            roles: [...props.readers],
          })
        : undefined;
  }
}
