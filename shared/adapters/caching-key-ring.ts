import type { Clock, DataKey, EncryptionContext, KeyRing } from '../core/ports.js';
import { canonicalContext } from './encryption-context.js';

export interface CachingKeyRingOptions {
  /** Most data keys kept in memory at once (least recently used go first). */
  readonly maxEntries?: number;
  /** How long a plaintext data key may stay in memory. */
  readonly ttlMs?: number;
}

interface Entry {
  readonly plaintext: Uint8Array;
  readonly expiresAt: number;
}

/**
 * Keeps unwrapped data keys in this container's memory, bounded and short-lived, so a warm Lambda
 * calls KMS Decrypt at most once per session (and not at all for a session it just created).
 * Entries are keyed by the wrapped key *and* the encryption context, so a cached key is only ever
 * handed out for the exact context KMS accepted it with. Concurrent misses for one key share one
 * inner Decrypt (a burst of first requests makes one KMS call, not one each); a failed Decrypt is
 * never remembered, and every caller waiting on it gets its error.
 */
export class CachingKeyRing implements KeyRing {
  readonly #inner: KeyRing;
  readonly #clock: Clock;
  readonly #maxEntries: number;
  readonly #ttlMs: number;
  readonly #entries = new Map<string, Entry>();
  /** Inner Decrypts under way, by the same id as the entries. */
  readonly #pending = new Map<string, Promise<Uint8Array>>();

  constructor(inner: KeyRing, clock: Clock, options: CachingKeyRingOptions = {}) {
    this.#inner = inner;
    this.#clock = clock;
    this.#maxEntries = options.maxEntries ?? 1000;
    this.#ttlMs = options.ttlMs ?? 5 * 60_000;
  }

  async generateDataKey(context: EncryptionContext): Promise<DataKey> {
    const key = await this.#inner.generateDataKey(context);
    this.#remember(this.#id(key.wrapped, context), key.plaintext);
    return key;
  }

  async decryptDataKey(wrapped: Uint8Array, context: EncryptionContext): Promise<Uint8Array> {
    const id = this.#id(wrapped, context);
    const entry = this.#entries.get(id);
    if (entry && entry.expiresAt > this.#clock.now()) {
      // Refresh its place in the LRU order.
      this.#entries.delete(id);
      this.#entries.set(id, entry);
      return new Uint8Array(entry.plaintext);
    }
    this.#entries.delete(id);
    let pending = this.#pending.get(id);
    if (pending === undefined) {
      pending = this.#inner
        .decryptDataKey(wrapped, context)
        .then((plaintext) => {
          this.#remember(id, plaintext);
          return plaintext;
        })
        .finally(() => this.#pending.delete(id));
      this.#pending.set(id, pending);
    }
    // Every caller gets its own copy, as from the cache.
    return new Uint8Array(await pending);
  }

  /** Number of keys held (for tests and metrics). */
  get size(): number {
    return this.#entries.size;
  }

  #id(wrapped: Uint8Array, context: EncryptionContext): string {
    return `${Buffer.from(wrapped).toString('base64')}|${canonicalContext(context)}`;
  }

  #remember(id: string, plaintext: Uint8Array): void {
    this.#entries.delete(id);
    this.#entries.set(id, { plaintext: new Uint8Array(plaintext), expiresAt: this.#clock.now() + this.#ttlMs });
    while (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next().value as string;
      this.#entries.delete(oldest);
    }
  }
}
