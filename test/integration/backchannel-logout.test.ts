import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOCAL_CLIENT } from '../../local/stack.js';
import { AuditRecordSchema } from '../../shared/audit/record.js';
import { BrowserClient } from './browser-client.js';
import { ehrLaunch, sessionIdFrom, startFixture, type Fixture } from './stack-fixture.js';

let fixture: Fixture;

beforeAll(async () => {
  fixture = await startFixture();
});
afterAll(async () => {
  await fixture?.close();
});

const sandbox = () => fixture.stack.sandbox!;

async function signedIn(patientIndex = 0) {
  const browser = new BrowserClient();
  const sessionId = sessionIdFrom(await ehrLaunch(fixture, browser, sandbox().patients[patientIndex]!.id));
  const idToken = decodeJwt(String(fixture.observed.tokenResponses.at(-1)!.id_token));
  return { browser, url: `${fixture.stack.apiUrl}/sessions/${sessionId}`, sub: String(idToken.sub) };
}

/** The sandbox, as the EHR's OpenID provider, POSTs a signed logout_token to the stack's receiver. */
async function sandboxLogout(request: Record<string, unknown>) {
  const response = await fetch(`${sandbox().url}/admin/backchannel-logout`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ uri: `${fixture.stack.apiUrl}/backchannel-logout`, clientId: LOCAL_CLIENT.clientId, ...request }),
  });
  expect(response.status).toBe(200);
  return ((await response.json()) as { receiver: { status: number; body: string; cacheControl: string | null } }).receiver;
}

describe('POST /backchannel-logout (OpenID Connect Back-Channel Logout 1.0, over HTTP against the sandbox)', () => {
  it('ends every session of the user the EHR signed out: each answers 401 SESSION_NOT_OPEN', async () => {
    // Arrange: two sign-ins of the same sandbox practitioner (two patients).
    const first = await signedIn(0);
    const second = await signedIn(1);
    expect((await first.browser.call(first.url)).status).toBe(200);
    // Act
    const receiver = await sandboxLogout({ sub: first.sub });
    // Assert
    expect(receiver.status).toBe(200);
    expect(receiver.cacheControl).toContain('no-store');
    const closed = await first.browser.call(first.url);
    expect(closed.status).toBe(401);
    expect(closed.body).toMatchObject({ error: { code: 'SESSION_NOT_OPEN' } });
    expect(second.sub).toBe(first.sub);
    expect((await second.browser.call(second.url)).status).toBe(401);
    // Each end is audited as a session-end with cause backchannel-logout, naming the user, never a token.
    const text = await readFile(join(fixture.dataDir, 'audit.ndjson'), 'utf8');
    const ends = text
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => AuditRecordSchema.parse(JSON.parse(line)))
      .filter((record) => record.action === 'session-end' && record.cause === 'backchannel-logout');
    expect(ends.length).toBeGreaterThanOrEqual(2);
    for (const end of ends) expect(end).toMatchObject({ iss: sandbox().fhirBaseUrl, revocation: 'revoked' });
    for (const token of fixture.observed.secrets) expect(text).not.toContain(token);
  });

  it('a logout token naming one sid ends only that sign-in of the user; the other, with another sid, stays open', async () => {
    // Arrange: two sign-ins of the same user: the sandbox gives each grant its own sid.
    const first = await signedIn(0);
    const firstSid = decodeJwt(String(fixture.observed.tokenResponses.at(-1)!.id_token)).sid;
    const second = await signedIn(1);
    const secondSid = decodeJwt(String(fixture.observed.tokenResponses.at(-1)!.id_token)).sid;
    expect(second.sub).toBe(first.sub);
    expect(typeof firstSid).toBe('string');
    expect(typeof secondSid).toBe('string');
    expect(secondSid).not.toBe(firstSid);
    // Act
    const receiver = await sandboxLogout({ sid: String(firstSid) });
    // Assert
    expect(receiver.status).toBe(200);
    expect((await first.browser.call(first.url)).status).toBe(401);
    expect((await second.browser.call(second.url)).status).toBe(200);
    // The same sid with the user's sub ends the other one too (sid and sub together must both match).
    expect((await sandboxLogout({ sid: String(secondSid), sub: second.sub })).status).toBe(200);
    expect((await second.browser.call(second.url)).status).toBe(401);
  });

  it('refuses a logout token signed with another key, or for another client, with 400 invalid_request, and ends nothing', async () => {
    const { browser, url, sub } = await signedIn(0);

    for (const receiver of [await sandboxLogout({ sub, signWithOtherKey: true }), await sandboxLogout({ sub, clientId: 'someone-else' })]) {
      expect(receiver.status).toBe(400);
      expect(receiver.cacheControl).toContain('no-store');
      expect(JSON.parse(receiver.body)).toMatchObject({ error: 'invalid_request' });
    }
    expect((await browser.call(url)).status).toBe(200);
  });

  it('refuses a replayed jti', async () => {
    const { sub } = await signedIn(0);
    const jti = `replayed-${Date.now()}`;
    expect((await sandboxLogout({ sub, claims: { jti } })).status).toBe(200);
    expect((await sandboxLogout({ sub, claims: { jti } })).status).toBe(400);
  });
});

describe('POST /sessions/{id}/logout with RP-initiated logout (over HTTP against the sandbox)', () => {
  it('answers an end-session URL where the EHR advertises end_session_endpoint; with no id_token in it (invariant 1); the EHR checks the client and returns to the app', async () => {
    sandbox().quirks.endSession = true;
    // The switch shows once the stack's discovery cache is cold again (10 s in local runs).
    fixture.stack.deps.discovery?.clear();
    try {
      const { browser, url } = await signedIn(0);
      // Act
      const logout = await browser.call(`${url}/logout`, { method: 'POST' });
      // Assert: the session is gone and the answer says where the EHR ends its own sign-in.
      expect(logout.status).toBe(200);
      const { endSessionUrl, loggedOut } = logout.body as { endSessionUrl: string; loggedOut: boolean };
      expect(loggedOut).toBe(true);
      const end = new URL(endSessionUrl);
      expect(`${end.origin}${end.pathname}`).toBe(`${sandbox().url}/end-session`);
      expect(end.searchParams.has('id_token_hint')).toBe(false);
      expect(endSessionUrl).not.toContain(String(fixture.observed.tokenResponses.at(-1)!.id_token));
      expect(end.searchParams.get('client_id')).toBe(LOCAL_CLIENT.clientId);
      expect(end.searchParams.get('post_logout_redirect_uri')).toBe(fixture.stack.config.app.url);
      const state = end.searchParams.get('state');
      expect(state).toMatch(/^[A-Za-z0-9_-]{22}$/);
      expect((await browser.call(url)).status).toBe(401);
      // The browser follows it: the sandbox knows the client and returns to the app.
      const navigation = await browser.navigate(endSessionUrl);
      expect(navigation.hops[0]).toMatchObject({ status: 302 });
      const back = new URL(navigation.hops[0]!.location!);
      expect(`${back.origin}${back.pathname}`).toBe(new URL(fixture.stack.config.app.url).href.replace(/\?.*$/, ''));
      expect(back.searchParams.get('state')).toBe(state);
      expect(sandbox().endSessionCalls!.at(-1)).toMatchObject({ clientId: LOCAL_CLIENT.clientId, outcome: 'redirected' });
    } finally {
      sandbox().clearQuirks();
    }
  });

  it('answers no end-session URL where the EHR advertises none', async () => {
    fixture.stack.deps.discovery?.clear();
    const { browser, url } = await signedIn(0);
    const logout = await browser.call(`${url}/logout`, { method: 'POST' });
    expect(logout.status).toBe(200);
    expect(logout.body).not.toHaveProperty('endSessionUrl');
  });
});
