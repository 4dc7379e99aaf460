import type { App, Environment } from 'aws-cdk-lib';
import { loadCustomers, smartLaunchPropsFrom, type LoadCustomersOptions } from './customers.js';
import { SmartLaunchStack, stackNameFor } from './stacks/smart-launch-stack.js';

export interface CustomerStacksOptions extends LoadCustomersOptions {
  readonly env?: Environment | undefined;
}

/**
 * The account and region the CLI resolved (`CDK_DEFAULT_ACCOUNT/REGION`), each only when present.
 * With neither, the stacks are environment-agnostic: `cdk synth` needs no credentials and no network.
 */
export function environmentFromProcess(env: NodeJS.ProcessEnv = process.env): Environment | undefined {
  const account = env.CDK_DEFAULT_ACCOUNT || undefined;
  const region = env.CDK_DEFAULT_REGION || undefined;
  if (!account && !region) return undefined;
  return { ...(account ? { account } : {}), ...(region ? { region } : {}) };
}

/** One independent stack per customer file: nothing is shared between two customers' stacks. */
export function addCustomerStacks(app: App, options: CustomerStacksOptions): SmartLaunchStack[] {
  return loadCustomers(options).map(
    (source) =>
      new SmartLaunchStack(app, stackNameFor(source.config.customer), {
        config: source.config,
        smartLaunch: smartLaunchPropsFrom(source.options, source.config),
        ...(options.env ? { env: options.env } : {}),
        // A customer's production data plane: deleting it takes an explicit step.
        terminationProtection: source.options.terminationProtection ?? true,
      }),
  );
}
