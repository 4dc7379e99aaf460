import { beforeEach, describe, expect, it } from 'vitest';
import { verifyIdToken, type IdTokenExpectations } from '../../shared/core/id-token.js';
import { FixedClock } from '../fakes/clock.js';
import { FakeEhr, json } from '../fakes/fake-ehr.js';
import { rs256 } from '../fixtures/keys.js';

const NONCE = 'n-0S6_WzA2Mj-nonce-value-abcdefghijklmnopqrst';

describe('verifyIdToken (invariant 5, SMART-OIDC-01)', () => {
  let clock: FixedClock;
  let ehr: FakeEhr;
  let expected: IdTokenExpectations;

  beforeEach(async () => {
    clock = new FixedClock();
    ehr = await FakeEhr.create({ clock });
    expected = { issuer: ehr.issuer, jwksUri: ehr.jwksUri, clientId: ehr.clientId, nonce: NONCE, now: clock.now() };
  });

  const rejectsWith = async (token: string, expectations: IdTokenExpectations = expected) =>
    expect(verifyIdToken(ehr.http, token, expectations)).rejects.toMatchObject({ code: 'ID_TOKEN_INVALID', status: 401 });

  it('accepts a valid token and yields sub and fhirUser (invariant 5)', async () => {
    const token = await ehr.signIdToken({ nonce: NONCE, fhirUser: 'Practitioner/abc' });

    await expect(verifyIdToken(ehr.http, token, expected)).resolves.toEqual({ sub: 'practitioner-user-1', fhirUser: 'Practitioner/abc' });
    expect(ehr.requests.map((r) => r.url)).toEqual([ehr.jwksUri]);
  });

  it('yields no fhirUser when the claim is absent or not a string', async () => {
    await expect(verifyIdToken(ehr.http, await ehr.signIdToken({ nonce: NONCE, fhirUser: undefined }), expected)).resolves.toEqual({
      sub: 'practitioner-user-1',
      fhirUser: undefined,
    });
    await expect(verifyIdToken(ehr.http, await ehr.signIdToken({ nonce: NONCE, fhirUser: 42 }), expected)).resolves.toMatchObject({
      fhirUser: undefined,
    });
  });

  it('accepts an expired token within the 60 s clock skew', async () => {
    const now = Math.floor(clock.now() / 1000);

    await expect(verifyIdToken(ehr.http, await ehr.signIdToken({ nonce: NONCE, iat: now - 400, exp: now - 30 }), expected)).resolves.toMatchObject({
      sub: 'practitioner-user-1',
    });
  });

  it('does not check the nonce when none was sent', async () => {
    await expect(verifyIdToken(ehr.http, await ehr.signIdToken({ nonce: 'whatever' }), { ...expected, nonce: undefined })).resolves.toMatchObject({
      sub: 'practitioner-user-1',
    });
  });

  it('refuses a token for another client (wrong aud) with ID_TOKEN_INVALID (invariant 5)', async () => {
    await rejectsWith(await ehr.signIdToken({ nonce: NONCE, aud: 'another-app' }));
  });

  it('accepts an aud array that contains our client id when azp names us (SMART-OIDC-01)', async () => {
    const token = await ehr.signIdToken({ nonce: NONCE, aud: [ehr.clientId, 'another-app'], azp: ehr.clientId });

    await expect(verifyIdToken(ehr.http, token, expected)).resolves.toMatchObject({ sub: 'practitioner-user-1' });
  });

  it('refuses a token whose azp names another client with ID_TOKEN_INVALID (SMART-OIDC-01, OIDC Core §3.1.3.7)', async () => {
    await rejectsWith(await ehr.signIdToken({ nonce: NONCE, aud: [ehr.clientId, 'another-app'], azp: 'another-app' }));
  });

  it('refuses a token from another issuer (wrong iss) with ID_TOKEN_INVALID (invariant 5, SMART-OIDC-02)', async () => {
    await rejectsWith(await ehr.signIdToken({ nonce: NONCE, iss: 'https://evil.example/oauth2' }));
  });

  it('refuses an issuer that differs only by a trailing slash (invariant 5)', async () => {
    await rejectsWith(await ehr.signIdToken({ nonce: NONCE, iss: `${ehr.issuer}/` }));
  });

  it('refuses a wrong nonce with ID_TOKEN_INVALID naming the claim (invariant 5, SMART-AUTHZ-13)', async () => {
    await expect(verifyIdToken(ehr.http, await ehr.signIdToken({ nonce: 'another-nonce' }), expected)).rejects.toMatchObject({
      code: 'ID_TOKEN_INVALID',
      status: 401,
      details: { claim: 'nonce' },
    });
  });

  it('refuses a token without the nonce that was sent (invariant 5)', async () => {
    await rejectsWith(await ehr.signIdToken({ nonce: undefined }));
  });

  it('refuses an expired token beyond the skew with ID_TOKEN_INVALID (invariant 5)', async () => {
    const now = Math.floor(clock.now() / 1000);

    await expect(verifyIdToken(ehr.http, await ehr.signIdToken({ nonce: NONCE, iat: now - 900, exp: now - 61 }), expected)).rejects.toMatchObject({
      code: 'ID_TOKEN_INVALID',
      status: 401,
      details: { reason: 'ERR_JWT_EXPIRED' },
    });
  });

  it('refuses a token signed by another key under the published kid with ID_TOKEN_INVALID (invariant 5)', async () => {
    const { privateKey } = await rs256(2);

    await rejectsWith(await ehr.signIdToken({ nonce: NONCE }, privateKey));
  });

  it('refuses an unsigned (alg "none") token with ID_TOKEN_INVALID (invariant 5)', async () => {
    const now = Math.floor(clock.now() / 1000);
    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const token = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ iss: ehr.issuer, aud: ehr.clientId, sub: 'x', iat: now, exp: now + 300, nonce: NONCE })}.`;

    await rejectsWith(token);
  });

  it.each(['sub', 'exp', 'iat'])('refuses a token without "%s" with ID_TOKEN_INVALID', async (claim) => {
    await rejectsWith(await ehr.signIdToken({ nonce: NONCE, [claim]: undefined }));
  });

  it('refuses a string that is not a JWT with ID_TOKEN_INVALID', async () => {
    await rejectsWith('not-a-jwt');
  });

  it('refuses to verify without a jwks_uri, and fetches nothing (invariant 5)', async () => {
    await rejectsWith(await ehr.signIdToken({ nonce: NONCE }), { ...expected, jwksUri: undefined });
    expect(ehr.requests).toEqual([]);
  });

  it('refuses to verify without an issuer, and fetches nothing (invariant 5, SMART-OIDC-02)', async () => {
    await rejectsWith(await ehr.signIdToken({ nonce: NONCE }), { ...expected, issuer: undefined });
    expect(ehr.requests).toEqual([]);
  });

  it('maps an unreachable JWKS to DISCOVERY_UNAVAILABLE', async () => {
    const token = await ehr.signIdToken({ nonce: NONCE });

    await expect(verifyIdToken(async () => json({}, 503), token, expected)).rejects.toMatchObject({ code: 'DISCOVERY_UNAVAILABLE', status: 502 });
  });

  it('maps a JWKS that is not a JWK Set to DISCOVERY_INVALID', async () => {
    const token = await ehr.signIdToken({ nonce: NONCE });

    await expect(verifyIdToken(async () => json({ keys: 'nope' }), token, expected)).rejects.toMatchObject({ code: 'DISCOVERY_INVALID', status: 502 });
  });
});
