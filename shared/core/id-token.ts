import { createLocalJWKSet, errors as joseErrors, jwtVerify, type JSONWebKeySet } from 'jose';
import { SmartError } from './errors.js';
import { fetchJson } from './discovery.js';
import type { HttpClient } from './ports.js';

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

/**
 * Verifies an id_token (OIDC Core §3.1.3.7, DESIGN invariant 5): signature with a key from the
 * issuer's JWKS, `iss`, `aud` (our client id), `exp`/`iat` (60 s skew), and `nonce`.
 */
export async function verifyIdToken(http: HttpClient, idToken: string, expected: IdTokenExpectations): Promise<IdTokenClaims> {
  if (expected.issuer === undefined || expected.jwksUri === undefined) {
    throw new SmartError('ID_TOKEN_INVALID', 'the SMART configuration has no "issuer" or "jwks_uri" to verify the id_token with');
  }
  const jwks = await fetchJson(
    http,
    expected.jwksUri,
    { unavailable: 'DISCOVERY_UNAVAILABLE', invalid: 'DISCOVERY_INVALID' },
    "the issuer's JWKS",
  );
  let keySet: ReturnType<typeof createLocalJWKSet>;
  try {
    keySet = createLocalJWKSet(jwks as JSONWebKeySet);
  } catch (cause) {
    throw new SmartError('DISCOVERY_INVALID', "the issuer's JWKS is not a valid JWK Set", { cause });
  }
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(idToken, keySet, {
      issuer: expected.issuer,
      audience: expected.clientId,
      algorithms: ALGORITHMS,
      currentDate: new Date(expected.now),
      clockTolerance: 60,
      requiredClaims: ['sub', 'exp', 'iat'],
    }));
  } catch (cause) {
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
