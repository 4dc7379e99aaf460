import * as z from '../config/zod.js';
import type { ConfigMode } from '../config/schema.js';
import { fetchJson } from './ehr/http.js';
import { SmartError } from './errors.js';
import { SingleFlightCache } from './single-flight-cache.js';
import type { AuthServerEndpoints } from './records.js';
import type { Clock, HttpClient } from './ports.js';
import { builtOnFirstUse } from './lazy.js';

/** `{iss}/.well-known/smart-configuration`, appended even when the base has a path (SMART-DISC-01). */
export function smartConfigurationUrl(iss: string): string {
  return `${iss.replace(/\/+$/, '')}/.well-known/smart-configuration`;
}

const stringList = builtOnFirstUse(() =>
  z.array(z.string()),
);

/** The fields of `.well-known/smart-configuration` we rely on (SMART-DISC-02/03); others are ignored. */
const SmartConfigurationSchema = builtOnFirstUse(() =>
  z.object({
    issuer: z.optional(z.string()),
    jwks_uri: z.optional(z.string()),
    authorization_endpoint: z.string({ error: 'authorization_endpoint is required for launches' }),
    token_endpoint: z.string({ error: 'token_endpoint is required' }),
    revocation_endpoint: z.optional(z.string()),
    end_session_endpoint: z.optional(z.string()),
    grant_types_supported: stringList,
    capabilities: stringList,
    code_challenge_methods_supported: stringList,
    token_endpoint_auth_methods_supported: z.optional(stringList),
    token_endpoint_auth_signing_alg_values_supported: z.optional(stringList),
    scopes_supported: z.optional(stringList),
    authorization_response_iss_parameter_supported: z.optional(z.boolean()),
  }),
);

/** Where the endpoints came from: the SMART v2 well-known file, or the v1 CapabilityStatement fallback (SMART-DISC-07). */
export type DiscoverySource = 'well-known' | 'capability-statement';

export interface SmartConfiguration {
  readonly endpoints: AuthServerEndpoints;
  /** SMART capabilities; empty when discovery came from the CapabilityStatement (unknown). */
  readonly capabilities: readonly string[];
  readonly tokenEndpointAuthMethods: readonly string[] | undefined;
  /** `token_endpoint_auth_signing_alg_values_supported`, when published (SMART-CAUTH-09). */
  readonly tokenEndpointAuthSigningAlgs?: readonly string[] | undefined;
  /** `code_challenge_methods_supported`; `undefined` when unknown (CapabilityStatement discovery). */
  readonly codeChallengeMethods?: readonly string[] | undefined;
  /** `scopes_supported` (not exhaustive, SMART-DISC-03), when published. */
  readonly scopesSupported?: readonly string[] | undefined;
  readonly grantTypes?: readonly string[] | undefined;
  /** Absent means `well-known`. */
  readonly source?: DiscoverySource | undefined;
  /** The `openidIssuer` setting filled in `issuer` and `jwks_uri` (the EHR's discovery named none). */
  readonly openidFromConfig?: boolean | undefined;
  /**
   * SMART v1 only: the OpenID configuration found without configuration at the authorization server
   * (`discoverOpenidIssuer`), and the configuration URLs that were tried (for doctor and the refusal).
   */
  readonly openidDiscovery?: { readonly found: string | undefined; readonly tried: readonly string[] } | undefined;
}

/** A FHIR base treated as a directory, so `auth/token` resolves below it rather than beside it. */
function baseDirectory(fhirBase: string): string {
  return fhirBase.endsWith('/') ? fhirBase : `${fhirBase}/`;
}

/**
 * An endpoint URL from discovery: absolute, or (with `fhirBase`, for legacy servers) relative to the
 * FHIR base (SMART-DISC-05): `/oauth/token` against its origin, `auth/token` or `../auth/token` against
 * the base as a directory. A network-path reference (`//host/…`) is never taken as relative: it
 * names another server. Then https, or loopback http in local runs.
 */
function checkEndpoint(value: string, field: string, mode: ConfigMode, fhirBase?: string, where = 'the SMART configuration'): string {
  let url: URL | null = URL.parse(value);
  if (url === null && fhirBase !== undefined && !value.startsWith('//') && !value.includes('\\')) {
    url = URL.parse(value, baseDirectory(fhirBase));
  }
  if (url === null) {
    throw new SmartError('DISCOVERY_INVALID', `"${field}" in ${where} is not an absolute URL`, { details: { field } });
  }
  const loopback = url.hostname === 'localhost' || url.hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(url.hostname);
  if (url.protocol !== 'https:' && !(mode === 'local' && url.protocol === 'http:' && loopback)) {
    throw new SmartError('DISCOVERY_INVALID', `"${field}" in ${where} must use https`, { details: { field } });
  }
  return url.href;
}

/** A zod failure as `DISCOVERY_INVALID` naming the first offending field (SMART-DISC-02). */
function invalidDocument(error: z.core.$ZodError, what: string): SmartError {
  const first = error.issues[0];
  const field = first?.path.join('.') || 'document';
  return new SmartError('DISCOVERY_INVALID', `${what} field "${field}" is missing or has the wrong type`, { details: { field } });
}

/**
 * Validates a SMART configuration document without judging what it offers: required fields present
 * and typed (SMART-DISC-02), `issuer` and `jwks_uri` present with `sso-openid-connect`, endpoints
 * absolute (or, given `fhirBase`, relative to it: SMART-DISC-05) and https (loopback http in local
 * runs). Whether S256 is advertised is the caller's judgement (`checkPkceSupported`, called by `requireCapabilities`).
 */
export function readSmartConfiguration(document: unknown, mode: ConfigMode, fhirBase?: string): SmartConfiguration {
  const parsed = SmartConfigurationSchema.safeParse(document);
  if (!parsed.success) throw invalidDocument(parsed.error, 'SMART configuration');
  const doc = parsed.data;
  // SMART-DISC-02: `issuer` and `jwks_uri` are required when the server offers OpenID Connect sign-in.
  if (doc.capabilities.includes('sso-openid-connect')) {
    for (const field of ['issuer', 'jwks_uri'] as const) {
      if (doc[field] === undefined) {
        throw new SmartError('DISCOVERY_INVALID', `SMART configuration field "${field}" is required with the sso-openid-connect capability`, {
          details: { field },
        });
      }
    }
  }
  const endpoint = (value: string, field: string) => checkEndpoint(value, field, mode, fhirBase);
  return {
    endpoints: {
      authorizationEndpoint: endpoint(doc.authorization_endpoint, 'authorization_endpoint'),
      tokenEndpoint: endpoint(doc.token_endpoint, 'token_endpoint'),
      issuer: doc.issuer,
      jwksUri: doc.jwks_uri === undefined ? undefined : endpoint(doc.jwks_uri, 'jwks_uri'),
      revocationEndpoint: doc.revocation_endpoint === undefined ? undefined : endpoint(doc.revocation_endpoint, 'revocation_endpoint'),
      issParameterSupported: doc.authorization_response_iss_parameter_supported === true,
      ...endSessionEndpoint(doc.end_session_endpoint, mode, fhirBase),
    },
    capabilities: doc.capabilities,
    tokenEndpointAuthMethods: doc.token_endpoint_auth_methods_supported,
    tokenEndpointAuthSigningAlgs: doc.token_endpoint_auth_signing_alg_values_supported,
    codeChallengeMethods: doc.code_challenge_methods_supported,
    scopesSupported: doc.scopes_supported,
    grantTypes: doc.grant_types_supported,
    source: 'well-known',
  };
}

/**
 * A published `end_session_endpoint` when it passes the rule of every endpoint; `undefined` otherwise
 * (a bad one only means no end-session redirect: it never fails discovery or logout).
 */
export function usableEndSessionEndpoint(value: unknown, mode: ConfigMode, fhirBase?: string): string | undefined {
  if (typeof value !== 'string') return undefined;
  try {
    return checkEndpoint(value, 'end_session_endpoint', mode, fhirBase);
  } catch {
    return undefined;
  }
}

/** `{ endSessionEndpoint }` when usable, kept with the cached endpoints so that logout does not ask the EHR again. */
function endSessionEndpoint(value: string | undefined, mode: ConfigMode, fhirBase?: string): { endSessionEndpoint?: string } {
  const endpoint = usableEndSessionEndpoint(value, mode, fhirBase);
  return endpoint === undefined ? {} : { endSessionEndpoint: endpoint };
}

/** `PKCE_UNSUPPORTED` unless `S256` is advertised; unknown (CapabilityStatement discovery) passes. */
export function checkPkceSupported(smart: SmartConfiguration): void {
  if (smart.codeChallengeMethods !== undefined && !smart.codeChallengeMethods.includes('S256')) {
    throw new SmartError('PKCE_UNSUPPORTED', 'the SMART configuration does not list "S256" in code_challenge_methods_supported');
  }
}

/** `{iss}/metadata`: the FHIR CapabilityStatement, where SMART v1 servers name their OAuth endpoints. */
export function capabilityStatementUrl(iss: string): string {
  return `${iss.replace(/\/+$/, '')}/metadata`;
}

/** The extension of `CapabilityStatement.rest.security` that lists a SMART v1 server's OAuth endpoints. */
export const OAUTH_URIS_EXTENSION = 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris';

const UriExtension = builtOnFirstUse(() =>
  z.object({ url: z.string(), valueUri: z.optional(z.string()), valueUrl: z.optional(z.string()) }),
);
const CapabilityStatementSchema = builtOnFirstUse(() =>
  z.object({
    resourceType: z.literal('CapabilityStatement'),
    rest: z.optional(
      z.array(
        z.object({
          security: z.optional(z.object({ extension: z.optional(z.array(z.object({ url: z.string(), extension: z.optional(z.array(UriExtension)) }))) })),
        }),
      ),
    ),
  }),
);

const WHERE_V1 = 'the CapabilityStatement oauth-uris extension';

/**
 * SMART v1 discovery (SMART-DISC-07): the `oauth-uris` extension of `CapabilityStatement.rest[].security`,
 * sub-extensions `authorize` and `token` (required here: launches need both) and `revoke` (optional).
 * Endpoints are checked like the well-known ones, relative ones resolved against the FHIR base.
 * Nothing says which PKCE methods, client authentication or capabilities the server has: they stay
 * unknown, and PKCE S256 and `state` are sent anyway.
 */
export function parseCapabilityStatement(document: unknown, mode: ConfigMode, fhirBase: string): SmartConfiguration {
  const parsed = CapabilityStatementSchema.safeParse(document);
  if (!parsed.success) throw invalidDocument(parsed.error, 'CapabilityStatement');
  const oauthUris = (parsed.data.rest ?? [])
    .flatMap((rest) => rest.security?.extension ?? [])
    .find((extension) => extension.url === OAUTH_URIS_EXTENSION);
  if (oauthUris === undefined) {
    throw new SmartError('DISCOVERY_INVALID', `the EHR has no SMART configuration and its CapabilityStatement has no oauth-uris extension`, {
      details: { field: 'rest.security.extension' },
    });
  }
  const uri = (name: string): string | undefined => {
    const found = oauthUris.extension?.find((extension) => extension.url === name);
    return found?.valueUri ?? found?.valueUrl;
  };
  const required = (name: string): string => {
    const value = uri(name);
    if (value === undefined) {
      throw new SmartError('DISCOVERY_INVALID', `${WHERE_V1} has no "${name}" URI`, { details: { field: `oauth-uris.${name}` } });
    }
    return checkEndpoint(value, name, mode, fhirBase, WHERE_V1);
  };
  const revoke = uri('revoke');
  return {
    endpoints: {
      authorizationEndpoint: required('authorize'),
      tokenEndpoint: required('token'),
      issuer: undefined,
      jwksUri: undefined,
      revocationEndpoint: revoke === undefined ? undefined : checkEndpoint(revoke, 'revoke', mode, fhirBase, WHERE_V1),
      issParameterSupported: false,
    },
    capabilities: [],
    tokenEndpointAuthMethods: undefined,
    source: 'capability-statement',
  };
}

/** `{issuer}/.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §4). */
export function openidConfigurationUrl(issuer: string): string {
  return `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
}

const OpenidConfigurationSchema = builtOnFirstUse(() =>
  z.object({ issuer: z.string(), jwks_uri: z.string(), end_session_endpoint: z.optional(z.string()) }),
);

/**
 * Fills in `issuer` and `jwks_uri` from the configured `openidIssuer` when discovery named none: the
 * issuer's OpenID configuration must name exactly that issuer (OIDC Discovery §4.3), and its JWKS URL
 * passes the same https rule as every endpoint.
 */
async function withOpenidIssuer(http: HttpClient, smart: SmartConfiguration, openidIssuer: string, mode: ConfigMode, clock: Clock | undefined): Promise<SmartConfiguration> {
  const document = await fetchJson(
    http,
    openidConfigurationUrl(openidIssuer),
    { unavailable: 'DISCOVERY_UNAVAILABLE', invalid: 'DISCOVERY_INVALID' },
    'the OpenID configuration of openidIssuer',
    clock,
  );
  const parsed = OpenidConfigurationSchema.safeParse(document);
  if (!parsed.success) throw invalidDocument(parsed.error, 'OpenID configuration');
  if (parsed.data.issuer !== openidIssuer) {
    throw new SmartError('DISCOVERY_INVALID', 'the OpenID configuration of openidIssuer names another "issuer"', { details: { field: 'issuer' } });
  }
  const jwksUri = checkEndpoint(parsed.data.jwks_uri, 'jwks_uri', mode, undefined, 'the OpenID configuration of openidIssuer');
  const endSession = smart.endpoints.endSessionEndpoint === undefined ? endSessionEndpoint(parsed.data.end_session_endpoint, mode) : {};
  return { ...smart, endpoints: { ...smart.endpoints, issuer: openidIssuer, jwksUri, ...endSession }, openidFromConfig: true };
}

/**
 * Where a SMART v1 server's OpenID issuer may be, derived from its own OAuth endpoints only (OpenID
 * Connect Discovery §4: `{issuer}/.well-known/openid-configuration`): the token endpoint's parent path,
 * the authorization endpoint's parent path, then their origin. None when the two endpoints are on
 * different origins: there is then no one authorization server to ask.
 */
export function openidIssuerCandidates(endpoints: AuthServerEndpoints): string[] {
  const token = new URL(endpoints.tokenEndpoint);
  const authorize = new URL(endpoints.authorizationEndpoint);
  if (token.origin !== authorize.origin) return [];
  const parent = (url: URL) => `${url.origin}${url.pathname.replace(/\/[^/]*$/, '')}`;
  return [...new Set([parent(token), parent(authorize), token.origin])];
}

/**
 * Finds the OpenID issuer of a SMART v1 server without configuration (docs/hardening.md, "OpenID
 * issuer of a SMART v1 EHR"). Each candidate of `openidIssuerCandidates` is asked, in order, for its
 * OpenID configuration; the first is taken whose `issuer` is exactly the candidate (so the issuer is
 * on the origin of the authorization and token endpoints the EHR's CapabilityStatement named, OpenID
 * Connect Discovery §4.3) and whose `jwks_uri` passes the https rule of every endpoint. A missing,
 * failing or mismatched configuration is skipped, never an error: the launch is then refused with
 * `OPENID_UNSUPPORTED` only if it asks for `openid`. The id_token's `iss` must then equal that issuer
 * (`verifyIdToken`), as with a published one.
 */
async function discoverOpenidIssuer(http: HttpClient, smart: SmartConfiguration, mode: ConfigMode, clock?: Clock): Promise<SmartConfiguration> {
  const tried: string[] = [];
  for (const candidate of openidIssuerCandidates(smart.endpoints)) {
    const url = openidConfigurationUrl(candidate);
    tried.push(url);
    try {
      const document = await fetchJson(http, url, { unavailable: 'DISCOVERY_UNAVAILABLE', invalid: 'DISCOVERY_INVALID' }, 'the OpenID configuration', clock);
      const parsed = OpenidConfigurationSchema.safeParse(document);
      if (!parsed.success || parsed.data.issuer.replace(/\/+$/, '') !== candidate) continue;
      const jwksUri = checkEndpoint(parsed.data.jwks_uri, 'jwks_uri', mode, undefined, 'the OpenID configuration');
      const endSession = smart.endpoints.endSessionEndpoint === undefined ? endSessionEndpoint(parsed.data.end_session_endpoint, mode) : {};
      return { ...smart, endpoints: { ...smart.endpoints, issuer: parsed.data.issuer, jwksUri, ...endSession }, openidDiscovery: { found: url, tried } };
    } catch (error) {
      if (!(error instanceof SmartError)) throw error;
      // Unreachable or silent (no HTTP answer at all): the other candidates are on the same origin,
      // so asking them would only add timeouts to this launch.
      if (error.code === 'DISCOVERY_UNAVAILABLE' && error.details?.status === undefined) break;
    }
  }
  return { ...smart, openidDiscovery: { found: undefined, tried } };
}

/** What discovery needs to know about a configured issuer. */
export interface DiscoveryTarget {
  readonly iss: string;
  readonly openidIssuer?: string | undefined;
}

/**
 * Discovers an allow-listed issuer: `{iss}/.well-known/smart-configuration` (SMART-DISC-01), and when
 * the EHR has none (404 or 410) the SMART v1 CapabilityStatement at `{iss}/metadata` (SMART-DISC-07);
 * relative endpoints resolved against `iss` (SMART-DISC-05); the `openidIssuer` setting used when no
 * OpenID issuer was published, else, for a SMART v1 server, the OpenID issuer found at its
 * authorization server (`discoverOpenidIssuer`). Does not judge capabilities (see `capabilities.ts`). Each fetch
 * times out on `clock` when one is given.
 */
export async function discoverIssuer(http: HttpClient, target: DiscoveryTarget, mode: ConfigMode, clock?: Clock): Promise<SmartConfiguration> {
  const codes = { unavailable: 'DISCOVERY_UNAVAILABLE', invalid: 'DISCOVERY_INVALID' } as const;
  let smart: SmartConfiguration;
  try {
    const document = await fetchJson(http, smartConfigurationUrl(target.iss), codes, 'the SMART configuration', clock);
    smart = readSmartConfiguration(document, mode, target.iss);
  } catch (error) {
    const status = error instanceof SmartError && error.code === 'DISCOVERY_UNAVAILABLE' ? error.details?.status : undefined;
    if (status !== 404 && status !== 410) throw error;
    const document = await fetchJson(http, capabilityStatementUrl(target.iss), codes, 'the SMART configuration (HTTP 404) and the CapabilityStatement', clock);
    smart = parseCapabilityStatement(document, mode, target.iss);
  }
  const { issuer, jwksUri } = smart.endpoints;
  if (target.openidIssuer !== undefined && (issuer === undefined || jwksUri === undefined)) {
    smart = await withOpenidIssuer(http, smart, target.openidIssuer, mode, clock);
  } else if (smart.source === 'capability-statement') {
    smart = await discoverOpenidIssuer(http, smart, mode, clock);
  }
  return smart;
}

/** How long a discovered configuration is served as is, and how long (stale) while it is refreshed. */
export interface DiscoveryCacheOptions {
  /** Served without any fetch (default 5 minutes). */
  readonly freshMs?: number;
  /** After `freshMs` and up to this age, served at once while one background fetch refreshes it (default 1 hour). */
  readonly staleMs?: number;
  /** After a failed background refresh, the next one waits this long (default 30 s): a failing EHR is not asked on every launch. */
  readonly retryMs?: number;
}

export const DISCOVERY_FRESH_MS = 5 * 60_000;
export const DISCOVERY_STALE_MS = 60 * 60_000;

/**
 * Discovery per container (SMART-DISC-10), keyed by issuer: fresh for `freshMs`; then, up to `staleMs`,
 * stale-while-revalidate (the stale copy answers at once, one background fetch replaces it, and a
 * failed or invalid fetch keeps it, retried after `retryMs`); older entries are fetched before answering. Concurrent misses
 * share one fetch. Failures are never cached. Created once by the wiring and passed in `CoreDeps`,
 * so the core keeps no module state; time comes from the `Clock` port.
 */
export class DiscoveryCache {
  readonly freshMs: number;
  readonly staleMs: number;
  readonly retryMs: number;
  readonly #cache = new SingleFlightCache<SmartConfiguration>();
  /** The `end_session_endpoint` of OpenID configurations read for logout only (none when absent or unusable). */
  readonly #endSession = new SingleFlightCache<string | undefined>();
  /** Background refreshes that failed (the stale copy was kept); for logs and tests. */
  revalidationFailures = 0;

  constructor(options: DiscoveryCacheOptions = {}) {
    this.freshMs = options.freshMs ?? DISCOVERY_FRESH_MS;
    this.staleMs = Math.max(options.staleMs ?? DISCOVERY_STALE_MS, this.freshMs);
    this.retryMs = options.retryMs ?? 30_000;
  }

  /** The configuration for `key`: cached, stale while refreshing, or loaded now. */
  get(key: string, clock: Clock, load: () => Promise<SmartConfiguration>): Promise<SmartConfiguration> {
    return this.#serve(this.#cache, key, clock, load);
  }

  /**
   * The end-session endpoint an OpenID configuration (keyed by its URL) names, for an EHR whose SMART
   * configuration names none and whose discovery read no OpenID configuration: cached by the same
   * rules as a configuration, so logouts do not ask the EHR each time.
   */
  endSessionEndpoint(key: string, clock: Clock, load: () => Promise<string | undefined>): Promise<string | undefined> {
    return this.#serve(this.#endSession, key, clock, load);
  }

  async #serve<V>(cache: SingleFlightCache<V>, key: string, clock: Clock, load: () => Promise<V>): Promise<V> {
    const entry = cache.entry(key);
    const age = entry === undefined ? Infinity : clock.now() - entry.loadedAt;
    const loadedAt = () => clock.now();
    if (entry !== undefined && age < this.freshMs) return entry.value;
    if (entry !== undefined && age < this.staleMs) {
      if (entry.failedAt === undefined || clock.now() - entry.failedAt >= this.retryMs) {
        cache.load(key, load, loadedAt).catch(() => {
          this.revalidationFailures += 1;
          entry.failedAt = clock.now();
        });
      }
      return entry.value;
    }
    return cache.load(key, load, loadedAt);
  }

  /** Forgets every entry (the next launch of each issuer fetches again). */
  clear(): void {
    this.#cache.clear();
    this.#endSession.clear();
  }
}

/** The cache key of a target: the issuer, and the `openidIssuer` that completes its configuration. */
function cacheKey(target: DiscoveryTarget): string {
  return `${target.iss}\n${target.openidIssuer ?? ''}`;
}

/** `discoverIssuer` through the container's `DiscoveryCache` when the wiring provides one. */
export function discoverCached(
  deps: { readonly http: HttpClient; readonly mode: ConfigMode; readonly clock: Clock; readonly discovery?: DiscoveryCache | undefined },
  target: DiscoveryTarget,
): Promise<SmartConfiguration> {
  const load = () => discoverIssuer(deps.http, target, deps.mode, deps.clock);
  return deps.discovery === undefined ? load() : deps.discovery.get(cacheKey(target), deps.clock, load);
}
