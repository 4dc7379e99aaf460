import 'aws-sdk-client-mock-vitest/extend';
import { createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { GetPublicKeyCommand, KMSClient, KMSInternalException, SignCommand, type SignCommandInput } from '@aws-sdk/client-kms';
import { mockClient } from 'aws-sdk-client-mock';
import { calculateJwkThumbprint, createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JWK } from 'jose';
import { beforeEach, describe, expect, it } from 'vitest';
import { derToJoseSignature, KmsSigner } from '../../shared/adapters/kms-signer.js';
import { cryptoRandom } from '../../shared/adapters/system.js';
import { createClientAssertion } from '../../shared/core/client-assertion.js';
import { SmartError } from '../../shared/core/errors.js';
import type { ClientAssertionAlg } from '../../shared/core/ports.js';
import { p384 as pooledP384, rsa3072 } from '../fixtures/keys.js';

const metadata = { $metadata: {} };
const arn = (n: number) => `arn:aws:kms:us-east-1:111111111111:key/0b7e6d1c-0000-4000-8000-00000000000${n}`;
const TOKEN_URL = 'https://ehr.example.org/oauth2/token';

// --- DER INTEGER / SEQUENCE encoding, written independently of the converter under test ---------
function derLength(length: number): number[] {
  if (length < 0x80) return [length];
  return length < 0x100 ? [0x81, length] : [0x82, length >> 8, length & 0xff];
}
function derInteger(unsigned: Uint8Array): number[] {
  let bytes = [...unsigned];
  while (bytes.length > 1 && bytes[0] === 0) bytes = bytes.slice(1);
  if ((bytes[0] as number) & 0x80) bytes = [0, ...bytes];
  return [0x02, ...derLength(bytes.length), ...bytes];
}
function derSignature(joseSignature: Uint8Array): Uint8Array {
  const half = joseSignature.length / 2;
  const body = [...derInteger(joseSignature.subarray(0, half)), ...derInteger(joseSignature.subarray(half))];
  return new Uint8Array([0x30, ...derLength(body.length), ...body]);
}

const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
const data = Buffer.from('eyJhbGciOiJFUzM4NCJ9.eyJzdWIiOiJ4In0');

/**
 * Known P-384 signatures (JOSE form, r || s) of `data` under `signedBy`, one per shape DER encodes
 * differently. Found once by signing until one matched (a zero first octet turns up once in 256
 * signatures); each case below checks again that its vector has its shape and verifies.
 */
const signedBy = createPublicKey({
  key: { kty: 'EC', crv: 'P-384', x: 'ZVvwYgkEDynEiI0MWQ5inL9Tk39JwOzDpDGdLN3T0PyFC_yxpVDxtamTWeVfpKpg', y: 'ITUHb32veDdtiISkBeKamNpDAfM5jm69PDJ9vOEAtWH-6P7t5bUZMGtTht3mqi2W' },
  format: 'jwk',
});
const KNOWN = {
  rHighBit: 'ee0c4e39a886d35b1fd2cbe63acc204a8db34196d79e98ee58c025c474814065ab549d953e44af89ade8b6f9bbda4c31a23675534b83ccee016b11368b15ab1bbd8524b8f0278c2864c59b0b592df96d9c51362f27598ff6b8410eb8996105ef',
  sHighBit: '4298e628580f1a35981d09bbd0b644e15954acace63d42a9176306ed460ccb34fc4db3051d58d7e1d204204e2ea78f2a8f80208d41d1eb33bf9ad3f5fa7d08d6da7508ee9ea0b4345c74486876d71f48cbb53b487543bc356a62f6425b314ea4',
  rShort: '004a42d732cf4eb33414b37da67684a5dd2f5c340a886481eafd09a5b68b44174622afa4ba1211288f3f7e422327069de7b0f0eb814042809b871bee1288ca3a6c52949a1954fdbf897f83fc717265e6cb7212b2756630e65ce6194b25e7667d',
  sShort: '3d974fff696df4b7c16bf5f0197e3a0346f8ae736d9da676253a28155693dd635b65cd754dda1001c933fbc117bb5e240009b7d59c181ddb31490eb5fe92a68935cd96b1101fa8c1d75f7099388c07a37b5299cdc2f17d8b43e59b2417c2abd2',
};

describe('derToJoseSignature (AWS-06: KMS answers DER, JWS needs r || s)', () => {
  it('turns node\'s DER signature into the 96-byte r || s that verifies as ieee-p1363', () => {
    for (let i = 0; i < 50; i += 1) {
      const der = new Uint8Array(sign('sha384', data, { key: p384.privateKey, dsaEncoding: 'der' }));
      const jose = derToJoseSignature(der);
      expect(jose).toHaveLength(96);
      expect(verify('sha384', data, { key: p384.publicKey, dsaEncoding: 'ieee-p1363' }, jose)).toBe(true);
    }
  });

  it.each([
    ['r has its high bit set (DER adds a 0x00 pad octet)', KNOWN.rHighBit, (r: Uint8Array) => ((r[0] as number) & 0x80) !== 0],
    ['s has its high bit set (DER adds a 0x00 pad octet)', KNOWN.sHighBit, (_r: Uint8Array, s: Uint8Array) => ((s[0] as number) & 0x80) !== 0],
    ['r is shorter than 48 octets (DER drops the leading zero)', KNOWN.rShort, (r: Uint8Array) => r[0] === 0],
    ['s is shorter than 48 octets (DER drops the leading zero)', KNOWN.sShort, (_r: Uint8Array, s: Uint8Array) => s[0] === 0],
  ])('matches the known ieee-p1363 signature exactly when %s', (_case, hex, shape) => {
    // Arrange: a known r || s of that shape, and its DER form (checked valid by node's own verifier).
    const known = new Uint8Array(Buffer.from(hex, 'hex'));
    expect(known).toHaveLength(96);
    expect(shape(known.subarray(0, 48), known.subarray(48))).toBe(true);
    expect(verify('sha384', data, { key: signedBy, dsaEncoding: 'ieee-p1363' }, known)).toBe(true);
    const der = derSignature(known);
    expect(verify('sha384', data, { key: signedBy, dsaEncoding: 'der' }, der)).toBe(true);
    // Act + Assert
    expect(Buffer.from(derToJoseSignature(der)).toString('hex')).toBe(Buffer.from(known).toString('hex'));
  });

  it('pads small integers on the left and strips the sign octet (hand-made vectors)', () => {
    const r = new Uint8Array(48).fill(0);
    r[47] = 1;
    const s = new Uint8Array(48).fill(0xff);
    // r = 1 is one octet in DER; s = 0xff.. needs the 0x00 pad (49 octets).
    const der = new Uint8Array([0x30, 3 + 2 + 49, 0x02, 0x01, 0x01, 0x02, 0x31, 0x00, ...s]);
    expect(derToJoseSignature(der)).toEqual(new Uint8Array([...r, ...s]));
  });

  it('reads long-form DER lengths (P-521: the SEQUENCE is longer than 127 octets)', () => {
    const p521 = generateKeyPairSync('ec', { namedCurve: 'P-521' });
    for (let i = 0; i < 20; i += 1) {
      const der = new Uint8Array(sign('sha512', data, { key: p521.privateKey, dsaEncoding: 'der' }));
      const jose = derToJoseSignature(der, 66);
      expect(verify('sha512', data, { key: p521.publicKey, dsaEncoding: 'ieee-p1363' }, jose)).toBe(true);
    }
  });

  it.each([
    ['not a SEQUENCE', [0x31, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]],
    ['SEQUENCE length wrong', [0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]],
    ['trailing data', [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x00]],
    ['trailing data inside the SEQUENCE', [0x30, 0x08, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x05, 0x00]],
    ['not an INTEGER', [0x30, 0x06, 0x04, 0x01, 0x01, 0x02, 0x01, 0x01]],
    ['negative INTEGER', [0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x01]],
    ['empty INTEGER', [0x30, 0x05, 0x02, 0x00, 0x02, 0x01, 0x01]],
    ['INTEGER longer than 48 octets', [0x30, 0x37, 0x02, 0x32, 0x01, ...new Array(49).fill(1), 0x02, 0x01, 0x01]],
    ['truncated', [0x30, 0x06, 0x02, 0x01]],
    ['empty', []],
  ])('refuses malformed DER: %s', (_case, bytes) => {
    expect(() => derToJoseSignature(new Uint8Array(bytes))).toThrow(expect.objectContaining({ code: 'KEYRING_UNAVAILABLE' }));
  });
});

interface TestKey {
  readonly arn: string;
  readonly privateKey: KeyObject;
  readonly spki: Uint8Array;
  readonly keySpec: string;
  readonly algorithm: string;
  readonly kid: Promise<string>;
}

/** The `n`th KMS key, with the `pooled`th of the process's pooled key pairs of its kind (test/fixtures/keys.ts). */
function testKey(n: number, alg: ClientAssertionAlg, pooled: number): TestKey {
  const pair = alg === 'RS384' ? rsa3072(pooled) : pooledP384(pooled);
  return {
    arn: arn(n),
    privateKey: pair.privateKey,
    spki: new Uint8Array(pair.publicKey.export({ format: 'der', type: 'spki' })),
    keySpec: alg === 'RS384' ? 'RSA_3072' : 'ECC_NIST_P384',
    algorithm: alg === 'RS384' ? 'RSASSA_PKCS1_V1_5_SHA_384' : 'ECDSA_SHA_384',
    kid: calculateJwkThumbprint(pair.publicKey.export({ format: 'jwk' }) as JWK, 'sha256'),
  };
}

describe('KmsSigner (aws-sdk-client-mock)', () => {
  const client = new KMSClient({ region: 'us-east-1' });
  const kms = mockClient(client);
  const rsa = testKey(1, 'RS384', 0);
  const ec = testKey(2, 'ES384', 0);
  const nextRsa = testKey(3, 'RS384', 1);
  const keys = [rsa, ec, nextRsa];

  /** KMS as it behaves: GetPublicKey answers SPKI DER; Sign signs the raw message, ECDSA DER-encoded. */
  const getPublicKey = (input: { KeyId: string }) => {
    const key = keys.find((k) => k.arn === input.KeyId);
    if (!key) throw Object.assign(new Error('not found'), { name: 'NotFoundException' });
    return { ...metadata, KeyId: key.arn, PublicKey: key.spki, KeySpec: key.keySpec, KeyUsage: 'SIGN_VERIFY', SigningAlgorithms: [key.algorithm] };
  };
  function behaveLikeKms(): void {
    kms.on(GetPublicKeyCommand).callsFake(getPublicKey);
    kms.on(SignCommand).callsFake((input: SignCommandInput) => {
      const key = keys.find((k) => k.arn === input.KeyId)!;
      const options = key.keySpec === 'RSA_3072' ? key.privateKey : { key: key.privateKey, dsaEncoding: 'der' as const };
      return { ...metadata, KeyId: key.arn, Signature: new Uint8Array(sign('sha384', input.Message as Uint8Array, options)), SigningAlgorithm: input.SigningAlgorithm };
    });
  }

  beforeEach(() => {
    kms.reset();
    behaveLikeKms();
  });

  it.each([
    ['RS384', 'RSASSA_PKCS1_V1_5_SHA_384', rsa],
    ['ES384', 'ECDSA_SHA_384', ec],
  ] as const)('%s: Sign gets the key ARN, MessageType RAW and %s; the assertion verifies with the published JWKS (AWS-06)', async (alg, algorithm, key) => {
    // Arrange
    const signer = new KmsSigner({ client, current: { RS384: rsa.arn, ES384: ec.arn } });
    // Act
    const jwt = await createClientAssertion(signer, { clientId: 'jwt-app', audience: TOKEN_URL, alg, now: Date.now() }, cryptoRandom);
    // Assert
    expect(kms).toHaveReceivedCommandTimes(SignCommand, 1);
    expect(kms).toHaveReceivedCommandWith(SignCommand, { KeyId: key.arn, MessageType: 'RAW', SigningAlgorithm: algorithm });
    const sent = kms.commandCalls(SignCommand)[0]!.args[0].input;
    expect(Buffer.from(sent.Message as Uint8Array).toString('utf8')).toBe(jwt.split('.').slice(0, 2).join('.'));
    expect(kms).toHaveReceivedCommandWith(GetPublicKeyCommand, { KeyId: key.arn });
    expect(decodeProtectedHeader(jwt)).toEqual({ alg, kid: await key.kid, typ: 'JWT' });
    const jwks = createLocalJWKSet((await signer.publicJwks()) as unknown as Parameters<typeof createLocalJWKSet>[0]);
    await expect(jwtVerify(jwt, jwks, { algorithms: [alg], audience: TOKEN_URL, issuer: 'jwt-app' })).resolves.toBeDefined();
    if (alg === 'ES384') expect(Buffer.from(jwt.split('.')[2]!, 'base64url')).toHaveLength(96);
  });

  it('calls GetPublicKey once per key per container, whatever the number of assertions and JWKS reads', async () => {
    const signer = new KmsSigner({ client, current: { RS384: rsa.arn, ES384: ec.arn } });

    for (let i = 0; i < 5; i += 1) {
      await createClientAssertion(signer, { clientId: 'jwt-app', audience: TOKEN_URL, alg: i % 2 ? 'RS384' : 'ES384', now: Date.now() }, cryptoRandom);
      await signer.publicJwks();
    }

    expect(kms).toHaveReceivedCommandTimes(GetPublicKeyCommand, 2);
    expect(kms).toHaveReceivedCommandTimes(SignCommand, 5);
  });

  it('publishes current and next keys with RFC 7638 thumbprints as kid, and signs with the current one only (SMART-REG-04 rotation)', async () => {
    // Step 1 of a rotation: the successor is published beside the current key.
    const before = new KmsSigner({ client, current: { RS384: rsa.arn }, next: [nextRsa.arn] });
    const published = await before.publicJwks();
    expect(published.keys.map((k) => k.kid)).toEqual([await rsa.kid, await nextRsa.kid]);
    for (const jwk of published.keys) {
      expect(Object.keys(jwk).sort()).toEqual(['alg', 'e', 'kid', 'kty', 'n', 'use']);
      expect(jwk).toMatchObject({ kty: 'RSA', alg: 'RS384', use: 'sig' });
    }
    const signedBefore = await createClientAssertion(before, { clientId: 'a', audience: TOKEN_URL, alg: 'RS384', now: Date.now() }, cryptoRandom);
    expect(decodeProtectedHeader(signedBefore).kid).toBe(await rsa.kid);
    expect(kms).toHaveReceivedCommandWith(SignCommand, { KeyId: rsa.arn });

    // Step 2: the successor signs; a container started later (new environment) publishes it alone.
    kms.resetHistory();
    const after = new KmsSigner({ client, current: { RS384: nextRsa.arn } });
    const signedAfter = await createClientAssertion(after, { clientId: 'a', audience: TOKEN_URL, alg: 'RS384', now: Date.now() }, cryptoRandom);
    expect(decodeProtectedHeader(signedAfter).kid).toBe(await nextRsa.kid);
    expect(kms).not.toHaveReceivedCommandWith(SignCommand, { KeyId: rsa.arn });
    expect((await after.publicJwks()).keys.map((k) => k.kid)).toEqual([await nextRsa.kid]);
  });

  it('maps a KMS failure of Sign to KEYRING_UNAVAILABLE (503) and does not cache a failed GetPublicKey', async () => {
    const signer = new KmsSigner({ client, current: { ES384: ec.arn } });
    kms.on(GetPublicKeyCommand).rejectsOnce(new KMSInternalException({ message: 'try again', $metadata: {} })).callsFake(getPublicKey);

    const first = await signer.signingKey('ES384').catch((e: unknown) => e);
    expect(first).toBeInstanceOf(SmartError);
    expect(first).toMatchObject({ code: 'KEYRING_UNAVAILABLE', status: 503, details: { operation: 'GetPublicKey', awsError: 'KMSInternalException' } });

    kms.on(SignCommand).rejects(Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' }));
    const key = await signer.signingKey('ES384');
    await expect(key.sign(new Uint8Array([1, 2, 3]))).rejects.toMatchObject({ code: 'KEYRING_UNAVAILABLE', details: { operation: 'Sign', awsError: 'ThrottlingException' } });
    expect(kms).toHaveReceivedCommandTimes(GetPublicKeyCommand, 2);
  });

  it('refuses an algorithm without a configured key, and a key of the wrong type for the algorithm', async () => {
    await expect(new KmsSigner({ client, current: { RS384: rsa.arn } }).signingKey('ES384')).rejects.toMatchObject({ code: 'CLIENT_AUTH_FAILED' });
    await expect(new KmsSigner({ client, current: { ES384: rsa.arn } }).signingKey('ES384')).rejects.toMatchObject({
      code: 'KEYRING_UNAVAILABLE',
      message: 'the configured ES384 signing key is a RS384 key',
    });
    kms.on(GetPublicKeyCommand).resolves({ ...metadata, KeySpec: 'SYMMETRIC_DEFAULT', KeyUsage: 'ENCRYPT_DECRYPT' });
    await expect(new KmsSigner({ client, current: { RS384: rsa.arn } }).publicJwks()).rejects.toMatchObject({ code: 'KEYRING_UNAVAILABLE' });
  });
});
