import type { CoreDeps } from './deps.js';
import { UPSTREAM_TIMEOUT_MS } from './discovery.js';
import type { OpenSession } from './session.js';
import { authenticatedTokenRequest } from './token.js';

export type RevocationOutcome = 'revoked' | 'failed' | 'not-offered';

/**
 * Ends a session (`POST /sessions/{id}/logout`): revokes the grant at the EHR's RFC 7009
 * `revocation_endpoint` when discovery advertised one (the refresh token first, since revoking it
 * ends the grant at most servers; else the access token), with the client's authentication, and
 * then deletes the record. The session is unusable afterwards even when revocation failed.
 * @see https://www.rfc-editor.org/rfc/rfc7009#section-2.1
 */
export async function endSession(session: OpenSession, deps: CoreDeps): Promise<{ revocation: RevocationOutcome; status?: number }> {
  const { record, secrets } = session;
  let outcome: { revocation: RevocationOutcome; status?: number } = { revocation: 'not-offered' };
  const endpoint = record.endpoints.revocationEndpoint;
  const issuer = deps.config.issuers.find((candidate) => candidate.iss === record.iss);
  if (endpoint !== undefined && issuer !== undefined) {
    const [token, hint] =
      secrets.refreshToken !== undefined ? [secrets.refreshToken, 'refresh_token'] : [secrets.accessToken, 'access_token'];
    try {
      // With private_key_jwt the assertion's `aud` is the revocation endpoint itself (SMART-CAUTH-07).
      const request = await authenticatedTokenRequest(deps, issuer, endpoint, { token, token_type_hint: hint });
      const response = await deps.http(request.url, {
        method: 'POST',
        headers: request.headers,
        body: request.body,
        redirect: 'manual',
        signal: AbortSignal.timeout(UPSTREAM_TIMEOUT_MS),
      });
      await response.body?.cancel();
      // RFC 7009 §2.2: 200 for a revoked (or already invalid) token.
      outcome = { revocation: response.status === 200 ? 'revoked' : 'failed', status: response.status };
    } catch {
      outcome = { revocation: 'failed' };
    }
  }
  await deps.store.deleteSession(record.key);
  return outcome;
}
