import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CustomerFilesError, loadCustomers, type CustomerStackSource } from './customers.js';

/**
 * The CDK app (`cdk.json`: `node --liftoff-only --single-threaded --import tsx infra/app.ts`; no npx in between). The two V8
 * flags are for CDK's CloudFormation validation at synth, a 9 MB WebAssembly linter: without them V8 also compiles it with its
 * optimizing tier on background threads, and a synth costs about 18 s of CPU instead of about 12.5 s, for the same template,
 * assets and findings (WebAssembly means the same in either tier). They must be on the command line: V8 cannot change them
 * once running. One `SmartLaunch-<customer>` stack per file in
 * `customers/*.json`, or only the one named by `-c customer=acme` (or SMART_LAUNCH_CUSTOMER).
 * `-c customersDir=path` (or SMART_LAUNCH_CUSTOMERS_DIR) reads another folder.
 *
 * The customer files are read and validated first, before aws-cdk-lib and the constructs load (about
 * 2 s of CPU): a bad file is reported in a fraction of a second, with every problem listed.
 */

/**
 * The context the CLI hands the app (`-c key=value` and cdk.json's `context`), read where `App` reads
 * it: `CDK_CONTEXT_JSON`, or the file named by `CONTEXT_OVERFLOW_LOCATION_ENV` when it is too large
 * for the environment. Only the two settings below are read here; the App reads the rest itself.
 */
function cliContext(): Record<string, unknown> {
  const inline = process.env.CDK_CONTEXT_JSON;
  const overflow = process.env.CONTEXT_OVERFLOW_LOCATION_ENV;
  return {
    ...(inline ? (JSON.parse(inline) as Record<string, unknown>) : {}),
    ...(overflow ? (JSON.parse(readFileSync(overflow, 'utf8')) as Record<string, unknown>) : {}),
  };
}

const context = cliContext();

function setting(contextKey: string, envName: string): string | undefined {
  const fromContext = context[contextKey];
  if (typeof fromContext === 'string' && fromContext !== '') return fromContext;
  const fromEnv = process.env[envName];
  return fromEnv === undefined || fromEnv === '' ? undefined : fromEnv;
}

const customersDir = setting('customersDir', 'SMART_LAUNCH_CUSTOMERS_DIR');
let sources: CustomerStackSource[];
try {
  sources = loadCustomers({
    dir: customersDir ? resolve(customersDir) : fileURLToPath(new URL('../customers', import.meta.url)),
    only: setting('customer', 'SMART_LAUNCH_CUSTOMER'),
  });
} catch (error) {
  if (error instanceof CustomerFilesError) {
    // The problems are the message; a stack trace would only bury them.
    console.error(error.message);
    process.exit(1);
  }
  throw error;
}

// In the order the modules loaded when they were imported statically.
const { App, Validations } = await import('aws-cdk-lib');
const { addStacksFor, environmentFromProcess } = await import('./customer-stacks.js');
const { addNagChecks, guardValidator } = await import('./nag.js');
const { TemplateChecks } = await import('./template-checks.js');
const app = new App();
addStacksFor(app, sources, environmentFromProcess());
addNagChecks(app);
// Literal-only fields, limits and timeouts: what cdk-nag does not check and only a deploy would find.
Validations.of(app).addPlugins(new TemplateChecks(), guardValidator());
app.synth();
