/**
 * The ports the SMART core needs from the outside world. Adapters live in `shared/adapters/`;
 * nothing in `shared/core/` imports an AWS SDK, reads the environment or the wall clock.
 */

/** Wall clock in epoch milliseconds, and waiting (so tests can run time forward instead of sleeping). */
export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

/** Cryptographically secure random bytes. */
export interface Random {
  bytes(length: number): Uint8Array;
}

/** The `fetch` signature: the core only speaks to the network through this. */
export type HttpClient = (url: string, init?: RequestInit) => Promise<Response>;

/** KMS-style encryption context: every entry must match again to unwrap a data key. */
export type EncryptionContext = Readonly<Record<string, string>>;

export interface DataKey {
  /** 32-byte AES-256 key, kept in memory only. */
  readonly plaintext: Uint8Array;
  /** The same key wrapped by the key ring's master key; safe to store. */
  readonly wrapped: Uint8Array;
}

/**
 * Envelope encryption: one data key per session, wrapped under a master key that never leaves
 * the key ring (KMS in AWS, a local key file otherwise).
 */
export interface KeyRing {
  generateDataKey(context: EncryptionContext): Promise<DataKey>;
  /** Throws `SmartError` `VAULT_INTEGRITY` when the wrapped key or context does not match. */
  decryptDataKey(wrapped: Uint8Array, context: EncryptionContext): Promise<Uint8Array>;
}

/** Endpoints of the authorization server, as discovered when the launch started (SMART-DISC-09). */
export interface AuthServerEndpoints {
  readonly authorizationEndpoint: string;
  readonly tokenEndpoint: string;
  /** The AS `issuer` from discovery, when it published one (RFC 9207 / OIDC). */
  readonly issuer?: string | undefined;
  readonly jwksUri?: string | undefined;
  readonly revocationEndpoint?: string | undefined;
  /** Discovery said `authorization_response_iss_parameter_supported: true` (RFC 9207). */
  readonly issParameterSupported?: boolean | undefined;
}

/**
 * A pending authorization (one per launch). Stored under `txn#<hash of state>`, consumed exactly
 * once by the callback. Secrets (PKCE verifier, nonce, session id, launch) are inside `sealed`.
 */
export interface TransactionRecord {
  readonly key: string;
  /** The exact `iss` (FHIR base URL) of the launch. */
  readonly iss: string;
  /** `ses#<hash of session id>` of the session this launch will create. */
  readonly sessionKey: string;
  /** Hash of the browser-binding cookie value of the browser that started the launch. */
  readonly bindingHash: string;
  readonly endpoints: AuthServerEndpoints;
  readonly wrappedKey: Uint8Array;
  readonly sealed: Uint8Array;
  /** Epoch seconds. */
  readonly createdAt: number;
  /** Epoch seconds; also the DynamoDB TTL attribute. */
  readonly expiresAt: number;
}

/** A signed-in launch. Stored under `ses#<hash of session id>`; tokens and context are inside `sealed`. */
export interface SessionRecord {
  readonly key: string;
  readonly iss: string;
  readonly bindingHash: string;
  readonly endpoints: AuthServerEndpoints;
  readonly wrappedKey: Uint8Array;
  readonly sealed: Uint8Array;
  /** Epoch seconds. */
  readonly createdAt: number;
  /** Epoch seconds; also the DynamoDB TTL attribute. */
  readonly expiresAt: number;
  /** Incremented on every rewrite; conditional updates compare it. */
  readonly revision: number;
  /** Epoch milliseconds until which a refresh lease is held, when one is. */
  readonly leaseUntil?: number | undefined;
}

/** A refresh lease: one refresh at a time per session, across every concurrent Lambda (invariant 8). */
export interface RefreshLease {
  /** The session revision the lease holder read; the lease is only granted at that revision. */
  readonly revision: number;
  /** Random id of the holder; only the holder may complete or release. */
  readonly leaseId: string;
  /** Epoch milliseconds: now, and when the lease expires if its holder never comes back. */
  readonly nowMs: number;
  readonly untilMs: number;
}

export interface RefreshResult {
  readonly revision: number;
  readonly leaseId: string;
  /** The session's secrets re-sealed with the new tokens. */
  readonly sealed: Uint8Array;
  /** Epoch seconds: the record's new TTL. */
  readonly expiresAt: number;
}

/**
 * Storage of transactions and sessions. Reads treat records whose `expiresAt` has passed as absent
 * (DynamoDB TTL deletion is lazy; the local store never expires anything). Failures of the backing
 * store are thrown as `SmartError` `STORE_UNAVAILABLE`.
 */
export interface SessionStore {
  /** Writes a new transaction; never overwrites one (conditional on the key being absent). */
  putTransaction(record: TransactionRecord): Promise<void>;
  /** Atomically deletes and returns the transaction; `undefined` when absent, taken or expired. */
  takeTransaction(key: string, nowSeconds: number): Promise<TransactionRecord | undefined>;
  /** Writes a new session; never overwrites one. */
  putSession(record: SessionRecord): Promise<void>;
  getSession(key: string, nowSeconds: number): Promise<SessionRecord | undefined>;
  deleteSession(key: string): Promise<void>;
  /**
   * Takes the refresh lease when the session is still at `lease.revision` and no unexpired lease is
   * held (one conditional write). `false` when someone else holds it or already refreshed.
   */
  acquireRefreshLease(key: string, lease: RefreshLease): Promise<boolean>;
  /**
   * Stores refreshed tokens, bumps the revision and clears the lease, only if the caller still holds
   * the lease at the revision it read (one conditional write). `false` when it lost the lease.
   */
  completeRefresh(key: string, result: RefreshResult): Promise<boolean>;
  /** Gives a lease back without changing the session (the refresh failed before anything changed). */
  releaseRefreshLease(key: string, leaseId: string): Promise<void>;
}
