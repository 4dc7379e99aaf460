import { describe, expect, it } from 'vitest';
import { sessionKey } from '../../shared/core/sealed-records.js';
import { ensureFreshSession, refreshSkewMs } from '../../shared/core/refresh.js';
import { openSession, sessionView } from '../../shared/core/session.js';
import { MAX_EXPIRES_IN_SECONDS } from '../../shared/core/token.js';
import { parseTokenResponse } from '../../shared/core/ehr/token-endpoint.js';
import { json } from '../fakes/fake-ehr.js';
import { harness, signIn, type Harness } from '../fakes/launch-flow.js';
import { caught } from '../fakes/caught.js';

const SECOND = 1000;

async function signedIn(tokenResponse: Record<string, unknown>) {
  const h = await harness();
  h.ehr.tokenResponse = tokenResponse;
  const { callback, launch } = await signIn(h);
  const open = () => openSession(callback.sessionId, launch.bindingSecret, h.deps);
  const stored = () => h.deps.store.sessions().find((r) => r.key === sessionKey(callback.sessionId));
  return { h, open, stored, sessionId: callback.sessionId };
}

/** Makes the fake EHR answer refresh grants with tokens of `expiresIn` seconds, counting them. */
function refreshesWith(h: Harness, expiresIn: unknown): { count: number } {
  const counter = { count: 0 };
  h.ehr.tokenAnswer = async (call) => {
    if (call.form.get('grant_type') !== 'refresh_token') return json({ error: 'unsupported_grant_type' }, 400);
    counter.count++;
    return json({ access_token: `at-${counter.count}`, token_type: 'Bearer', expires_in: expiresIn, refresh_token: `rt-${counter.count}` });
  };
  return counter;
}

describe('bounds on the numbers an EHR sends (invariant 9)', () => {
  it.each([
    [2 ** 53 - 1, MAX_EXPIRES_IN_SECONDS],
    [Number.MAX_VALUE, MAX_EXPIRES_IN_SECONDS],
    ['9007199254740993', MAX_EXPIRES_IN_SECONDS],
    ['1' + '0'.repeat(330), MAX_EXPIRES_IN_SECONDS],
    [MAX_EXPIRES_IN_SECONDS + 1, MAX_EXPIRES_IN_SECONDS],
    [3600, 3600],
    ['3600', 3600],
    [1, 1],
  ])('takes expires_in %s as %s seconds', async (given, taken) => {
    const body = typeof given === 'string' && given.length > 20 ? `{"access_token":"at","token_type":"Bearer","expires_in":${given}}` : JSON.stringify({ access_token: 'at', token_type: 'Bearer', expires_in: given });
    const parsed = await parseTokenResponse(new Response(body, { headers: { 'content-type': 'application/json' } }));
    expect(parsed.expires_in).toBe(taken);
  });

  it.each([0, -1, 1.5, '1e9', '', 'soon', true, [3600], { s: 1 }])('refuses expires_in %s with TOKEN_RESPONSE_INVALID', async (given) => {
    const body = JSON.stringify({ access_token: 'at', token_type: 'Bearer', expires_in: given });
    const error = await caught(parseTokenResponse(new Response(body, { headers: { 'content-type': 'application/json' } })));
    expect(error).toMatchObject({ code: 'TOKEN_RESPONSE_INVALID' });
  });

  it('a sign-in with expires_in 2^53-1 gives a working session: its context answers, and it never outlives the session lifetime', async () => {
    const s = await signedIn({ expires_in: 2 ** 53 - 1 });
    const session = await s.open();

    const view = sessionView(s.h.deps.config, session);
    expect(Date.parse(String(view.expiresAt)) - s.h.deps.clock.now()).toBe(MAX_EXPIRES_IN_SECONDS * SECOND);
    // The record's TTL still follows the idle timeout and the absolute lifetime (8 h by default).
    expect(s.stored()!.expiresAt).toBeLessThanOrEqual(Math.floor(s.h.deps.clock.now() / 1000) + 8 * 3600);

    const calls = refreshesWith(s.h, 2 ** 53 - 1);
    s.h.deps.clock.advance(MAX_EXPIRES_IN_SECONDS * SECOND - 59 * SECOND);
    // The absolute lifetime ended first: the session is not open any more, never a 500.
    expect(await caught(s.open())).toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401 });
    expect(calls.count).toBe(0);
  });

  it('a refresh answering expires_in 2^53-1 stores a bounded expiry that the next request can read', async () => {
    const s = await signedIn({ expires_in: 120 });
    const calls = refreshesWith(s.h, 2 ** 53 - 1);
    s.h.deps.clock.advance(121 * SECOND);

    const refreshed = await ensureFreshSession(await s.open(), s.h.deps);
    const reopened = await s.open();

    expect(calls.count).toBe(1);
    expect(refreshed.secrets.accessTokenExpiresAt - s.h.deps.clock.now()).toBe(MAX_EXPIRES_IN_SECONDS * SECOND);
    expect(() => sessionView(s.h.deps.config, reopened)).not.toThrow();
  });
});

describe('refresh skew relative to the token lifetime (invariant 8, SMART-REFRESH-05)', () => {
  it.each([
    [3, 750],
    [60, 15_000],
    [120, 30_000],
    [240, 60_000],
    [3600, 60_000],
  ])('a token of %s s is due %s ms before expiry with the default 60 s skew', async (lifetimeSeconds, skewMs) => {
    const h = await harness();
    expect(refreshSkewMs(h.deps.config, { obtainedAt: 0, accessTokenExpiresAt: lifetimeSeconds * SECOND })).toBe(skewMs);
  });

  it('a storm on a 3-second token (shorter than the skew) makes exactly one refresh grant per expiry, over five rounds, requests arriving before and just after each refresh', async () => {
    const s = await signedIn({ expires_in: 3 });
    const calls = refreshesWith(s.h, 3);

    for (let round = 1; round <= 5; round++) {
      // Past the current token's expiry.
      s.h.deps.clock.advance(3 * SECOND + 1);
      const opened = await Promise.all(Array.from({ length: 30 }, () => s.open()));
      const storm = await Promise.all(opened.map((session) => ensureFreshSession(session, s.h.deps)));
      expect(new Set(storm.map((session) => session.secrets.accessToken))).toEqual(new Set([`at-${round}`]));
      expect(calls.count).toBe(round);

      // Requests that read the session just after the refresh completed use its token.
      s.h.deps.clock.advance(100);
      const late = await Promise.all(Array.from({ length: 30 }, async () => ensureFreshSession(await s.open(), s.h.deps)));
      expect(new Set(late.map((session) => session.secrets.accessToken))).toEqual(new Set([`at-${round}`]));
      expect(calls.count).toBe(round);
    }
    expect(s.stored()!.revision).toBe(6);
  });
});
