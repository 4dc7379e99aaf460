import { Duration } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import type { FunctionName } from '../../shared/http/routes.js';

/**
 * Defaults of the functions, apart from the builder (as Solutions Constructs keeps
 * `*-defaults.ts`). A team embedding `SmartLaunch` overrides any of them through its props.
 */

/**
 * nodejs24.x: the newest Node runtime in aws-cdk-lib 2.276 (`Runtime.NODEJS_LATEST`), so synth has no
 * deprecation warning and cdk-nag L1 passes. The handlers also run on Node 20 locally, so they use
 * no Node 22+ API; esbuild's `target` follows the runtime.
 */
export const DEFAULT_RUNTIME = lambda.Runtime.NODEJS_24_X;

export interface FunctionSizing {
  readonly memorySize: number;
  readonly timeout: Duration;
}

export const DEFAULT_SIZING: Readonly<Record<FunctionName, FunctionSizing>> = {
  // Discovery, JWKS fetch, id_token verification and the token request: several EHR round trips.
  launch: { memorySize: 512, timeout: Duration.seconds(20) },
  sessions: { memorySize: 256, timeout: Duration.seconds(10) },
  // Buffers FHIR responses up to API Gateway's 6 MB (plus base64 for binary): memory is also CPU.
  // 30 s: as long as the slowest FHIR searches the EHRs answer; API Gateway's own integration
  // timeout (29 s unless raised) answers the browser first, see `LaunchApiProps.proxyIntegrationTimeout`.
  'fhir-proxy': { memorySize: 1024, timeout: Duration.seconds(30) },
  // One KMS GetPublicKey per key per container, then answers from memory.
  jwks: { memorySize: 256, timeout: Duration.seconds(10) },
};

export const DEFAULT_LOG_RETENTION = logs.RetentionDays.ONE_YEAR;

/**
 * ESM output needs `require` for the few CommonJS dependencies esbuild leaves as `require()` calls.
 * Aliased import so it cannot collide with a bundled module's own `createRequire` binding.
 */
export const ESM_REQUIRE_BANNER =
  "import { createRequire as __smartLaunchCreateRequire } from 'node:module'; const require = __smartLaunchCreateRequire(import.meta.url);";

/** The AWS SDK v3 ships with the Node.js Lambda runtimes: leave it out of the bundle. */
export const EXTERNAL_MODULES = ['@aws-sdk/*'];

/** esbuild target matching a `nodejsNN.x` runtime (`node24`). */
export function esbuildTarget(runtime: lambda.Runtime): string {
  const match = /^nodejs(\d+)\.x$/.exec(runtime.name);
  if (!match) throw new Error(`runtime ${runtime.name} is not a Node.js runtime`);
  return `node${match[1]}`;
}
