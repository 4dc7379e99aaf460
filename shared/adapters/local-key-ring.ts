import { createCipheriv, createDecipheriv } from 'node:crypto';
import { chmod, link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SmartError } from '../core/errors.js';
import type { DataKey, EncryptionContext, KeyRing, Random } from '../core/ports.js';
import { assertContextNotEmpty, canonicalContext } from './encryption-context.js';

const KEY_BYTES = 32;
const WRAP_VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const WRAPPED_BYTES = 1 + IV_BYTES + KEY_BYTES + TAG_BYTES;
/** Keeps this AAD apart from any other use of AES-GCM in the project. */
const AAD_LABEL = 'smart-launch/local-key-ring/v1\n';

export const MASTER_KEY_FILE = 'master.key';

/**
 * `KeyRing` for local runs: the same envelope scheme as KMS, with a 32-byte master key in a file
 * under the data folder instead of in KMS. Wrapped key layout: version(1) | iv(12) | key(32) | tag(16),
 * AES-256-GCM with the canonical encryption context as AAD, so a wrapped key only opens for the
 * record it was made for (as KMS's encryption context does).
 */
export class LocalKeyRing implements KeyRing {
  readonly #masterKey: Buffer;
  readonly #random: Random;

  private constructor(masterKey: Buffer, random: Random) {
    this.#masterKey = masterKey;
    this.#random = random;
  }

  /** Reads `${dataDir}/master.key`, creating it (and the folder) on first run. */
  static async open(dataDir: string, random: Random): Promise<LocalKeyRing> {
    const masterKey = await loadOrCreateMasterKey(dataDir, random);
    return new LocalKeyRing(masterKey, random);
  }

  async generateDataKey(context: EncryptionContext): Promise<DataKey> {
    assertContextNotEmpty(context);
    const plaintext = new Uint8Array(this.#random.bytes(KEY_BYTES));
    const iv = this.#random.bytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#masterKey, iv);
    cipher.setAAD(aad(context));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    const wrapped = new Uint8Array(Buffer.concat([Buffer.from([WRAP_VERSION]), iv, body, cipher.getAuthTag()]));
    return { plaintext, wrapped };
  }

  async decryptDataKey(wrapped: Uint8Array, context: EncryptionContext): Promise<Uint8Array> {
    assertContextNotEmpty(context);
    if (wrapped.length !== WRAPPED_BYTES || wrapped[0] !== WRAP_VERSION) {
      throw new SmartError('VAULT_INTEGRITY', 'the wrapped key has an unknown format');
    }
    const bytes = Buffer.from(wrapped);
    const iv = bytes.subarray(1, 1 + IV_BYTES);
    const body = bytes.subarray(1 + IV_BYTES, 1 + IV_BYTES + KEY_BYTES);
    const tag = bytes.subarray(1 + IV_BYTES + KEY_BYTES);
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#masterKey, iv);
      decipher.setAAD(aad(context));
      decipher.setAuthTag(tag);
      return new Uint8Array(Buffer.concat([decipher.update(body), decipher.final()]));
    } catch (cause) {
      // GCM cannot tell a wrong context from tampered bytes or another master key, and need not.
      throw new SmartError('VAULT_INTEGRITY', 'the wrapped key does not match this record', { cause });
    }
  }
}

function aad(context: EncryptionContext): Buffer {
  return Buffer.from(AAD_LABEL + canonicalContext(context), 'utf8');
}

async function loadOrCreateMasterKey(dataDir: string, random: Random): Promise<Buffer> {
  const path = join(dataDir, MASTER_KEY_FILE);
  // `mode` only applies to folders this call creates: an existing folder keeps its owner's choice.
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const existing = await readIfExists(path);
  if (existing !== undefined) return checkLength(existing, path);

  // Write the key under a unique name, then link it into place: `link` fails if the name exists,
  // so two processes starting together agree on one key, and no reader ever sees a half-written file.
  const key = Buffer.from(random.bytes(KEY_BYTES));
  const temp = join(dataDir, `${MASTER_KEY_FILE}.${process.pid}.${Buffer.from(random.bytes(6)).toString('hex')}.tmp`);
  await writeFile(temp, key, { mode: 0o600, flag: 'wx' });
  try {
    // The umask could have narrowed `mode`, never widened it; make the result exact anyway.
    await chmod(temp, 0o600);
    await link(temp, path);
    return key;
  } catch (error) {
    if (isErrno(error, 'EEXIST')) {
      const winner = await readFile(path);
      return checkLength(winner, path);
    }
    throw error;
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

async function readIfExists(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (error) {
    if (isErrno(error, 'ENOENT')) return undefined;
    throw error;
  }
}

function checkLength(key: Buffer, path: string): Buffer {
  if (key.length !== KEY_BYTES) {
    // Never regenerate silently: every stored session is wrapped under the old key.
    throw new SmartError('INTERNAL', `local master key ${path} has ${key.length} bytes, expected ${KEY_BYTES}`, {
      hint: `Restore the original ${MASTER_KEY_FILE}, or delete the whole data folder to start over (all local sessions are lost).`,
    });
  }
  return key;
}

function isErrno(error: unknown, code: string): boolean {
  return error instanceof Error && (error as NodeJS.ErrnoException).code === code;
}
