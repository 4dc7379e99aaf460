import { readFileSync } from 'node:fs';
import type { IPolicyValidationContextBeta1, IPolicyValidationPluginBeta1, PolicyValidationPluginReportBeta1, PolicyViolationBeta1 } from 'aws-cdk-lib';

/**
 * Checks of a synthesized CloudFormation template that cdk-nag does not make and that otherwise only
 * a real `cdk deploy` would find: fields CloudFormation takes only as literal strings, service
 * limits, and timeouts that must fit together. Run at synth as a CDK policy-validation plugin
 * (`TemplateChecks`, wired in `infra/app.ts`) and directly by the tests.
 */

/** CloudFormation and Lambda limits the checks hold the template to. */
export const LIMITS = {
  /** Outputs per template. */
  outputs: 200,
  /** Resources per template. */
  resources: 500,
  /** Template body uploaded through S3 (the CDK CLI uploads). */
  templateBytes: 1_000_000,
  /** A Lambda function's environment: every name and value together. */
  lambdaEnvironmentBytes: 4096,
  /** Bytes counted for a value CloudFormation fills in (a Ref or Fn::GetAtt: an ARN or a name). */
  intrinsicValueBytes: 128,
} as const;

export interface TemplateProblem {
  readonly rule: string;
  readonly logicalId: string;
  readonly location: string;
  readonly message: string;
}

type Template = {
  Description?: unknown;
  Parameters?: Record<string, { Description?: unknown }>;
  Outputs?: Record<string, { Description?: unknown }>;
  Resources?: Record<string, { Type: string; Properties?: Record<string, unknown> }>;
};

function isLiteral(value: unknown): boolean {
  return typeof value === 'string';
}

/** Approximate bytes of a Lambda environment value once deployed. */
function valueBytes(value: unknown): number {
  return typeof value === 'string' ? Buffer.byteLength(value, 'utf8') : LIMITS.intrinsicValueBytes;
}

/** The logical id of the function an API Gateway Lambda integration invokes (its Uri names it). */
function integratedFunction(uri: unknown, functionIds: readonly string[]): string | undefined {
  const text = JSON.stringify(uri ?? '');
  return functionIds.find((id) => text.includes(`"${id}"`));
}

export function templateProblems(template: Template): TemplateProblem[] {
  const problems: TemplateProblem[] = [];
  const add = (rule: string, logicalId: string, location: string, message: string) => problems.push({ rule, logicalId, location, message });

  // Literal-only fields: CloudFormation refuses an intrinsic function here when it creates the stack.
  if (template.Description !== undefined && !isLiteral(template.Description)) {
    add('literal-only', 'Template', 'Description', 'the template description must be a literal string');
  }
  for (const [id, output] of Object.entries(template.Outputs ?? {})) {
    if (output.Description !== undefined && !isLiteral(output.Description)) {
      add('literal-only', id, `Outputs.${id}.Description`, 'an output description must be a literal string (no Ref, Fn::Join or Fn::Sub)');
    }
  }
  for (const [id, parameter] of Object.entries(template.Parameters ?? {})) {
    if (parameter.Description !== undefined && !isLiteral(parameter.Description)) {
      add('literal-only', id, `Parameters.${id}.Description`, 'a parameter description must be a literal string');
    }
  }

  // Limits.
  const outputs = Object.keys(template.Outputs ?? {}).length;
  if (outputs > LIMITS.outputs) add('limits', 'Template', 'Outputs', `${outputs} outputs; CloudFormation allows ${LIMITS.outputs}`);
  const resources = Object.entries(template.Resources ?? {});
  if (resources.length > LIMITS.resources) add('limits', 'Template', 'Resources', `${resources.length} resources; CloudFormation allows ${LIMITS.resources}`);
  const bytes = Buffer.byteLength(JSON.stringify(template), 'utf8');
  if (bytes > LIMITS.templateBytes) add('limits', 'Template', '', `the template is ${bytes} bytes; CloudFormation allows ${LIMITS.templateBytes}`);

  const functions = resources.filter(([, r]) => r.Type === 'AWS::Lambda::Function');
  for (const [id, fn] of functions) {
    const variables = ((fn.Properties?.Environment as { Variables?: Record<string, unknown> } | undefined)?.Variables ?? {}) as Record<string, unknown>;
    const size = Object.entries(variables).reduce((sum, [name, value]) => sum + Buffer.byteLength(name, 'utf8') + valueBytes(value), 0);
    if (size > LIMITS.lambdaEnvironmentBytes) {
      add('limits', id, `Resources.${id}.Properties.Environment`, `the environment is about ${size} bytes; Lambda allows ${LIMITS.lambdaEnvironmentBytes} in total`);
    }
  }

  // Timeouts: every Lambda integration states its timeout, and the function outlasts it by a second,
  // so the handler (which plans against API Gateway's clock) answers, not Lambda's cut-off.
  const functionIds = functions.map(([id]) => id);
  for (const [id, method] of resources.filter(([, r]) => r.Type === 'AWS::ApiGateway::Method')) {
    const integration = method.Properties?.Integration as { Type?: string; Uri?: unknown; TimeoutInMillis?: unknown } | undefined;
    if (integration?.Type !== 'AWS_PROXY') continue;
    const fnId = integratedFunction(integration.Uri, functionIds);
    if (typeof integration.TimeoutInMillis !== 'number') {
      add('timeouts', id, `Resources.${id}.Properties.Integration.TimeoutInMillis`, 'the integration has no explicit TimeoutInMillis (29 s applies unseen)');
      continue;
    }
    const fn = functions.find(([candidate]) => candidate === fnId)?.[1];
    const timeout = fn?.Properties?.Timeout;
    if (typeof timeout === 'number' && timeout * 1000 < integration.TimeoutInMillis + 1000) {
      add(
        'timeouts',
        id,
        `Resources.${id}.Properties.Integration.TimeoutInMillis`,
        `function ${fnId} times out after ${timeout} s, before API Gateway's ${integration.TimeoutInMillis / 1000} s + 1 s: raise the function timeout`,
      );
    }
  }
  return problems;
}

/** The checks above as a CDK policy-validation plugin: a problem fails `cdk synth`. */
export class TemplateChecks implements IPolicyValidationPluginBeta1 {
  readonly name = 'smart-launch-template-checks';

  validate(context: IPolicyValidationContextBeta1): PolicyValidationPluginReportBeta1 {
    const violations: PolicyViolationBeta1[] = [];
    for (const templatePath of context.templatePaths) {
      const template = JSON.parse(readFileSync(templatePath, 'utf8')) as Template;
      for (const problem of templateProblems(template)) {
        violations.push({
          ruleName: `smart-launch-${problem.rule}`,
          description: problem.message,
          severity: 'error',
          violatingResources: [{ resourceLogicalId: problem.logicalId, templatePath, locations: [problem.location] }],
        });
      }
    }
    return { success: violations.length === 0, violations };
  }
}
