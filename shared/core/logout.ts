import type { CoreDeps } from './deps.js';
import { clientAuthenticationFor } from './ehr/client-auth.js';
import { revokeToken } from './ehr/revocation.js';
import { issuerOf } from './issuers.js';
import type { OpenSession } from './session.js';

export type RevocationOutcome = 'revoked' | 'failed' | 'not-offered';

/**
 * Ends a session (`POST /sessions/{id}/logout`): revokes the grant at the EHR's RFC 7009
 * `revocation_endpoint` when discovery advertised one (the refresh token first, since revoking it
 * ends the grant at most servers; else the access token), with the client's authentication, and
 * then deletes the record. The session is unusable afterwards even when revocation failed.
 */
export async function endSession(session: OpenSession, deps: CoreDeps): Promise<{ revocation: RevocationOutcome; status?: number }> {
  const { record, secrets } = session;
  let outcome: { revocation: RevocationOutcome; status?: number } = { revocation: 'not-offered' };
  const endpoint = record.endpoints.revocationEndpoint;
  const issuer = issuerOf(deps.config, record.iss);
  if (endpoint !== undefined && issuer !== undefined) {
    const [token, hint] =
      secrets.refreshToken !== undefined ? [secrets.refreshToken, 'refresh_token' as const] : [secrets.accessToken, 'access_token' as const];
    try {
      const status = await revokeToken(deps, clientAuthenticationFor(deps, issuer), endpoint, token, hint);
      outcome = { revocation: status === 200 ? 'revoked' : 'failed', status };
    } catch {
      outcome = { revocation: 'failed' };
    }
  }
  await deps.store.deleteSession(record.key);
  return outcome;
}
