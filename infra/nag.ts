import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import {
  Validations,
  type IPolicyValidationContextBeta1,
  type IPolicyValidationPluginBeta1,
  type PolicyValidationPluginReportBeta1,
  type Stage,
} from 'aws-cdk-lib';
import { CfnFunction } from 'aws-cdk-lib/aws-lambda';
import { CfnGuardValidator } from '@cdklabs/cdk-validator-cfnguard';
import { AwsSolutionsChecks, HIPAASecurityChecks, type NagPack, type NagPackProps } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import type { SmartLaunch } from './constructs/smart-launch.js';

/**
 * cdk-nag v3 wiring: the rule packs (CDK-native validation plugins) and every acknowledgment, each
 * with the reason a security reviewer reads. Acknowledgments sit on the narrowest construct (the
 * CloudFormation resource the finding names) and only when the finding applies: supplying a WAF ACL
 * or reserved concurrency removes the matching acknowledgment and lets the rule pass on its own.
 *
 * v3 API: `Validations.of(app).addPlugins(pack)` and `Validations.of(c).acknowledge({ id, reason })`;
 * `Aspects`/`NagSuppressions` are cdk-nag v2 API and fail under v3 (`aspect.visit is not a function`).
 */

/** The packs this project is held to: AWS Solutions and HIPAA Security. */
export function nagPacks(scope: Stage, props: NagPackProps = {}): NagPack[] {
  return [new AwsSolutionsChecks(scope, props), new HIPAASecurityChecks(scope, props)];
}

/**
 * Runs both packs at synth: any unacknowledged finding fails `cdk synth` ("Synthesis finished with
 * errors"; details in `cdk.out/policy-validation-report.json`). Acknowledged rules are also written
 * into the template metadata (`cdk_nag.rules_to_suppress`), so the reasons travel with it.
 */
export function addNagChecks(scope: Stage): void {
  Validations.of(scope).addPlugins(...nagPacks(scope, { verbose: true, writeSuppressionsToCloudFormation: true }));
}

/**
 * The AWS Control Tower proactive controls (cfn-guard rules, run offline by the bundled `cfn-guard`
 * binary of `@cdklabs/cdk-validator-cfnguard`) this design does not follow, each with its reason.
 * The plugin can only disable a rule for the whole app, so each reason covers every resource.
 */
export const GUARD_DISABLED_RULES: Readonly<Record<string, string>> = {
  'ct-apigateway-pr-1': 'Execution logging is off on purpose (same reason as AwsSolutions-APIG6): it would record session ids, code and state. Access logging is on.',
  'ct-apigateway-pr-2': 'X-Ray is off on purpose (same reason as HIPAA APIGWXrayEnabled): trace segments record request URLs with session ids, code and state.',
  'ct-lambda-pr-3': 'No VPC (same reason as HIPAA LambdaInsideVPC): the functions reach only public EHR endpoints and IAM-authenticated AWS endpoints.',
  'ct-lambda-pr-2':
    'Every Lambda permission names API Gateway as principal with the SourceArn of its own method; the rule accepts only a literal or ' +
    'a same-template Ref/GetAtt, not the Fn::Join that builds an execute-api ARN, nor a SourceAccount in an environment-agnostic stack.',
  'ct-kms-pr-3':
    'The keys use the default key policy (the account administers through IAM); no function policy grants kms:CreateGrant, and ' +
    'DynamoDB, CloudWatch Logs and SNS use the keys through their own service integrations.',
};

/** The folder of the Control Tower rules that `@cdklabs/cdk-validator-cfnguard` ships (one folder per service). */
export const CONTROL_TOWER_RULES = join(
  dirname(createRequire(import.meta.url).resolve('@cdklabs/cdk-validator-cfnguard/package.json')),
  'rules',
  'control-tower',
  'cfn-guard',
);

/** Every Control Tower rule file, with its text. */
export function controlTowerRules(): Array<{ readonly path: string; readonly name: string; readonly text: string }> {
  return readdirSync(CONTROL_TOWER_RULES, { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.guard'))
    .sort()
    .map((file) => {
      const path = join(CONTROL_TOWER_RULES, file);
      return { path, name: file.replace(/^.*\//, '').replace(/\.guard$/, ''), text: readFileSync(path, 'utf8') };
    });
}

/**
 * The resource types a Control Tower rule checks: the types its document-level selections name
 * (`let buckets = Resources.*[ Type == %S3_BUCKET_TYPE ]`, with `let S3_BUCKET_TYPE = "AWS::S3::Bucket"`
 * in the same file). A rule reaches other resources only through references from those
 * (`%doc.Resources[ keys == ... ]`), so on a template without these types it can only skip.
 * `undefined` when a selection is not of that shape: such a rule is always run.
 */
export function guardRuleTypes(text: string): string[] | undefined {
  const constants = new Map([...text.matchAll(/^\s*let\s+([A-Z0-9_]+)\s*=\s*["'](AWS::[A-Za-z0-9:]+)["']/gm)].map((m) => [m[1]!, m[2]!]));
  const selections = [...text.matchAll(/(?<![%.\w])Resources(\.\*)?\[([^\]]*)\]/g)]
    // `Resources[*]` inside a resource's properties (an EKS cluster's EncryptionConfig) is a property.
    .filter((m) => m[2]!.trim() !== '*')
    .map((m) => m[2]!.trim());
  if (selections.length === 0) return undefined;
  const types: string[] = [];
  for (const selection of selections) {
    if (!/^Type\s*==/.test(selection)) return undefined;
    const clauses = selection.split(/\s+or\s+/);
    for (const clause of clauses) {
      const type = /^Type\s*==\s*%([A-Z0-9_]+)$/.exec(clause.trim())?.[1];
      if (!type || !constants.has(type)) return undefined;
      types.push(constants.get(type)!);
    }
  }
  return [...new Set(types)];
}

/** The enabled Control Tower rules that can apply to templates holding `types` (see `guardRuleTypes`). */
export function guardRulesFor(types: ReadonlySet<string>): string[] {
  return controlTowerRules()
    .filter((rule) => !(rule.name in GUARD_DISABLED_RULES))
    .filter((rule) => guardRuleTypes(rule.text)?.some((type) => types.has(type)) ?? true)
    .map((rule) => rule.path);
}

/**
 * cfn-guard (Control Tower proactive controls) at synth, but for `GUARD_DISABLED_RULES`: the same
 * controls and the same report as `CfnGuardValidator` with every rule, but the `cfn-guard` binary is
 * given only the rules that check a resource type the templates hold (`guardRuleTypes`). Each rule
 * file costs it tens of milliseconds whether it applies or not: the sample stack needs 21 of the 237
 * rules, and the binary's run falls from about 16 s to about 3 s on a 2-core machine.
 */
class ControlTowerGuard implements IPolicyValidationPluginBeta1 {
  private readonly all = new CfnGuardValidator({ disabledRules: Object.keys(GUARD_DISABLED_RULES) });
  readonly name = this.all.name;
  readonly version = this.all.version;
  readonly ruleIds = this.all.ruleIds;

  validate(context: IPolicyValidationContextBeta1): PolicyValidationPluginReportBeta1 {
    const types = new Set<string>();
    for (const template of context.templatePaths) {
      const resources = (JSON.parse(readFileSync(template, 'utf8')) as { Resources?: Record<string, { Type?: unknown }> }).Resources ?? {};
      for (const resource of Object.values(resources)) if (typeof resource.Type === 'string') types.add(resource.Type);
    }
    const rules = guardRulesFor(types);
    if (rules.length === 0) return { success: true, violations: [] };
    return new CfnGuardValidator({ controlTowerRulesEnabled: false, rules }).validate(context);
  }
}

/** cfn-guard (Control Tower proactive controls) at synth, but for `GUARD_DISABLED_RULES`. */
export function guardValidator(): IPolicyValidationPluginBeta1 {
  return new ControlTowerGuard();
}

export interface NagAcknowledgment {
  readonly id: string;
  readonly reason: string;
}

/** The reasons, by rule, so the README and the tests can list exactly what is acknowledged. */
export const REASONS = {
  authorizer:
    'Public by protocol: /launch and /callback are top-level browser navigations from the EHR (SMART App Launch) that carry no ' +
    'credential an authorizer could check; every /sessions route is authorized inside its function by the 256-bit session id ' +
    'in the path plus the HttpOnly __Host- cookie bound to it (invariant 2, docs/design.md). A Cognito or IAM authorizer does not apply ' +
    'to EHR-launched browser flows.',
  requestValidation:
    'All routes are Lambda proxy integrations without request models; every input (query, path, headers, cookies) is validated ' +
    'with zod inside the function, which answers a clear 4xx with a stable error code (invariant 9, docs/design.md). An API Gateway ' +
    'validator would have nothing to check.',
  executionLogging:
    'Execution logging is off on purpose: at INFO it records method request paths and query strings, i.e. session ids and the ' +
    'OAuth authorization code and state (invariant 1, docs/design.md). (Access logging, which is on, already needs the account-wide ' +
    'API Gateway CloudWatch role; synth refuses a customer stack that neither creates it nor confirms it exists.) JSON access ' +
    'logs (route template, status, latencies, request id) and the functions\' structured logs cover operations.',
  cache:
    'Caching is deliberately disabled: every response is specific to one session (launch redirects, session context, FHIR data ' +
    'proxied with that session\'s token); a stage cache would risk serving one user\'s data to another. Handlers also send ' +
    'Cache-Control: no-store.',
  clientCertificate:
    'A stage client certificate authenticates API Gateway to HTTP backends. All integrations here are AWS_PROXY Lambda ' +
    'invocations signed with SigV4 by API Gateway, so a client certificate would never be presented to anything. Clients reach ' +
    'the API over TLS 1.2+ (custom domain security policy TLS_1_2).',
  xray:
    'X-Ray tracing is off on purpose: API Gateway trace segments record the request URL, which carries session ids in the path and ' +
    'the authorization code and state in the callback query (invariant 1, docs/design.md). Correlation ids (the API request id) join ' +
    'access logs and function logs instead.',
  waf:
    'No web ACL is supplied for this stack. Organisations usually attach their managed WAFv2 ACL centrally (Firewall Manager); ' +
    'set the "webAclArn" stack option to associate one here and this acknowledgment disappears. Stage and per-method throttling ' +
    'apply meanwhile.',
  backupPlan:
    'The table holds only short-lived records (launch transactions for minutes, sessions for at most the configured lifetime, ' +
    'default 8 h) whose tokens expire with them; restoring a backup would revive nothing usable. Point-in-time recovery (35 days), ' +
    'deletion protection and RETAIN guard against accidental loss; an AWS Backup plan would only keep encrypted copies of expired tokens longer.',
  lambdaDlq:
    'Invoked synchronously by API Gateway only: the caller receives the error response, and Lambda dead-letter queues apply to ' +
    'asynchronous invocations only, so a DLQ would never receive anything.',
  lambdaVpc:
    'The functions call the customer\'s EHRs (SMART discovery, token and FHIR endpoints) on the public internet and AWS services ' +
    '(DynamoDB, KMS, Secrets Manager) through IAM-authenticated TLS endpoints; they reach no private network resource. A VPC would ' +
    'add NAT cost and cold-start latency without narrowing any path.',
  lambdaConcurrency:
    'Not reserved: this function calls only KMS (GetPublicKey, once per key per container) and answers from memory, so it ' +
    'cannot pile up behind a slow EHR. The functions that call the EHR (launch, sessions, fhir-proxy) are reserved by default, ' +
    'so one customer\'s slow EHR can only exhaust its own stack\'s reservation, never the account pool the other customer ' +
    'stacks share; set "reservedConcurrency" to reserve this one too (this acknowledgment then disappears).',
  wafLogging:
    'The stack\'s own web ACL carries two blocking rules (per-client rate, request size). Full WAF logs would record every ' +
    'request\'s URI and query string, i.e. session ids and the OAuth code and state (invariant 1). Each rule publishes ' +
    'CloudWatch metrics (requests allowed and blocked), and the stage\'s access log records the WAF response code of every request.',
  xrayWrite:
    'xray:PutTraceSegments and xray:PutTelemetryRecords do not support resource-level permissions; "*" is the only resource ' +
    'they accept. The statement grants these two write-only actions and nothing else; traces hold hosts, operations, statuses ' +
    'and correlation ids, never URLs, paths or query strings (shared/ops/tracing.ts).',
  cloudWatchRoleManagedPolicy:
    'The account-level API Gateway logging role uses AmazonAPIGatewayPushToCloudWatchLogs, the AWS-maintained policy API Gateway ' +
    'requires for access logging; it is only created when the "createApiGatewayCloudWatchRole" stack option is set.',
} as const;

function acknowledge(construct: IConstruct | undefined, ...acks: NagAcknowledgment[]): void {
  if (!construct) throw new Error('cdk-nag acknowledgment target is missing');
  Validations.of(construct).acknowledge(...acks);
}

/** Acknowledges the findings `SmartLaunch` has by design, each on the resource it concerns. */
export function acknowledgeFindings(sl: SmartLaunch): void {
  for (const method of sl.api.methods) {
    acknowledge(
      method.node.defaultChild,
      { id: 'AwsSolutions-APIG4', reason: REASONS.authorizer },
      { id: 'AwsSolutions-COG4', reason: REASONS.authorizer },
    );
  }
  acknowledge(sl.api.api.node.defaultChild, { id: 'AwsSolutions-APIG2', reason: REASONS.requestValidation });

  const stage = sl.api.stage.node.defaultChild;
  acknowledge(
    stage,
    { id: 'AwsSolutions-APIG6', reason: REASONS.executionLogging },
    { id: 'HIPAA.Security-APIGWExecutionLoggingEnabled', reason: REASONS.executionLogging },
    { id: 'HIPAA.Security-APIGWCacheEnabledAndEncrypted', reason: REASONS.cache },
    { id: 'HIPAA.Security-APIGWSSLEnabled', reason: REASONS.clientCertificate },
    { id: 'HIPAA.Security-APIGWXrayEnabled', reason: REASONS.xray },
  );
  if (!sl.api.webAclAssociation) acknowledge(stage, { id: 'AwsSolutions-APIG3', reason: REASONS.waf });
  if (sl.api.webAcl) acknowledge(sl.api.webAcl, { id: 'HIPAA.Security-WAFv2LoggingEnabled', reason: REASONS.wafLogging });

  acknowledge(sl.sessionTable.table.node.defaultChild, { id: 'HIPAA.Security-DynamoDBInBackupPlan', reason: REASONS.backupPlan });

  for (const fn of Object.values(sl.functions)) {
    const cfn = fn.function.node.defaultChild;
    acknowledge(
      cfn,
      { id: 'HIPAA.Security-LambdaDLQ', reason: REASONS.lambdaDlq },
      { id: 'HIPAA.Security-LambdaInsideVPC', reason: REASONS.lambdaVpc },
    );
    if (!hasReservedConcurrency(cfn)) {
      acknowledge(cfn, { id: 'HIPAA.Security-LambdaConcurrency', reason: REASONS.lambdaConcurrency });
    }
  }

  // Active tracing (infra/constructs/tracing.ts): X-Ray's write actions take no resource but `*`.
  for (const fn of Object.values(sl.functions)) {
    const traced = fn.function.node.defaultChild instanceof CfnFunction && fn.function.node.defaultChild.tracingConfig !== undefined;
    if (traced) acknowledge(fn.policy.node.defaultChild, { id: 'AwsSolutions-IAM5[Resource::*]', reason: REASONS.xrayWrite });
  }

  const cloudWatchRole = sl.api.api.node.tryFindChild('CloudWatchRole');
  if (cloudWatchRole) {
    acknowledge(cloudWatchRole.node.defaultChild, {
      id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]',
      reason: REASONS.cloudWatchRoleManagedPolicy,
    });
  }
}

function hasReservedConcurrency(cfn: IConstruct | undefined): boolean {
  return cfn instanceof CfnFunction && typeof cfn.reservedConcurrentExecutions === 'number' && cfn.reservedConcurrentExecutions > 0;
}
