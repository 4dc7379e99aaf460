import { randomBytes } from 'node:crypto';
import { DecryptCommand, GenerateDataKeyCommand, type KMSClientResolvedConfig, type ServiceInputTypes, type ServiceOutputTypes } from '@aws-sdk/client-kms';
import type { AwsStub } from 'aws-sdk-client-mock';

export const KMS_KEY_ID = 'arn:aws:kms:us-east-1:111111111111:key/0b5c2d1e-1111-2222-3333-444455556666';

/**
 * Gives an aws-sdk-client-mock KMS stub KMS's contract for data keys: GenerateDataKey returns a fresh
 * key and an opaque blob, and Decrypt returns that key only for the blob *and* the encryption
 * context it was made with (otherwise InvalidCiphertextException), so handlers run unchanged while
 * every call is counted.
 */
export function behaveLikeKms(
  stub: AwsStub<ServiceInputTypes, ServiceOutputTypes, KMSClientResolvedConfig>,
  options: {
    /** Awaited by each Decrypt before it answers: lets a test hold KMS while requests pile up, or fail it. */
    readonly beforeDecrypt?: () => Promise<void>;
  } = {},
): void {
  const issued = new Map<string, { plaintext: Uint8Array; context: string }>();
  stub.on(GenerateDataKeyCommand).callsFake((input: { EncryptionContext?: Record<string, string> }) => {
    const plaintext = new Uint8Array(randomBytes(32));
    const blob = new Uint8Array(randomBytes(64));
    issued.set(Buffer.from(blob).toString('base64'), { plaintext, context: JSON.stringify(input.EncryptionContext) });
    return { KeyId: KMS_KEY_ID, Plaintext: plaintext, CiphertextBlob: blob };
  });
  stub.on(DecryptCommand).callsFake(async (input: { CiphertextBlob: Uint8Array; EncryptionContext?: Record<string, string> }) => {
    await options.beforeDecrypt?.();
    const entry = issued.get(Buffer.from(input.CiphertextBlob).toString('base64'));
    if (!entry || entry.context !== JSON.stringify(input.EncryptionContext)) {
      throw Object.assign(new Error('InvalidCiphertextException'), { name: 'InvalidCiphertextException' });
    }
    return { KeyId: KMS_KEY_ID, Plaintext: entry.plaintext };
  });
}
