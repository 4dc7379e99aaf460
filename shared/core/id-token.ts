import { createLocalJWKSet, errors as joseErrors, jwtVerify, type JSONWebKeySet } from 'jose';
import { isSmartError, SmartError } from './errors.js';
import { fetchJson } from './ehr/http.js';
import { SingleFlightCache } from './single-flight-cache.js';
import type { Clock, HttpClient } from './ports.js';

export interface IdTokenExpectations {
  /** The authorization server's `issuer` from discovery. */
  readonly issuer: string | undefined;
  readonly jwksUri: string | undefined;
  readonly clientId: string;
  /** The nonce sent in the authorization request; the id_token must echo it. */
  readonly nonce: string | undefined;
  /** Epoch milliseconds. */
  readonly now: number;
}

export interface IdTokenClaims {
  readonly sub: string;
  readonly fhirUser?: string | undefined;
}

const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512'];

/** Fetches a JWK Set (timing out on `clock` when given); `DISCOVERY_UNAVAILABLE` / `DISCOVERY_INVALID` when it cannot be had. */
export async function fetchJwks(http: HttpClient, jwksUri: string, clock?: Clock): Promise<JSONWebKeySet> {
  const jwks = await fetchJson(http, jwksUri, { unavailable: 'DISCOVERY_UNAVAILABLE', invalid: 'DISCOVERY_INVALID' }, "the issuer's JWKS", clock);
  try {
    createLocalJWKSet(jwks as JSONWebKeySet);
  } catch (cause) {
    throw new SmartError('DISCOVERY_INVALID', "the issuer's JWKS is not a valid JWK Set", { cause });
  }
  return jwks as JSONWebKeySet;
}

export interface JwksCacheOptions {
  /** A key set is used this long without asking again (default 10 minutes). */
  readonly maxAgeMs?: number;
  /** An unknown `kid` fetches the set again at most this often per JWKS URL (default 30 s). */
  readonly minRefetchIntervalMs?: number;
}

/**
 * Issuers' JWK Sets, per container (AWS-08, SMART-DISC-10), keyed by JWKS URL. A set is reused for
 * `maxAgeMs`; an id_token signed with a `kid` the cached set lacks (the EHR rotated its key) fetches
 * the set again, at most once per `minRefetchIntervalMs`, so a stream of tokens with a bogus `kid`
 * cannot make us hammer the EHR. Concurrent fetches of one URL are shared. Created by the wiring.
 */
export class JwksCache {
  readonly maxAgeMs: number;
  readonly minRefetchIntervalMs: number;
  readonly #cache = new SingleFlightCache<JSONWebKeySet>();

  constructor(options: JwksCacheOptions = {}) {
    this.maxAgeMs = options.maxAgeMs ?? 10 * 60_000;
    this.minRefetchIntervalMs = options.minRefetchIntervalMs ?? 30_000;
  }

  /** JWKS fetches made (for tests and logs). */
  get fetches(): number {
    return this.#cache.loads;
  }

  /** The key set: cached while younger than `maxAgeMs`, else fetched. */
  keys(http: HttpClient, jwksUri: string, now: number, clock?: Clock): Promise<JSONWebKeySet> {
    const entry = this.#cache.entry(jwksUri);
    if (entry !== undefined && now - entry.loadedAt < this.maxAgeMs) return Promise.resolve(entry.value);
    return this.#fetch(http, jwksUri, now, clock);
  }

  /** Fetches the set again for an unknown `kid`, unless it was fetched less than `minRefetchIntervalMs` ago. */
  refetch(http: HttpClient, jwksUri: string, now: number, clock?: Clock): Promise<JSONWebKeySet> | undefined {
    const entry = this.#cache.entry(jwksUri);
    if (entry !== undefined && now - entry.loadedAt < this.minRefetchIntervalMs) return undefined;
    return this.#fetch(http, jwksUri, now, clock);
  }

  #fetch(http: HttpClient, jwksUri: string, now: number, clock: Clock | undefined): Promise<JSONWebKeySet> {
    return this.#cache.load(jwksUri, () => fetchJwks(http, jwksUri, clock), () => now);
  }
}

/**
 * Runs `verify` with the key set at `jwksUri` (from `cache` when given); a `kid` the cached set does
 * not have fetches the set once more, since the EHR may have rotated its keys (SMART-DISC-10).
 */
export async function withIssuerKeys<T>(
  http: HttpClient,
  jwksUri: string,
  now: number,
  cache: JwksCache | undefined,
  clock: Clock | undefined,
  verify: (jwks: JSONWebKeySet) => Promise<T>,
): Promise<T> {
  try {
    return await verify(cache ? await cache.keys(http, jwksUri, now, clock) : await fetchJwks(http, jwksUri, clock));
  } catch (cause) {
    const again = cause instanceof joseErrors.JWKSNoMatchingKey ? cache?.refetch(http, jwksUri, now, clock) : undefined;
    if (again === undefined) throw cause;
    return verify(await again);
  }
}

/**
 * Verifies an id_token (OIDC Core §3.1.3.7, invariant 5): signature with a key from the
 * issuer's JWKS, `iss`, `aud` (our client id), `exp`/`iat` (60 s skew), and `nonce`. With a
 * `JwksCache` the key set comes from the cache, and a `kid` it lacks fetches the set once more.
 * A JWKS fetch times out on `clock` when one is given.
 */
export async function verifyIdToken(http: HttpClient, idToken: string, expected: IdTokenExpectations, cache?: JwksCache, clock?: Clock): Promise<IdTokenClaims> {
  if (expected.issuer === undefined || expected.jwksUri === undefined) {
    throw new SmartError('ID_TOKEN_INVALID', 'the SMART configuration has no "issuer" or "jwks_uri" to verify the id_token with');
  }
  const jwksUri = expected.jwksUri;
  const verify = (jwks: JSONWebKeySet) =>
    jwtVerify(idToken, createLocalJWKSet(jwks), {
      issuer: expected.issuer,
      audience: expected.clientId,
      algorithms: ALGORITHMS,
      currentDate: new Date(expected.now),
      clockTolerance: 60,
      requiredClaims: ['sub', 'exp', 'iat'],
    });
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await withIssuerKeys(http, jwksUri, expected.now, cache, clock, verify));
  } catch (cause) {
    if (isSmartError(cause)) throw cause;
    const reason = cause instanceof joseErrors.JOSEError ? cause.code : 'ERR_UNKNOWN';
    const claim = cause instanceof joseErrors.JWTClaimValidationFailed ? cause.claim : undefined;
    throw new SmartError('ID_TOKEN_INVALID', claim ? `the id_token "${claim}" claim is not valid` : 'the id_token failed verification', {
      cause,
      details: claim ? { reason, claim } : { reason },
    });
  }
  // OIDC Core §3.1.3.7 (4, 5): when `azp` is present it must be us (a token minted for another client
  // that merely lists us among its audiences is not ours).
  if (payload.azp !== undefined && payload.azp !== expected.clientId) {
    throw new SmartError('ID_TOKEN_INVALID', 'the id_token "azp" claim is not valid', { details: { claim: 'azp' } });
  }
  if (expected.nonce !== undefined && payload.nonce !== expected.nonce) {
    throw new SmartError('ID_TOKEN_INVALID', 'the id_token "nonce" claim is not valid', { details: { claim: 'nonce' } });
  }
  const fhirUser = typeof payload.fhirUser === 'string' ? payload.fhirUser : undefined;
  return { sub: String(payload.sub), fhirUser };
}
