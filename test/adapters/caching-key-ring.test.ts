import 'aws-sdk-client-mock-vitest/extend';
import { randomBytes } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { DecryptCommand, GenerateDataKeyCommand, InvalidCiphertextException, KMSClient, KMSInternalException, type DecryptCommandInput } from '@aws-sdk/client-kms';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { CachingKeyRing } from '../../shared/adapters/caching-key-ring.js';
import { KmsKeyRing } from '../../shared/adapters/kms-key-ring.js';
import type { EncryptionContext } from '../../shared/core/ports.js';
import { FixedClock } from '../fakes/clock.js';
import { MemoryKeyRing } from '../fakes/memory-key-ring.js';
import { caught } from '../fakes/caught.js';

const KEY_ID = 'arn:aws:kms:us-east-1:111111111111:key/0b7e6d1c-0000-4000-8000-000000000001';
const MINUTE = 60_000;

const context = (session: string): EncryptionContext => ({ service: 'smart-launch', customer: 'acme-health', session });
const CONTEXT_A = context('ses#hash-of-session-a');
const CONTEXT_B = context('ses#hash-of-session-b');

describe('CachingKeyRing over KmsKeyRing (KMS mocked)', () => {
  const client = new KMSClient({ region: 'us-east-1' });
  const kms = mockClient(client);
  const kmsKeyRing = new KmsKeyRing({ client, keyId: KEY_ID });

  const plaintextA = new Uint8Array(randomBytes(32));
  const wrappedA = new Uint8Array(randomBytes(184));
  const plaintextB = new Uint8Array(randomBytes(32));
  const wrappedB = new Uint8Array(randomBytes(184));

  let clock: FixedClock;

  beforeEach(() => {
    kms.reset();
    clock = new FixedClock();
    // KMS unwraps each wrapped key only under exactly the context it was generated with (the mock's
    // own input matching is partial, so a context with extra entries would slip through it).
    kms.on(DecryptCommand).callsFake((input: DecryptCommandInput) => kmsDecrypt(input));
    known.length = 2;
  });

  const known: Array<{ wrapped: Uint8Array; context: EncryptionContext; plaintext: Uint8Array }> = [
    { wrapped: wrappedA, context: CONTEXT_A, plaintext: plaintextA },
    { wrapped: wrappedB, context: CONTEXT_B, plaintext: plaintextB },
  ];

  function kmsDecrypt(input: DecryptCommandInput) {
    const match = known.find(
      (entry) => isDeepStrictEqual(new Uint8Array(input.CiphertextBlob ?? []), entry.wrapped) && isDeepStrictEqual({ ...input.EncryptionContext }, { ...entry.context }),
    );
    if (!match) throw new InvalidCiphertextException({ message: 'invalid ciphertext', $metadata: {} });
    return { Plaintext: new Uint8Array(match.plaintext), KeyId: KEY_ID };
  }

  it('calls KMS Decrypt once for 100 decrypts of one session’s wrapped key (docs/design.md §5: one Decrypt per session per warm container)', async () => {
    // Arrange
    const keyRing = new CachingKeyRing(kmsKeyRing, clock);

    // Act
    const keys = [];
    for (let i = 0; i < 100; i += 1) keys.push(await keyRing.decryptDataKey(new Uint8Array(wrappedA), { ...CONTEXT_A }));

    // Assert
    expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 1);
    expect(kms.calls()).toHaveLength(1);
    expect(kms).toHaveReceivedCommandWith(DecryptCommand, { KeyId: KEY_ID, CiphertextBlob: wrappedA, EncryptionContext: CONTEXT_A });
    for (const key of keys) expect(key).toEqual(plaintextA);
    expect(keyRing.size).toBe(1);
  });

  it('keeps one entry per session: two sessions cost one Decrypt each', async () => {
    // Arrange
    const keyRing = new CachingKeyRing(kmsKeyRing, clock);

    // Act
    for (let i = 0; i < 10; i += 1) {
      expect(await keyRing.decryptDataKey(wrappedA, CONTEXT_A)).toEqual(plaintextA);
      expect(await keyRing.decryptDataKey(wrappedB, CONTEXT_B)).toEqual(plaintextB);
    }

    // Assert
    expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 2);
    expect(keyRing.size).toBe(2);
  });

  it('serves a data key it just generated without any Decrypt (one GenerateDataKey per sign-in, no Decrypt in the same container)', async () => {
    // Arrange
    kms.on(GenerateDataKeyCommand).resolves({ Plaintext: plaintextA, CiphertextBlob: wrappedA, KeyId: KEY_ID });
    const keyRing = new CachingKeyRing(kmsKeyRing, clock);

    // Act
    const generated = await keyRing.generateDataKey(CONTEXT_A);
    const again = await keyRing.decryptDataKey(generated.wrapped, CONTEXT_A);

    // Assert
    expect(again).toEqual(generated.plaintext);
    expect(kms).toHaveReceivedCommandTimes(GenerateDataKeyCommand, 1);
    expect(kms).toHaveReceivedCommandWith(GenerateDataKeyCommand, { KeyId: KEY_ID, KeySpec: 'AES_256', EncryptionContext: CONTEXT_A });
    expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 0);
    expect(kms.calls()).toHaveLength(1);
  });

  it('does not serve a cached key for the same wrapped key under another encryption context: KMS is asked and refuses with VAULT_INTEGRITY (invariant 6)', async () => {
    // Arrange: session A's wrapped key is cached; someone copied it into session B's record.
    const keyRing = new CachingKeyRing(kmsKeyRing, clock);
    await keyRing.decryptDataKey(wrappedA, CONTEXT_A);

    // Act
    const error = await caught(keyRing.decryptDataKey(wrappedA, CONTEXT_B));

    // Assert
    expect(error).toMatchObject({ code: 'VAULT_INTEGRITY', status: 401 });
    expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 2);
    expect(kms).toHaveReceivedNthCommandWith(DecryptCommand, 2, { CiphertextBlob: wrappedA, EncryptionContext: CONTEXT_B });
    // The refusal is not remembered as a key, and the genuine entry is still served.
    await expect(keyRing.decryptDataKey(wrappedA, CONTEXT_B)).rejects.toMatchObject({ code: 'VAULT_INTEGRITY', status: 401 });
    expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 3);
    expect(await keyRing.decryptDataKey(wrappedA, CONTEXT_A)).toEqual(plaintextA);
    expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 3);
  });

  it.each([
    ['one more entry', { ...CONTEXT_A, extra: 'x' }],
    ['one entry fewer', { service: 'smart-launch', session: CONTEXT_A.session } as EncryptionContext],
    ['another customer', { ...CONTEXT_A, customer: 'other-health' }],
  ])('does not serve a cached key for a context with %s (invariant 6)', async (_what, other) => {
    // Arrange
    const keyRing = new CachingKeyRing(kmsKeyRing, clock);
    await keyRing.decryptDataKey(wrappedA, CONTEXT_A);

    // Act
    const error = await caught(keyRing.decryptDataKey(wrappedA, other));

    // Assert
    expect(error).toMatchObject({ code: 'VAULT_INTEGRITY', status: 401 });
    expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 2);
  });

  it('serves the cached key for the same context written in another key order', async () => {
    // Arrange
    const keyRing = new CachingKeyRing(kmsKeyRing, clock);
    await keyRing.decryptDataKey(wrappedA, CONTEXT_A);
    const reordered: EncryptionContext = { session: CONTEXT_A.session as string, customer: 'acme-health', service: 'smart-launch' };

    // Act
    const key = await keyRing.decryptDataKey(wrappedA, reordered);

    // Assert
    expect(key).toEqual(plaintextA);
    expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 1);
  });

  it('does not remember a failed Decrypt: after a KMS outage the next call goes to KMS again (KEYRING_UNAVAILABLE)', async () => {
    // Arrange
    let first = true;
    kms.on(DecryptCommand).callsFake((input: DecryptCommandInput) => {
      if (!first) return kmsDecrypt(input);
      first = false;
      throw new KMSInternalException({ message: 'internal error', $metadata: {} });
    });
    const keyRing = new CachingKeyRing(kmsKeyRing, clock);

    // Act
    const error = await caught(keyRing.decryptDataKey(wrappedA, CONTEXT_A));
    const key = await keyRing.decryptDataKey(wrappedA, CONTEXT_A);
    await keyRing.decryptDataKey(wrappedA, CONTEXT_A);

    // Assert
    expect(error).toMatchObject({ code: 'KEYRING_UNAVAILABLE', status: 503 });
    expect(key).toEqual(plaintextA);
    expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 2);
  });

  it('lets an entry expire after the TTL counted from when it was stored, not from its last use', async () => {
    // Arrange
    const keyRing = new CachingKeyRing(kmsKeyRing, clock, { ttlMs: MINUTE });
    await keyRing.decryptDataKey(wrappedA, CONTEXT_A);

    // Act
    clock.advance(MINUTE / 2);
    await keyRing.decryptDataKey(wrappedA, CONTEXT_A);
    clock.advance(MINUTE / 2 - 1);
    await keyRing.decryptDataKey(wrappedA, CONTEXT_A);
    const beforeExpiry = kms.commandCalls(DecryptCommand).length;
    clock.advance(1);
    const key = await keyRing.decryptDataKey(wrappedA, CONTEXT_A);
    const afterExpiry = kms.commandCalls(DecryptCommand).length;
    await keyRing.decryptDataKey(wrappedA, CONTEXT_A);

    // Assert
    expect(beforeExpiry).toBe(1);
    expect(afterExpiry).toBe(2);
    expect(key).toEqual(plaintextA);
    expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 2);
  });

  it('keeps a plaintext data key in memory for 5 minutes by default', async () => {
    // Arrange
    const keyRing = new CachingKeyRing(kmsKeyRing, clock);
    await keyRing.decryptDataKey(wrappedA, CONTEXT_A);

    // Act
    clock.advance(5 * MINUTE - 1);
    await keyRing.decryptDataKey(wrappedA, CONTEXT_A);
    const justBefore = kms.commandCalls(DecryptCommand).length;
    clock.advance(1);
    await keyRing.decryptDataKey(wrappedA, CONTEXT_A);

    // Assert
    expect(justBefore).toBe(1);
    expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 2);
  });

  it('evicts the least recently used entry beyond maxEntries', async () => {
    // Arrange
    const wrappedC = new Uint8Array(randomBytes(184));
    const plaintextC = new Uint8Array(randomBytes(32));
    const contextC = context('ses#hash-of-session-c');
    known.push({ wrapped: wrappedC, context: contextC, plaintext: plaintextC });
    const keyRing = new CachingKeyRing(kmsKeyRing, clock, { maxEntries: 2 });
    await keyRing.decryptDataKey(wrappedA, CONTEXT_A);
    await keyRing.decryptDataKey(wrappedB, CONTEXT_B);
    await keyRing.decryptDataKey(wrappedA, CONTEXT_A); // A is now the most recently used

    // Act
    await keyRing.decryptDataKey(wrappedC, contextC); // evicts B
    const sizeAfterC = keyRing.size;
    await keyRing.decryptDataKey(wrappedA, CONTEXT_A);
    const callsAfterA = kms.commandCalls(DecryptCommand).length;
    await keyRing.decryptDataKey(wrappedB, CONTEXT_B);

    // Assert
    expect(sizeAfterC).toBe(2);
    expect(callsAfterA).toBe(3);
    expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 4);
    expect(kms).toHaveReceivedNthCommandWith(DecryptCommand, 4, { CiphertextBlob: wrappedB, EncryptionContext: CONTEXT_B });
    expect(keyRing.size).toBe(2);
  });

  it('hands out copies: mutating a returned key never changes what the cache serves next', async () => {
    // Arrange
    kms.on(GenerateDataKeyCommand).resolves({ Plaintext: plaintextB, CiphertextBlob: wrappedB, KeyId: KEY_ID });
    const keyRing = new CachingKeyRing(kmsKeyRing, clock);

    // Act
    const fromKms = await keyRing.decryptDataKey(wrappedA, CONTEXT_A);
    fromKms.fill(0);
    const fromCache = await keyRing.decryptDataKey(wrappedA, CONTEXT_A);
    fromCache.fill(1);
    const again = await keyRing.decryptDataKey(wrappedA, CONTEXT_A);
    const generated = await keyRing.generateDataKey(CONTEXT_B);
    generated.plaintext.fill(2);
    const generatedAgain = await keyRing.decryptDataKey(wrappedB, CONTEXT_B);

    // Assert
    expect(again).toEqual(plaintextA);
    expect(again).not.toBe(fromCache);
    expect(generatedAgain).toEqual(plaintextB);
    expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 1);
  });
});

describe('CachingKeyRing: concurrent misses share one Decrypt (single flight)', () => {
  const client = new KMSClient({ region: 'us-east-1' });
  const kms = mockClient(client);
  const kmsKeyRing = new KmsKeyRing({ client, keyId: KEY_ID });
  const plaintextA = new Uint8Array(randomBytes(32));
  const wrappedA = new Uint8Array(randomBytes(184));

  /** KMS answers each Decrypt only when the test says so: as KMS would, throttled, or with a 5xx. */
  let held: Array<{ input: DecryptCommandInput; answer: (outcome: 'ok' | 'throttled' | 'internal') => void }>;
  let clock: FixedClock;

  beforeEach(() => {
    kms.reset();
    clock = new FixedClock();
    held = [];
    kms.on(DecryptCommand).callsFake(
      (input: DecryptCommandInput) =>
        new Promise((resolve, reject) => {
          held.push({
            input,
            answer: (outcome) => {
              if (outcome === 'throttled') reject(Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException', $metadata: { httpStatusCode: 400 } }));
              else if (outcome === 'internal') reject(new KMSInternalException({ message: 'internal error', $metadata: { httpStatusCode: 500 } }));
              else if (isDeepStrictEqual(new Uint8Array(input.CiphertextBlob ?? []), wrappedA) && isDeepStrictEqual({ ...input.EncryptionContext }, { ...CONTEXT_A })) {
                resolve({ Plaintext: new Uint8Array(plaintextA), KeyId: KEY_ID });
              } else reject(new InvalidCiphertextException({ message: 'invalid ciphertext', $metadata: {} }));
            },
          });
        }),
    );
  });

  /** Lets the pending calls reach the mock. */
  const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

  it('8 concurrent decrypts of one session’s wrapped key make one KMS Decrypt (docs/design.md §5: one Decrypt per session per warm container, including a burst)', async () => {
    // Arrange
    const keyRing = new CachingKeyRing(kmsKeyRing, clock);

    // Act
    const keys = Array.from({ length: 8 }, () => keyRing.decryptDataKey(new Uint8Array(wrappedA), { ...CONTEXT_A }));
    await settle();
    const inFlight = held.length;
    for (const call of held) call.answer('ok');
    const results = await Promise.all(keys);

    // Assert
    expect(inFlight).toBe(1);
    expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 1);
    for (const key of results) expect(key).toEqual(plaintextA);
    // Each caller has its own copy: zeroing one changes no other, nor what the cache serves next.
    expect(new Set(results).size).toBe(8);
    results[0]!.fill(0);
    expect(results[1]).toEqual(plaintextA);
    expect(await keyRing.decryptDataKey(wrappedA, CONTEXT_A)).toEqual(plaintextA);
    expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 1);
    expect(keyRing.size).toBe(1);
  });

  it.each([
    ['throttled', 'throttled'],
    ['5xx', 'internal'],
  ] as const)('a failed Decrypt (KMS %s) goes to every waiter as KEYRING_UNAVAILABLE, is not cached, and the next call asks KMS again', async (_what, outcome) => {
    // Arrange
    const keyRing = new CachingKeyRing(kmsKeyRing, clock);
    const waiters = Array.from({ length: 5 }, () => caught(keyRing.decryptDataKey(wrappedA, CONTEXT_A)));
    await settle();

    // Act
    for (const call of held) call.answer(outcome);
    const errors = await Promise.all(waiters);
    const next = keyRing.decryptDataKey(wrappedA, CONTEXT_A);
    await settle();
    held.at(-1)!.answer('ok');

    // Assert
    for (const error of errors) expect(error).toMatchObject({ code: 'KEYRING_UNAVAILABLE', status: 503 });
    expect(await next).toEqual(plaintextA);
    expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 2);
    expect(keyRing.size).toBe(1);
  });

  it('never shares a Decrypt under way with a call for the same wrapped key under another context: KMS is asked for each, and refuses the other (invariant 6)', async () => {
    // Arrange
    const keyRing = new CachingKeyRing(kmsKeyRing, clock);

    // Act
    const genuine = keyRing.decryptDataKey(wrappedA, CONTEXT_A);
    const copied = caught(keyRing.decryptDataKey(wrappedA, CONTEXT_B));
    await settle();
    for (const call of held) call.answer('ok');

    // Assert
    expect(await genuine).toEqual(plaintextA);
    expect(await copied).toMatchObject({ code: 'VAULT_INTEGRITY', status: 401 });
    expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 2);
    expect(keyRing.size).toBe(1);
  });

  it('counts the TTL of a key decrypted for a burst from when KMS answered (clock port)', async () => {
    // Arrange
    const keyRing = new CachingKeyRing(kmsKeyRing, clock, { ttlMs: MINUTE });
    const burst = [keyRing.decryptDataKey(wrappedA, CONTEXT_A), keyRing.decryptDataKey(wrappedA, CONTEXT_A)];
    await settle();
    clock.advance(10_000);
    for (const call of held) call.answer('ok');
    await Promise.all(burst);

    // Act
    clock.advance(MINUTE - 1);
    await keyRing.decryptDataKey(wrappedA, CONTEXT_A);
    const justBefore = kms.commandCalls(DecryptCommand).length;
    clock.advance(1);
    const after = keyRing.decryptDataKey(wrappedA, CONTEXT_A);
    await settle();
    held.at(-1)!.answer('ok');
    await after;

    // Assert
    expect(justBefore).toBe(1);
    expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 2);
  });
});

describe('CachingKeyRing over a counting key ring', () => {
  it('stays bounded at its default of 1000 entries', async () => {
    // Arrange
    const inner = new MemoryKeyRing();
    const clock = new FixedClock();
    const keyRing = new CachingKeyRing(inner, clock);
    const keys = [];
    for (let i = 0; i < 1001; i += 1) keys.push({ context: context(`ses#${i}`), key: await inner.generateDataKey(context(`ses#${i}`)) });

    // Act
    for (const { context: ctx, key } of keys) await keyRing.decryptDataKey(key.wrapped, ctx);
    const first = keys[0];
    const last = keys[1000];
    if (!first || !last) throw new Error('keys missing');
    await keyRing.decryptDataKey(last.key.wrapped, last.context);
    const callsBeforeFirst = inner.decryptCalls;
    await keyRing.decryptDataKey(first.key.wrapped, first.context);

    // Assert
    expect(keyRing.size).toBe(1000);
    expect(callsBeforeFirst).toBe(1001);
    expect(inner.decryptCalls).toBe(1002);
  });

  it('passes a real integrity failure of the inner key ring through as VAULT_INTEGRITY, caching nothing (invariant 6)', async () => {
    // Arrange
    const inner = new MemoryKeyRing();
    const keyRing = new CachingKeyRing(inner, new FixedClock());
    const { wrapped } = await inner.generateDataKey(CONTEXT_A);

    // Act
    const error = await caught(keyRing.decryptDataKey(wrapped, CONTEXT_B));

    // Assert
    expect(error).toMatchObject({ code: 'VAULT_INTEGRITY', status: 401 });
    expect(keyRing.size).toBe(0);
    expect(inner.decryptCalls).toBe(1);
  });
});
