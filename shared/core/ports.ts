/**
 * The ports the SMART core needs from the outside world. Adapters live in `shared/adapters/`;
 * nothing in `shared/core/` imports an AWS SDK, reads the environment or the wall clock.
 */
import type { IssuerConfig } from '../config/schema.js';
import type { SessionRecord, TransactionRecord } from './records.js';

/** Wall clock in epoch milliseconds, and waiting (so tests can run time forward instead of sleeping). */
export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
  /**
   * A signal that aborts (with a `TimeoutError`) once `ms` have passed on this clock. Optional: the
   * system clock leaves it out and `timeoutSignal` uses `AbortSignal.timeout`; a test clock fires it
   * when the test moves time forward.
   */
  timeout?(ms: number): AbortSignal;
}

/** Cryptographically secure random bytes. */
export interface Random {
  bytes(length: number): Uint8Array;
}

/** The `fetch` signature: the core only speaks to the network through this. */
export type HttpClient = (url: string, init?: RequestInit) => Promise<Response>;

/** JWS algorithms of our client assertions: a SMART client must be able to sign with both (SMART-REG-05). */
export type ClientAssertionAlg = 'RS384' | 'ES384';

/** One public key of the client, as published in its JWKS (bare key members only, SMART-REG-04). */
export interface PublicJwk {
  readonly kty: string;
  readonly kid: string;
  readonly alg?: string | undefined;
  readonly use?: string | undefined;
  readonly n?: string | undefined;
  readonly e?: string | undefined;
  readonly crv?: string | undefined;
  readonly x?: string | undefined;
  readonly y?: string | undefined;
}

/** A key that signs client assertions now; `sign` signs with exactly the key `kid` names. */
export interface AssertionSigningKey {
  /** RFC 7638 JWK thumbprint of the public key: stable, and the `kid` in the published JWKS. */
  readonly kid: string;
  /**
   * Signs a JWS signing input (`base64url(header).base64url(payload)` as bytes) and answers the
   * signature in JOSE form: PKCS#1 v1.5 bytes for RS384, the 96-byte `r || s` for ES384 (RFC 7518 §3.4).
   */
  sign(signingInput: Uint8Array): Promise<Uint8Array>;
}

/**
 * Signs `private_key_jwt` client assertions (SMART client-confidential-asymmetric) with keys that
 * never leave the signer: an asymmetric KMS key in AWS, a key file in the local data folder.
 * The key is chosen first and signs second because its `kid` is part of the signed JWS header; one
 * object for both keeps a rotation between the two steps from naming one key and signing with another.
 */
export interface ReadablePublicJwks {
  readonly keys: readonly PublicJwk[];
  /** Key ids (ARNs or aliases, never key material) that could not be read, with why. */
  readonly unreadable: readonly { readonly keyId: string; readonly error: unknown }[];
}

export interface ClientSigner {
  /** Every key to publish (the current ones and the next ones, for rotation), public members only. */
  publicJwks(): Promise<{ readonly keys: readonly PublicJwk[] }>;
  /**
   * The keys that could be read, and the ones that could not (each with its error): the JWKS route
   * serves what it can instead of failing the whole set for one unreadable key.
   */
  readablePublicJwks?(): Promise<ReadablePublicJwks>;
  /** The current key for `alg`; throws `SmartError` when none is configured or it cannot be read. */
  signingKey(alg: ClientAssertionAlg): Promise<AssertionSigningKey>;
}

/** Where the client secret of an issuer comes from (the config file locally, Secrets Manager in AWS). */
export interface ClientSecrets {
  get(issuer: IssuerConfig): Promise<string | undefined>;
}

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

/** What `takeTransaction` found: the record (now consumed), one bound to another browser (left intact), or none. */
export type TakeTransactionResult =
  | { readonly outcome: 'taken'; readonly record: TransactionRecord }
  | { readonly outcome: 'not-bound'; readonly iss: string }
  | { readonly outcome: 'absent' };

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
  /**
   * Atomically deletes and returns the transaction (one conditional write); `absent` when it is
   * absent, taken or expired. With `bindingHashes`, only when its binding hash is one of them: a
   * transaction bound to another browser is left as it is (`not-bound`), so who learns a `state`
   * cannot burn the launch of the browser it belongs to.
   */
  takeTransaction(key: string, nowSeconds: number, bindingHashes?: readonly string[]): Promise<TakeTransactionResult>;
  /**
   * Remembers `key` until `expiresAtSeconds`: `true` the first time, `false` while it is remembered
   * (one conditional write). Where absent, nothing can be remembered across requests.
   */
  rememberOnce?(key: string, expiresAtSeconds: number, nowSeconds: number): Promise<boolean>;
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
  /**
   * Deletes the session only while the caller still holds its refresh lease (one conditional delete):
   * the EHR refused the refresh token. `false` when the lease lapsed and another request took over
   * (or the session is gone): that request decides what becomes of the session.
   */
  endSessionHoldingLease(key: string, leaseId: string): Promise<boolean>;
}
