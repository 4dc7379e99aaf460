import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalKeyRing, MASTER_KEY_FILE } from '../../shared/adapters/local-key-ring.js';
import { cryptoRandom } from '../../shared/adapters/system.js';
import { caught } from '../fakes/caught.js';

const CONTEXT = { record: 'ses#hash-of-the-session-id', purpose: 'session' } as const;

describe('LocalKeyRing', () => {
  let root: string;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'smart-launch-keys-'));
  });

  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('creates the master key file with mode 0600 in a new 0700 folder on first run', async () => {
    // Arrange
    const dataDir = join(root, 'data', 'nested');

    // Act
    await LocalKeyRing.open(dataDir, cryptoRandom);

    // Assert
    const file = await stat(join(dataDir, MASTER_KEY_FILE));
    expect(file.mode & 0o777).toBe(0o600);
    expect(file.size).toBe(32);
    expect((await stat(dataDir)).mode & 0o777).toBe(0o700);
  });

  it('unwraps a data key it wrapped, under the same context', async () => {
    // Arrange
    const keyRing = await LocalKeyRing.open(root, cryptoRandom);
    const dataKey = await keyRing.generateDataKey(CONTEXT);

    // Act
    const unwrapped = await keyRing.decryptDataKey(dataKey.wrapped, CONTEXT);

    // Assert
    expect(dataKey.plaintext).toHaveLength(32);
    expect(dataKey.wrapped).toHaveLength(1 + 12 + 32 + 16);
    expect(dataKey.wrapped[0]).toBe(1);
    expect(unwrapped).toEqual(dataKey.plaintext);
  });

  it('reads the same master key back, so a reopened key ring unwraps older data keys', async () => {
    // Arrange
    const first = await LocalKeyRing.open(root, cryptoRandom);
    const dataKey = await first.generateDataKey(CONTEXT);

    // Act
    const reopened = await LocalKeyRing.open(root, cryptoRandom);
    const unwrapped = await reopened.decryptDataKey(dataKey.wrapped, CONTEXT);

    // Assert
    expect(unwrapped).toEqual(dataKey.plaintext);
  });

  it('agrees on one master key when several open a new folder at once', async () => {
    // Arrange
    const dataDir = join(root, 'fresh');

    // Act
    const keyRings = await Promise.all(Array.from({ length: 5 }, () => LocalKeyRing.open(dataDir, cryptoRandom)));

    // Assert
    const dataKey = await keyRings[0]!.generateDataKey(CONTEXT);
    for (const keyRing of keyRings) {
      expect(await keyRing.decryptDataKey(dataKey.wrapped, CONTEXT)).toEqual(dataKey.plaintext);
    }
  });

  it('treats the context the same whatever the order of its keys', async () => {
    // Arrange
    const keyRing = await LocalKeyRing.open(root, cryptoRandom);
    const dataKey = await keyRing.generateDataKey({ a: '1', b: '2' });

    // Act
    const unwrapped = await keyRing.decryptDataKey(dataKey.wrapped, { b: '2', a: '1' });

    // Assert
    expect(unwrapped).toEqual(dataKey.plaintext);
  });

  const wrongContexts = [
    ['another record', { ...CONTEXT, record: 'ses#another-session' }],
    ['an extra entry', { ...CONTEXT, extra: 'x' }],
    ['a missing entry', { record: CONTEXT.record }],
    ['entries shifted between keys and values', { 'record","ses#hash-of-the-session-id': '', purpose: 'session' }],
  ] as const;

  it.each(wrongContexts)('refuses to unwrap under a context with %s as VAULT_INTEGRITY', async (_what, context) => {
    // Arrange
    const keyRing = await LocalKeyRing.open(root, cryptoRandom);
    const dataKey = await keyRing.generateDataKey(CONTEXT);

    // Act
    const error = await caught(keyRing.decryptDataKey(dataKey.wrapped, context));

    // Assert
    expect(error.code).toBe('VAULT_INTEGRITY');
  });

  const tamperings: ReadonlyArray<readonly [string, (wrapped: Uint8Array) => Uint8Array]> = [
    ['a flipped IV bit', (w) => flip(w, 5)],
    ['a flipped key bit', (w) => flip(w, 20)],
    ['a flipped tag bit', (w) => flip(w, w.length - 1)],
    ['an unknown version byte', (w) => Uint8Array.from([2, ...w.subarray(1)])],
    ['a truncated blob', (w) => w.subarray(0, w.length - 1)],
    ['an empty blob', () => new Uint8Array(0)],
  ];

  it.each(tamperings)('refuses a wrapped key with %s as VAULT_INTEGRITY', async (_what, tamper) => {
    // Arrange
    const keyRing = await LocalKeyRing.open(root, cryptoRandom);
    const dataKey = await keyRing.generateDataKey(CONTEXT);

    // Act
    const error = await caught(keyRing.decryptDataKey(tamper(dataKey.wrapped), CONTEXT));

    // Assert
    expect(error.code).toBe('VAULT_INTEGRITY');
  });

  it('refuses a data key wrapped under another master key as VAULT_INTEGRITY', async () => {
    // Arrange
    const mine = await LocalKeyRing.open(join(root, 'mine'), cryptoRandom);
    const theirs = await LocalKeyRing.open(join(root, 'theirs'), cryptoRandom);
    const dataKey = await theirs.generateDataKey(CONTEXT);

    // Act
    const error = await caught(mine.decryptDataKey(dataKey.wrapped, CONTEXT));

    // Assert
    expect(error.code).toBe('VAULT_INTEGRITY');
  });

  it('refuses a master key file of the wrong length with a clear INTERNAL error', async () => {
    // Arrange
    await writeFile(join(root, MASTER_KEY_FILE), Buffer.alloc(16), { mode: 0o600 });

    // Act
    const error = await caught(LocalKeyRing.open(root, cryptoRandom));

    // Assert
    expect(error.code).toBe('INTERNAL');
    expect(error.message).toBe(`local master key ${join(root, MASTER_KEY_FILE)} has 16 bytes, expected 32`);
  });

  it('refuses an empty encryption context as INTERNAL', async () => {
    // Arrange
    const keyRing = await LocalKeyRing.open(root, cryptoRandom);

    // Act
    const error = await caught(keyRing.generateDataKey({}));

    // Assert
    expect(error.code).toBe('INTERNAL');
  });
});

function flip(bytes: Uint8Array, index: number): Uint8Array {
  const copy = new Uint8Array(bytes);
  copy[index] = (copy[index] ?? 0) ^ 0x01;
  return copy;
}
