import { join } from 'node:path';
import { AssetHashType, DockerImage, type ILocalBundling, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { type BuildOptions, buildSync } from 'esbuild';
import type { FunctionName } from '../../shared/http/routes.js';
import { functionPolicyStatements, type PolicyTargets } from './permissions.js';
import {
  DEFAULT_LOG_RETENTION,
  DEFAULT_RUNTIME,
  DEFAULT_SIZING,
  esbuildTarget,
  functionBundleOptions,
  unmapDependencyChunks,
  type FunctionSizing,
} from './smart-function-defaults.js';

export interface SmartFunctionProps extends Omit<PolicyTargets, 'logGroupArn'> {
  readonly name: FunctionName;
  /** Folder holding `functions/`, `tsconfig.json` and `node_modules/`. */
  readonly projectRoot: string;
  readonly environment: Record<string, string>;
  readonly logsKey: kms.IKey;
  readonly runtime?: lambda.Runtime;
  readonly sizing?: Partial<FunctionSizing>;
  readonly logRetention?: logs.RetentionDays;
  /** Reserved concurrency: caps this function and guarantees it that much of the account pool. */
  readonly reservedConcurrency?: number;
}

/**
 * Bundles one handler with esbuild's JS API, in the synthesizing process: `index.mjs` (ESM, minified),
 * `index.mjs.map` (no sources content) and the chunks only `import()` loads (`chunk-<hash>.mjs` and
 * maps: `functionBundleOptions`) in the asset folder CDK gives it; a chunk made of dependencies only
 * ships without its map (`unmapDependencyChunks`).
 *
 * Why not `NodejsFunction`: with esbuild installed in the project it runs, for every function, one
 * after the other, a synchronous `npx --no-install esbuild` (a package-manager process costing about
 * a second of CPU before esbuild starts), where `buildSync` reuses one esbuild service for all four.
 * The arguments are the ones `NodejsFunction` passed (`--bundle --platform=node --format=esm
 * --target --minify --sourcemap --sources-content=false --external --banner:js --main-fields`,
 * from the project root), plus code splitting (`functionBundleOptions`).
 * Why `buildSync`: CDK stages assets synchronously (`ILocalBundling.tryBundle` returns a boolean),
 * so the async `build` cannot run the four in parallel from here.
 *
 * `options` is a field so that it is part of the asset's cache key: CDK keys its staging cache by
 * the JSON of the bundling options, and without the entry in it every function of a stack would
 * get the first one's bundle. A stack that skips bundling (`aws:cdk:bundling-stacks`) never calls
 * `tryBundle`. There is no Docker fallback: `tryBundle` bundles or throws, and a missing esbuild
 * fails the import of this module, so the synth fails either way.
 */
class EsbuildBundling implements ILocalBundling {
  constructor(readonly options: BuildOptions) {}

  tryBundle(outputDir: string): boolean {
    const { metafile } = buildSync({ ...this.options, outdir: outputDir });
    if (metafile) unmapDependencyChunks(metafile, this.options.absWorkingDir ?? process.cwd());
    return true;
  }
}

/**
 * One handler of `functions/<name>/handler.ts` as an ARM64 ESM Lambda, with its own encrypted log
 * group and a role that holds only its own customer-managed policy (no AWS managed policy, no
 * inline policy: HIPAA IAMNoInlinePolicy).
 */
export class SmartFunction extends Construct {
  readonly function: lambda.Function;
  readonly role: iam.Role;
  readonly policy: iam.ManagedPolicy;
  readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: SmartFunctionProps) {
    super(scope, id);
    const runtime = props.runtime ?? DEFAULT_RUNTIME;
    const sizing = { ...DEFAULT_SIZING[props.name], ...props.sizing };

    this.logGroup = new logs.LogGroup(this, 'Logs', {
      retention: props.logRetention ?? DEFAULT_LOG_RETENTION,
      encryptionKey: props.logsKey,
      // Operational evidence outlives the stack; a retained group can be deleted by hand.
      removalPolicy: RemovalPolicy.RETAIN,
    });

    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `smart-launch ${props.name} function`,
    });
    this.policy = new iam.ManagedPolicy(this, 'Policy', {
      description: `smart-launch ${props.name}: only the calls this function makes`,
      statements: functionPolicyStatements(Stack.of(this), props.name, { ...props, logGroupArn: this.logGroup.logGroupArn }),
      roles: [this.role],
    });

    const bundling = new EsbuildBundling(functionBundleOptions(join(props.projectRoot, 'functions', props.name, 'handler.ts'), props.projectRoot, esbuildTarget(runtime)));
    this.function = new lambda.Function(this, 'Function', {
      description: `smart-launch ${props.name}`,
      code: lambda.Code.fromAsset(props.projectRoot, {
        assetHashType: AssetHashType.OUTPUT,
        // `image` is required by the type and never used: `local` always bundles (or throws).
        bundling: { image: DockerImage.fromRegistry('dummy'), local: bundling },
      }),
      handler: 'index.handler',
      runtime,
      architecture: lambda.Architecture.ARM_64,
      memorySize: sizing.memorySize,
      timeout: sizing.timeout,
      role: this.role,
      logGroup: this.logGroup,
      reservedConcurrentExecutions: props.reservedConcurrency,
      environment: {
        ...props.environment,
        // No `--enable-source-maps`: with it, Node reads and parses `index.mjs.map` at every cold
        // start (about 10 ms of launch's load). The maps still ship; an unexpected error's log line
        // maps its own frames when it is written (`shared/runtime/stack-frames.ts`).
        // The same service name the handler's Powertools logger uses (`createLogger(...)`).
        POWERTOOLS_SERVICE_NAME: `smart-launch-${props.name}`,
      },
    });
    // The role must be able to write its logs before the first invocation.
    this.function.node.addDependency(this.policy);
  }
}
