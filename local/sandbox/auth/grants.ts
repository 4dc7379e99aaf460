import { createLocalJWKSet, decodeJwt, errors as joseErrors, jwtVerify } from 'jose';
import { SIGNING_ALG } from './signing-key.js';
import type { AuthState } from './state.js';

/*
 * Grants seen from outside OAuth: the FHIR server's check of a bearer token (including revoked
 * grants) and the revocation an administrator or a patient portal would do (admin endpoints,
 * `sandbox.revokeGrantFor...`).
 */

export interface VerifiedAccessToken {
  readonly sub: string;
  readonly clientId: string | undefined;
  readonly scope: string;
  readonly patient: string | undefined;
}

/** Why a bearer token was refused; `code` feeds the OperationOutcome and WWW-Authenticate. */
export class AccessTokenRejected extends Error {
  readonly expired: boolean;
  constructor(message: string, expired: boolean, options?: ErrorOptions) {
    super(message, options);
    this.name = 'AccessTokenRejected';
    this.expired = expired;
  }
}

/** Remembers which grant an access token belongs to (oidc-provider does not store JWT access tokens). */
export function recordIssuedAccessToken(state: AuthState, token: { jti: string; grantId?: string | undefined; exp?: number | undefined }): void {
  const { tokenGrants } = state;
  if (token.grantId !== undefined) {
    tokenGrants.set(token.jti, { grantId: token.grantId, exp: token.exp ?? 0 });
  }
  if (tokenGrants.size > 1000) {
    const now = Math.floor(Date.now() / 1000);
    for (const [jti, entry] of tokenGrants) {
      if (entry.exp < now) {
        tokenGrants.delete(jti);
      }
    }
  }
}

/*
 * Grant revocation from outside OAuth (an administrator, or the patient revoking the app in a
 * portal): everything oidc-provider stores for the grant goes, as in its own revoke helper
 * (lib/helpers/revoke.js), and the FHIR server refuses the grant's JWT access tokens from then on.
 */
function revokeGrant(state: AuthState, grantId: string): void {
  state.adapterStore.revokeGrant(grantId);
  state.revokedGrants.add(grantId);
}

export async function revokeGrantForAccessToken(state: AuthState, accessToken: string): Promise<void> {
  let jti: unknown;
  try {
    jti = decodeJwt(accessToken).jti;
  } catch (error) {
    throw new Error('not a JWT access token of this sandbox', { cause: error });
  }
  const grant = typeof jti === 'string' ? state.tokenGrants.get(jti) : undefined;
  if (!grant) {
    throw new Error('unknown access token: this sandbox did not issue it, or it expired long ago');
  }
  revokeGrant(state, grant.grantId);
}

export async function revokeGrantForRefreshToken(state: AuthState, refreshToken: string): Promise<void> {
  const grantId = state.adapterStore.grantIdOf('RefreshToken', refreshToken);
  if (grantId === undefined) {
    throw new Error('unknown refresh token: never issued, expired, or its grant is already revoked');
  }
  revokeGrant(state, grantId);
}

/** Verifies a JWT access token for the FHIR server: signature, issuer, audience, expiry, revocation. */
export function accessTokenVerifier(state: AuthState): (token: string) => Promise<VerifiedAccessToken> {
  const { issuer, fhirBaseUrl, signingKey } = state.options;
  const jwks = createLocalJWKSet({ keys: [signingKey.publicJwk] });
  return (token) => verifyAccessToken(state, jwks, issuer, fhirBaseUrl, token);
}

async function verifyAccessToken(
  state: AuthState,
  jwks: ReturnType<typeof createLocalJWKSet>,
  issuer: string,
  fhirBaseUrl: string,
  token: string,
): Promise<VerifiedAccessToken> {
  let payload;
  try {
    ({ payload } = await jwtVerify(token, jwks, {
      issuer,
      audience: fhirBaseUrl,
      algorithms: [SIGNING_ALG],
      typ: 'at+jwt',
      requiredClaims: ['exp', 'jti', 'sub'],
      ...(state.options.now === undefined ? {} : { currentDate: new Date(state.options.now()) }),
    }));
  } catch (error) {
    if (error instanceof joseErrors.JWTExpired) {
      throw new AccessTokenRejected('the access token has expired', true, { cause: error });
    }
    throw new AccessTokenRejected('the access token is not valid for this server', false, { cause: error });
  }
  const grant = typeof payload.jti === 'string' ? state.tokenGrants.get(payload.jti) : undefined;
  if (grant && state.revokedGrants.has(grant.grantId)) {
    throw new AccessTokenRejected('the grant behind this access token was revoked', false);
  }
  return {
    sub: payload.sub ?? '',
    clientId: typeof payload.client_id === 'string' ? payload.client_id : undefined,
    scope: typeof payload.scope === 'string' ? payload.scope : '',
    patient: typeof payload.patient === 'string' ? payload.patient : undefined,
  };
}
