import { DecryptCommand, GenerateDataKeyCommand, type KMSClient } from '@aws-sdk/client-kms';
import { SmartError } from '../core/errors.js';
import type { DataKey, EncryptionContext, KeyRing } from '../core/ports.js';
import { assertContextNotEmpty } from './encryption-context.js';

const DATA_KEY_BYTES = 32;

/**
 * KMS answers that mean "this wrapped key or context is not what was sealed": a forged, swapped or
 * corrupted record, never an outage. Retrying cannot help, so they must not read as transient.
 */
const INTEGRITY_ERRORS: ReadonlySet<string> = new Set(['InvalidCiphertextException', 'IncorrectKeyException']);

export interface KmsKeyRingOptions {
  readonly client: KMSClient;
  /** Key id, ARN or alias of the symmetric customer-managed key. */
  readonly keyId: string;
}

/** `KeyRing` on AWS KMS: data keys are generated and unwrapped by KMS; the master key never leaves it. */
export class KmsKeyRing implements KeyRing {
  readonly #client: KMSClient;
  readonly #keyId: string;

  constructor(options: KmsKeyRingOptions) {
    this.#client = options.client;
    this.#keyId = options.keyId;
  }

  async generateDataKey(context: EncryptionContext): Promise<DataKey> {
    assertContextNotEmpty(context);
    let plaintext: Uint8Array | undefined;
    let wrapped: Uint8Array | undefined;
    try {
      const output = await this.#client.send(
        new GenerateDataKeyCommand({
          KeyId: this.#keyId,
          KeySpec: 'AES_256',
          // KMS binds the context into the ciphertext: Decrypt with any other context fails,
          // and CloudTrail records it, so a wrapped key cannot be replayed for another record.
          EncryptionContext: context,
        }),
      );
      plaintext = output.Plaintext;
      wrapped = output.CiphertextBlob;
    } catch (error) {
      throw mapKmsError('GenerateDataKey', error);
    }
    if (plaintext?.length !== DATA_KEY_BYTES || wrapped === undefined || wrapped.length === 0) {
      throw new SmartError('KEYRING_UNAVAILABLE', 'the key service returned an incomplete data key', {
        details: { operation: 'GenerateDataKey' },
      });
    }
    return { plaintext: new Uint8Array(plaintext), wrapped: new Uint8Array(wrapped) };
  }

  async decryptDataKey(wrapped: Uint8Array, context: EncryptionContext): Promise<Uint8Array> {
    assertContextNotEmpty(context);
    let plaintext: Uint8Array | undefined;
    try {
      const output = await this.#client.send(
        new DecryptCommand({
          // Naming the key makes KMS refuse a ciphertext made under any other key
          // (IncorrectKeyException) instead of quietly using whichever key it names.
          KeyId: this.#keyId,
          CiphertextBlob: wrapped,
          EncryptionContext: context,
        }),
      );
      plaintext = output.Plaintext;
    } catch (error) {
      throw mapKmsError('Decrypt', error);
    }
    if (plaintext === undefined) {
      throw new SmartError('KEYRING_UNAVAILABLE', 'the key service returned no plaintext', {
        details: { operation: 'Decrypt' },
      });
    }
    if (plaintext.length !== DATA_KEY_BYTES) {
      // It decrypted under our key and context, yet is not a data key: not something we wrapped.
      throw new SmartError('VAULT_INTEGRITY', 'the wrapped key is not a data key');
    }
    return new Uint8Array(plaintext);
  }
}

function mapKmsError(operation: string, error: unknown): SmartError {
  // By name rather than `instanceof`: a second copy of the SDK in a bundle would defeat the latter.
  const name = error instanceof Error ? error.name : 'unknown';
  if (INTEGRITY_ERRORS.has(name)) {
    return new SmartError('VAULT_INTEGRITY', 'the wrapped key does not match this record', {
      cause: error,
      details: { operation, awsError: name },
    });
  }
  // Throttling, network, a disabled or pending-deletion key, missing permissions: the session
  // itself is intact, so the caller answers 503 and the browser may retry later.
  return new SmartError('KEYRING_UNAVAILABLE', 'the key service did not answer', {
    cause: error,
    details: { operation, awsError: name },
  });
}
