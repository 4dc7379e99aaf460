import 'aws-sdk-client-mock-vitest/extend';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetPublicKeyCommand, KMSClient, KMSInternalException, KMSInvalidStateException } from '@aws-sdk/client-kms';
import type { Logger } from '@aws-lambda-powertools/logger';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createJwksHandler, handler } from '../../functions/jwks/handler.js';
import { LocalSigner } from '../../shared/adapters/local-signer.js';
import { cryptoRandom } from '../../shared/adapters/system.js';
import { ENV } from '../../shared/config/env.js';
import type { ClientSigner, PublicJwk } from '../../shared/core/ports.js';
import { ROUTES } from '../../shared/http/routes.js';
import { awsSigner, resetAwsSigner } from '../../shared/runtime/aws-signer.js';
import { apiEvent, lambdaContext } from '../fixtures/api-event.js';
import { p384, rsa3072 } from '../fixtures/keys.js';

const event = () => apiEvent({ resource: '/.well-known/jwks.json', path: '/.well-known/jwks.json' });
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
const PUBLIC_MEMBERS: Record<string, string[]> = { RSA: ['n', 'e'], EC: ['crv', 'x', 'y'] };

/** SMART-REG-04, member by member: kty, a kid unique in the set, the bare public key, nothing private. */
function expectPublishable(keys: readonly PublicJwk[]): void {
  expect(new Set(keys.map((k) => k.kid)).size).toBe(keys.length);
  for (const key of keys) {
    expect(typeof key.kty).toBe('string');
    expect(key.kid).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(key.use).toBe('sig');
    expect(['RS384', 'ES384']).toContain(key.alg);
    for (const member of PUBLIC_MEMBERS[key.kty]!) expect(typeof (key as unknown as Record<string, unknown>)[member], member).toBe('string');
    for (const member of PRIVATE_MEMBERS) expect(key, member).not.toHaveProperty(member);
    expect(Object.keys(key).sort()).toEqual(['alg', 'kid', 'kty', 'use', ...PUBLIC_MEMBERS[key.kty]!].sort());
  }
}

describe('GET /.well-known/jwks.json', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'smart-launch-jwks-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is a route of its own function in the route table (SMART-REG-03)', () => {
    expect(ROUTES).toContainEqual({ method: 'GET', resource: '/.well-known/jwks.json', fn: 'jwks' });
  });

  it('answers the public keys with Cache-Control public, max-age=300 and Content-Type application/json (SMART-REG-04)', async () => {
    const result = await createJwksHandler(async () => new LocalSigner(dir, cryptoRandom))(event(), lambdaContext);

    expect(result.statusCode).toBe(200);
    expect(result.headers?.['cache-control']).toBe('public, max-age=300');
    expect(result.headers?.['content-type']).toBe('application/json');
    expect(result.headers).not.toHaveProperty('pragma');
    expect(result.headers?.['x-content-type-options']).toBe('nosniff');
    const body = JSON.parse(result.body) as { keys: PublicJwk[] };
    expect(Object.keys(body)).toEqual(['keys']);
    expect(body.keys.map((k) => k.kty)).toEqual(['RSA', 'EC']);
    expectPublishable(body.keys);
  });

  it('never publishes private members, even from a signer that leaks them (SMART-REG-04)', async () => {
    const pair = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const leaky: ClientSigner = {
      publicJwks: async () => ({ keys: [{ ...(pair.privateKey.export({ format: 'jwk' }) as unknown as PublicJwk), kid: 'k'.repeat(43), alg: 'ES384' }] }),
      signingKey: async () => {
        throw new Error('unused');
      },
    };

    const result = await createJwksHandler(async () => leaky)(event(), lambdaContext);

    const body = JSON.parse(result.body) as { keys: PublicJwk[] };
    expectPublishable(body.keys);
    expect(result.body).not.toContain('"d"');
  });

  it('answers an empty key set when no issuer uses private_key_jwt', async () => {
    const result = await createJwksHandler(async () => undefined)(event(), lambdaContext);

    expect(result.statusCode).toBe(200);
    expect(JSON.parse(result.body)).toEqual({ keys: [] });
  });
});

describe('the deployed JWKS handler (KMS GetPublicKey, aws-sdk-client-mock)', () => {
  const kms = mockClient(KMSClient);
  const rsa = rsa3072(0);
  const ec = p384(0);
  const next = rsa3072(1);
  const ARNS = { rsa: 'arn:aws:kms:us-east-1:111111111111:key/rsa', ec: 'arn:aws:kms:us-east-1:111111111111:key/ec', next: 'arn:aws:kms:us-east-1:111111111111:key/next' };
  const spki = (key: typeof rsa) => new Uint8Array(key.publicKey.export({ format: 'der', type: 'spki' }));

  beforeAll(() => {
    process.env[ENV.signingKeyRs384] = ARNS.rsa;
    process.env[ENV.signingKeyEs384] = ARNS.ec;
    process.env[ENV.signingKeysNext] = ARNS.next;
  });
  afterEach(() => {
    kms.reset();
    resetAwsSigner();
  });
  afterAll(() => {
    delete process.env[ENV.signingKeyRs384];
    delete process.env[ENV.signingKeyEs384];
    delete process.env[ENV.signingKeysNext];
    kms.restore();
  });

  it('publishes the current RS384 and ES384 keys and the next key, from one GetPublicKey each per container (SMART-REG-04 rotation)', async () => {
    kms.on(GetPublicKeyCommand).callsFake((input: { KeyId: string }) => {
      const [keySpec, key] = input.KeyId === ARNS.ec ? ['ECC_NIST_P384', ec] : ['RSA_3072', input.KeyId === ARNS.rsa ? rsa : next];
      return { $metadata: {}, KeyId: input.KeyId, PublicKey: spki(key as typeof rsa), KeySpec: keySpec, KeyUsage: 'SIGN_VERIFY' };
    });

    const first = await handler(event(), lambdaContext);
    const second = await handler(event(), lambdaContext);

    expect(first.statusCode).toBe(200);
    expect(second.body).toBe(first.body);
    const keys = (JSON.parse(first.body) as { keys: PublicJwk[] }).keys;
    expect(keys.map((k) => [k.kty, k.alg])).toEqual([
      ['RSA', 'RS384'],
      ['EC', 'ES384'],
      ['RSA', 'RS384'],
    ]);
    expectPublishable(keys);
    expect(kms).toHaveReceivedCommandTimes(GetPublicKeyCommand, 3);
    for (const keyId of Object.values(ARNS)) expect(kms).toHaveReceivedCommandWith(GetPublicKeyCommand, { KeyId: keyId });
  });

  it('serves the keys it can read when one key is unreadable, logging and counting the unreadable one (SMART-REG-04)', async () => {
    // Arrange: the next key's grant is gone (AccessDenied); the current RS384 and ES384 keys read fine.
    kms.on(GetPublicKeyCommand).callsFake((input: { KeyId: string }) => {
      if (input.KeyId === ARNS.next) throw new KMSInvalidStateException({ message: 'pending deletion', $metadata: {} });
      const [keySpec, key] = input.KeyId === ARNS.ec ? ['ECC_NIST_P384', ec] : ['RSA_3072', rsa];
      return { $metadata: {}, KeyId: input.KeyId, PublicKey: spki(key as typeof rsa), KeySpec: keySpec, KeyUsage: 'SIGN_VERIFY' };
    });
    const counted: number[] = [];
    const warnings: Array<[string, Record<string, unknown>]> = [];
    const log = { warn: (message: string, fields: Record<string, unknown>) => void warnings.push([message, fields]) } as unknown as Pick<Logger, 'warn'>;
    // Act
    const result = await createJwksHandler(async () => awsSigner(), { countUnreadable: (n) => void counted.push(n), log })(event(), lambdaContext);
    // Assert: 200 with the two readable keys, the unreadable one named in the log and counted once.
    expect(result.statusCode).toBe(200);
    const keys = (JSON.parse(result.body) as { keys: PublicJwk[] }).keys;
    expect(keys.map((k) => [k.kty, k.alg])).toEqual([
      ['RSA', 'RS384'],
      ['EC', 'ES384'],
    ]);
    expectPublishable(keys);
    expect(counted).toEqual([1]);
    expect(warnings.map(([message]) => message)).toEqual(['JWKS key unreadable']);
    expect(warnings[0]![1]).toMatchObject({ keyId: ARNS.next, awsError: 'KMSInvalidStateException', served: 2 });
  });

  it('answers 503 KEYRING_UNAVAILABLE when KMS fails, and no key material; the deployed handler counts the unreadable keys as EMF', async () => {
    kms.on(GetPublicKeyCommand).rejects(new KMSInternalException({ message: 'down', $metadata: {} }));
    // The deployed handler's counter writes an EMF document to stdout: read here, not printed.
    const printed: string[] = [];
    const stdout = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      printed.push(String(chunk));
      return true;
    });

    let result: Awaited<ReturnType<typeof handler>>;
    try {
      result = await handler(event(), lambdaContext);
    } finally {
      stdout.mockRestore();
    }

    expect(result.statusCode).toBe(503);
    expect(JSON.parse(result.body)).toMatchObject({ error: { code: 'KEYRING_UNAVAILABLE' } });
    const emf = printed.flatMap((chunk) => chunk.split('\n')).filter((line) => line.includes('"_aws"')).map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(emf).toMatchObject([{ Function: 'jwks', JwksKeyUnreadable: 3 }]);
  });
});
