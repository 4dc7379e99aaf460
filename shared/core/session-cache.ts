import type { OpenSession } from './records.js';

/**
 * Sessions the FHIR proxy opened, kept in one container's memory for `session.proxyCacheSeconds`
 * (default 5 s): a chart loading 10-50 resources in a burst reads the store and opens the sealed
 * tokens once, not once per request.
 *
 * The staleness this allows, and nothing more: a session ended elsewhere (logout through the sessions
 * function, `smart-launch sessions end`, back-channel logout, a refresh refused in another container)
 * can still be proxied by a container that opened it less than `proxyCacheSeconds` ago, only for a
 * browser holding both the session id and its binding cookie (checked on every request), and only
 * with the access token the EHR issued. An entry is never used once the record's TTL has passed or its
 * access token is due for renewal (renewal always starts from a store read), and is dropped as soon
 * as this container learns anything newer: a refresh it did or waited for (the new revision is kept),
 * a refused or failed refresh, a 401 from the EHR, a session the store no longer has.
 * `proxyCacheSeconds: 0` turns it off.
 *
 * Keyed by the session key (the hash of the id, never the id). Created once per container by the
 * wiring (`shared/runtime/aws-deps.ts`, the local stack's proxy function), never shared with the
 * sessions function. Used through `proxy-session.ts`.
 */
export class OpenSessionCache {
  readonly #maxEntries: number;
  /** In the order they were read (a re-read moves an entry to the end): the oldest come first. */
  readonly #entries = new Map<string, { readonly session: OpenSession; readonly cachedAt: number }>();

  constructor(options: { readonly maxEntries?: number } = {}) {
    this.#maxEntries = options.maxEntries ?? 1000;
  }

  /** The session read at most `ttlMs` ago under this key, if any (an older entry is dropped). */
  get(key: string, nowMs: number, ttlMs: number): OpenSession | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (nowMs - entry.cachedAt < ttlMs && nowMs >= entry.cachedAt) return entry.session;
    this.#entries.delete(key);
    return undefined;
  }

  /** Keeps a session as read (or just stored) at `nowMs`; drops entries past `ttlMs` and, over the bound, the oldest. */
  set(key: string, session: OpenSession, nowMs: number, ttlMs: number): void {
    // The per-request flags describe the request that produced this session, not the session.
    const { refreshNotStored: _notStored, waitedForRefresh: _waited, ...plain } = session;
    this.#entries.delete(key);
    this.#entries.set(key, { session: plain, cachedAt: nowMs });
    for (const [oldest, entry] of this.#entries) {
      if (this.#entries.size <= this.#maxEntries && nowMs - entry.cachedAt < ttlMs) break;
      this.#entries.delete(oldest);
    }
  }

  delete(key: string): void {
    this.#entries.delete(key);
  }

  /** Sessions held (for tests). */
  get size(): number {
    return this.#entries.size;
  }
}
