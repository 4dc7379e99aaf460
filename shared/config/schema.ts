import * as z from './zod.js';

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
  z.string().check(
    z.superRefine((value, ctx) => {
      const issue = urlIssues(value, mode, what);
      if (issue) ctx.addIssue({ code: 'custom', message: issue });
    }),
  );

const SECRET_ARN = /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$/;

/** The region and account of a Secrets Manager secret ARN (full or partial), or undefined for anything else. */
export function secretArnParts(arn: string): { region: string; account: string; name: string } | undefined {
  const match = /^arn:aws[a-z-]*:secretsmanager:([a-z0-9-]+):(\d{12}):secret:(.+)$/.exec(arn);
  return match ? { region: match[1]!, account: match[2]!, name: match[3]! } : undefined;
}

/** The FHIR write interactions a customer may enable per issuer (`issuers[].writes`). */
/**
 * `operation`: a POSTed `$operation` that may change what the EHR stores (anything not in the proxy's
 * list of read-only operations, e.g. `$merge`, `$meta-delete`, `$process-message`).
 */
export const WRITE_INTERACTIONS = ['create', 'update', 'patch', 'delete', 'operation'] as const;
export type WriteInteraction = (typeof WRITE_INTERACTIONS)[number];

/**
 * Defaults of `issuers[].proxy`. Kept out of the parsed config (which travels in a 4 KB Lambda
 * environment): read them through `proxyOptionsOf`.
 */
export const PROXY_DEFAULTS = {
  timeoutSeconds: 25,
  maxRequestKilobytes: 4096,
  maxResponseMegabytes: 64,
  enforceScopes: true,
  confineToPatient: true,
} as const;

export interface ProxyOptions {
  readonly timeoutSeconds: number;
  readonly maxRequestKilobytes: number;
  readonly maxResponseMegabytes: number;
  readonly enforceScopes: boolean;
  readonly confineToPatient: boolean;
  /** The write interactions forwarded to this EHR (empty: read-only, the default). */
  readonly writes: ReadonlySet<WriteInteraction>;
}

/** The effective proxy options of an issuer (defaults filled in); defaults alone when none is given. */
export function proxyOptionsOf(issuer: { writes?: { enabled: boolean; interactions?: readonly WriteInteraction[] | undefined } | undefined; proxy?: Partial<Omit<ProxyOptions, 'writes'>> | undefined } | undefined): ProxyOptions {
  const proxy = issuer?.proxy ?? {};
  const writes = issuer?.writes;
  return {
    timeoutSeconds: proxy.timeoutSeconds ?? PROXY_DEFAULTS.timeoutSeconds,
    maxRequestKilobytes: proxy.maxRequestKilobytes ?? PROXY_DEFAULTS.maxRequestKilobytes,
    maxResponseMegabytes: proxy.maxResponseMegabytes ?? PROXY_DEFAULTS.maxResponseMegabytes,
    enforceScopes: proxy.enforceScopes ?? PROXY_DEFAULTS.enforceScopes,
    confineToPatient: proxy.confineToPatient ?? PROXY_DEFAULTS.confineToPatient,
    writes: new Set(writes?.enabled ? (writes.interactions ?? WRITE_INTERACTIONS) : []),
  };
}

// The assertion algorithms live in their own module (no zod), so the JWKS function, which signs
// nothing from a config, loads no schema; re-exported here for every other caller.
export { DEFAULT_SIGNING_ALG, SIGNING_ALGS, signingAlgOf, signingAlgsOf, type SigningAlg } from './signing-algs.js';
import { SIGNING_ALGS } from './signing-algs.js';

function issuerSchema(mode: ConfigMode) {
  return z
    .strictObject({
      iss: secureUrl(mode, 'iss').check(z.refine((v) => !v.includes('?'), 'iss must not have a query string')),
      clientId: z.string().check(z.minLength(1, 'clientId must not be empty'), z.maxLength(512)),
      clientAuth: z.enum(['none', 'client_secret_basic', 'private_key_jwt']),
      clientSecret: z.optional(z.string().check(z.minLength(1))),
      scope: z
        .string()
        .check(
          z.trim(),
          z.minLength(1, 'scope must not be empty'),
          z.refine((v) => !/[\s]{2,}|[^\x21-\x7e ]/.test(v), 'scope must be space-separated printable ASCII scope tokens'),
        ),
      default: z.optional(z.boolean()),
      /**
       * `private_key_jwt` only: the JWS algorithm of this EHR's client assertions (SMART-CAUTH-09).
       * RS384 (the default) signs with the RSA key, ES384 with the P-384 key; register the JWKS URL
       * and this algorithm at the EHR. A launch refuses an EHR whose discovery lists
       * `token_endpoint_auth_signing_alg_values_supported` without it.
       */
      signingAlg: z.optional(z.enum(SIGNING_ALGS)),
      /**
       * Quirk: send `client_id` in the body of authenticated token, refresh and revocation requests
       * too (a confidential client normally omits it: SMART-TOKEN-01, RFC 6749 §2.3.1). For EHRs that
       * refuse a refresh or revocation without it although the client authenticated (default false).
       */
      sendClientIdWithAuth: z.optional(z.boolean()),
      /**
       * Quirk: the scope syntax this EHR accepts (SMART-SCOPE-02). `v1` rewrites `.rs` → `.read`,
       * `.cud` → `.write`, `.cruds` → `.*` (granular scopes cannot be expressed and are refused);
       * `v2` rewrites the other way; `auto` (the default) uses v1 when discovery advertises
       * `permission-v1` without `permission-v2`, v2 for the reverse, and the scope as written otherwise.
       */
      scopeSyntax: z.optional(z.enum(['auto', 'v1', 'v2'])),
      /**
       * Quirk: how the browser is sent to the authorization endpoint (SMART-AUTHZ-10). `GET` always;
       * `POST` always (an auto-submitting form; needs `authorize-post`); `auto` (the default) posts
       * when the GET URL would exceed 2000 characters and the EHR advertises `authorize-post`.
       */
      authorizeMethod: z.optional(z.enum(['auto', 'GET', 'POST'])),
      /**
       * Quirk: the OpenID Connect issuer of an EHR whose discovery names none (SMART v1 servers found
       * through the CapabilityStatement, SMART-DISC-07): its `/.well-known/openid-configuration` gives
       * the JWKS that verifies id_tokens. Used only when discovery lacks `issuer` or `jwks_uri`.
       */
      openidIssuer: z.optional(secureUrl(mode, 'openidIssuer')),
      /** FHIR writes through the proxy (create, update, patch, delete, state-changing operations): off unless enabled here. */
      writes: z.optional(
        z.strictObject({
          enabled: z.boolean(),
          /** Which write interactions are forwarded when enabled (default: all four). */
          interactions: z.optional(z.array(z.enum(WRITE_INTERACTIONS)).check(z.minLength(1))),
        }),
      ),
      /** FHIR proxy tuning for this EHR; every member has a default (`PROXY_DEFAULTS`). */
      proxy: z.optional(
        z.strictObject({
          /** How long one FHIR request may take at the EHR (answer 504 after). */
          timeoutSeconds: z.optional(z.number().check(z.int(), z.gte(1), z.lte(900))),
          /** Largest request body forwarded; API Gateway hands Lambda the body base64-encoded within 6 MB. */
          maxRequestKilobytes: z.optional(z.number().check(z.int(), z.gte(1), z.lte(4096))),
          /** Largest EHR answer delivered (streamed answers; buffered answers stop at 4 MB). */
          maxResponseMegabytes: z.optional(z.number().check(z.int(), z.gte(1), z.lte(190))),
          /** Refuse requests the granted scopes do not permit before contacting the EHR. */
          enforceScopes: z.optional(z.boolean()),
          /** In patient-level sessions, refuse requests that plainly name another patient. */
          confineToPatient: z.optional(z.boolean()),
        }),
      ),
    })
    .check(
      z.superRefine((issuer, ctx) => {
        if (issuer.clientAuth === 'client_secret_basic' && issuer.clientSecret === undefined) {
          ctx.addIssue({ code: 'custom', path: ['clientSecret'], message: 'clientSecret is required when clientAuth is "client_secret_basic"' });
        }
        if (issuer.clientAuth !== 'client_secret_basic' && issuer.clientSecret !== undefined) {
          ctx.addIssue({ code: 'custom', path: ['clientSecret'], message: `clientSecret must be absent when clientAuth is "${issuer.clientAuth}"` });
        }
        if (issuer.signingAlg !== undefined && issuer.clientAuth !== 'private_key_jwt') {
          ctx.addIssue({ code: 'custom', path: ['signingAlg'], message: `signingAlg applies only to clientAuth "private_key_jwt" (this issuer uses "${issuer.clientAuth}")` });
        }
        if (issuer.clientSecret !== undefined && mode === 'aws' && !SECRET_ARN.test(issuer.clientSecret)) {
          ctx.addIssue({
            code: 'custom',
            path: ['clientSecret'],
            message: 'in a deployed stack clientSecret must be a Secrets Manager secret ARN, never the secret itself',
          });
        }
      }),
    );
}

export const SESSION_DEFAULTS = {
  lifetimeMinutes: 8 * 60,
  idleTimeoutMinutes: 60,
  transactionMinutes: 10,
  refreshSkewSeconds: 60,
  refreshLeaseSeconds: 15,
  proxyCacheSeconds: 5,
} as const;

/** The schema `configSchema` returns, for rules added on top of it (cookie-site.ts). */
export type ConfigSchema = ReturnType<typeof buildConfigSchema>;

const configSchemas = new Map<ConfigMode, ConfigSchema>();

/**
 * The config schema of a mode, built at its first use and kept: zod builds a schema's machinery when
 * it is constructed (about 2.5 ms for this one, against 0.2 ms to run it), and the schema holds no
 * state between parses (defaults come out as fresh objects, refinements keep theirs per call).
 */
export function configSchema(mode: ConfigMode): ConfigSchema {
  let schema = configSchemas.get(mode);
  if (schema === undefined) {
    schema = buildConfigSchema(mode);
    configSchemas.set(mode, schema);
  }
  return schema;
}

function buildConfigSchema(mode: ConfigMode) {
  const minutes = (min: number, max: number, byDefault: number) => z._default(z.number().check(z.int(), z.gte(min), z.lte(max)), byDefault);
  return z
    .strictObject({
      customer: z
        .string()
        .check(z.regex(/^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$/, 'customer must be 1-40 lowercase letters, digits or inner hyphens')),
      publicUrl: z.pipe(
        secureUrl(mode, 'publicUrl').check(z.refine((v) => !v.includes('?'), 'publicUrl must not have a query string')),
        z.transform((v: string) => v.replace(/\/+$/, '')),
      ),
      app: z.strictObject({ url: secureUrl(mode, 'app.url') }),
      issuers: z.array(issuerSchema(mode)).check(z.minLength(1, 'issuers must list at least one EHR')),
      session: z._default(
        z.strictObject({
          /** Absolute lifetime of a session record; refreshing never extends it. */
          lifetimeMinutes: minutes(5, 7 * 24 * 60, SESSION_DEFAULTS.lifetimeMinutes),
          /** A session unused this long after its access token expired ends (it is not refreshed). */
          idleTimeoutMinutes: minutes(1, 7 * 24 * 60, SESSION_DEFAULTS.idleTimeoutMinutes),
          /** How long a started launch waits for the EHR to call back. */
          transactionMinutes: minutes(1, 60, SESSION_DEFAULTS.transactionMinutes),
          /** Refresh this long before the access token expires. */
          refreshSkewSeconds: minutes(0, 600, SESSION_DEFAULTS.refreshSkewSeconds),
          /**
           * How long one refresh may hold the session's lease. A lease left by a crashed invocation
           * blocks refreshes this long at most; the token endpoint call is bounded below it.
           */
          refreshLeaseSeconds: minutes(3, 60, SESSION_DEFAULTS.refreshLeaseSeconds),
          /**
           * How long a FHIR proxy container serves a session it opened without reading the store
           * again (0: never). A session ended elsewhere stays usable there this long, for its bound
           * browser only (docs/design.md, "One sign in again signal").
           */
          proxyCacheSeconds: minutes(0, 60, SESSION_DEFAULTS.proxyCacheSeconds),
        }),
        SESSION_DEFAULTS,
      ),
      cookie: z._default(
        z.strictObject({
          /** `None` (sent with `Partitioned`) for apps embedded in an EHR iframe; `Lax` otherwise. */
          sameSite: z._default(z.enum(['Lax', 'None']), 'Lax'),
          /** Turn off only for browsers that block cookies in EHR iframes: then a session id alone opens the session. */
          browserBinding: z._default(z.boolean(), true),
        }),
        { sameSite: 'Lax', browserBinding: true },
      ),
    })
    .check(
      z.superRefine((config, ctx) => {
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
      }),
    );
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

/**
 * Validates a parsed config against `schema` (`configSchema(mode)`, or that schema with rules of its
 * own added: `parseDeployableConfig` in cookie-site.ts); every problem is reported at once, each
 * with its JSON path.
 */
export function parseConfigWith(schema: ConfigSchema, value: unknown, source: string): Config {
  const result = schema.safeParse(value);
  if (!result.success) {
    throw new ConfigError(
      source,
      result.error.issues.map((issue) => `${jsonPath(issue.path)}: ${issue.message}`),
    );
  }
  return Object.freeze(result.data);
}

/**
 * Validates a parsed config; every problem is reported at once, each with its JSON path. In 'aws'
 * mode, what a function checks of the config it was deployed with: the rules needing the Public
 * Suffix List run before deployment only (`parseDeployableConfig`, cookie-site.ts).
 */
export function parseConfig(value: unknown, mode: ConfigMode, source = '(inline)'): Config {
  return parseConfigWith(configSchema(mode), value, source);
}

/** The JSON of a config file, a syntax error reported like any other problem. */
export function configJson(text: string, source: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ConfigError(source, [`$: not valid JSON (${(error as Error).message})`]);
  }
}

/** Parses the text of a config file (JSON), reporting a syntax error like any other problem. */
export function parseConfigText(text: string, mode: ConfigMode, source: string): Config {
  return parseConfig(configJson(text, source), mode, source);
}
