import type { OpenSession, SessionRecord } from './records.js';

/**
 * One store read under way for a session key, and the one unseal of its record, shared by the
 * requests that missed the cache meanwhile. Listed while a request that joined it has not finished
 * or its unseal runs; dropped as soon as the read or the unseal fails.
 */
interface SharedOpen {
  /** Clock time before the read started. */
  readonly startedAt: number;
  readonly record: Promise<SessionRecord | undefined>;
  /** Requests that joined it and have not finished (their binding check, then their wait for the unseal). */
  waiting: number;
  opening?: Promise<OpenSession>;
  opened: boolean;
}

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
 * Concurrent misses for one session key (a chart's burst on a container that has not opened the
 * session yet, or just after the window) share one store read and one unseal (`shareOpen`); each
 * request still checks its own binding cookie against the record before it may wait for the unseal.
 *
 * Keyed by the session key (the hash of the id, never the id). Created once per container by the
 * wiring (`shared/runtime/aws-deps.ts`, the local stack's proxy function), never shared with the
 * sessions function. Used through `proxy-session.ts`.
 */
export class OpenSessionCache {
  readonly #maxEntries: number;
  /** In the order they were read (a re-read moves an entry to the end): the oldest come first. */
  readonly #entries = new Map<string, { readonly session: OpenSession; readonly cachedAt: number }>();

  /** Reads and unseals under way, by session key. */
  readonly #opens = new Map<string, SharedOpen>();

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

  /**
   * Keeps a session as read (or just stored) at `nowMs`; drops entries past `ttlMs` and, over the
   * bound, the oldest. A session older than the one kept (a store read that began before this
   * container's refresh stored a newer revision, and ended after it) never replaces it.
   */
  set(key: string, session: OpenSession, nowMs: number, ttlMs: number): void {
    const kept = this.#entries.get(key);
    if (kept !== undefined && kept.session.record.revision > session.record.revision) return;
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

  /**
   * Opens the session under `key` once for every concurrent caller: joins the read under way, or
   * starts one with `read` (at `nowMs`); then `check` runs per caller (its binding cookie: a caller it
   * refuses never waits for an unseal, and never starts one), and the callers it accepts share one
   * `unseal`, started by the first of them. A failed read or unseal goes to every caller that shares
   * it and is not kept: the next caller starts again. `unseal` gets the clock time from before the
   * read, from which the caller counts the window of what it keeps. A read that began `ttlMs` or
   * more ago (a slow store) is not joined: a caller never gets what the store said longer ago than
   * the window, as it would not from the cache.
   */
  async shareOpen(
    key: string,
    nowMs: number,
    ttlMs: number,
    steps: {
      readonly read: () => Promise<SessionRecord | undefined>;
      readonly check: (record: SessionRecord | undefined) => SessionRecord;
      readonly unseal: (record: SessionRecord, readAt: number) => Promise<OpenSession>;
    },
  ): Promise<OpenSession> {
    let shared = this.#opens.get(key);
    if (shared === undefined || nowMs - shared.startedAt >= ttlMs || nowMs < shared.startedAt) {
      const created: SharedOpen = { startedAt: nowMs, record: steps.read(), waiting: 0, opened: false };
      created.record.catch(() => this.#drop(key, created));
      this.#opens.set(key, created);
      shared = created;
    }
    const current = shared;
    current.waiting += 1;
    try {
      const record = steps.check(await current.record);
      if (current.opening === undefined) {
        const opening = steps.unseal(record, current.startedAt);
        current.opening = opening;
        opening.then(
          () => {
            current.opened = true;
            if (current.waiting === 0) this.#drop(key, current);
          },
          () => this.#drop(key, current),
        );
      }
      return await current.opening;
    } finally {
      current.waiting -= 1;
      if (current.waiting === 0 && (current.opening === undefined || current.opened)) this.#drop(key, current);
    }
  }

  #drop(key: string, shared: SharedOpen): void {
    if (this.#opens.get(key) === shared) this.#opens.delete(key);
  }

  /** Reads and unseals under way (for tests). */
  get opening(): number {
    return this.#opens.size;
  }

  /** Sessions held (for tests). */
  get size(): number {
    return this.#entries.size;
  }
}
