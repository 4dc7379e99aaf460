import type { Logger } from '@aws-lambda-powertools/logger';
import { verifyLogoutToken, type LogoutTokenIssuer } from '../../shared/core/backchannel-logout.js';
import type { CoreDeps } from '../../shared/core/deps.js';
import { discoverCached, type DiscoveryCache } from '../../shared/core/discovery.js';
import { SmartError, toSmartError } from '../../shared/core/errors.js';
import { logoutJtiRecordKey } from '../../shared/core/sealed-records.js';
import { correlationIdOf, headerOf, type ApiEvent, type ApiResult } from '../../shared/http/api-event.js';
import { jsonResponse } from '../../shared/http/responses.js';
import { endSessions, type SessionScanner } from '../../shared/ops/end-sessions.js';

/** At most this many form bytes are read: a logout token is a few hundred. */
const MAX_BODY_BYTES = 16_384;

/** After an issuer's discovery failed here, the receiver skips it for this long (per container). */
export const LOGOUT_DISCOVERY_RETRY_MS = 30_000;

/**
 * When each issuer's discovery last failed for the receiver, per container (keyed by its discovery
 * cache). Discovery failures are not cached, and a JWT-shaped token costs an anonymous sender
 * nothing: without this, every such POST would ask each failing EHR again.
 */
const discoveryFailures = new WeakMap<DiscoveryCache, Map<string, number>>();

/** The OpenID providers of the configured issuers, as discovery names them (an issuer whose discovery fails is skipped). */
async function logoutIssuers(deps: CoreDeps, logger: Logger): Promise<LogoutTokenIssuer[]> {
  const failures = deps.discovery === undefined ? undefined : (discoveryFailures.get(deps.discovery) ?? new Map<string, number>());
  if (deps.discovery !== undefined && failures !== undefined) discoveryFailures.set(deps.discovery, failures);
  const now = deps.clock.now();
  const found = await Promise.all(
    deps.config.issuers.map(async (issuer): Promise<LogoutTokenIssuer | undefined> => {
      const failedAt = failures?.get(issuer.iss);
      if (failedAt !== undefined && now - failedAt < LOGOUT_DISCOVERY_RETRY_MS) return undefined;
      try {
        const { endpoints } = await discoverCached(deps, issuer);
        if (endpoints.issuer === undefined || endpoints.jwksUri === undefined) return undefined;
        return { issuer: endpoints.issuer, jwksUri: endpoints.jwksUri, clientId: issuer.clientId, fhirIss: issuer.iss };
      } catch (error) {
        logger.warn('back-channel logout: discovery of an issuer failed', { iss: issuer.iss, code: toSmartError(error).code });
        failures?.set(issuer.iss, now);
        return undefined;
      }
    }),
  );
  return found.filter((entry) => entry !== undefined);
}

function logoutTokenOf(event: ApiEvent): string | undefined {
  const type = headerOf(event, 'content-type') ?? '';
  if (!/^application\/x-www-form-urlencoded\b/i.test(type) || !event.body) return undefined;
  const body = event.isBase64Encoded ? Buffer.from(event.body, 'base64').toString('utf8') : event.body;
  if (body.length > MAX_BODY_BYTES) return undefined;
  const values = new URLSearchParams(body).getAll('logout_token');
  return values.length === 1 ? values[0] : undefined;
}

/**
 * `POST /backchannel-logout` (OpenID Connect Back-Channel Logout 1.0 §2.5-2.8): the EHR's OpenID
 * provider sends a form-encoded `logout_token`; once it validates (shared/core/backchannel-logout.ts),
 * every session of that issuer whose id_token names the token's `sid` (or its `sub`) is ended as an
 * operator end is (revoked where the EHR offers it, deleted, audited with cause `backchannel-logout`).
 * Answers 200 with `Cache-Control: no-store`; a refused token is `400 { "error": "invalid_request" }`.
 *
 * Finding the sessions reads the issuer's sessions (a filtered Scan) and opens each one, since sid and
 * sub live only inside the sealed id_token: one sign-out at the EHR costs one table read and one
 * key-ring decrypt per open session of that issuer (docs/operations.md, "Back-channel logout").
 */
export async function backchannelLogout(event: ApiEvent, deps: CoreDeps, logger: Logger): Promise<ApiResult> {
  const noStore = { 'cache-control': 'no-store' };
  const store = deps.store;
  try {
    if (store.rememberOnce === undefined || typeof (store as Partial<SessionScanner>).scanSessions !== 'function') {
      throw new SmartError('STORE_UNAVAILABLE', 'the session store cannot remember logout tokens or find sessions');
    }
    let rememberedKey: string | undefined;
    // A sign-out that could not be carried out is answered with an error, and its jti forgotten, so the
    // EHR's retry of the same token is not refused as a replay (best effort: a failing store keeps it).
    const forgetJti = async () => {
      if (rememberedKey !== undefined) await store.deleteSession(rememberedKey).catch(() => undefined);
    };
    const now = deps.clock.now();
    const nowSeconds = Math.floor(now / 1000);
    const verified = await verifyLogoutToken(logoutTokenOf(event), {
      // Discovery only for a token that is a signed JWT at all (an anonymous POST of anything else costs nothing).
      issuers: () => logoutIssuers(deps, logger),
      http: deps.http,
      jwks: deps.jwks,
      now,
      replayGuard: async (key, expiresAt) => {
        const fresh = await store.rememberOnce!(logoutJtiRecordKey(key), expiresAt, nowSeconds);
        if (fresh) rememberedKey = logoutJtiRecordKey(key);
        return fresh;
      },
    });
    let ended = 0;
    const failed: Record<string, number> = {};
    try {
      for (const iss of verified.fhirIssuers) {
        const report = await endSessions(store as unknown as SessionScanner, deps, {
          selector: { kind: 'op-session', iss, issuer: verified.issuer, sid: verified.sid, sub: verified.sub },
          operationId: correlationIdOf(event),
          cause: 'backchannel-logout',
        });
        ended += report.ended;
        for (const [code, count] of Object.entries(report.failed)) failed[code] = (failed[code] ?? 0) + count;
      }
    } catch (error) {
      await forgetJti();
      throw error;
    }
    const failures = Object.values(failed).reduce((sum, count) => sum + count, 0);
    if (failures > 0) {
      await forgetJti();
      logger.error('back-channel logout: sessions could not be ended', { issuer: verified.issuer, ended, failed });
      throw new SmartError('LOGOUT_INCOMPLETE', `${failures} matching session(s) could not be ended`, { details: { failedSessions: failures } });
    }
    logger.info('back-channel logout', { issuer: verified.issuer, by: verified.sid !== undefined ? 'sid' : 'sub', ended });
    return jsonResponse(200, {}, noStore);
  } catch (error) {
    const failure = toSmartError(error);
    if (failure.code !== 'LOGOUT_TOKEN_INVALID') throw error;
    logger.warn('back-channel logout token refused', { check: failure.details?.check });
    return jsonResponse(400, { error: 'invalid_request', error_description: failure.message }, noStore);
  }
}
