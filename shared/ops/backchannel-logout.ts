import { verifyLogoutToken, type LogoutTokenIssuer } from '../core/backchannel-logout.js';
import type { CoreDeps } from '../core/deps.js';
import { discoverCached, type DiscoveryCache } from '../core/discovery.js';
import { SmartError, toSmartError } from '../core/errors.js';
import { logoutJtiRecordKey } from '../core/sealed-records.js';
import { endSessions, type SessionScanner } from './end-sessions.js';

/**
 * Carrying out an EHR's back-channel logout (OpenID Connect Back-Channel Logout 1.0 §2.5-2.8): the
 * `logout_token` is validated (shared/core/backchannel-logout.ts, its `jti` remembered in the session
 * store), then every session of that issuer whose id_token names the token's `sid` (or its `sub`) is
 * ended as an operator end is (revoked where the EHR offers it, deleted, audited with cause
 * `backchannel-logout`).
 *
 * Finding the sessions reads the issuer's sessions (a filtered Scan) and opens each one, since sid and
 * sub live only inside the sealed id_token: one sign-out at the EHR costs one table read and one
 * key-ring decrypt per open session of that issuer (docs/operations.md, "Back-channel logout").
 */

/** After an issuer's discovery failed here, the receiver skips it for this long (per container). */
export const LOGOUT_DISCOVERY_RETRY_MS = 30_000;

/** Where the receiver reports what an operator should see (the function's structured logger). */
export interface BackchannelLogoutLog {
  warn(message: string, attributes: Record<string, unknown>): void;
  error(message: string, attributes: Record<string, unknown>): void;
}

export type BackchannelLogoutOutcome =
  /** The token was valid: `ended` sessions matched it and were ended (zero is a valid answer). */
  | { readonly outcome: 'ended'; readonly issuer: string; readonly by: 'sid' | 'sub'; readonly ended: number }
  /** The token was refused (`LOGOUT_TOKEN_INVALID`): nothing was ended. */
  | { readonly outcome: 'refused'; readonly check: unknown; readonly message: string };

/**
 * When each issuer's discovery last failed for the receiver, per container (keyed by its discovery
 * cache). Discovery failures are not cached, and a JWT-shaped token costs an anonymous sender
 * nothing: without this, every such POST would ask each failing EHR again.
 */
const discoveryFailures = new WeakMap<DiscoveryCache, Map<string, number>>();

/** The OpenID providers of the configured issuers, as discovery names them (an issuer whose discovery fails is skipped). */
async function logoutIssuers(deps: CoreDeps, log: BackchannelLogoutLog): Promise<LogoutTokenIssuer[]> {
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
        log.warn('back-channel logout: discovery of an issuer failed', { iss: issuer.iss, code: toSmartError(error).code });
        failures?.set(issuer.iss, now);
        return undefined;
      }
    }),
  );
  return found.filter((entry) => entry !== undefined);
}

/**
 * Validates `logoutToken` (undefined when the request carried none) and ends the sessions it names.
 * A refused token is an outcome, not an error; a store that cannot remember tokens or find sessions
 * is `STORE_UNAVAILABLE`; matching sessions that could not be ended are `LOGOUT_INCOMPLETE`, and the
 * token's `jti` is then forgotten so the EHR's retry of the same token is not refused as a replay.
 */
export async function backchannelLogout(
  logoutToken: string | undefined,
  deps: CoreDeps,
  options: { readonly operationId: string; readonly log: BackchannelLogoutLog },
): Promise<BackchannelLogoutOutcome> {
  const { log } = options;
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
    const verified = await verifyLogoutToken(logoutToken, {
      // Discovery only for a token that is a signed JWT at all (an anonymous POST of anything else costs nothing).
      issuers: () => logoutIssuers(deps, log),
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
          operationId: options.operationId,
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
      log.error('back-channel logout: sessions could not be ended', { issuer: verified.issuer, ended, failed });
      throw new SmartError('LOGOUT_INCOMPLETE', `${failures} matching session(s) could not be ended`, { details: { failedSessions: failures } });
    }
    return { outcome: 'ended', issuer: verified.issuer, by: verified.sid !== undefined ? 'sid' : 'sub', ended };
  } catch (error) {
    const failure = toSmartError(error);
    if (failure.code !== 'LOGOUT_TOKEN_INVALID') throw error;
    return { outcome: 'refused', check: failure.details?.check, message: failure.message };
  }
}
