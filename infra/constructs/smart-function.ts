import { join } from 'node:path';
import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import type { FunctionName } from '../../shared/http/routes.js';
import { functionPolicyStatements, type PolicyTargets } from './permissions.js';
import {
  DEFAULT_LOG_RETENTION,
  DEFAULT_RUNTIME,
  DEFAULT_SIZING,
  ESM_REQUIRE_BANNER,
  EXTERNAL_MODULES,
  esbuildTarget,
  type FunctionSizing,
} from './smart-function-defaults.js';

export interface SmartFunctionProps extends Omit<PolicyTargets, 'logGroupArn'> {
  readonly name: FunctionName;
  /** Folder holding `functions/`, `package-lock.json` and `node_modules/`. */
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
 * One handler of `functions/<name>/handler.ts` as an ARM64 ESM Lambda, with its own encrypted log
 * group and a role that holds only its own customer-managed policy (no AWS managed policy, no
 * inline policy: HIPAA IAMNoInlinePolicy).
 */
export class SmartFunction extends Construct {
  readonly function: NodejsFunction;
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

    this.function = new NodejsFunction(this, 'Function', {
      description: `smart-launch ${props.name}`,
      entry: join(props.projectRoot, 'functions', props.name, 'handler.ts'),
      handler: 'handler',
      projectRoot: props.projectRoot,
      depsLockFilePath: join(props.projectRoot, 'package-lock.json'),
      runtime,
      architecture: lambda.Architecture.ARM_64,
      memorySize: sizing.memorySize,
      timeout: sizing.timeout,
      role: this.role,
      logGroup: this.logGroup,
      reservedConcurrentExecutions: props.reservedConcurrency,
      environment: {
        ...props.environment,
        // Stack traces through the minified bundle point at the TypeScript sources.
        NODE_OPTIONS: '--enable-source-maps',
        // The same service name the handler's Powertools logger uses (`createLogger(...)`).
        POWERTOOLS_SERVICE_NAME: `smart-launch-${props.name}`,
      },
      // SDK v3 keeps connections alive by itself; the v2 variable would only add noise.
      awsSdkConnectionReuse: false,
      bundling: {
        format: OutputFormat.ESM,
        target: esbuildTarget(runtime),
        mainFields: ['module', 'main'],
        banner: ESM_REQUIRE_BANNER,
        minify: true,
        sourceMap: true,
        sourcesContent: false,
        externalModules: EXTERNAL_MODULES,
        // Local esbuild only: a missing esbuild must fail the synth, not start a Docker build.
        forceDockerBundling: false,
      },
    });
    // The role must be able to write its logs before the first invocation.
    this.function.node.addDependency(this.policy);
  }
}
