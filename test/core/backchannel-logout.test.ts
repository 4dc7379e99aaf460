import { exportJWK, SignJWT } from 'jose';
import { beforeEach, describe, expect, it } from 'vitest';
import {
  BACKCHANNEL_LOGOUT_EVENT,
  verifyLogoutToken,
  type LogoutTokenContext,
} from '../../shared/core/backchannel-logout.js';
import { JwksCache } from '../../shared/core/id-token.js';
import { idTokenMatches } from '../../shared/ops/end-sessions.js';
import { FixedClock } from '../fakes/clock.js';
import { FakeEhr } from '../fakes/fake-ehr.js';
import { rs256 } from '../fixtures/keys.js';

/** Back-Channel Logout 1.0 §2.6, one check per test: each case differs from a valid token in that check only. */
describe('verifyLogoutToken (OpenID Connect Back-Channel Logout 1.0)', () => {
  let clock: FixedClock;
  let ehr: FakeEhr;
  let seen: Map<string, number>;
  let context: LogoutTokenContext;
  let counter = 0;

  beforeEach(async () => {
    clock = new FixedClock();
    ehr = await FakeEhr.create({ clock });
    seen = new Map();
    context = {
      issuers: [{ issuer: ehr.issuer, jwksUri: ehr.jwksUri, clientId: ehr.clientId, fhirIss: ehr.fhirBase }],
      http: ehr.http,
      jwks: new JwksCache(),
      now: clock.now(),
      replayGuard: async (key, expiresAt) => {
        if (seen.has(key)) return false;
        seen.set(key, expiresAt);
        return true;
      },
    };
  });

  /** A valid logout token by default; a claim set to undefined is left out. */
  const logoutToken = (claims: Record<string, unknown> = {}, key?: CryptoKey) => {
    counter += 1;
    return ehr.signIdToken(
      { sub: 'practitioner-user-1', sid: 'op-session-1', jti: `jti-${counter}`, events: { [BACKCHANNEL_LOGOUT_EVENT]: {} }, fhirUser: undefined, exp: undefined, ...claims },
      key,
    );
  };
  const refusedFor = async (token: unknown, check: string) =>
    expect(verifyLogoutToken(token, context)).rejects.toMatchObject({ code: 'LOGOUT_TOKEN_INVALID', status: 400, details: { check } });

  it('accepts a valid token and names the issuer, the sessions\' FHIR base, sid and sub', async () => {
    await expect(verifyLogoutToken(await logoutToken(), context)).resolves.toEqual({
      issuer: ehr.issuer,
      fhirIssuers: [ehr.fhirBase],
      sid: 'op-session-1',
      sub: 'practitioner-user-1',
    });
  });

  it('accepts a token with sid only, and one with sub only', async () => {
    await expect(verifyLogoutToken(await logoutToken({ sub: undefined }), context)).resolves.toMatchObject({ sid: 'op-session-1', sub: undefined });
    await expect(verifyLogoutToken(await logoutToken({ sid: undefined }), context)).resolves.toMatchObject({ sid: undefined, sub: 'practitioner-user-1' });
  });

  it('refuses a bad signature (a key not in the issuer\'s JWKS, same kid)', async () => {
    const { privateKey } = await rs256(2);
    await refusedFor(await logoutToken({}, privateKey), 'signature');
  });

  it('refuses alg none (an unsigned token)', async () => {
    const now = Math.floor(clock.now() / 1000);
    const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const unsigned = `${encode({ alg: 'none', typ: 'JWT' })}.${encode({ iss: ehr.issuer, aud: ehr.clientId, iat: now, jti: 'j', sid: 's', events: { [BACKCHANNEL_LOGOUT_EVENT]: {} } })}.`;
    await refusedFor(unsigned, 'alg');
  });

  it('refuses an HMAC token even when keyed with something public', async () => {
    const now = Math.floor(clock.now() / 1000);
    const token = await new SignJWT({ iss: ehr.issuer, aud: ehr.clientId, iat: now, jti: 'j', sid: 's', events: { [BACKCHANNEL_LOGOUT_EVENT]: {} } })
      .setProtectedHeader({ alg: 'HS256' })
      .sign(new TextEncoder().encode(ehr.clientId.padEnd(32, 'x')));
    await refusedFor(token, 'alg');
  });

  it('refuses an iss that is not a configured issuer', async () => {
    await refusedFor(await logoutToken({ iss: 'https://other-op.example' }), 'iss');
  });

  it('refuses an aud that is not our client id at that issuer', async () => {
    await refusedFor(await logoutToken({ aud: 'someone-else' }), 'aud');
  });

  it('refuses a token without events, with events lacking the logout event, or with a non-object event value', async () => {
    await refusedFor(await logoutToken({ events: undefined }), 'events');
    await refusedFor(await logoutToken({ events: { 'http://schemas.openid.net/event/other': {} } }), 'events');
    await refusedFor(await logoutToken({ events: { [BACKCHANNEL_LOGOUT_EVENT]: 'yes' } }), 'events');
    await refusedFor(await logoutToken({ events: [BACKCHANNEL_LOGOUT_EVENT] }), 'events');
  });

  it('refuses a token with neither sid nor sub', async () => {
    await refusedFor(await logoutToken({ sid: undefined, sub: undefined }), 'sid');
  });

  it('refuses a token that carries a nonce', async () => {
    await refusedFor(await logoutToken({ nonce: 'n' }), 'nonce');
  });

  it('refuses a replayed jti, and a token without jti', async () => {
    const token = await logoutToken({ jti: 'once' });
    await expect(verifyLogoutToken(token, context)).resolves.toMatchObject({ sid: 'op-session-1' });
    await refusedFor(token, 'jti');
    await refusedFor(await logoutToken({ jti: undefined }), 'jti');
    // The jti is remembered under a hash, until the token could no longer pass the iat check.
    expect([...seen.keys()].every((key) => !key.includes('once'))).toBe(true);
    expect([...seen.values()][0]).toBe(Math.floor(clock.now() / 1000) + 300 + 120);
  });

  it('refuses a token without iat, one issued too long ago, and an expired one', async () => {
    const now = Math.floor(clock.now() / 1000);
    await refusedFor(await logoutToken({ iat: undefined }), 'iat');
    await refusedFor(await logoutToken({ iat: now - 600 }), 'iat');
    await refusedFor(await logoutToken({ iat: now - 100, exp: now - 90 }), 'exp');
  });

  it('a configured EHR whose discovery claims another EHR\'s OpenID issuer cannot sign logout tokens that end that EHR\'s sessions', async () => {
    // Arrange: EHR B (listed first) publishes EHR A's issuer with B's own JWKS, and signs with B's key.
    const hostile = await rs256(2);
    const hostileJwks = 'https://ehr-b.example/jwks';
    const hostileJwk = { ...(await exportJWK(hostile.publicKey)), kid: ehr.kid, alg: 'RS256', use: 'sig' };
    const http: LogoutTokenContext['http'] = async (url, init) => (url === hostileJwks ? Response.json({ keys: [hostileJwk] }) : ehr.http(url, init));
    const issuers = [{ issuer: ehr.issuer, jwksUri: hostileJwks, clientId: 'client-at-b', fhirIss: 'https://ehr-b.example/fhir' }, { issuer: ehr.issuer, jwksUri: ehr.jwksUri, clientId: ehr.clientId, fhirIss: ehr.fhirBase }];
    const forged = await logoutToken({}, hostile.privateKey);
    // Act / Assert: A's sessions are not B's to end, whatever the token's aud says.
    await expect(verifyLogoutToken(forged, { ...context, http, issuers })).rejects.toMatchObject({ code: 'LOGOUT_TOKEN_INVALID' });
    const forgedForBoth = await logoutToken({ aud: ['client-at-b', ehr.clientId] }, hostile.privateKey);
    await expect(verifyLogoutToken(forgedForBoth, { ...context, http, issuers })).resolves.toMatchObject({ fhirIssuers: ['https://ehr-b.example/fhir'] });
    // A's own token still ends A's sessions, whichever order the EHRs are configured in.
    await expect(verifyLogoutToken(await logoutToken(), { ...context, http, issuers })).resolves.toMatchObject({ fhirIssuers: [ehr.fhirBase] });
  });

  it('refuses a token issued in the future (beyond the clock skew)', async () => {
    const now = Math.floor(clock.now() / 1000);
    await refusedFor(await logoutToken({ iat: now + 3600 }), 'iat');
    await expect(verifyLogoutToken(await logoutToken({ iat: now + 30 }), context)).resolves.toMatchObject({ sid: 'op-session-1' });
  });

  it('a verified logout token matches only sessions whose id_token its issuer issued (sid and sub are unique per issuer only)', async () => {
    const fromA = await ehr.signIdToken({ sid: 'op-session-1' });
    const fromB = await ehr.signIdToken({ iss: 'https://other-op.example', sid: 'op-session-1' });
    expect(idTokenMatches({ issuer: ehr.issuer, sid: 'op-session-1' }, fromA)).toBe(true);
    expect(idTokenMatches({ issuer: ehr.issuer, sid: 'op-session-1' }, fromB)).toBe(false);
    expect(idTokenMatches({ issuer: ehr.issuer, sub: 'practitioner-user-1' }, fromB)).toBe(false);
    expect(idTokenMatches({ issuer: ehr.issuer, sub: 'practitioner-user-1' }, fromA)).toBe(true);
  });

  it('tokens with random kids cannot make the JWKS be fetched on every request: one refetch per 30 s', async () => {
    const { privateKey } = await rs256(2);
    const now = Math.floor(clock.now() / 1000);
    const randomKid = (kid: string) =>
      new SignJWT({ iss: ehr.issuer, aud: ehr.clientId, iat: now, jti: kid, sid: 's', events: { [BACKCHANNEL_LOGOUT_EVENT]: {} } })
        .setProtectedHeader({ alg: 'RS256', kid })
        .sign(privateKey);
    const jwksFetches = () => ehr.requests.filter((request) => request.url === ehr.jwksUri).length;

    for (let i = 0; i < 20; i++) await refusedFor(await randomKid(`kid-${i}`), 'signature');

    // The first token loads the set and refetches it once (a rotation); the other 19 use the cache.
    expect(jwksFetches()).toBeLessThanOrEqual(2);
  });

  it('refuses what is not a JWT, or no token at all, before any network call', async () => {
    await refusedFor(undefined, 'form');
    await refusedFor('not.a.jwt', 'format');
    expect(ehr.requests).toEqual([]);
  });
});
