import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, isAbsolute, join, resolve } from 'node:path';
import { z } from 'zod';
import { parseDeployableConfigText } from '../shared/config/cookie-site.js';
import { ConfigError, type Config } from '../shared/config/schema.js';

/**
 * Customer files: `customers/<name>.json` is the customer config (the shared zod schema, validated
 * for a deployed stack) and an optional `customers/<name>.stack.json` holds infrastructure-only
 * choices for that stack (custom domain, WAF, alarm mail, sizing) that the functions never see.
 *
 * No aws-cdk-lib here (nor anything that loads it): the app validates the customer files before it
 * loads CDK, so a bad file is reported in a fraction of a second (customer-stacks.ts turns the files
 * into stacks).
 */

const STACK_OPTIONS_SUFFIX = '.stack.json';

const ACM_ARN = /^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate\/[A-Za-z0-9-]+$/;
const KMS_KEY_ARN = /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/[A-Za-z0-9-]+$/;
const WAF_ARN = /^arn:aws[a-z-]*:wafv2:[a-z0-9-]+:\d{12}:regional\/webacl\/.+$/;
const IAM_ROLE_ARN = /^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]+$/;
const positive = z.number().int().min(1);
const reservation = z.union([positive, z.literal(false)]);

export const StackOptionsSchema = z
  .object({
    customDomain: z
      .object({
        domainName: z.string().min(1),
        certificateArn: z.string().regex(ACM_ARN, 'certificateArn must be an ACM certificate ARN'),
      })
      .strict()
      .optional(),
    webAclArn: z.string().regex(WAF_ARN, 'webAclArn must be a REGIONAL WAFv2 web ACL ARN').optional(),
    alarmEmail: z.email('alarmEmail must be an email address').optional(),
    disableExecuteApiEndpoint: z.boolean().optional(),
    createApiGatewayCloudWatchRole: z.boolean().optional(),
    /** The account's API Gateway CloudWatch Logs role is already set (`aws apigateway get-account`). */
    apiGatewayCloudWatchRoleExists: z.boolean().optional(),
    /** Requests per client IP per 5 minutes in the stack's own web ACL (default 3000); `false`: no web ACL of its own. */
    clientRateLimit: z.union([z.number().int().min(10).max(2_000_000_000), z.literal(false)]).optional(),
    accessLogSourceIp: z.boolean().optional(),
    /** Per function: a positive number, or `false` for none (defaults: `DEFAULT_RESERVED_CONCURRENCY`). */
    reservedConcurrency: z
      .object({ launch: reservation, sessions: reservation, 'fhir-proxy': reservation, jwks: reservation })
      .partial()
      .strict()
      .optional(),
    /** Seconds; the FHIR proxy's API Gateway integration timeout (above 29 needs a quota increase). */
    proxyIntegrationTimeoutSeconds: z.number().int().min(1).max(300).optional(),
    secretKeyArns: z.array(z.string().regex(KMS_KEY_ARN, 'secretKeyArns must hold KMS key ARNs')).optional(),
    terminationProtection: z.boolean().optional(),
    /**
     * Rotation of the `private_key_jwt` signing keys (infra/README.md, "Client assertion keys"):
     * `{ "publishNext": true }` publishes the successor, then `{ "generation": n + 1 }` makes it sign.
     */
    assertionKeys: z
      .object({
        generation: z
          .number({ error: 'assertionKeys.generation must be a whole number (the generation of keys that signs, 1 first)' })
          .int('assertionKeys.generation must be a whole number (the generation of keys that signs, 1 first)')
          .min(1, 'assertionKeys.generation must be 1 or more (generation 1 is the first key; raise it by one per rotation)'),
        publishNext: z.boolean({ error: 'assertionKeys.publishNext must be true or false' }),
      })
      .partial()
      .strict()
      .optional(),
    /** IAM roles (ARNs) that may read the audit trail (security review, SIEM export). */
    auditReaderRoleArns: z
      .array(z.string().regex(IAM_ROLE_ARN, 'auditReaderRoleArns must hold IAM role ARNs (arn:aws:iam::<account>:role/<name>)'))
      .optional(),
  })
  .strict();

export type StackOptions = z.output<typeof StackOptionsSchema>;

export interface CustomerStackSource {
  readonly config: Config;
  readonly options: StackOptions;
  /** The config file it came from. */
  readonly file: string;
}

export interface LoadCustomersOptions {
  /** Folder of customer files (default `customers/` in the project root). */
  readonly dir: string;
  /** Only this customer: a file base name (`acme`), a `.json` file name, or a path. */
  readonly only?: string | undefined;
}

/** Thrown when any customer file is invalid: one message listing every problem of every file. */
export class CustomerFilesError extends Error {
  readonly problems: readonly string[];

  constructor(problems: readonly string[]) {
    super(`customer files are invalid:\n${problems.map((p) => (p.startsWith('  ') ? p : `- ${p}`)).join('\n')}`);
    this.name = 'CustomerFilesError';
    this.problems = problems;
  }
}

function configFiles(options: LoadCustomersOptions): string[] {
  if (options.only !== undefined && options.only !== '') {
    const only = options.only;
    const file =
      only.includes('/') || isAbsolute(only) ? resolve(only) : join(options.dir, only.endsWith('.json') ? only : `${only}.json`);
    if (!existsSync(file)) throw new CustomerFilesError([`${file}: no such customer file (from customer "${only}")`]);
    return [file];
  }
  if (!existsSync(options.dir)) throw new CustomerFilesError([`${options.dir}: no customers folder`]);
  const files = readdirSync(options.dir)
    .filter((name) => name.endsWith('.json') && !name.endsWith(STACK_OPTIONS_SUFFIX))
    .sort()
    .map((name) => join(options.dir, name));
  if (files.length === 0) throw new CustomerFilesError([`${options.dir}: no customer files (*.json)`]);
  return files;
}

function stackOptionsFile(configFile: string): string {
  return configFile.replace(/\.json$/, STACK_OPTIONS_SUFFIX);
}

function loadStackOptions(file: string, problems: string[]): StackOptions {
  if (!existsSync(file)) return {};
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    problems.push(`${file}: not valid JSON (${(error as Error).message})`);
    return {};
  }
  const result = StackOptionsSchema.safeParse(value);
  if (!result.success) {
    for (const issue of result.error.issues) {
      const path = issue.path.reduce<string>((acc, part) => (typeof part === 'number' ? `${acc}[${part}]` : `${acc}.${String(part)}`), '$');
      problems.push(`${file}: ${path}: ${issue.message}`);
    }
    return {};
  }
  return result.data;
}

/**
 * Reads and validates the customer files. Every problem of every file is collected first (a config
 * error lists its own problems by JSON path), then reported in one error, so one run shows them all.
 */
export function loadCustomers(options: LoadCustomersOptions): CustomerStackSource[] {
  const problems: string[] = [];
  const sources: CustomerStackSource[] = [];
  const files = configFiles(options);
  if (options.only === undefined || options.only === '') {
    for (const name of readdirSync(options.dir).filter((n) => n.endsWith(STACK_OPTIONS_SUFFIX))) {
      const configFile = join(options.dir, name.slice(0, -STACK_OPTIONS_SUFFIX.length) + '.json');
      if (!existsSync(configFile)) problems.push(`${join(options.dir, name)}: stack options without a customer file ${basename(configFile)}`);
    }
  }
  for (const file of files) {
    let config: Config | undefined;
    try {
      config = parseDeployableConfigText(readFileSync(file, 'utf8'), file);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      problems.push(`${file}:`, ...error.problems.map((p) => `  - ${p}`));
    }
    const stackOptions = loadStackOptions(stackOptionsFile(file), problems);
    if (config && !stackOptions.createApiGatewayCloudWatchRole && !stackOptions.apiGatewayCloudWatchRoleExists) {
      problems.push(
        `${stackOptionsFile(file)}: the stage writes access logs, which needs the account's API Gateway CloudWatch Logs role ` +
          '(one per account and region; without it the first deploy fails and leaves a stack to clean up). Check with ' +
          '`aws apigateway get-account --query cloudwatchRoleArn`: if it prints an ARN, set "apiGatewayCloudWatchRoleExists": true; ' +
          'if it prints null, set "createApiGatewayCloudWatchRole": true in exactly one customer stack of that account and region',
      );
    }
    if (config && stackOptions.assertionKeys !== undefined && !config.issuers.some((issuer) => issuer.clientAuth === 'private_key_jwt')) {
      problems.push(
        `${stackOptionsFile(file)}: $.assertionKeys: no issuer of ${basename(file)} uses "clientAuth": "private_key_jwt", so the stack has no ` +
          'assertion signing key to rotate; remove "assertionKeys", or set "private_key_jwt" on the issuer that should use it',
      );
    }
    if (config) sources.push({ config, options: stackOptions, file });
  }
  const seen = new Map<string, string>();
  for (const source of sources) {
    const other = seen.get(source.config.customer);
    if (other) problems.push(`${source.file}: customer "${source.config.customer}" is already defined in ${other}`);
    seen.set(source.config.customer, source.file);
  }
  if (problems.length > 0) throw new CustomerFilesError(problems);
  return sources;
}
