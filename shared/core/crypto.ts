import { createCipheriv, createDecipheriv, createHash } from 'node:crypto';
import { SmartError } from './errors.js';
import type { Random } from './ports.js';

/** base64url without padding (RFC 4648 §5). */
export function base64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url');
}

/** SHA-256 of a UTF-8 string, base64url. Used to key records by a hash of a secret id. */
export function sha256Base64url(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('base64url');
}

/** A fresh opaque secret of `bytes` random octets, base64url (32 octets = 256 bits). */
export function randomToken(random: Random, bytes = 32): string {
  return base64url(random.bytes(bytes));
}

const SEAL_VERSION = 1;
const IV_LENGTH = 12;
const TAG_LENGTH = 16;

/**
 * AES-256-GCM under a data key. `aad` names the record the ciphertext belongs to, so a ciphertext
 * copied into another record fails to open. Layout: version(1) | iv(12) | ciphertext | tag(16).
 */
export function seal(dataKey: Uint8Array, plaintext: Uint8Array, aad: string, random: Random): Uint8Array {
  const iv = random.bytes(IV_LENGTH);
  const cipher = createCipheriv('aes-256-gcm', dataKey, iv);
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return new Uint8Array(Buffer.concat([Buffer.from([SEAL_VERSION]), iv, body, cipher.getAuthTag()]));
}

/** Opens what `seal` produced; any mismatch (key, aad, bytes) throws `VAULT_INTEGRITY`. */
export function open(dataKey: Uint8Array, sealed: Uint8Array, aad: string): Uint8Array {
  if (sealed.length < 1 + IV_LENGTH + TAG_LENGTH || sealed[0] !== SEAL_VERSION) {
    throw new SmartError('VAULT_INTEGRITY', 'sealed data has an unknown format');
  }
  // Views of the sealed bytes, not a copy; the plaintext is the decipher's own output, not copied again
  // (`final` still checks the tag before anything is returned).
  const buf = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  const iv = buf.subarray(1, 1 + IV_LENGTH);
  const tag = buf.subarray(buf.length - TAG_LENGTH);
  const body = buf.subarray(1 + IV_LENGTH, buf.length - TAG_LENGTH);
  try {
    const decipher = createDecipheriv('aes-256-gcm', dataKey, iv);
    decipher.setAAD(Buffer.from(aad, 'utf8'));
    decipher.setAuthTag(tag);
    const head = decipher.update(body);
    const rest = decipher.final();
    const plain = rest.length === 0 ? head : Buffer.concat([head, rest]);
    return new Uint8Array(plain.buffer, plain.byteOffset, plain.byteLength);
  } catch (cause) {
    throw new SmartError('VAULT_INTEGRITY', 'sealed data does not belong to this record', { cause });
  }
}
