import { hkdfSync } from 'node:crypto';
import type * as z from '../config/zod.js';
import type { Config } from '../config/schema.js';
import { open, seal, sha256Base64url } from './crypto.js';
import { SmartError } from './errors.js';
import { checkedSessionSecrets, SessionSecretsSchema } from './records.js';
import type { EncryptionContext, Random } from './ports.js';

/*
 * How records are keyed and sealed: table keys are hashes of the secrets that name them (`state`,
 * session id), and each record's secrets are sealed under a key bound to that record (invariant 6).
 * The record types themselves are in records.ts.
 */

export const transactionKey = (state: string) => `txn#${sha256Base64url(state)}`;
export const sessionKey = (sessionId: string) => `ses#${sha256Base64url(sessionId)}`;
/** A back-channel logout token's `jti` seen (the hash `logoutJtiKey` made), kept against replay. */
export const logoutJtiRecordKey = (jtiHash: string) => `jti#${jtiHash}`;
export const bindingHash = (bindingSecret: string) => `b#${sha256Base64url(bindingSecret)}`;

/**
 * The KMS encryption context of a session's data key. It names the session record, so a wrapped
 * key (and everything sealed under it) copied into another session does not open (invariant 6).
 */
export function encryptionContext(config: Config, key: string): EncryptionContext {
  return { service: 'smart-launch', customer: config.customer, session: key };
}

/**
 * The key that seals a pending launch's secrets: derived (HKDF-SHA256) from its `state`, which is
 * 256 random bits that the record only holds as a hash. An anonymous `GET /launch` therefore costs no
 * key-ring (KMS) call at all, and the table alone does not open a transaction: opening one takes the
 * `state` that the callback presents, and the callback consumes it once.
 */
export function transactionSealKey(config: Config, state: string): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', Buffer.from(state, 'utf8'), Buffer.from('smart-launch transaction', 'utf8'), Buffer.from(config.customer, 'utf8'), 32));
}

export function sealJson(dataKey: Uint8Array, value: unknown, recordKey: string, random: Random): Uint8Array {
  return seal(dataKey, Buffer.from(JSON.stringify(value), 'utf8'), recordKey, random);
}

/**
 * Hand-written checks that accept exactly what their schema accepts and give the same value, for
 * the records opened on every request (a session's secrets, on every proxied request). What a check
 * does not accept goes to the schema, so a malformed record fails exactly as before.
 */
const exactChecks = new Map<unknown, (value: unknown) => unknown>([[SessionSecretsSchema, checkedSessionSecrets]]);

/** Opens and validates sealed JSON; a record that decrypts but does not parse is treated as tampered. */
export function openJson<T>(schema: z.ZodMiniType<T>, dataKey: Uint8Array, sealed: Uint8Array, recordKey: string): T {
  const plaintext = open(dataKey, sealed, recordKey);
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(plaintext.buffer, plaintext.byteOffset, plaintext.byteLength).toString('utf8'));
  } catch (cause) {
    throw new SmartError('VAULT_INTEGRITY', 'sealed data is not valid JSON', { cause });
  }
  const exact = exactChecks.get(schema);
  const checked = exact === undefined ? undefined : exact(value);
  if (checked !== undefined) return checked as T;
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new SmartError('VAULT_INTEGRITY', 'sealed data has an unexpected shape');
  return parsed.data;
}
