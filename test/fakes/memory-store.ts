import { SmartError } from '../../shared/core/errors.js';
import type { RefreshLease, RefreshResult, SessionStore, TakeTransactionResult } from '../../shared/core/ports.js';
import type { SessionRecord, TransactionRecord } from '../../shared/core/records.js';

export type StoredRecord =
  | { readonly kind: 'transaction'; readonly record: TransactionRecord }
  | { readonly kind: 'session'; readonly record: SessionRecord };

function copyRecord<T extends { wrappedKey: Uint8Array; sealed: Uint8Array }>(record: T): T {
  return { ...record, wrappedKey: new Uint8Array(record.wrappedKey), sealed: new Uint8Array(record.sealed) };
}

/**
 * `SessionStore` in a Map, with the semantics of the DynamoDB adapter: `put*` never overwrite
 * (a key collision is a bug → `INTERNAL`), `takeTransaction` deletes and returns at most once,
 * and records whose `expiresAt` has passed read as absent. Records are copied in and out, so a
 * test cannot change what is stored by mutating a value it holds.
 */
export class MemorySessionStore implements SessionStore {
  readonly #transactions = new Map<string, TransactionRecord>();
  readonly #sessions = new Map<string, SessionRecord>();

  async putTransaction(record: TransactionRecord): Promise<void> {
    if (this.#transactions.has(record.key)) throw new SmartError('INTERNAL', 'a record with this key already exists');
    this.#transactions.set(record.key, copyRecord(record));
  }

  async takeTransaction(key: string, nowSeconds: number, bindingHashes?: readonly string[]): Promise<TakeTransactionResult> {
    const record = this.#transactions.get(key);
    if (record === undefined) return { outcome: 'absent' };
    const live = record.expiresAt > nowSeconds;
    if (bindingHashes !== undefined && !bindingHashes.includes(record.bindingHash)) return live ? { outcome: 'not-bound', iss: record.iss } : { outcome: 'absent' };
    this.#transactions.delete(key);
    return live ? { outcome: 'taken', record: copyRecord(record) } : { outcome: 'absent' };
  }

  async putSession(record: SessionRecord): Promise<void> {
    if (this.#sessions.has(record.key)) throw new SmartError('INTERNAL', 'a record with this key already exists');
    this.#sessions.set(record.key, copyRecord(record));
  }

  async getSession(key: string, nowSeconds: number): Promise<SessionRecord | undefined> {
    const record = this.#sessions.get(key);
    return record !== undefined && record.expiresAt > nowSeconds ? copyRecord(record) : undefined;
  }

  async deleteSession(key: string): Promise<void> {
    this.#sessions.delete(key);
    this.#leases.delete(key);
  }

  readonly #leases = new Map<string, string>();

  async acquireRefreshLease(key: string, lease: RefreshLease): Promise<boolean> {
    const record = this.#sessions.get(key);
    if (!record || record.revision !== lease.revision) return false;
    if (record.leaseUntil !== undefined && record.leaseUntil >= lease.nowMs) return false;
    this.#sessions.set(key, { ...record, leaseUntil: lease.untilMs });
    this.#leases.set(key, lease.leaseId);
    return true;
  }

  async completeRefresh(key: string, result: RefreshResult): Promise<boolean> {
    const record = this.#sessions.get(key);
    if (!record || record.revision !== result.revision || this.#leases.get(key) !== result.leaseId) return false;
    this.#sessions.set(key, {
      ...record,
      sealed: new Uint8Array(result.sealed),
      expiresAt: result.expiresAt,
      revision: result.revision + 1,
      leaseUntil: undefined,
    });
    this.#leases.delete(key);
    return true;
  }

  async endSessionHoldingLease(key: string, leaseId: string): Promise<boolean> {
    if (!this.#sessions.has(key) || this.#leases.get(key) !== leaseId) return false;
    await this.deleteSession(key);
    return true;
  }

  async releaseRefreshLease(key: string, leaseId: string): Promise<void> {
    const record = this.#sessions.get(key);
    if (!record || this.#leases.get(key) !== leaseId) return;
    this.#sessions.set(key, { ...record, leaseUntil: undefined });
    this.#leases.delete(key);
  }

  /** Every stored record, expired or not, transactions first (for "nothing stored" assertions). */
  records(): StoredRecord[] {
    return [
      ...[...this.#transactions.values()].map((record) => ({ kind: 'transaction' as const, record: copyRecord(record) })),
      ...[...this.#sessions.values()].map((record) => ({ kind: 'session' as const, record: copyRecord(record) })),
    ];
  }

  transactions(): TransactionRecord[] {
    return [...this.#transactions.values()].map(copyRecord);
  }

  sessions(): SessionRecord[] {
    return [...this.#sessions.values()].map(copyRecord);
  }

  /** Overwrites a stored session as someone with write access to the table could (tamper tests). */
  replace(record: SessionRecord): void {
    this.#sessions.set(record.key, copyRecord(record));
  }
}
