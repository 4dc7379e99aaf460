import 'aws-sdk-client-mock-vitest/extend';
import {
  DecryptCommand,
  DependencyTimeoutException,
  DisabledException,
  GenerateDataKeyCommand,
  IncorrectKeyException,
  InvalidCiphertextException,
  KMSClient,
  KMSInternalException,
  KMSInvalidStateException,
  KeyUnavailableException,
  NotFoundException,
} from '@aws-sdk/client-kms';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { KmsKeyRing } from '../../shared/adapters/kms-key-ring.js';
import { caught } from '../fakes/caught.js';

const KEY_ID = 'arn:aws:kms:us-east-1:111111111111:key/0b7e6d1c-0000-4000-8000-000000000001';
const CONTEXT = { record: 'ses#hash-of-the-session-id', purpose: 'session' } as const;

const metadata = { $metadata: {} };

describe('KmsKeyRing', () => {
  const client = new KMSClient({ region: 'us-east-1' });
  const kms = mockClient(client);
  const keyRing = new KmsKeyRing({ client, keyId: KEY_ID });

  beforeEach(() => {
    kms.reset();
  });

  describe('generateDataKey', () => {
    it('asks KMS once for an AES-256 data key bound to the encryption context', async () => {
      // Arrange
      const plaintext = new Uint8Array(32).fill(7);
      const wrapped = new Uint8Array(184).fill(9);
      kms.on(GenerateDataKeyCommand).resolves({ Plaintext: plaintext, CiphertextBlob: wrapped, KeyId: KEY_ID });

      // Act
      const dataKey = await keyRing.generateDataKey(CONTEXT);

      // Assert
      expect(dataKey.plaintext).toEqual(plaintext);
      expect(dataKey.wrapped).toEqual(wrapped);
      expect(kms).toHaveReceivedCommandTimes(GenerateDataKeyCommand, 1);
      expect(kms.calls()).toHaveLength(1);
      expect(kms.commandCalls(GenerateDataKeyCommand)[0]?.args[0].input).toStrictEqual({
        KeyId: KEY_ID,
        KeySpec: 'AES_256',
        EncryptionContext: { record: 'ses#hash-of-the-session-id', purpose: 'session' },
      });
    });

    it('reports an answer without a 32-byte key as KEYRING_UNAVAILABLE', async () => {
      // Arrange
      kms.on(GenerateDataKeyCommand).resolves({ Plaintext: new Uint8Array(16), CiphertextBlob: new Uint8Array(184) });

      // Act
      const error = await caught(keyRing.generateDataKey(CONTEXT));

      // Assert
      expect(error.code).toBe('KEYRING_UNAVAILABLE');
    });

    it('refuses an empty encryption context as INTERNAL without calling KMS', async () => {
      // Act
      const error = await caught(keyRing.generateDataKey({}));

      // Assert
      expect(error.code).toBe('INTERNAL');
      expect(kms.calls()).toHaveLength(0);
    });
  });

  describe('decryptDataKey', () => {
    it('asks KMS once to unwrap the key under the named key and the same encryption context', async () => {
      // Arrange
      const plaintext = new Uint8Array(32).fill(3);
      const wrapped = new Uint8Array(184).fill(5);
      kms.on(DecryptCommand).resolves({ Plaintext: plaintext, KeyId: KEY_ID });

      // Act
      const unwrapped = await keyRing.decryptDataKey(wrapped, CONTEXT);

      // Assert
      expect(unwrapped).toEqual(plaintext);
      expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 1);
      expect(kms.calls()).toHaveLength(1);
      expect(kms.commandCalls(DecryptCommand)[0]?.args[0].input).toStrictEqual({
        KeyId: KEY_ID,
        CiphertextBlob: wrapped,
        EncryptionContext: { record: 'ses#hash-of-the-session-id', purpose: 'session' },
      });
    });

    it('reports a plaintext that is not a 32-byte key as VAULT_INTEGRITY', async () => {
      // Arrange
      kms.on(DecryptCommand).resolves({ Plaintext: new Uint8Array(12) });

      // Act
      const error = await caught(keyRing.decryptDataKey(new Uint8Array(184), CONTEXT));

      // Assert
      expect(error.code).toBe('VAULT_INTEGRITY');
    });

    it('reports an answer without plaintext as KEYRING_UNAVAILABLE', async () => {
      // Arrange
      kms.on(DecryptCommand).resolves({});

      // Act
      const error = await caught(keyRing.decryptDataKey(new Uint8Array(184), CONTEXT));

      // Assert
      expect(error.code).toBe('KEYRING_UNAVAILABLE');
    });

    it('refuses an empty encryption context as INTERNAL without calling KMS', async () => {
      // Act
      const error = await caught(keyRing.decryptDataKey(new Uint8Array(184), {}));

      // Assert
      expect(error.code).toBe('INTERNAL');
      expect(kms.calls()).toHaveLength(0);
    });

    const integrityFailures = [
      ['a wrong context or corrupted blob (InvalidCiphertextException)', new InvalidCiphertextException({ message: 'InvalidCiphertextException', ...metadata })],
      ['a blob made under another key (IncorrectKeyException)', new IncorrectKeyException({ message: 'IncorrectKeyException', ...metadata })],
    ] as const;

    it.each(integrityFailures)('reports %s as VAULT_INTEGRITY and keeps the SDK error as cause', async (_what, cause) => {
      // Arrange
      kms.on(DecryptCommand).rejects(cause);

      // Act
      const error = await caught(keyRing.decryptDataKey(new Uint8Array(184), CONTEXT));

      // Assert
      expect(error.code).toBe('VAULT_INTEGRITY');
      expect(error.status).toBe(401);
      expect(error.cause).toBe(cause);
      expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 1);
    });
  });

  describe('when KMS itself fails', () => {
    const outages = [
      ['throttling', Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' })],
      ['a disabled key', new DisabledException({ message: 'key is disabled', ...metadata })],
      ['a key pending deletion', new KMSInvalidStateException({ message: 'key is pending deletion', ...metadata })],
      ['a missing key', new NotFoundException({ message: 'key not found', ...metadata })],
      ['an unavailable key', new KeyUnavailableException({ message: 'key unavailable', ...metadata })],
      ['an internal KMS error', new KMSInternalException({ message: 'internal', ...metadata })],
      ['a dependency timeout', new DependencyTimeoutException({ message: 'timeout', ...metadata })],
      ['missing permissions', Object.assign(new Error('not authorized to perform kms:Decrypt'), { name: 'AccessDeniedException' })],
      ['a network failure', Object.assign(new Error('connect ETIMEDOUT'), { code: 'ETIMEDOUT' })],
    ] as const;

    it.each(outages)('generateDataKey reports %s as KEYRING_UNAVAILABLE and keeps the SDK error as cause', async (_what, cause) => {
      // Arrange
      kms.on(GenerateDataKeyCommand).rejects(cause);

      // Act
      const error = await caught(keyRing.generateDataKey(CONTEXT));

      // Assert
      expect(error.code).toBe('KEYRING_UNAVAILABLE');
      expect(error.status).toBe(503);
      expect(error.cause).toBe(cause);
      expect(kms).toHaveReceivedCommandTimes(GenerateDataKeyCommand, 1);
    });

    it.each(outages)('decryptDataKey reports %s as KEYRING_UNAVAILABLE and keeps the SDK error as cause', async (_what, cause) => {
      // Arrange
      kms.on(DecryptCommand).rejects(cause);

      // Act
      const error = await caught(keyRing.decryptDataKey(new Uint8Array(184), CONTEXT));

      // Assert
      expect(error.code).toBe('KEYRING_UNAVAILABLE');
      expect(error.status).toBe(503);
      expect(error.cause).toBe(cause);
      expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 1);
    });
  });
});
