import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWTPayload } from 'jose';
import { sha256Base64url } from './crypto.js';
import { SmartError } from './errors.js';
import { withIssuerKeys, type JwksCache } from './id-token.js';
import type { HttpClient } from './ports.js';

/**
 * OpenID Connect Back-Channel Logout 1.0: the EHR's OpenID provider POSTs a signed `logout_token`
 * to our `backchannel_logout_uri` when a user signs out there. This module validates it exactly as
 * §2.6 lists, case by case; any failure is `LOGOUT_TOKEN_INVALID` (answered `400 invalid_request`),
 * with the failed check in `details.check` for the log (never the token).
 */

/** The `events` member a logout token must carry (§2.4). */
export const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout';

/** A logout token older than this (by `iat`) is refused, and its `jti` is remembered this long. */
export const LOGOUT_TOKEN_MAX_AGE_SECONDS = 300;
const CLOCK_SKEW_SECONDS = 60;

/** Asymmetric algorithms only: never `none`, never an HMAC keyed by something the EHR and we both hold. */
const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512'];

/** One OpenID provider we accept logout tokens from: its `issuer`, its JWKS and our client id there. */
export interface LogoutTokenIssuer {
  /** The OpenID provider's `issuer` (the `iss` its tokens carry). */
  readonly issuer: string;
  readonly jwksUri: string;
  /** Our client id at that provider (the token's `aud`). */
  readonly clientId: string;
  /** The configured FHIR base URL (`iss` of the launch) whose sessions this provider signs in. */
  readonly fhirIss: string;
}

/** Remembers a `jti` until `expiresAtSeconds`; `false` when it was already seen (a replay). */
export type JtiReplayGuard = (key: string, expiresAtSeconds: number) => Promise<boolean>;

export interface LogoutTokenContext {
  /**
   * The configured EHRs' OpenID providers; as a function, asked only once the token is a JWT with an
   * accepted `alg`, so an anonymous POST of anything else costs no discovery.
   */
  readonly issuers: readonly LogoutTokenIssuer[] | (() => Promise<readonly LogoutTokenIssuer[]>);
  readonly http: HttpClient;
  readonly jwks?: JwksCache | undefined;
  /** Epoch milliseconds. */
  readonly now: number;
  readonly replayGuard: JtiReplayGuard;
  readonly maxAgeSeconds?: number;
}

export interface VerifiedLogoutToken {
  readonly issuer: string;
  /** The FHIR base URLs (configured issuers) whose sessions the token may end. */
  readonly fhirIssuers: readonly string[];
  readonly sid?: string | undefined;
  readonly sub?: string | undefined;
}

function invalid(check: string, message: string, cause?: unknown): SmartError {
  return new SmartError('LOGOUT_TOKEN_INVALID', `the logout_token was refused: ${message}`, {
    details: { check },
    ...(cause !== undefined ? { cause } : {}),
  });
}

/** The key under which a seen `jti` is remembered: a hash, so the store holds nothing the EHR sent. */
export function logoutJtiKey(issuer: string, jti: string): string {
  return sha256Base64url(`backchannel-logout\u0000${issuer}\u0000${jti}`);
}

/**
 * Validates a logout token (Back-Channel Logout 1.0 §2.6): a JWT with an asymmetric `alg` (never
 * `none`), signed by a key of its issuer's JWKS (cached; an unknown `kid` re-fetches once), `iss`
 * one of the configured OpenID issuers, `aud` our client id there, `iat` present and recent, `exp`
 * when present unexpired, `jti` present and never seen before, `events` holding the back-channel
 * logout event with an object value, `sid` or `sub` present, and no `nonce`.
 */
export async function verifyLogoutToken(token: unknown, context: LogoutTokenContext): Promise<VerifiedLogoutToken> {
  if (typeof token !== 'string' || token === '' || token.length > 16_384) throw invalid('form', 'no logout_token in the form body');
  let header;
  let unverified: JWTPayload;
  try {
    header = decodeProtectedHeader(token);
    unverified = decodeJwt(token);
  } catch (cause) {
    throw invalid('format', 'not a signed JWT', cause);
  }
  if (typeof header.alg !== 'string' || !ALGORITHMS.includes(header.alg)) throw invalid('alg', `"alg" ${String(header.alg)} is not accepted`);
  const issuers = typeof context.issuers === 'function' ? await context.issuers() : context.issuers;
  const candidates = issuers.filter((entry) => entry.issuer === unverified.iss);
  if (candidates.length === 0) throw invalid('iss', 'the issuer is not one of the configured EHRs');
  const issuer = candidates[0]!.issuer;
  // Each configured EHR's discovery names its own issuer and JWKS: two EHRs naming the same issuer
  // with different key sets are two signers, and a token verified by one set may only end the
  // sessions of the EHRs that published that set (never another EHR's that claims the issuer too).
  const groups = new Map<string, LogoutTokenIssuer[]>();
  for (const entry of candidates) groups.set(entry.jwksUri, [...(groups.get(entry.jwksUri) ?? []), entry]);
  const verifyWith = async (jwksUri: string, entries: readonly LogoutTokenIssuer[]): Promise<JWTPayload> => {
    const verify = async (jwks: JSONWebKeySet) =>
      (
        await jwtVerify(token, createLocalJWKSet(jwks), {
          issuer,
          audience: [...new Set(entries.map((entry) => entry.clientId))],
          algorithms: ALGORITHMS,
          currentDate: new Date(context.now),
          clockTolerance: CLOCK_SKEW_SECONDS,
          requiredClaims: ['iat', 'jti', 'events'],
        })
      ).payload;
    return withIssuerKeys(context.http, jwksUri, context.now, context.jwks, undefined, verify);
  };
  let payload: JWTPayload | undefined;
  let signers: readonly LogoutTokenIssuer[] = [];
  let failure: unknown;
  for (const [jwksUri, entries] of groups) {
    try {
      payload = await verifyWith(jwksUri, entries);
      signers = entries;
      break;
    } catch (cause) {
      if (cause instanceof SmartError) throw cause;
      // A claim failure means the signature verified: the most telling reason to report.
      if (failure === undefined || cause instanceof joseErrors.JWTClaimValidationFailed) failure = cause;
    }
  }
  if (payload === undefined) {
    const cause = failure;
    if (cause instanceof joseErrors.JWTClaimValidationFailed) throw invalid(cause.claim, `the "${cause.claim}" claim is not valid`, cause);
    if (cause instanceof joseErrors.JWTExpired) throw invalid('exp', 'the token has expired', cause);
    throw invalid('signature', 'the signature does not verify with the issuer\'s keys', cause);
  }
  const nowSeconds = Math.floor(context.now / 1000);
  const maxAge = context.maxAgeSeconds ?? LOGOUT_TOKEN_MAX_AGE_SECONDS;
  if (typeof payload.iat !== 'number' || payload.iat < nowSeconds - maxAge - CLOCK_SKEW_SECONDS) throw invalid('iat', 'the token was issued too long ago');
  // A future iat would also keep its jti remembered (and the token usable) for as long as it claims.
  if (payload.iat > nowSeconds + CLOCK_SKEW_SECONDS) throw invalid('iat', 'the token is issued in the future');
  const events = (payload as { events?: unknown }).events;
  const event = events !== null && typeof events === 'object' && !Array.isArray(events) ? (events as Record<string, unknown>)[BACKCHANNEL_LOGOUT_EVENT] : undefined;
  if (event === null || typeof event !== 'object' || Array.isArray(event)) throw invalid('events', 'the "events" claim holds no back-channel logout event');
  const sid = typeof payload.sid === 'string' && payload.sid !== '' ? payload.sid : undefined;
  const sub = typeof payload.sub === 'string' && payload.sub !== '' ? payload.sub : undefined;
  if (sid === undefined && sub === undefined) throw invalid('sid', 'the token names neither a "sid" nor a "sub"');
  if ('nonce' in payload) throw invalid('nonce', 'a logout token must not carry a "nonce"');
  if (typeof payload.jti !== 'string' || payload.jti === '') throw invalid('jti', 'the token has no "jti"');
  const audiences = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
  const fhirIssuers = signers.filter((entry) => audiences.includes(entry.clientId)).map((entry) => entry.fhirIss);
  // Remembered until it could no longer pass the `iat` check anyway.
  const fresh = await context.replayGuard(logoutJtiKey(issuer, payload.jti), payload.iat + maxAge + 2 * CLOCK_SKEW_SECONDS);
  if (!fresh) throw invalid('jti', 'this logout token was already received (replayed "jti")');
  return { issuer, fhirIssuers, sid, sub };
}
