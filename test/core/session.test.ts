import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { checkSessionId, openSession, sessionView } from '../../shared/core/session.js';
import { fhirBaseUrl } from '../../shared/core/urls.js';
import { sessionKey } from '../../shared/core/sealed-records.js';
import { PUBLIC_URL, sampleConfig } from '../fakes/deps.js';
import { ehrLaunchQuery, harness, signIn, type Harness } from '../fakes/launch-flow.js';

const unknownId = () => randomBytes(32).toString('base64url');

async function signedIn(h?: Harness) {
  const hh = h ?? (await harness());
  const { callback, launch } = await signIn(hh);
  return { h: hh, sessionId: callback.sessionId, cookie: launch.bindingSecret };
}

describe('checkSessionId', () => {
  it.each([
    ['absent', undefined],
    ['empty', ''],
    ['too short', 'a'.repeat(42)],
    ['too long', 'a'.repeat(44)],
    ['with a slash', `${'a'.repeat(42)}/`],
    ['with padding', `${'a'.repeat(42)}=`],
    ['with a dot-dot', `..${'a'.repeat(41)}`],
    ['percent-encoded', `%2e${'a'.repeat(40)}`],
  ])('refuses a session id that is %s with SESSION_ID_MALFORMED', (_what, id) => {
    expect(() => checkSessionId(id)).toThrow(expect.objectContaining({ code: 'SESSION_ID_MALFORMED', status: 400 }));
  });

  it('accepts 43 base64url characters', () => {
    const id = unknownId();
    expect(checkSessionId(id)).toBe(id);
  });
});

describe('openSession', () => {
  it('opens a session with its id and the cookie of the browser that signed in', async () => {
    const { h, sessionId, cookie } = await signedIn();

    const session = await openSession(sessionId, cookie, h.deps);

    expect(session.sessionId).toBe(sessionId);
    expect(session.record.key).toBe(sessionKey(sessionId));
    expect(session.secrets.accessToken).toBe(h.ehr.issued.accessTokens[0]);
    expect(session.secrets.refreshToken).toBe(h.ehr.issued.refreshTokens[0]);
  });

  it('refuses a malformed id with SESSION_ID_MALFORMED before touching the store or key ring', async () => {
    const { h, cookie } = await signedIn();
    const decrypts = h.deps.keyRing.decryptCalls;

    await expect(openSession('../../etc/passwd', cookie, h.deps)).rejects.toMatchObject({ code: 'SESSION_ID_MALFORMED', status: 400 });
    expect(h.deps.keyRing.decryptCalls).toBe(decrypts);
  });

  it('refuses an unknown id with SESSION_NOT_OPEN', async () => {
    const { h, cookie } = await signedIn();

    await expect(openSession(unknownId(), cookie, h.deps)).rejects.toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401 });
  });

  it('refuses an expired session with SESSION_NOT_OPEN', async () => {
    const { h, sessionId, cookie } = await signedIn();
    h.deps.clock.advance(8 * 60 * 60 * 1000);

    await expect(openSession(sessionId, cookie, h.deps)).rejects.toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401 });
  });

  it.each([
    ['another browser’s cookie', () => randomBytes(32).toString('base64url')],
    ['no cookie', () => undefined],
    ['a malformed cookie', () => 'garbage'],
  ])('refuses %s with SESSION_NOT_OPEN without calling the key ring (invariant 2)', async (_what, cookie) => {
    const { h, sessionId } = await signedIn();
    const calls = h.deps.keyRing.calls;

    await expect(openSession(sessionId, cookie(), h.deps)).rejects.toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401 });
    expect(h.deps.keyRing.calls).toBe(calls);
  });

  it('does not open one browser’s session with the cookie of another browser that also signed in (invariant 2)', async () => {
    const h = await harness();
    const a = await signedIn(h);
    const b = await signedIn(h);

    expect(a.cookie).not.toBe(b.cookie);
    await expect(openSession(a.sessionId, b.cookie, h.deps)).rejects.toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401 });
  });

  it('refuses a record whose sealed and wrappedKey were copied from another session with VAULT_INTEGRITY (invariant 6)', async () => {
    const h = await harness();
    const a = await signedIn(h);
    const b = await signedIn(h);
    const recordA = await h.deps.store.getSession(sessionKey(a.sessionId), h.deps.clock.nowSeconds());
    const recordB = await h.deps.store.getSession(sessionKey(b.sessionId), h.deps.clock.nowSeconds());
    if (!recordA || !recordB) throw new Error('sessions missing');
    await h.deps.store.deleteSession(recordB.key);
    await h.deps.store.putSession({ ...recordB, sealed: recordA.sealed, wrappedKey: recordA.wrappedKey });

    await expect(openSession(b.sessionId, b.cookie, h.deps)).rejects.toMatchObject({ code: 'VAULT_INTEGRITY', status: 401 });
  });

  it('refuses a record whose sealed data alone was copied from another session with VAULT_INTEGRITY (invariant 6)', async () => {
    const h = await harness();
    const a = await signedIn(h);
    const b = await signedIn(h);
    const recordA = await h.deps.store.getSession(sessionKey(a.sessionId), h.deps.clock.nowSeconds());
    const recordB = await h.deps.store.getSession(sessionKey(b.sessionId), h.deps.clock.nowSeconds());
    if (!recordA || !recordB) throw new Error('sessions missing');
    await h.deps.store.deleteSession(recordB.key);
    await h.deps.store.putSession({ ...recordB, sealed: recordA.sealed });

    await expect(openSession(b.sessionId, b.cookie, h.deps)).rejects.toMatchObject({ code: 'VAULT_INTEGRITY', status: 401 });
  });

  it('refuses a record with a flipped byte in its sealed data with VAULT_INTEGRITY (invariant 6)', async () => {
    const { h, sessionId, cookie } = await signedIn();
    const record = await h.deps.store.getSession(sessionKey(sessionId), h.deps.clock.nowSeconds());
    if (!record) throw new Error('session missing');
    const sealed = new Uint8Array(record.sealed);
    sealed[20] = (sealed[20] ?? 0) ^ 0x01;
    await h.deps.store.deleteSession(record.key);
    await h.deps.store.putSession({ ...record, sealed });

    await expect(openSession(sessionId, cookie, h.deps)).rejects.toMatchObject({ code: 'VAULT_INTEGRITY', status: 401 });
  });
});

describe('sessionView', () => {
  it('never contains the access, refresh or id token (invariant 1, BFF-08)', async () => {
    const { h, sessionId, cookie } = await signedIn();

    const view = sessionView(h.deps.config, await openSession(sessionId, cookie, h.deps));

    const text = JSON.stringify(view);
    for (const token of [h.ehr.issued.accessTokens[0], h.ehr.issued.refreshTokens[0], h.ehr.issued.idTokens[0]]) {
      expect(token).toBeTypeOf('string');
      expect(text).not.toContain(token);
    }
    expect(text).not.toContain(cookie);
    expect(Object.keys(view)).not.toEqual(expect.arrayContaining(['accessToken']));
  });

  it('has fhirBaseUrl = {publicUrl}/sessions/{id}/fhir and the launch context', async () => {
    const h = await harness({ config: sampleConfig({ publicUrl: `${PUBLIC_URL}/` }) });
    h.ehr.tokenResponse = { patient: 'pat-1', encounter: 'enc-1', need_patient_banner: false, intent: 'summary' };
    const { sessionId, cookie } = await signedIn(h);

    const view = sessionView(h.deps.config, await openSession(sessionId, cookie, h.deps));

    expect(view.fhirBaseUrl).toBe(`${PUBLIC_URL}/sessions/${sessionId}/fhir`);
    expect(fhirBaseUrl(h.deps.config, sessionId)).toBe(view.fhirBaseUrl);
    expect(view).toMatchObject({
      patient: 'pat-1',
      encounter: 'enc-1',
      need_patient_banner: false,
      intent: 'summary',
      fhirUser: `${h.ehr.fhirBase}/Practitioner/abc`,
      iss: h.ehr.fhirBase,
      launchMode: 'ehr',
      canRefresh: true,
      scope: 'launch openid fhirUser patient/*.rs offline_access',
    });
  });

  it('reports canRefresh false when no refresh token was issued (SMART-SCOPE-12)', async () => {
    const h = await harness();
    h.ehr.tokenResponse = { refresh_token: undefined };
    const { sessionId, cookie } = await signedIn(h);

    expect(sessionView(h.deps.config, await openSession(sessionId, cookie, h.deps)).canRefresh).toBe(false);
  });

  it('reports the token and session expiry as ISO timestamps', async () => {
    const { h, sessionId, cookie } = await signedIn();
    const now = h.deps.clock.now();

    const view = sessionView(h.deps.config, await openSession(sessionId, cookie, h.deps));

    expect(view.expiresAt).toBe(new Date(now + 3600 * 1000).toISOString());
    expect(view.sessionExpiresAt).toBe(new Date(now + (3600 + 60 * 60) * 1000).toISOString());
  });

  it('keeps two launches of one browser apart (SMART-LAUNCH-08, invariant 2)', async () => {
    const h = await harness();
    h.ehr.tokenResponse = { patient: 'a' };
    const first = await signIn(h);
    h.ehr.tokenResponse = { patient: 'b' };
    const second = await signIn(h, { cookie: first.launch.bindingSecret, launchQuery: ehrLaunchQuery(h.ehr, 'second') });
    const cookie = first.launch.bindingSecret;

    const viewA = sessionView(h.deps.config, await openSession(first.callback.sessionId, cookie, h.deps));
    const viewB = sessionView(h.deps.config, await openSession(second.callback.sessionId, cookie, h.deps));

    expect([viewA.patient, viewB.patient]).toEqual(['a', 'b']);
    expect(viewA.fhirBaseUrl).not.toBe(viewB.fhirBaseUrl);
  });
});
