import { join, resolve } from 'node:path';
import { App, Validations } from 'aws-cdk-lib';
import { PROJECT_ROOT } from './constructs/smart-launch.js';
import { CustomerFilesError } from './customers.js';
import { addCustomerStacks, environmentFromProcess } from './customer-stacks.js';
import { addNagChecks, guardValidator } from './nag.js';
import { TemplateChecks } from './template-checks.js';

/**
 * The CDK app (`cdk.json`: `node --liftoff-only --single-threaded --import tsx infra/app.ts`; no npx in between). The two V8
 * flags are for CDK's CloudFormation validation at synth, a 9 MB WebAssembly linter: without them V8 also compiles it with its
 * optimizing tier on background threads, and a synth costs about 18 s of CPU instead of about 12.5 s, for the same template,
 * assets and findings (WebAssembly means the same in either tier). They must be on the command line: V8 cannot change them
 * once running. One `SmartLaunch-<customer>` stack per file in
 * `customers/*.json`, or only the one named by `-c customer=acme` (or SMART_LAUNCH_CUSTOMER).
 * `-c customersDir=path` (or SMART_LAUNCH_CUSTOMERS_DIR) reads another folder.
 */
const app = new App();

function setting(contextKey: string, envName: string): string | undefined {
  const fromContext: unknown = app.node.tryGetContext(contextKey);
  if (typeof fromContext === 'string' && fromContext !== '') return fromContext;
  const fromEnv = process.env[envName];
  return fromEnv === undefined || fromEnv === '' ? undefined : fromEnv;
}

const customersDir = setting('customersDir', 'SMART_LAUNCH_CUSTOMERS_DIR');
try {
  addCustomerStacks(app, {
    dir: customersDir ? resolve(customersDir) : join(PROJECT_ROOT, 'customers'),
    only: setting('customer', 'SMART_LAUNCH_CUSTOMER'),
    env: environmentFromProcess(),
  });
} catch (error) {
  if (error instanceof CustomerFilesError) {
    // The problems are the message; a stack trace would only bury them.
    console.error(error.message);
    process.exit(1);
  }
  throw error;
}

addNagChecks(app);
// Literal-only fields, limits and timeouts: what cdk-nag does not check and only a deploy would find.
Validations.of(app).addPlugins(new TemplateChecks(), guardValidator());
app.synth();
