import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { cryptoRandom } from '../../shared/adapters/system.js';
import { parseConfig, type IssuerConfig } from '../../shared/config/schema.js';
import {
  ASSERTION_LIFETIME_SECONDS,
  checkSigningAlgSupported,
  createClientAssertion,
  publishableJwks,
} from '../../shared/core/client-assertion.js';
import type { ClientAssertionAlg, ClientSigner, PublicJwk } from '../../shared/core/ports.js';
import { sampleConfig, sampleIssuer } from '../fakes/deps.js';
import { MemorySigner } from '../fakes/memory-signer.js';

const TOKEN_URL = 'https://ehr.example.org/oauth2/token';
const NOW = Date.UTC(2026, 10, 29, 12, 0, 0);

function jwtIssuer(overrides: Record<string, unknown> = {}): IssuerConfig {
  const issuer = parseConfig(sampleConfig({ issuers: [sampleIssuer({ clientAuth: 'private_key_jwt', clientSecret: undefined, clientId: 'jwt-app', ...overrides })] }), 'local').issuers[0];
  if (issuer === undefined) throw new Error('no issuer');
  return issuer;
}

const signer = new MemorySigner();
const assertion = (alg: ClientAssertionAlg, audience = TOKEN_URL, now = NOW) =>
  createClientAssertion(signer, { clientId: 'jwt-app', audience, alg, now }, cryptoRandom);

describe('createClientAssertion: headers and claims, field by field', () => {
  it.each(['RS384', 'ES384'] as const)('%s: typ, alg, kid, iss = sub = client_id, aud = the token URL, exp - iat <= 300, jti (SMART-CAUTH-05, SMART-CAUTH-06)', async (alg) => {
    // Act
    const jwt = await assertion(alg);
    // Assert
    const header = decodeProtectedHeader(jwt);
    const { keys } = await signer.publicJwks();
    expect(header).toEqual({ alg, kid: keys.find((k) => k.alg === alg)!.kid, typ: 'JWT' });
    expect(header).not.toHaveProperty('jku');
    const claims = decodeJwt(jwt);
    expect(Object.keys(claims).sort()).toEqual(['aud', 'exp', 'iat', 'iss', 'jti', 'sub']);
    expect(claims.iss).toBe('jwt-app');
    expect(claims.sub).toBe('jwt-app');
    expect(claims.aud).toBe(TOKEN_URL);
    expect(claims.iat).toBe(NOW / 1000);
    expect(claims.exp! - claims.iat!).toBe(ASSERTION_LIFETIME_SECONDS);
    expect(claims.exp! - claims.iat!).toBeGreaterThanOrEqual(60);
    expect(claims.exp! - claims.iat!).toBeLessThanOrEqual(240);
    expect(claims.jti).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it.each(['RS384', 'ES384'] as const)('%s: verifies with the published key (the signature is JOSE, not DER) (SMART-REG-05, AWS-06)', async (alg) => {
    const jwt = await assertion(alg);
    const jwks = createLocalJWKSet((await signer.publicJwks()) as unknown as Parameters<typeof createLocalJWKSet>[0]);

    const { payload, protectedHeader } = await jwtVerify(jwt, jwks, {
      algorithms: [alg],
      audience: TOKEN_URL,
      issuer: 'jwt-app',
      subject: 'jwt-app',
      typ: 'JWT',
      currentDate: new Date(NOW + 1000),
      maxTokenAge: 300,
    });
    expect(protectedHeader.alg).toBe(alg);
    expect(payload.jti).toBeDefined();
    if (alg === 'ES384') expect(Buffer.from(jwt.split('.')[2]!, 'base64url')).toHaveLength(96);
  });

  it('makes a unique jti for every one of 1000 assertions (SMART-CAUTH-06)', async () => {
    // The claims are what is checked here, not the signature (the tests above verify those): a signer
    // answering a fixed signature of the right length spares 1000 RSA and ECDSA signatures.
    const unsigned: ClientSigner = {
      publicJwks: () => signer.publicJwks(),
      signingKey: async (alg) => ({ kid: (await signer.signingKey(alg)).kid, sign: async () => new Uint8Array(alg === 'ES384' ? 96 : 256) }),
    };
    const jtis = new Set<string>();
    for (let i = 0; i < 1000; i += 1) {
      const alg = i % 2 === 0 ? 'ES384' : 'RS384';
      jtis.add(String(decodeJwt(await createClientAssertion(unsigned, { clientId: 'jwt-app', audience: TOKEN_URL, alg, now: NOW }, cryptoRandom)).jti));
    }
    expect(jtis.size).toBe(1000);
  });

  it('refuses a signer that hands back a DER ECDSA signature instead of r || s (AWS-06)', async () => {
    const broken = new MemorySigner();
    broken.derSignatures = true;

    await expect(createClientAssertion(broken, { clientId: 'jwt-app', audience: TOKEN_URL, alg: 'ES384', now: NOW }, cryptoRandom)).rejects.toMatchObject({
      code: 'KEYRING_UNAVAILABLE',
      details: { alg: 'ES384' },
    });
  });
});

describe('checkSigningAlgSupported (SMART-CAUTH-09)', () => {
  const discovered = (algs: string[] | undefined) => ({ tokenEndpointAuthMethods: ['private_key_jwt'], tokenEndpointAuthSigningAlgs: algs });

  it('accepts the configured algorithm when listed, and any algorithm when the EHR lists none', () => {
    expect(() => checkSigningAlgSupported(jwtIssuer(), discovered(['RS256', 'RS384']))).not.toThrow();
    expect(() => checkSigningAlgSupported(jwtIssuer({ signingAlg: 'ES384' }), discovered(['ES384']))).not.toThrow();
    expect(() => checkSigningAlgSupported(jwtIssuer(), discovered(undefined))).not.toThrow();
    expect(() => checkSigningAlgSupported(jwtIssuer(), { tokenEndpointAuthMethods: undefined })).not.toThrow();
  });

  it('refuses RS384 at an EHR that lists only ES384, and says which signingAlg to set', () => {
    expect(() => checkSigningAlgSupported(jwtIssuer(), discovered(['ES384', 'ES256']))).toThrow(
      expect.objectContaining({
        code: 'CLIENT_AUTH_FAILED',
        message: 'the EHR does not accept RS384 client assertions (it lists ES384, ES256)',
        hint: expect.stringContaining('"signingAlg": "ES384"'),
      }),
    );
  });

  it('says to use client_secret_basic when the EHR accepts neither RS384 nor ES384', () => {
    expect(() => checkSigningAlgSupported(jwtIssuer({ signingAlg: 'ES384' }), discovered(['RS256', 'PS256']))).toThrow(
      expect.objectContaining({ code: 'CLIENT_AUTH_FAILED', hint: expect.stringContaining('client_secret_basic') }),
    );
  });

  it('ignores issuers that do not use private_key_jwt', () => {
    const basic = parseConfig(sampleConfig(), 'local').issuers[0]!;
    expect(() => checkSigningAlgSupported(basic, discovered(['ES256']))).not.toThrow();
  });
});

describe('publishableJwks (SMART-REG-04)', () => {
  it('keeps kty, kid, alg, use and the bare public members only, one key per kid', async () => {
    const { keys } = await signer.publicJwks();
    const rsa = keys.find((k) => k.kty === 'RSA')!;
    const leaky = [
      { ...rsa, d: 'private', p: 'p', q: 'q', dp: 'dp', dq: 'dq', qi: 'qi', x5c: ['cert'] },
      { ...rsa },
      { kty: 'oct', kid: 'symmetric', k: 'c2VjcmV0' },
      { kty: 'EC', kid: '', crv: 'P-384', x: 'x', y: 'y' },
      ...keys.filter((k) => k.kty === 'EC'),
    ] as unknown as PublicJwk[];

    const published = publishableJwks(leaky);

    expect(published.keys.map((k) => k.kty)).toEqual(['RSA', 'EC']);
    expect(new Set(published.keys.map((k) => k.kid)).size).toBe(2);
    expect(Object.keys(published.keys[0]!).sort()).toEqual(['alg', 'e', 'kid', 'kty', 'n', 'use']);
    expect(Object.keys(published.keys[1]!).sort()).toEqual(['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
    expect(JSON.stringify(published)).not.toMatch(/"(d|p|q|dp|dq|qi|k|oth|x5c)":/);
  });
});
