/** A cached value and when it was loaded (clock milliseconds). */
export interface CachedValue<V> {
  readonly value: V;
  readonly loadedAt: number;
  /** When the last background refresh of it failed, if it did (set by the policy using the cache). */
  failedAt?: number;
}

/**
 * Values by key, loaded one at a time per key: concurrent loads of one key share one promise, and a
 * failed load is never cached. The freshness policy belongs to the user (`DiscoveryCache`:
 * fresh, then stale-while-revalidate; `JwksCache`: a maximum age and a refetch interval). Created by
 * the wiring and passed in `CoreDeps`, so the core keeps no module state.
 */
export class SingleFlightCache<V> {
  readonly #entries = new Map<string, CachedValue<V>>();
  readonly #pending = new Map<string, Promise<V>>();
  /** Loads started (concurrent callers of one load count once). */
  loads = 0;

  /** The cached value of `key`, however old. */
  entry(key: string): CachedValue<V> | undefined {
    return this.#entries.get(key);
  }

  /** Loads `key` unless a load of it is already under way, and caches the value with `loadedAt()` as its time. */
  load(key: string, load: () => Promise<V>, loadedAt: () => number): Promise<V> {
    let pending = this.#pending.get(key);
    if (pending === undefined) {
      this.loads += 1;
      pending = load()
        .then((value) => {
          this.#entries.set(key, { value, loadedAt: loadedAt() });
          return value;
        })
        .finally(() => this.#pending.delete(key));
      this.#pending.set(key, pending);
    }
    return pending;
  }

  /** Forgets every value. */
  clear(): void {
    this.#entries.clear();
  }
}
