import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { cryptoRandom } from '../../shared/adapters/system.js';
import { base64url, open, randomToken, seal, sha256Base64url } from '../../shared/core/crypto.js';
import { openJson, sealJson } from '../../shared/core/sealed-records.js';
import { SessionSecretsSchema } from '../../shared/core/records.js';

const KEY = new Uint8Array(randomBytes(32));
const AAD = 'ses#record-a';
const PLAINTEXT = new Uint8Array(Buffer.from('{"accessToken":"at-secret"}', 'utf8'));

describe('seal and open', () => {
  it('round-trips plaintext under the same key and AAD', () => {
    const sealed = seal(KEY, PLAINTEXT, AAD, cryptoRandom);

    expect(open(KEY, sealed, AAD)).toEqual(PLAINTEXT);
  });

  it('uses layout version(1) | iv(12) | ciphertext | tag(16) and hides the plaintext', () => {
    const sealed = seal(KEY, PLAINTEXT, AAD, cryptoRandom);

    expect(sealed[0]).toBe(1);
    expect(sealed).toHaveLength(1 + 12 + PLAINTEXT.length + 16);
    expect(Buffer.from(sealed).includes(Buffer.from('at-secret'))).toBe(false);
  });

  it('uses a fresh IV each time, so equal plaintexts seal differently', () => {
    expect(Buffer.from(seal(KEY, PLAINTEXT, AAD, cryptoRandom)).equals(Buffer.from(seal(KEY, PLAINTEXT, AAD, cryptoRandom)))).toBe(false);
  });

  it('round-trips an empty plaintext', () => {
    expect(open(KEY, seal(KEY, new Uint8Array(0), AAD, cryptoRandom), AAD)).toEqual(new Uint8Array(0));
  });

  it('refuses another AAD (another record) with VAULT_INTEGRITY (invariant 6)', () => {
    const sealed = seal(KEY, PLAINTEXT, AAD, cryptoRandom);

    expect(() => open(KEY, sealed, 'ses#record-b')).toThrow(expect.objectContaining({ code: 'VAULT_INTEGRITY', status: 401 }));
  });

  it('refuses another key with VAULT_INTEGRITY (invariant 6)', () => {
    const sealed = seal(KEY, PLAINTEXT, AAD, cryptoRandom);

    expect(() => open(new Uint8Array(randomBytes(32)), sealed, AAD)).toThrow(expect.objectContaining({ code: 'VAULT_INTEGRITY', status: 401 }));
  });

  it('refuses a flipped byte anywhere (iv, ciphertext, tag) with VAULT_INTEGRITY', () => {
    const sealed = seal(KEY, PLAINTEXT, AAD, cryptoRandom);
    for (const index of [1, 12, 13, 13 + Math.floor(PLAINTEXT.length / 2), sealed.length - 1]) {
      const tampered = new Uint8Array(sealed);
      tampered[index] = (tampered[index] ?? 0) ^ 0x80;

      expect(() => open(KEY, tampered, AAD), `byte ${index}`).toThrow(expect.objectContaining({ code: 'VAULT_INTEGRITY', status: 401 }));
    }
  });

  it.each([0, 2, 255])('refuses unknown version %i with VAULT_INTEGRITY', (version) => {
    const sealed = seal(KEY, PLAINTEXT, AAD, cryptoRandom);
    sealed[0] = version;

    expect(() => open(KEY, sealed, AAD)).toThrow(expect.objectContaining({ code: 'VAULT_INTEGRITY', status: 401 }));
  });

  it.each([0, 1, 28])('refuses data truncated to %i bytes with VAULT_INTEGRITY', (length) => {
    const sealed = seal(KEY, PLAINTEXT, AAD, cryptoRandom).subarray(0, length);

    expect(() => open(KEY, sealed, AAD)).toThrow(expect.objectContaining({ code: 'VAULT_INTEGRITY', status: 401 }));
  });

  it('refuses a truncated tag with VAULT_INTEGRITY', () => {
    const sealed = seal(KEY, PLAINTEXT, AAD, cryptoRandom);

    expect(() => open(KEY, sealed.subarray(0, sealed.length - 1), AAD)).toThrow(expect.objectContaining({ code: 'VAULT_INTEGRITY', status: 401 }));
  });
});

describe('sealJson and openJson', () => {
  const secrets = {
    v: 1,
    accessToken: 'at',
    accessTokenExpiresAt: 1,
    scope: 'openid',
    launchMode: 'ehr',
    context: { patient: '123' },
  };

  it('round-trips a value that matches the schema', () => {
    expect(openJson(SessionSecretsSchema, KEY, sealJson(KEY, secrets, AAD, cryptoRandom), AAD)).toEqual(secrets);
  });

  it('treats sealed JSON of an unexpected shape as tampered (VAULT_INTEGRITY)', () => {
    expect(() => openJson(SessionSecretsSchema, KEY, sealJson(KEY, { v: 2 }, AAD, cryptoRandom), AAD)).toThrow(
      expect.objectContaining({ code: 'VAULT_INTEGRITY', status: 401 }),
    );
  });

  it('treats sealed bytes that are not JSON as tampered (VAULT_INTEGRITY)', () => {
    expect(() => openJson(SessionSecretsSchema, KEY, seal(KEY, Buffer.from('not json'), AAD, cryptoRandom), AAD)).toThrow(
      expect.objectContaining({ code: 'VAULT_INTEGRITY', status: 401 }),
    );
  });
});

describe('helpers', () => {
  it('encodes base64url without padding (RFC 4648 §5)', () => {
    expect(base64url(new Uint8Array([0xfb, 0xff, 0xfe]))).toBe('-__-');
    expect(base64url(new Uint8Array([0x61]))).toBe('YQ');
  });

  it('makes 43-character tokens from 32 random octets', () => {
    const token = randomToken(cryptoRandom);

    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(token, 'base64url')).toHaveLength(32);
  });

  it('hashes with SHA-256 to base64url (known vector for "abc")', () => {
    expect(sha256Base64url('abc')).toBe('ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0');
  });
});
