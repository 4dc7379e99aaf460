import { z } from 'zod';

/**
 * The customer configuration: one JSON file per customer, validated by this one schema in the
 * local server and in the CDK app. `mode` decides what "safe" means: a deployed stack accepts
 * https only and never a client secret in clear; a local run also accepts http on loopback.
 */
export type ConfigMode = 'local' | 'aws';

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

function isLoopback(url: URL): boolean {
  return LOOPBACK_HOSTS.has(url.hostname) || /^127(\.\d{1,3}){3}$/.test(url.hostname);
}

function urlIssues(value: string, mode: ConfigMode, what: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return `${what} must be an absolute URL`;
  }
  if (url.username || url.password) return `${what} must not carry credentials`;
  if (url.hash) return `${what} must not have a #fragment`;
  if (url.protocol === 'https:') return undefined;
  if (url.protocol === 'http:' && mode === 'local' && isLoopback(url)) return undefined;
  return mode === 'local'
    ? `${what} must use https (http is accepted only on loopback: localhost, 127.0.0.1, [::1])`
    : `${what} must use https in a deployed stack`;
}

const secureUrl = (mode: ConfigMode, what: string) =>
  z.string().superRefine((value, ctx) => {
    const issue = urlIssues(value, mode, what);
    if (issue) ctx.addIssue({ code: 'custom', message: issue });
  });

const SECRET_ARN = /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$/;

function issuerSchema(mode: ConfigMode) {
  return z
    .object({
      iss: secureUrl(mode, 'iss').refine((v) => !v.includes('?'), 'iss must not have a query string'),
      clientId: z.string().min(1, 'clientId must not be empty').max(512),
      clientAuth: z.enum(['none', 'client_secret_basic', 'private_key_jwt']),
      clientSecret: z.string().min(1).optional(),
      scope: z
        .string()
        .trim()
        .min(1, 'scope must not be empty')
        .refine((v) => !/[\s]{2,}|[^\x21-\x7e ]/.test(v), 'scope must be space-separated printable ASCII scope tokens'),
      default: z.boolean().optional(),
    })
    .strict()
    .superRefine((issuer, ctx) => {
      if (issuer.clientAuth === 'client_secret_basic' && issuer.clientSecret === undefined) {
        ctx.addIssue({ code: 'custom', path: ['clientSecret'], message: 'clientSecret is required when clientAuth is "client_secret_basic"' });
      }
      if (issuer.clientAuth !== 'client_secret_basic' && issuer.clientSecret !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['clientSecret'], message: `clientSecret must be absent when clientAuth is "${issuer.clientAuth}"` });
      }
      if (issuer.clientAuth === 'private_key_jwt') {
        ctx.addIssue({
          code: 'custom',
          path: ['clientAuth'],
          message: 'clientAuth "private_key_jwt" is not available in this version; use "client_secret_basic" or "none"',
        });
      }
      if (issuer.clientSecret !== undefined && mode === 'aws' && !SECRET_ARN.test(issuer.clientSecret)) {
        ctx.addIssue({
          code: 'custom',
          path: ['clientSecret'],
          message: 'in a deployed stack clientSecret must be a Secrets Manager secret ARN, never the secret itself',
        });
      }
    });
}

export const SESSION_DEFAULTS = {
  lifetimeMinutes: 8 * 60,
  idleTimeoutMinutes: 60,
  transactionMinutes: 10,
  refreshSkewSeconds: 60,
  refreshLeaseSeconds: 15,
} as const;

export function configSchema(mode: ConfigMode) {
  return z
    .object({
      customer: z
        .string()
        .regex(/^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$/, 'customer must be 1-40 lowercase letters, digits or inner hyphens'),
      publicUrl: secureUrl(mode, 'publicUrl')
        .refine((v) => !v.includes('?'), 'publicUrl must not have a query string')
        .transform((v) => v.replace(/\/+$/, '')),
      app: z.object({ url: secureUrl(mode, 'app.url') }).strict(),
      issuers: z.array(issuerSchema(mode)).min(1, 'issuers must list at least one EHR'),
      session: z
        .object({
          /** Absolute lifetime of a session record; refreshing never extends it. */
          lifetimeMinutes: z.number().int().min(5).max(7 * 24 * 60).default(SESSION_DEFAULTS.lifetimeMinutes),
          /** A session unused this long after its access token expired ends (it is not refreshed). */
          idleTimeoutMinutes: z.number().int().min(1).max(7 * 24 * 60).default(SESSION_DEFAULTS.idleTimeoutMinutes),
          /** How long a started launch waits for the EHR to call back. */
          transactionMinutes: z.number().int().min(1).max(60).default(SESSION_DEFAULTS.transactionMinutes),
          /** Refresh this long before the access token expires. */
          refreshSkewSeconds: z.number().int().min(0).max(600).default(SESSION_DEFAULTS.refreshSkewSeconds),
          /**
           * How long one refresh may hold the session's lease. A lease left by a crashed invocation
           * blocks refreshes this long at most; the token endpoint call is bounded below it.
           */
          refreshLeaseSeconds: z.number().int().min(3).max(60).default(SESSION_DEFAULTS.refreshLeaseSeconds),
        })
        .strict()
        .default(SESSION_DEFAULTS),
      cookie: z
        .object({
          /** `None` (sent with `Partitioned`) for apps embedded in an EHR iframe; `Lax` otherwise. */
          sameSite: z.enum(['Lax', 'None']).default('Lax'),
          /** Turn off only for browsers that block cookies in EHR iframes: then a session id alone opens the session. */
          browserBinding: z.boolean().default(true),
        })
        .strict()
        .default({ sameSite: 'Lax', browserBinding: true }),
    })
    .strict()
    .superRefine((config, ctx) => {
      const defaults = config.issuers.filter((i) => i.default === true);
      if (defaults.length > 1) {
        ctx.addIssue({ code: 'custom', path: ['issuers'], message: 'at most one issuer may be "default": true' });
      }
      const seen = new Set<string>();
      config.issuers.forEach((issuer, index) => {
        if (seen.has(issuer.iss)) {
          ctx.addIssue({ code: 'custom', path: ['issuers', index, 'iss'], message: `iss "${issuer.iss}" is listed twice` });
        }
        seen.add(issuer.iss);
      });
    });
}

export type Config = z.output<ReturnType<typeof configSchema>>;
export type IssuerConfig = Config['issuers'][number];

export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID';
  readonly problems: readonly string[];

  constructor(source: string, problems: readonly string[]) {
    super(`configuration ${source} is invalid:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

function jsonPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>((acc, part) => (typeof part === 'number' ? `${acc}[${part}]` : `${acc}.${String(part)}`), '$');
}

/** Validates a parsed config; every problem is reported at once, each with its JSON path. */
export function parseConfig(value: unknown, mode: ConfigMode, source = '(inline)'): Config {
  const result = configSchema(mode).safeParse(value);
  if (!result.success) {
    throw new ConfigError(
      source,
      result.error.issues.map((issue) => `${jsonPath(issue.path)}: ${issue.message}`),
    );
  }
  return Object.freeze(result.data);
}

/** Parses the text of a config file (JSON), reporting a syntax error like any other problem. */
export function parseConfigText(text: string, mode: ConfigMode, source: string): Config {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(source, [`$: not valid JSON (${(error as Error).message})`]);
  }
  return parseConfig(value, mode, source);
}
