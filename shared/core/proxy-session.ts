import type { Config } from '../config/schema.js';
import type { CoreDeps } from './deps.js';
import type { SessionRefresher } from './proxy/forward.js';
import { accessTokenFresh } from './refresh.js';
import { sessionKey } from './sealed-records.js';
import { checkBound, checkSessionId, openSession, unsealSession, type OpenSession } from './session.js';

/*
 * The FHIR proxy's way to open a session: through this container's `OpenSessionCache`
 * (`session-cache.ts`, where the staleness it allows is stated) when the wiring gives one and
 * `session.proxyCacheSeconds` is above 0, else straight from the store as every other route does.
 */

function cacheWindowMs(deps: CoreDeps): number {
  return deps.sessionCache === undefined ? 0 : deps.config.session.proxyCacheSeconds * 1000;
}

/**
 * Whether a kept session can serve a request as the store's copy would: its record has not expired
 * and `ensureFreshSession` would hand its access token back unchanged (not due for renewal).
 */
function servable(config: Config, session: OpenSession, nowMs: number): boolean {
  return session.record.expiresAt > Math.floor(nowMs / 1000) && accessTokenFresh(config, session.secrets, nowMs);
}

/**
 * `openSession` for the FHIR proxy: from this container's cache within `session.proxyCacheSeconds`
 * of the store read, else from the store (and then kept). The binding cookie is checked on every
 * request, served from the cache or not, with the same 401 `SESSION_NOT_OPEN`. Requests that miss
 * together share one store read and one unseal (`OpenSessionCache.shareOpen`).
 */
export async function openProxySession(sessionIdParam: string | undefined, cookieSecret: string | undefined, deps: CoreDeps): Promise<OpenSession> {
  const cache = deps.sessionCache;
  const windowMs = cacheWindowMs(deps);
  if (cache === undefined || windowMs <= 0) return openSession(sessionIdParam, cookieSecret, deps);
  const sessionId = checkSessionId(sessionIdParam);
  const key = sessionKey(sessionId);
  const now = deps.clock.now();
  const kept = cache.get(key, now, windowMs);
  if (kept !== undefined && servable(deps.config, kept, now)) {
    checkBound(kept.record, cookieSecret);
    return kept;
  }
  cache.delete(key);
  // Concurrent misses share one store read; each request checks its own binding cookie against the
  // record (a wrong one answers 401 and never causes a Decrypt); those it admits share one unseal.
  return cache.shareOpen(key, now, windowMs, {
    read: () => deps.store.getSession(key, Math.floor(now / 1000)),
    check: (record) => checkBound(record, cookieSecret),
    unseal: async (record, readAt) => {
      const session = await unsealSession(sessionId, key, record, deps);
      // Counted from before the read: the window never outlasts what the store said by more than its length.
      if (servable(deps.config, session, readAt)) cache.set(key, session, readAt, windowMs);
      return session;
    },
  });
}

/**
 * Keeps this container's cache in step with what a renewal learns: the revision a refresh stored or
 * a waiter read replaces the kept one; a forced renewal (the EHR refused the token) drops it first;
 * any failure (a refused refresh that ended the session, a session gone meanwhile, a busy or failed
 * token service) drops it, so the next request reads the store.
 */
export function cachingRefresher(refresher: SessionRefresher): SessionRefresher {
  return async (session, deps, options) => {
    const cache = deps.sessionCache;
    const windowMs = cacheWindowMs(deps);
    if (cache === undefined || windowMs <= 0) return refresher(session, deps, options);
    const key = session.record.key;
    if (options?.force) cache.delete(key);
    let after: OpenSession;
    try {
      after = await refresher(session, deps, options);
    } catch (error) {
      cache.delete(key);
      throw error;
    }
    if (after !== session) {
      // A refresh whose result was not stored leaves the store's tokens different from these.
      if (after.refreshNotStored) cache.delete(key);
      else if (servable(deps.config, after, deps.clock.now())) cache.set(key, after, deps.clock.now(), windowMs);
      else cache.delete(key);
    }
    return after;
  };
}
