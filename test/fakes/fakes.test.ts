import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { pkceChallenge } from '../../shared/core/authorize.js';
import type { TransactionRecord } from '../../shared/core/records.js';
import { FixedClock } from './clock.js';
import { EHR_CLIENT_SECRET, FakeEhr } from './fake-ehr.js';
import { MemoryKeyRing } from './memory-key-ring.js';
import { MemorySessionStore } from './memory-store.js';

/** The fakes must be strict, or the core tests that pass against them prove nothing. */

const txn = (key: string, expiresAt: number): TransactionRecord => ({
  key,
  iss: 'https://ehr.example.org/fhir/r4',
  sessionKey: 'ses#x',
  bindingHash: 'b#x',
  endpoints: { authorizationEndpoint: 'https://a', tokenEndpoint: 'https://t' },
  wrappedKey: new Uint8Array([1]),
  sealed: new Uint8Array([2]),
  createdAt: 0,
  expiresAt,
});

describe('MemorySessionStore', () => {
  it('hands a transaction out once', async () => {
    const store = new MemorySessionStore();
    await store.putTransaction(txn('txn#a', 100));

    expect(await store.takeTransaction('txn#a', 50)).toMatchObject({ outcome: 'taken', record: { key: 'txn#a' } });
    expect(await store.takeTransaction('txn#a', 50)).toEqual({ outcome: 'absent' });
  });

  it('reads an expired transaction as absent, and consumes it', async () => {
    const store = new MemorySessionStore();
    await store.putTransaction(txn('txn#a', 100));

    expect(await store.takeTransaction('txn#a', 100)).toEqual({ outcome: 'absent' });
    expect(store.records()).toEqual([]);
  });

  it('refuses to overwrite a record with INTERNAL', async () => {
    const store = new MemorySessionStore();
    await store.putTransaction(txn('txn#a', 100));

    await expect(store.putTransaction(txn('txn#a', 200))).rejects.toMatchObject({ code: 'INTERNAL', status: 500 });
  });
});

describe('MemoryKeyRing', () => {
  it('unwraps only under the same context, whatever the key order, and counts calls', async () => {
    const ring = new MemoryKeyRing();
    const key = await ring.generateDataKey({ a: '1', b: '2' });

    expect(await ring.decryptDataKey(key.wrapped, { b: '2', a: '1' })).toEqual(key.plaintext);
    await expect(ring.decryptDataKey(key.wrapped, { a: '1', b: '3' })).rejects.toMatchObject({ code: 'VAULT_INTEGRITY', status: 401 });
    expect([ring.generateCalls, ring.decryptCalls]).toEqual([1, 2]);
  });
});

describe('FakeEhr token endpoint', () => {
  const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
  const basic = (secret: string) => `Basic ${Buffer.from(`my-app:${secret}`).toString('base64')}`;

  async function authorized() {
    const ehr = await FakeEhr.create({ clock: new FixedClock() });
    const verifier = randomBytes(32).toString('base64url');
    const url = new URL(ehr.authorizationEndpoint);
    for (const [k, v] of Object.entries({
      response_type: 'code',
      client_id: 'my-app',
      redirect_uri: 'https://smart.acme.example/callback',
      scope: 'openid',
      state: 's',
      aud: ehr.fhirBase,
      code_challenge: pkceChallenge(verifier),
      code_challenge_method: 'S256',
    })) {
      url.searchParams.set(k, v);
    }
    const { code } = ehr.authorize(url.href);
    const post = (fields: Record<string, string>, authorization = basic(EHR_CLIENT_SECRET)) =>
      ehr.http(ehr.tokenEndpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization },
        body: form({ grant_type: 'authorization_code', code: code as string, redirect_uri: 'https://smart.acme.example/callback', ...fields }),
      });
    return { ehr, verifier, post };
  }

  it('refuses a wrong PKCE verifier with invalid_grant', async () => {
    const { post } = await authorized();

    const response = await post({ code_verifier: randomBytes(32).toString('base64url') });

    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ error: 'invalid_grant' });
  });

  it('refuses a wrong client secret with 401 invalid_client', async () => {
    const { post, verifier } = await authorized();

    const response = await post({ code_verifier: verifier }, basic('wrong'));

    expect(response.status).toBe(401);
  });

  it('refuses another redirect_uri with invalid_grant', async () => {
    const { post, verifier } = await authorized();

    expect((await post({ code_verifier: verifier, redirect_uri: 'https://evil.example/cb' })).status).toBe(400);
  });

  it('redeems a code once', async () => {
    const { post, verifier } = await authorized();

    expect((await post({ code_verifier: verifier })).status).toBe(200);
    expect((await post({ code_verifier: verifier })).status).toBe(400);
  });

  it('fails like a network error for hosts other than its own', async () => {
    const { ehr } = await authorized();

    await expect(ehr.http('https://evil.example/x')).rejects.toThrow(TypeError);
  });
});
