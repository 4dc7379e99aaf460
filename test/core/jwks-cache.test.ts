import { exportJWK, SignJWT, type JWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { JwksCache, verifyIdToken, type IdTokenExpectations } from '../../shared/core/id-token.js';
import type { HttpClient } from '../../shared/core/ports.js';
import { FixedClock } from '../fakes/clock.js';
import { json } from '../fakes/fake-ehr.js';
import { rs256 } from '../fixtures/keys.js';

const ISSUER = 'https://ehr.example.org/oauth2';
const JWKS_URI = 'https://ehr.example.org/oauth2/jwks';
const CLIENT_ID = 'my-app';

interface Key {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly publicJwk: JWK;
}

/** Two distinct pooled RSA keys (test/fixtures/keys.ts), as an EHR rotating from one to the next. */
async function key(kid: string, n: number): Promise<Key> {
  const { privateKey, publicKey } = await rs256(n);
  return { kid, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } };
}

let oldKey: Key;
let newKey: Key;
beforeAll(async () => {
  [oldKey, newKey] = await Promise.all([key('key-2025', 2), key('key-2026', 3)]);
});

/** The EHR's JWKS endpoint: publishes `published`, counts fetches. */
function jwksEndpoint(published: Key[]) {
  const state = { published, fetches: 0 };
  const http: HttpClient = async (url) => {
    if (url !== JWKS_URI) throw new TypeError('fetch failed');
    state.fetches += 1;
    return json({ keys: state.published.map((k) => k.publicJwk) });
  };
  return { state, http };
}

async function idToken(signer: Key, clock: FixedClock, kid = signer.kid): Promise<string> {
  const now = Math.floor(clock.now() / 1000);
  return new SignJWT({ sub: 'user-1', fhirUser: 'Practitioner/1' })
    .setProtectedHeader({ alg: 'RS256', kid })
    .setIssuer(ISSUER)
    .setAudience(CLIENT_ID)
    .setIssuedAt(now)
    .setExpirationTime(now + 300)
    .sign(signer.privateKey);
}

const expectations = (clock: FixedClock): IdTokenExpectations => ({ issuer: ISSUER, jwksUri: JWKS_URI, clientId: CLIENT_ID, nonce: undefined, now: clock.now() });

describe('JwksCache: the issuer JWKS per container, re-fetched on an unknown kid (SMART-DISC-10, invariant 5)', () => {
  it('fetches the JWKS once for many id_tokens while it is younger than maxAgeMs (AWS-08)', async () => {
    const clock = new FixedClock();
    const { state, http } = jwksEndpoint([oldKey]);
    const cache = new JwksCache();

    for (let i = 0; i < 5; i++) {
      await verifyIdToken(http, await idToken(oldKey, clock), expectations(clock), cache);
      clock.advance(60_000);
    }

    expect(state.fetches).toBe(1);
  });

  it('fetches again once the cached set is older than maxAgeMs (10 minutes by default)', async () => {
    const clock = new FixedClock();
    const { state, http } = jwksEndpoint([oldKey]);
    const cache = new JwksCache();
    await verifyIdToken(http, await idToken(oldKey, clock), expectations(clock), cache);

    clock.advance(10 * 60_000);
    await verifyIdToken(http, await idToken(oldKey, clock), expectations(clock), cache);

    expect(state.fetches).toBe(2);
  });

  it('re-fetches the JWKS when an id_token names a kid the cached set lacks (key rotation) and accepts it (SMART-DISC-10)', async () => {
    const clock = new FixedClock();
    const { state, http } = jwksEndpoint([oldKey]);
    const cache = new JwksCache();
    await verifyIdToken(http, await idToken(oldKey, clock), expectations(clock), cache);
    clock.advance(60_000);
    state.published = [oldKey, newKey];

    const claims = await verifyIdToken(http, await idToken(newKey, clock), expectations(clock), cache);

    expect(claims.sub).toBe('user-1');
    expect(state.fetches).toBe(2);
  });

  it('re-fetches at most once per minRefetchIntervalMs: a burst of unknown kids costs one fetch (invariant 9)', async () => {
    const clock = new FixedClock();
    const { state, http } = jwksEndpoint([oldKey]);
    const cache = new JwksCache({ minRefetchIntervalMs: 30_000 });
    await verifyIdToken(http, await idToken(oldKey, clock), expectations(clock), cache);
    clock.advance(31_000);

    for (let i = 0; i < 10; i++) {
      await expect(verifyIdToken(http, await idToken(newKey, clock, 'unknown-kid'), expectations(clock), cache)).rejects.toMatchObject({
        code: 'ID_TOKEN_INVALID',
        details: { reason: 'ERR_JWKS_NO_MATCHING_KEY' },
      });
    }

    expect(state.fetches).toBe(2);
  });

  it('does not re-fetch for an unknown kid within minRefetchIntervalMs of the last fetch, then does after it', async () => {
    const clock = new FixedClock();
    const { state, http } = jwksEndpoint([oldKey]);
    const cache = new JwksCache({ minRefetchIntervalMs: 30_000 });
    await verifyIdToken(http, await idToken(oldKey, clock), expectations(clock), cache);
    state.published = [oldKey, newKey];

    clock.advance(10_000);
    await expect(verifyIdToken(http, await idToken(newKey, clock), expectations(clock), cache)).rejects.toMatchObject({ code: 'ID_TOKEN_INVALID' });
    expect(state.fetches).toBe(1);

    clock.advance(20_000);
    await expect(verifyIdToken(http, await idToken(newKey, clock), expectations(clock), cache)).resolves.toMatchObject({ sub: 'user-1' });
    expect(state.fetches).toBe(2);
  });

  it('never re-fetches for a bad signature with a known kid', async () => {
    const clock = new FixedClock();
    const { state, http } = jwksEndpoint([oldKey]);
    const cache = new JwksCache();
    await verifyIdToken(http, await idToken(oldKey, clock), expectations(clock), cache);
    clock.advance(60_000);

    await expect(verifyIdToken(http, await idToken(newKey, clock, oldKey.kid), expectations(clock), cache)).rejects.toMatchObject({
      code: 'ID_TOKEN_INVALID',
    });
    expect(state.fetches).toBe(1);
  });

  it('shares one fetch among concurrent verifications', async () => {
    const clock = new FixedClock();
    const { state, http } = jwksEndpoint([oldKey]);
    const cache = new JwksCache();
    const token = await idToken(oldKey, clock);

    await Promise.all(Array.from({ length: 10 }, () => verifyIdToken(http, token, expectations(clock), cache)));

    expect(state.fetches).toBe(1);
  });

  it('fetches the JWKS for every id_token without a cache (as before)', async () => {
    const clock = new FixedClock();
    const { state, http } = jwksEndpoint([oldKey]);

    await verifyIdToken(http, await idToken(oldKey, clock), expectations(clock));
    await verifyIdToken(http, await idToken(oldKey, clock), expectations(clock));

    expect(state.fetches).toBe(2);
  });

  it('keeps no failed fetch: an unreachable JWKS is DISCOVERY_UNAVAILABLE and the next id_token asks again', async () => {
    const clock = new FixedClock();
    let up = false;
    const good = jwksEndpoint([oldKey]);
    const http: HttpClient = async (url, init) => (up ? good.http(url, init) : json({}, 503));
    const cache = new JwksCache();

    await expect(verifyIdToken(http, await idToken(oldKey, clock), expectations(clock), cache)).rejects.toMatchObject({ code: 'DISCOVERY_UNAVAILABLE' });
    up = true;

    await expect(verifyIdToken(http, await idToken(oldKey, clock), expectations(clock), cache)).resolves.toMatchObject({ sub: 'user-1' });
  });
});
