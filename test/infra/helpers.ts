import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { parseConfig, type Config } from '../../shared/config/schema.js';
import { PROJECT_ROOT } from '../../infra/constructs/smart-launch.js';
import { addCustomerStacks } from '../../infra/customer-stacks.js';
import { SmartLaunchStack } from '../../infra/stacks/smart-launch-stack.js';

// CDK's built-in CloudFormation validation (a wasm linter) costs seconds per synth; the real
// `cdk synth` test (synth.test.ts) keeps it on, the property tests do not need it.
process.env.CDK_VALIDATION = 'false';

/** The feature flags of cdk.json, so the tests synthesize what `cdk synth` synthesizes. */
export const CDK_CONTEXT: Record<string, unknown> = (
  JSON.parse(readFileSync(join(PROJECT_ROOT, 'cdk.json'), 'utf8')) as { context: Record<string, unknown> }
).context;

/**
 * An app with cdk.json's context that skips esbuild bundling (the assets are not needed here), and
 * two things only a person reading a synth's output uses: the creation stack trace CDK records for
 * every CloudFormation element (taken through vitest's source-mapped stack traces, it was a fifth of
 * a stack's build) and tree.json. The template is the same.
 */
export function testApp(): App {
  return new App({ treeMetadata: false, context: { ...CDK_CONTEXT, 'aws:cdk:bundling-stacks': [], 'aws:cdk:disable-creation-stack-traces': true } });
}

export const SECRET_ARN = 'arn:aws:secretsmanager:us-east-1:111111111111:secret:smart-launch/acme/ehr-AbCdEf';

/** A valid AWS config: one confidential issuer (secret in Secrets Manager), one public client. */
export function awsConfig(customer = 'acme-health', overrides: Record<string, unknown> = {}): Config {
  return parseConfig(
    {
      customer,
      publicUrl: `https://smart.${customer}.example`,
      app: { url: `https://app.${customer}.example/` },
      issuers: [
        {
          iss: `https://ehr.${customer}.example/fhir/r4`,
          clientId: 'smart-app',
          clientAuth: 'client_secret_basic',
          clientSecret: SECRET_ARN,
          scope: 'launch openid fhirUser patient/*.rs offline_access',
          default: true,
        },
        { iss: `https://portal.${customer}.example/fhir`, clientId: 'portal-app', clientAuth: 'none', scope: 'launch/patient openid' },
      ],
      ...overrides,
    },
    'aws',
    '(test)',
  );
}

/** A stack several test files read unchanged, its app (for cdk-nag) and its template, frozen. */
export interface SharedStack {
  readonly app: App;
  readonly stack: SmartLaunchStack;
  readonly template: Template;
  /** The template's JSON, deep-frozen: a reader that needs to change it works on `structuredClone`. */
  readonly json: Readonly<Record<string, unknown>>;
}

/**
 * A stack build and synth costs a few hundred milliseconds of CPU, and the infra workers run their
 * files one after another with one module registry: the stacks below are built once per worker and
 * shared by every file that reads them. Each builder takes no argument, so its name is the whole key
 * (config, props, stack id, app context); a test that needs anything else builds its own App. The
 * template is frozen, so a reader that changes it throws instead of changing what the next file reads.
 */
const shared = new Map<string, SharedStack>();

function sharedStack(key: string, build: () => SmartLaunchStack): SharedStack {
  let built = shared.get(key);
  if (!built) {
    const stack = build();
    const json = deepFreeze(Template.fromStack(stack).toJSON());
    built = { app: stack.node.root as App, stack, template: Template.fromJSON(json), json };
    shared.set(key, built);
  }
  return built;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** `SmartLaunch-acme-health`: `awsConfig('acme-health')` and no other prop (no custom domain, no WAF ACL of its own). */
export function acmeHealthStack(): SharedStack {
  return sharedStack('acme-health', () => new SmartLaunchStack(testApp(), 'SmartLaunch-acme-health', { config: awsConfig('acme-health') }));
}

/** The sample customer exactly as `cdk synth` builds it from customers/ (custom domain included). */
export function sampleCustomerStack(): SharedStack {
  return sharedStack('sample-customer', () => {
    const [stack, ...more] = addCustomerStacks(testApp(), { dir: join(PROJECT_ROOT, 'customers') });
    if (!stack || more.length > 0) throw new Error('customers/ should hold exactly one customer');
    return stack;
  });
}

export function templateOf(stack: Stack): Template {
  return Template.fromStack(stack);
}

type Resources = Record<string, { Type: string; Properties?: Record<string, unknown>; DeletionPolicy?: string; UpdateReplacePolicy?: string }>;

export function resourcesOf(template: Template, type: string): Resources {
  return template.findResources(type) as Resources;
}

/** Statements of a policy document, whatever the shape CloudFormation got. */
export interface Statement {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Condition?: Record<string, Record<string, unknown>>;
}

export function asArray<T>(value: T | T[]): T[] {
  return Array.isArray(value) ? value : [value];
}
