import type { CoreDeps } from './deps.js';
import { clientAuthenticationFor } from './ehr/client-auth.js';
import { discoverCached, openidConfigurationUrl, usableEndSessionEndpoint } from './discovery.js';
import { fetchJson } from './ehr/http.js';
import { revokeToken } from './ehr/revocation.js';
import { issuerOf } from './issuers.js';
import type { OpenSession } from './session.js';
import type { IssuerConfig } from '../config/schema.js';

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

/**
 * The EHR's `end_session_endpoint`: from the discovered endpoints (the SMART configuration, or the
 * OpenID configuration discovery read for a SMART v1 server), through the container's discovery
 * cache, so a warm logout asks the EHR nothing. Only when discovery read no OpenID configuration
 * and found none is the session's OpenID issuer asked (servers that publish it only there), and its
 * answer is cached by discovery's rules too.
 */
async function publishedEndSessionEndpoint(deps: CoreDeps, issuer: IssuerConfig, openidIssuer: string | undefined): Promise<string | undefined> {
  const smart = await discoverCached(deps, issuer).catch(() => undefined);
  // Discovery kept it only if it passed the endpoint rule (`usableEndSessionEndpoint`).
  const cached = smart?.endpoints.endSessionEndpoint;
  if (cached !== undefined) return cached;
  const openidRead = smart?.openidFromConfig === true || smart?.openidDiscovery?.found !== undefined;
  if (openidIssuer === undefined || openidRead) return undefined;
  const codes = { unavailable: 'DISCOVERY_UNAVAILABLE', invalid: 'DISCOVERY_INVALID' } as const;
  const url = openidConfigurationUrl(openidIssuer);
  const load = async () => {
    const document = (await fetchJson(deps.http, url, codes, 'the end-session endpoint', deps.clock)) as Record<string, unknown> | null;
    return usableEndSessionEndpoint(document?.end_session_endpoint, deps.mode);
  };
  try {
    // Through the container's discovery cache, by its rules (a failed read is not cached).
    return await (deps.discovery === undefined ? load() : deps.discovery.endSessionEndpoint(url, deps.clock, load));
  } catch {
    // No end-session redirect is offered when discovery cannot say where it is; logout still completes.
    return undefined;
  }
}

/**
 * OpenID Connect RP-Initiated Logout 1.0: where the EHR advertises an `end_session_endpoint` (its
 * SMART configuration, else its OpenID configuration), the URL the app sends the browser to so the
 * user is signed out at the EHR too: `client_id` (which identifies the client and so validates
 * `post_logout_redirect_uri`, RP-Initiated Logout §2), `post_logout_redirect_uri` = the app's URL
 * (register it with the EHR) and a fresh `state`. No `id_token_hint`: the id_token never reaches the
 * browser (invariant 1), so the EHR ends the sign-in its own browser session holds, and may ask the
 * user to confirm. `undefined` without an endpoint. Read before the session is deleted; never logged.
 */
export async function endSessionUrl(session: OpenSession, deps: CoreDeps): Promise<string | undefined> {
  const issuer = issuerOf(deps.config, session.record.iss);
  if (issuer === undefined) return undefined;
  const endpoint = await publishedEndSessionEndpoint(deps, issuer, session.record.endpoints.issuer);
  if (endpoint === undefined) return undefined;
  const url = new URL(endpoint);
  url.searchParams.delete('id_token_hint');
  url.searchParams.set('client_id', issuer.clientId);
  url.searchParams.set('post_logout_redirect_uri', deps.config.app.url);
  url.searchParams.set('state', Buffer.from(deps.random.bytes(16)).toString('base64url'));
  return url.href;
}
