import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Clock, SessionStore } from '../../shared/core/ports.js';
import { HeldClock, wakingOnRefreshEnd } from '../fakes/clock.js';
import { BrowserClient } from '../integration/browser-client.js';
import { ehrLaunch, scanTable, sessionIdFrom, startFixture, type Fixture } from '../integration/stack-fixture.js';

/*
 * Load on the local stack (real HTTP, the real handlers, the embedded DynamoDB-compatible store and
 * the sandbox EHR's token endpoint): many concurrent sessions whose access tokens live 60 seconds
 * (no longer than the default refresh skew), taken through several refresh rounds with several
 * concurrent requests per session. The API's clock is moved forward a token lifetime per round
 * instead of waiting; the count is exact: one refresh grant per session per round (invariant 8),
 * zero errors, no session lost. `npm test` runs 16 sessions through 2 rounds (the second round
 * refreshes with the refresh token the first one rotated in, the state every later round is in);
 * LOAD_SESSIONS=200 LOAD_ROUNDS=5 `npx vitest run test/load` runs the full load.
 */

const SESSIONS = Number(process.env.LOAD_SESSIONS ?? 16);
const REQUESTS_PER_SESSION = 3;
const ROUNDS = Number(process.env.LOAD_ROUNDS ?? 2);
const TOKEN_SECONDS = 60;

/**
 * The API's clock. Held (moved only by the test) through the refresh rounds: the lease (15 s), the
 * waiters' deadline and the token call's timeout are measured on it, so a loaded machine answering
 * slowly cannot expire a lease mid-refresh (a second grant) or time a waiter out (a 503). Waiters
 * wake when a refresh ends (the store's write below), not after their backoff.
 */
const clock = new HeldClock();
let fixture: Fixture;

beforeAll(async () => {
  fixture = await startFixture();
  // The handlers read their ports from this one object on every request.
  const deps = fixture.stack.deps as { clock: Clock; store: SessionStore };
  deps.clock = clock;
  deps.store = wakingOnRefreshEnd(deps.store, () => clock.wake());
  fixture.stack.sandbox!.faults.accessTokenTtlSeconds = TOKEN_SECONDS;
});
afterAll(async () => {
  await fixture?.close();
});

async function inBatches<T, R>(items: readonly T[], size: number, run: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += size) out.push(...(await Promise.all(items.slice(i, i + size).map(run))));
  return out;
}

describe(`load: ${SESSIONS} sessions with short-lived tokens through several refresh rounds`, () => {
  it(`makes exactly one refresh grant per session per round, with ${REQUESTS_PER_SESSION} concurrent requests each, zero errors and no session lost (invariant 8)`, async () => {
    const sandbox = fixture.stack.sandbox!;
    const patients = sandbox.patients;
    const sessions = await inBatches(Array.from({ length: SESSIONS }, (_, i) => i), 25, async (i) => {
      const browser = new BrowserClient();
      const patient = patients[i % patients.length]!;
      const sessionId = sessionIdFrom(await ehrLaunch(fixture, browser, patient.id));
      return { browser, patient, url: `${fixture.stack.apiUrl}/sessions/${sessionId}` };
    });
    expect(new Set(sessions.map((s) => s.url)).size).toBe(SESSIONS);
    const grantsAtStart = sandbox.stats.tokenRequests.refresh_token ?? 0;
    clock.hold();

    for (let round = 1; round <= ROUNDS; round++) {
      // Every session's access token is now past its expiry.
      clock.advance((TOKEN_SECONDS + 1) * 1000);
      const answers = await Promise.all(
        sessions.flatMap((s) => Array.from({ length: REQUESTS_PER_SESSION }, () => s.browser.call(`${s.url}/fhir/Patient/${s.patient.id}`).then((a) => ({ status: a.status, id: (a.body as { id?: string }).id, patient: s.patient.id })))),
      );
      const failures = answers.filter((a) => a.status !== 200 || a.id !== a.patient);
      expect(failures).toEqual([]);
      expect((sandbox.stats.tokenRequests.refresh_token ?? 0) - grantsAtStart).toBe(SESSIONS * round);

      // Requests just after the round's refreshes use the new tokens: no further grant.
      clock.advance(1000);
      const after = await Promise.all(sessions.map((s) => s.browser.call(s.url).then((a) => a.status)));
      expect(after.filter((status) => status !== 200)).toEqual([]);
      expect((sandbox.stats.tokenRequests.refresh_token ?? 0) - grantsAtStart).toBe(SESSIONS * round);
    }

    expect(sandbox.stats.refreshReuseDetected).toBe(0);
    const stored = (await scanTable(fixture)).filter((item) => item.pk?.S?.startsWith('ses#'));
    expect(stored).toHaveLength(SESSIONS);
    expect(stored.every((item) => item.revision?.N === String(1 + ROUNDS))).toBe(true);
  }, 120_000);
});
