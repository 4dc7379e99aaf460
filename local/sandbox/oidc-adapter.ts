import type { Adapter, AdapterPayload } from 'oidc-provider';

interface Entry {
  readonly payload: AdapterPayload;
  readonly expiresAt: number;
}

/**
 * oidc-provider storage for one sandbox instance.
 *
 * Why not oidc-provider's built-in MemoryAdapter: it is a module-level LRU capped at 1000 entries
 * shared by every Provider in the process (two sandboxes in one test run would share it, and a long
 * `npm start` session could evict live grants), and it prints a "development-only" warning on every
 * start. This one is a plain Map per sandbox with expiry checked on read, plus the grant index that
 * `revokeByGrantId` needs for refresh-token reuse detection and revocation.
 */
export class SandboxAdapterStore {
  readonly #entries = new Map<string, Entry>();
  readonly #byGrant = new Map<string, Set<string>>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** The factory oidc-provider's `adapter` option expects (called once per model name). */
  readonly factory = (model: string): Adapter => new SandboxAdapter(model, this);

  get(key: string): AdapterPayload | undefined {
    const entry = this.#entries.get(key);
    if (!entry) {
      return undefined;
    }
    if (entry.expiresAt <= this.#now()) {
      this.delete(key);
      return undefined;
    }
    return entry.payload;
  }

  set(key: string, payload: AdapterPayload, expiresInSeconds: number | undefined): void {
    this.delete(key);
    const expiresAt = expiresInSeconds === undefined ? Number.POSITIVE_INFINITY : this.#now() + expiresInSeconds * 1000;
    this.#entries.set(key, { payload, expiresAt });
    if (typeof payload.grantId === 'string') {
      let members = this.#byGrant.get(payload.grantId);
      if (!members) {
        members = new Set();
        this.#byGrant.set(payload.grantId, members);
      }
      members.add(key);
    }
  }

  delete(key: string): void {
    const entry = this.#entries.get(key);
    if (!entry) {
      return;
    }
    this.#entries.delete(key);
    const grantId = entry.payload.grantId;
    if (typeof grantId === 'string') {
      this.#byGrant.get(grantId)?.delete(key);
    }
  }

  deleteGrantMembers(grantId: string): void {
    for (const key of this.#byGrant.get(grantId) ?? []) {
      this.#entries.delete(key);
    }
    this.#byGrant.delete(grantId);
  }

  /** Deletes a grant and everything issued under it (codes, refresh and access tokens). */
  revokeGrant(grantId: string): void {
    this.deleteGrantMembers(grantId);
    this.delete(`Grant:${grantId}`);
  }

  /** The grant id an artifact of `model` (e.g. RefreshToken, keyed by its opaque value) belongs to. */
  grantIdOf(model: string, id: string): string | undefined {
    const grantId = this.get(`${model}:${id}`)?.grantId;
    return typeof grantId === 'string' ? grantId : undefined;
  }
}

class SandboxAdapter implements Adapter {
  readonly #model: string;
  readonly #store: SandboxAdapterStore;

  constructor(model: string, store: SandboxAdapterStore) {
    this.#model = model;
    this.#store = store;
  }

  #key(id: string): string {
    return `${this.#model}:${id}`;
  }

  async upsert(id: string, payload: AdapterPayload, expiresIn: number | undefined): Promise<void> {
    this.#store.set(this.#key(id), payload, expiresIn);
    if (this.#model === 'Session' && typeof payload.uid === 'string') {
      this.#store.set(`SessionUid:${payload.uid}`, { id }, expiresIn);
    }
    if (typeof payload.userCode === 'string') {
      this.#store.set(`UserCode:${payload.userCode}`, { id }, expiresIn);
    }
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    return this.#store.get(this.#key(id));
  }

  async findByUid(uid: string): Promise<AdapterPayload | undefined> {
    const pointer = this.#store.get(`SessionUid:${uid}`);
    return typeof pointer?.id === 'string' ? this.find(pointer.id) : undefined;
  }

  async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    const pointer = this.#store.get(`UserCode:${userCode}`);
    return typeof pointer?.id === 'string' ? this.find(pointer.id) : undefined;
  }

  async consume(id: string): Promise<void> {
    const payload = this.#store.get(this.#key(id));
    if (payload) {
      // oidc-provider reads `consumed` back to detect refresh token and authorization code reuse.
      payload.consumed = Math.floor(Date.now() / 1000);
    }
  }

  async destroy(id: string): Promise<void> {
    this.#store.delete(this.#key(id));
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    this.#store.deleteGrantMembers(grantId);
  }
}
