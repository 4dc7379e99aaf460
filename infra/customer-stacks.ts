import { Duration, type App, type Environment } from 'aws-cdk-lib';
import type { Config } from '../shared/config/schema.js';
import { proxyFunctionSecondsFor, type SmartLaunchProps } from './constructs/smart-launch.js';
import { loadCustomers, type CustomerStackSource, type LoadCustomersOptions, type StackOptions } from './customers.js';
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
  return addStacksFor(app, loadCustomers(options), options.env);
}

/** The stacks of customer files already read and validated (`loadCustomers`). */
export function addStacksFor(app: App, sources: readonly CustomerStackSource[], env?: Environment): SmartLaunchStack[] {
  return sources.map(
    (source) =>
      new SmartLaunchStack(app, stackNameFor(source.config.customer), {
        config: source.config,
        smartLaunch: smartLaunchPropsFrom(source.options, source.config),
        ...(env ? { env } : {}),
        // A customer's production data plane: deleting it takes an explicit step.
        terminationProtection: source.options.terminationProtection ?? true,
      }),
  );
}

/**
 * Stack options → `SmartLaunch` props (everything but the config). A raised proxy integration
 * timeout raises the FHIR proxy's function timeout with it (with the config: enough to stream its
 * largest answer after the first byte).
 */
export function smartLaunchPropsFrom(options: StackOptions, config?: Config): Omit<SmartLaunchProps, 'config'> {
  const reserved = options.reservedConcurrency ?? {};
  const functions: Record<string, { reservedConcurrency?: number | false; timeout?: Duration }> = Object.fromEntries(
    Object.entries(reserved).map(([name, value]) => [name, { reservedConcurrency: value }]),
  );
  if (options.proxyIntegrationTimeoutSeconds !== undefined && config) {
    functions['fhir-proxy'] = { ...functions['fhir-proxy'], timeout: Duration.seconds(proxyFunctionSecondsFor(config, options.proxyIntegrationTimeoutSeconds)) };
  }
  return {
    api: {
      ...(options.customDomain ? { customDomain: options.customDomain } : {}),
      ...(options.webAclArn ? { webAclArn: options.webAclArn } : {}),
      ...(options.clientRateLimit !== undefined ? { clientRateLimit: options.clientRateLimit } : {}),
      ...(options.disableExecuteApiEndpoint !== undefined ? { disableExecuteApiEndpoint: options.disableExecuteApiEndpoint } : {}),
      ...(options.createApiGatewayCloudWatchRole !== undefined ? { createCloudWatchRole: options.createApiGatewayCloudWatchRole } : {}),
      ...(options.apiGatewayCloudWatchRoleExists !== undefined ? { cloudWatchRoleExists: options.apiGatewayCloudWatchRoleExists } : {}),
      ...(options.accessLogSourceIp !== undefined ? { accessLogSourceIp: options.accessLogSourceIp } : {}),
      ...(options.proxyIntegrationTimeoutSeconds !== undefined
        ? { integrations: { 'fhir-proxy': { timeout: Duration.seconds(options.proxyIntegrationTimeoutSeconds) } } }
        : {}),
    },
    functions,
    ...(options.secretKeyArns ? { secretKeyArns: options.secretKeyArns } : {}),
    ...(options.alarmEmail ? { alarmEmail: options.alarmEmail } : {}),
    ...(options.assertionKeys ? { assertionKeys: options.assertionKeys } : {}),
    ...(options.auditReaderRoleArns ? { auditReaderRoleArns: options.auditReaderRoleArns } : {}),
  };
}
