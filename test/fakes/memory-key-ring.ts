import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { canonicalContext } from '../../shared/adapters/encryption-context.js';
import { SmartError } from '../../shared/core/errors.js';
import type { DataKey, EncryptionContext, KeyRing } from '../../shared/core/ports.js';

const IV_BYTES = 12;
const KEY_BYTES = 32;
const TAG_BYTES = 16;

/**
 * `KeyRing` in memory: random 32-byte data keys wrapped with AES-256-GCM under a per-instance master
 * key, with the canonical JSON of the encryption context as AAD, so a wrapped key only unwraps under
 * the context it was generated for (mismatch → `VAULT_INTEGRITY`, as with KMS). Counts its calls.
 */
export class MemoryKeyRing implements KeyRing {
  readonly #masterKey = randomBytes(KEY_BYTES);
  generateCalls = 0;
  decryptCalls = 0;
  /** The contexts passed to `generateDataKey`, in order. */
  readonly generatedContexts: EncryptionContext[] = [];

  async generateDataKey(context: EncryptionContext): Promise<DataKey> {
    this.generateCalls += 1;
    this.generatedContexts.push({ ...context });
    const plaintext = new Uint8Array(randomBytes(KEY_BYTES));
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#masterKey, iv);
    cipher.setAAD(Buffer.from(canonicalContext(context), 'utf8'));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return { plaintext, wrapped: new Uint8Array(Buffer.concat([iv, body, cipher.getAuthTag()])) };
  }

  async decryptDataKey(wrapped: Uint8Array, context: EncryptionContext): Promise<Uint8Array> {
    this.decryptCalls += 1;
    if (wrapped.length !== IV_BYTES + KEY_BYTES + TAG_BYTES) {
      throw new SmartError('VAULT_INTEGRITY', 'the wrapped key has an unknown format');
    }
    const bytes = Buffer.from(wrapped);
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#masterKey, bytes.subarray(0, IV_BYTES));
      decipher.setAAD(Buffer.from(canonicalContext(context), 'utf8'));
      decipher.setAuthTag(bytes.subarray(IV_BYTES + KEY_BYTES));
      return new Uint8Array(Buffer.concat([decipher.update(bytes.subarray(IV_BYTES, IV_BYTES + KEY_BYTES)), decipher.final()]));
    } catch (cause) {
      throw new SmartError('VAULT_INTEGRITY', 'the wrapped key does not match this record', { cause });
    }
  }

  get calls(): number {
    return this.generateCalls + this.decryptCalls;
  }
}
