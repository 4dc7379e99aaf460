import { fileURLToPath } from 'node:url';
import { Annotations, Stack, Token, type Duration } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { ENV } from '../../shared/config/env.js';
import { proxyOptionsOf, secretArnParts, signingAlgsOf, type Config } from '../../shared/config/schema.js';
import { DEADLINE_MARGIN_MS } from '../../shared/runtime/deadline.js';
import { streamingCapBytes, streamingSecondsFor } from '../../functions/fhir-proxy/streaming.js';
import { DEFAULT_INTEGRATION_TIMEOUT_SECONDS } from './launch-api-defaults.js';
import { DEFAULT_RESERVED_CONCURRENCY, DEFAULT_SIZING } from './smart-function-defaults.js';
import { jwksUrl, launchUrl, redirectUri } from '../../shared/core/urls.js';
import { ROUTES, type FunctionName } from '../../shared/http/routes.js';
import { SmartLaunchKeys, type AssertionKeyRotation } from './keys.js';
import { FUNCTION_ACCESS } from './permissions.js';
import { LaunchApi, type LaunchApiProps } from './launch-api.js';
import { Monitoring } from './monitoring.js';
import * as iam from 'aws-cdk-lib/aws-iam';
import { AuditLog } from './audit-log.js';
import { enableActiveTracing } from './tracing.js';
import type { AlarmThresholds } from './monitoring-defaults.js';
import { metricNamespace } from '../../shared/ops/metric-points.js';
import { SessionTable, type SessionTableProps } from './session-table.js';
import { SmartFunction } from './smart-function.js';
import { CONFIG_ENVIRONMENT_BUDGET_BYTES, EXECUTE_API_HOST } from './smart-launch-defaults.js';

export interface FunctionOverrides {
  readonly memorySize?: number;
  readonly timeout?: Duration;
  /** Reserved concurrency (default `DEFAULT_RESERVED_CONCURRENCY`); `false` reserves none. */
  readonly reservedConcurrency?: number | false;
}

export type ApiOverrides = Omit<LaunchApiProps, 'customer' | 'functions' | 'logsKey' | 'basePath' | 'appOrigin'>;

export interface SmartLaunchProps {
  /** The customer config, already validated for deployment (`parseDeployableConfigText(text, source)`, shared/config/cookie-site.ts). */
  readonly config: Config;
  /** Folder holding `functions/`, `package-lock.json` and `node_modules/` (default: this repository). */
  readonly projectRoot?: string;
  readonly runtime?: lambda.Runtime;
  readonly functions?: Partial<Readonly<Record<FunctionName, FunctionOverrides>>>;
  readonly logRetention?: logs.RetentionDays;
  readonly api?: ApiOverrides;
  readonly table?: SessionTableProps['overrides'];
  /** Customer-managed KMS keys of the client secrets, if they are not under `aws/secretsmanager`. */
  readonly secretKeyArns?: readonly string[];
  readonly alarmEmail?: string;
  /** Roles (ARNs) that may read the audit trail (security review, SIEM export); nobody else gets a grant. */
  readonly auditReaderRoleArns?: readonly string[];
  readonly alarmThresholds?: Partial<AlarmThresholds>;
  /** Rotation of the `private_key_jwt` signing keys (created only when an issuer uses `private_key_jwt`). */
  readonly assertionKeys?: AssertionKeyRotation;
}

/** This repository's root (the folder above `infra/`). */
export const PROJECT_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** One function per distinct `fn` of `ROUTES`, in route order. */
export const FUNCTION_NAMES: readonly FunctionName[] = [...new Set(ROUTES.map((route) => route.fn))];

/**
 * Everything one customer needs, from one validated config: the REST API of `ROUTES`, one Lambda per
 * route group, the session table, the KMS keys, alarms and a dashboard. Embeddable in any CDK app:
 * `new SmartLaunch(stack, 'SmartLaunch', { config })`.
 */
export class SmartLaunch extends Construct {
  readonly config: Config;
  readonly keys: SmartLaunchKeys;
  readonly sessionTable: SessionTable;
  readonly functions: Readonly<Record<FunctionName, SmartFunction>>;
  readonly api: LaunchApi;
  readonly monitoring: Monitoring;
  /** `{publicUrl}/launch`: the URL to register at the EHR as the app's launch URL. */
  readonly launchUrl: string;
  /** `{publicUrl}/callback`: the redirect URI to register at the EHR. */
  readonly redirectUri: string;
  /** `{publicUrl}/.well-known/jwks.json`: this client's public keys, for `private_key_jwt`. */
  readonly jwksUrl: string;
  /** The stage's execute-api URL (what a custom domain or CDN in front must route to). */
  readonly apiUrl: string;

  constructor(scope: Construct, id: string, props: SmartLaunchProps) {
    super(scope, id);
    const config = props.config;
    const publicUrl = new URL(config.publicUrl);
    const basePath = publicUrl.pathname.replace(/^\/+|\/+$/g, '');
    validateProps(props, publicUrl, basePath, Stack.of(scope).region);
    this.config = config;

    this.keys = new SmartLaunchKeys(this, 'Keys', {
      customer: config.customer,
      assertionAlgs: signingAlgsOf(config),
      ...(props.assertionKeys ? { assertionRotation: props.assertionKeys } : {}),
    });
    this.sessionTable = new SessionTable(this, 'SessionTable', {
      encryptionKey: this.keys.table,
      ...(props.table ? { overrides: props.table } : {}),
    });

    const environment: Record<string, string> = {
      [ENV.config]: JSON.stringify(config),
      [ENV.tableName]: this.sessionTable.table.tableName,
      // The key ARN, not an alias: the IAM grants name this ARN, and KmsKeyRing passes it to Decrypt
      // so a ciphertext made under any other key is refused.
      [ENV.kmsKeyId]: this.keys.tokens.keyArn,
    };
    // private_key_jwt: the keys that sign now (by algorithm), and the successors published beside them.
    const signingEnvironment: Record<string, string> = {
      ...(this.keys.assertion.RS384 ? { [ENV.signingKeyRs384]: this.keys.assertion.RS384.keyArn } : {}),
      ...(this.keys.assertion.ES384 ? { [ENV.signingKeyEs384]: this.keys.assertion.ES384.keyArn } : {}),
    };
    const signingKeyArns = Object.values(signingEnvironment);
    const publishedKeyArns = [...signingKeyArns, ...this.keys.assertionNext.map((key) => key.keyArn)];
    const environmentOf = (name: FunctionName): Record<string, string> => {
      switch (FUNCTION_ACCESS[name].assertionKeys) {
        case 'sign':
          return { ...environment, ...signingEnvironment };
        case 'publish':
          // The JWKS function needs the key ids only: no config, no table, no token key.
          return {
            ...signingEnvironment,
            [ENV.metricNamespace]: metricNamespace(config.customer),
            ...(this.keys.assertionNext.length > 0 ? { [ENV.signingKeysNext]: this.keys.assertionNext.map((key) => key.keyArn).join(',') } : {}),
          };
        case 'none':
          return environment;
      }
    };

    const functions = {} as Record<FunctionName, SmartFunction>;
    for (const name of FUNCTION_NAMES) {
      const overrides = props.functions?.[name] ?? {};
      const reserved = overrides.reservedConcurrency === false ? undefined : (overrides.reservedConcurrency ?? DEFAULT_RESERVED_CONCURRENCY[name]);
      functions[name] = new SmartFunction(this, `${pascal(name)}Function`, {
        name,
        projectRoot: props.projectRoot ?? PROJECT_ROOT,
        environment: withIntegrationTimeout(environmentOf(name), integrationSecondsOf(props, name)),
        logsKey: this.keys.observability,
        config,
        tableArn: this.sessionTable.table.tableArn,
        tableKeyArn: this.keys.table.keyArn,
        tokenKeyArn: this.keys.tokens.keyArn,
        assertionKeyArns: { signing: signingKeyArns, published: publishedKeyArns },
        ...(props.secretKeyArns ? { secretKeyArns: props.secretKeyArns } : {}),
        ...(props.runtime ? { runtime: props.runtime } : {}),
        ...(props.logRetention ? { logRetention: props.logRetention } : {}),
        sizing: {
          ...(overrides.memorySize ? { memorySize: overrides.memorySize } : {}),
          ...(overrides.timeout ? { timeout: overrides.timeout } : {}),
        },
        ...(reserved ? { reservedConcurrency: reserved } : {}),
      });
    }
    this.functions = functions;
    // The audit trail: its own log group, key and retention; the API functions append to it.
    new AuditLog(this, 'AuditLog', {
      customer: config.customer,
      writers: [functions.launch, functions.sessions, functions['fhir-proxy']],
      readers: (props.auditReaderRoleArns ?? []).map((arn, index) => iam.Role.fromRoleArn(this, `AuditReader${index + 1}`, arn, { mutable: false })),
    });
    enableActiveTracing(Object.values(functions));

    this.api = new LaunchApi(this, 'Api', {
      ...props.api,
      customer: config.customer,
      functions: {
        launch: functions.launch.function,
        sessions: functions.sessions.function,
        'fhir-proxy': functions['fhir-proxy'].function,
        jwks: functions.jwks.function,
      },
      logsKey: this.keys.observability,
      ...(basePath ? { basePath } : {}),
      // API Gateway's own errors carry CORS for the app when it lives on another origin.
      ...(new URL(config.app.url).origin !== publicUrl.origin ? { appOrigin: new URL(config.app.url).origin } : {}),
    });

    this.monitoring = new Monitoring(this, 'Monitoring', {
      customer: config.customer,
      functions,
      stage: this.api.stage,
      table: this.sessionTable.table,
      topicKey: this.keys.observability,
      issuers: config.issuers.map((issuer) => issuer.iss),
      ...(props.alarmEmail ? { alarmEmail: props.alarmEmail } : {}),
      ...(props.alarmThresholds ? { thresholds: props.alarmThresholds } : {}),
    });

    this.launchUrl = launchUrl(config.publicUrl);
    this.redirectUri = redirectUri(config.publicUrl);
    this.jwksUrl = jwksUrl(config.publicUrl);
    this.apiUrl = this.api.api.url;

    if (!props.api?.customDomain && !EXECUTE_API_HOST.test(publicUrl.hostname)) {
      Annotations.of(this).addWarningV2(
        '@smart-launch/infra:publicUrlNotServed',
        `publicUrl ${config.publicUrl} is not an execute-api URL and no custom domain is configured: route it to this API ` +
          '(a custom domain prop, or a CDN/proxy in front), or the EHR redirect to /callback will not reach the stack',
      );
    }
  }
}

/** The functions that call the EHR (those given the config) plan against API Gateway's clock. */
function withIntegrationTimeout(environment: Record<string, string>, seconds: number): Record<string, string> {
  return ENV.config in environment ? { ...environment, [ENV.integrationTimeoutMs]: String(seconds * 1000) } : environment;
}

function integrationSecondsOf(props: SmartLaunchProps, name: FunctionName): number {
  return props.api?.integrations?.[name]?.timeout?.toSeconds() ?? DEFAULT_INTEGRATION_TIMEOUT_SECONDS;
}

function functionSecondsOf(props: SmartLaunchProps, name: FunctionName): number {
  return (props.functions?.[name]?.timeout ?? DEFAULT_SIZING[name].timeout).toSeconds();
}

/**
 * The FHIR proxy's function timeout that fits an integration timeout of `integrationSeconds`: the
 * time to the first byte, the margin, and the time to stream the largest answer the config allows
 * (`proxy.maxResponseMegabytes`), never below the default; at most Lambda's 900 s.
 */
export function proxyFunctionSecondsFor(config: Config, integrationSeconds: number): number {
  const largest = Math.max(...config.issuers.map((issuer) => proxyOptionsOf(issuer).maxResponseMegabytes * 1024 * 1024));
  const needed = Math.ceil(integrationSeconds + DEADLINE_MARGIN_MS / 1000 + streamingSecondsFor(largest));
  return Math.min(900, Math.max(DEFAULT_SIZING['fhir-proxy'].timeout.toSeconds(), needed));
}

/**
 * Timeouts that cannot fit together, each with its fix: Lambda must outlast API Gateway (the
 * handlers plan against API Gateway's clock and answer before it), the EHR calls must fit inside
 * API Gateway's clock, and the FHIR proxy must have the time to stream its largest answer.
 */
export function timeoutProblems(props: SmartLaunchProps): string[] {
  const problems: string[] = [];
  const marginSeconds = DEADLINE_MARGIN_MS / 1000;
  for (const name of FUNCTION_NAMES) {
    const fn = functionSecondsOf(props, name);
    const gateway = integrationSecondsOf(props, name);
    if (fn < gateway + 1) {
      problems.push(
        `functions.${name}.timeout (${fn} s) must be at least API Gateway's integration timeout (${gateway} s) + 1 s, ` +
          `or Lambda cuts the function off before it can answer (a bare 502, a refresh lease left held): raise it to ${gateway + 1} s`,
      );
    }
  }
  const proxyGateway = integrationSecondsOf(props, 'fhir-proxy');
  const proxyFunction = functionSecondsOf(props, 'fhir-proxy');
  props.config.issuers.forEach((issuer, index) => {
    const options = proxyOptionsOf(issuer);
    if (options.timeoutSeconds + marginSeconds > proxyGateway) {
      problems.push(
        `issuers[${index}].proxy.timeoutSeconds (${options.timeoutSeconds} s) does not fit in API Gateway's ${proxyGateway} s for the FHIR proxy ` +
          `(${marginSeconds} s are kept to answer): lower it to ${proxyGateway - marginSeconds} s, or raise "proxyIntegrationTimeoutSeconds" ` +
          '(above 29 s after an API Gateway quota increase)',
      );
    }
    const bytes = options.maxResponseMegabytes * 1024 * 1024;
    const streamSeconds = proxyFunction - proxyGateway - marginSeconds;
    if (bytes > streamingCapBytes(streamSeconds)) {
      const needed = Math.ceil(proxyGateway + marginSeconds + streamingSecondsFor(bytes));
      const fits = Math.floor(streamingCapBytes(streamSeconds) / (1024 * 1024));
      problems.push(
        `issuers[${index}].proxy.maxResponseMegabytes (${options.maxResponseMegabytes}) cannot be streamed whole: after API Gateway's ${proxyGateway} s ` +
          `to the first byte, the fhir-proxy function's ${proxyFunction} s leave time for ${fits} MB at ~2 MB/s; lower it to ${fits}, ` +
          `or raise functions.fhir-proxy.timeout to ${needed} s`,
      );
    }
  });
  const lease = props.config.session.refreshLeaseSeconds;
  for (const name of ['sessions', 'fhir-proxy'] as const) {
    const gateway = integrationSecondsOf(props, name);
    // A request waiting for another's refresh waits up to a lease + 2 s before it answers REFRESH_BUSY.
    if (lease + 2 + marginSeconds > gateway) {
      problems.push(
        `session.refreshLeaseSeconds (${lease} s) plus the 2 s a waiting request allows does not fit in API Gateway's ${gateway} s for ${name}: ` +
          `lower it to ${gateway - 2 - marginSeconds} s`,
      );
    }
  }
  return problems;
}

function validateProps(props: SmartLaunchProps, publicUrl: URL, basePath: string, stackRegion: string): void {
  const problems: string[] = [...timeoutProblems(props)];
  const configBytes = Buffer.byteLength(JSON.stringify(props.config), 'utf8');
  if (configBytes > CONFIG_ENVIRONMENT_BUDGET_BYTES) {
    problems.push(
      `the config is ${configBytes} bytes as JSON; Lambda environments hold 4 KB in total, so it must stay under ${CONFIG_ENVIRONMENT_BUDGET_BYTES} bytes`,
    );
  }
  if (!Token.isUnresolved(stackRegion)) {
    props.config.issuers.forEach((issuer, index) => {
      const parts = issuer.clientSecret === undefined ? undefined : secretArnParts(issuer.clientSecret);
      if (parts && parts.region !== stackRegion) {
        problems.push(
          `issuers[${index}].clientSecret is a secret in ${parts.region}, but the stack deploys to ${stackRegion}: the functions read ` +
            `secrets in their own region. Replicate it (aws secretsmanager replicate-secret-to-regions --secret-id ${parts.name} ` +
            `--add-replica-regions Region=${stackRegion}) and name the replica's ARN, or deploy the stack to ${parts.region}`,
        );
      }
    });
    const certRegion = props.api?.customDomain?.certificateArn.split(':')[3];
    if (certRegion !== undefined && certRegion !== stackRegion) {
      problems.push(`api.customDomain.certificateArn is in ${certRegion}; a regional custom domain needs an ACM certificate in ${stackRegion}, the stack's region`);
    }
  }
  const domain = props.api?.customDomain;
  if (domain) {
    if (domain.domainName.toLowerCase() !== publicUrl.hostname.toLowerCase()) {
      problems.push(`api.customDomain.domainName "${domain.domainName}" must be the host of publicUrl (${publicUrl.hostname})`);
    }
    if (publicUrl.port) problems.push(`publicUrl must not name a port when a custom domain serves it (${publicUrl.port})`);
    if (basePath.includes('/')) problems.push(`publicUrl may have at most one path segment on a custom domain ("/${basePath}")`);
  }
  for (const [name, overrides] of Object.entries(props.functions ?? {})) {
    const reserved = overrides?.reservedConcurrency;
    if (reserved !== undefined && reserved !== false && (!Number.isInteger(reserved) || reserved < 1)) {
      problems.push(`functions.${name}.reservedConcurrency must be a positive integer (got ${reserved})`);
    }
  }
  if (props.api?.webAclArn !== undefined && !/^arn:aws[a-z-]*:wafv2:[a-z0-9-]+:\d{12}:regional\/webacl\/.+/.test(props.api.webAclArn)) {
    problems.push('api.webAclArn must be the ARN of a REGIONAL WAFv2 web ACL (arn:aws:wafv2:<region>:<account>:regional/webacl/...)');
  }
  if (problems.length > 0) {
    throw new Error(`SmartLaunch for "${props.config.customer}" is misconfigured:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

function pascal(value: string): string {
  return value
    .split('-')
    .map((part) => part.charAt(0).toUpperCase() + part.slice(1))
    .join('');
}
