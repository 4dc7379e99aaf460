import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BINDING_COOKIE } from '../../shared/http/cookies.js';
import { BrowserClient } from '../integration/browser-client.js';
import { ehrLaunch, sessionIdFrom, startFixture, type Fixture } from '../integration/stack-fixture.js';

/**
 * The popup sign-in hand-off over real HTTP: the popup (one cookie jar) signs in and asks for a code;
 * the app's frame (another jar, as a partitioned frame is) redeems it with the verifier.
 */
let fixture: Fixture;
let appOrigin: string;

beforeAll(async () => {
  fixture = await startFixture();
  appOrigin = new URL(fixture.stack.appUrl).origin;
});
afterAll(async () => fixture?.close());

function pkcePair() {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

async function popupSignIn(challenge: string) {
  const popup = new BrowserClient();
  const sessionId = sessionIdFrom(await ehrLaunch(fixture, popup, fixture.stack.sandbox!.patients[0]!.id));
  const issued = await popup.call(`${fixture.stack.apiUrl}/sessions/${sessionId}/handoff`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', origin: appOrigin },
    body: JSON.stringify({ challenge }),
  });
  expect(issued.status).toBe(200);
  return { popup, sessionId, code: (issued.body as { code: string }).code };
}

const redeem = (frame: BrowserClient, sessionId: string, body: unknown, origin = appOrigin) =>
  frame.call(`${fixture.stack.apiUrl}/sessions/${sessionId}/handoff/redeem`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', origin },
    body: JSON.stringify(body),
  });

describe('popup sign-in hand-off to a framed app (invariant 2)', () => {
  it('the frame redeems the code with its verifier once and then opens the session with its own cookie', async () => {
    const { verifier, challenge } = pkcePair();
    const { sessionId, code } = await popupSignIn(challenge);
    const frame = new BrowserClient();
    expect((await frame.call(`${fixture.stack.apiUrl}/sessions/${sessionId}`)).status).toBe(401);

    const redeemed = await redeem(frame, sessionId, { code, verifier });
    expect(redeemed.status).toBe(200);
    expect(redeemed.response.headers.getSetCookie()[0]).toMatch(new RegExp(`^${BINDING_COOKIE}=[A-Za-z0-9_-]{43}; Path=/; Secure; HttpOnly`));
    const context = await frame.call(`${fixture.stack.apiUrl}/sessions/${sessionId}`);
    expect(context.status).toBe(200);
    expect((context.body as { patient: string }).patient).toBe(fixture.stack.sandbox!.patients[0]!.id);

    // Single use: the same code again opens nothing, for anyone.
    const again = await redeem(new BrowserClient(), sessionId, { code, verifier });
    expect(again.status).toBe(401);
    expect((again.body as { error: { code: string } }).error.code).toBe('HANDOFF_REJECTED');
  });

  it('an intercepted code and session id open nothing without the verifier, and the attempt burns the code', async () => {
    const { verifier, challenge } = pkcePair();
    const { sessionId, code } = await popupSignIn(challenge);
    const attacker = new BrowserClient();
    const stolen = await redeem(attacker, sessionId, { code, verifier: randomBytes(32).toString('base64url') });
    expect(stolen.status).toBe(401);
    expect(stolen.response.headers.getSetCookie()).toEqual([]);
    expect((await attacker.call(`${fixture.stack.apiUrl}/sessions/${sessionId}`)).status).toBe(401);
    // Burned: even the rightful frame must sign in again (it is told so, never handed a wrong session).
    expect((await redeem(new BrowserClient(), sessionId, { code, verifier })).status).toBe(401);
  });

  it('a code is refused for another session, from another origin, and after it expired', async () => {
    const first = pkcePair();
    const a = await popupSignIn(first.challenge);
    const second = pkcePair();
    const b = await popupSignIn(second.challenge);
    expect((await redeem(new BrowserClient(), b.sessionId, { code: a.code, verifier: first.verifier })).status).toBe(401);

    const third = pkcePair();
    const c = await popupSignIn(third.challenge);
    expect((await redeem(new BrowserClient(), c.sessionId, { code: c.code, verifier: third.verifier }, 'https://evil.example')).status).toBe(401);

    const fourth = pkcePair();
    const d = await popupSignIn(fourth.challenge);
    const realNow = fixture.stack.deps.clock.now;
    (fixture.stack.deps.clock as { now: () => number }).now = () => realNow() + 31_000;
    try {
      expect((await redeem(new BrowserClient(), d.sessionId, { code: d.code, verifier: fourth.verifier })).status).toBe(401);
    } finally {
      (fixture.stack.deps.clock as { now: () => number }).now = realNow;
    }
  });

  it('asking for a code needs the bound session and a well-formed challenge', async () => {
    const { sessionId } = await popupSignIn(pkcePair().challenge);
    const stranger = new BrowserClient();
    const refused = await stranger.call(`${fixture.stack.apiUrl}/sessions/${sessionId}/handoff`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ challenge: pkcePair().challenge }),
    });
    expect(refused.status).toBe(401);
  });
});
