import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { sampleConfig } from '../../local/stack.js';
import { sessionKey } from '../../shared/core/sealed-records.js';
import type { Clock, SessionStore } from '../../shared/core/ports.js';
import { HeldClock, SkippingClock, wakingOnRefreshEnd } from '../fakes/clock.js';
import { BrowserClient } from './browser-client.js';
import { ehrLaunch, sessionIdFrom, startFixture, type Fixture } from './stack-fixture.js';

const LEASE_SECONDS = 3;
const clock = new SkippingClock();
/** The sandbox EHR's clock for access token expiry: moved forward to expire a token instead of waiting. */
const ehrClock = new HeldClock();
let fixture: Fixture;

beforeAll(async () => {
  fixture = await startFixture({
    clock,
    sandboxClock: ehrClock,
    configure: ({ apiUrl, sandbox }) => ({
      ...(sampleConfig(apiUrl, sandbox!.fhirBaseUrl) as Record<string, unknown>),
      session: { refreshLeaseSeconds: LEASE_SECONDS },
    }),
  });
});
afterAll(async () => {
  await fixture?.close();
});
beforeEach(() => {
  fixture.stack.sandbox!.clearFaults();
  fixture.stack.sandbox!.resetStats();
});

const api = () => fixture.stack.apiUrl;
const sandbox = () => fixture.stack.sandbox!;

async function signedIn(patientIndex = 0) {
  const browser = new BrowserClient();
  const patient = sandbox().patients[patientIndex]!;
  const sessionId = sessionIdFrom(await ehrLaunch(fixture, browser, patient.id));
  const tokens = fixture.observed.tokenResponses.at(-1)!;
  return { browser, patient, sessionId, tokens, url: `${api()}/sessions/${sessionId}` };
}

/**
 * Runs `test` with the API on a held clock (starting where the API's clock is now) that only the
 * test moves: no lease, waiter deadline or token call timeout can lapse on a slow machine, and
 * refresh waiters look again as soon as a refresh ends.
 */
async function withHeldApiClock<T>(test: (held: HeldClock) => Promise<T>): Promise<T> {
  // The handlers read their ports from this one object on every request.
  const deps = fixture.stack.deps as { clock: Clock; store: SessionStore };
  const [previousClock, previousStore] = [deps.clock, deps.store];
  const held = new HeldClock();
  held.advance(clock.now() - held.now());
  held.hold();
  deps.clock = held;
  deps.store = wakingOnRefreshEnd(previousStore, () => held.wake());
  try {
    return await test(held);
  } finally {
    deps.clock = previousClock;
    deps.store = previousStore;
  }
}

/** Holds the EHR's refresh_token grant answers until `release()`; `arrived` resolves when the first one is held. */
function holdRefreshGrants(): { arrived: Promise<void>; release: () => void } {
  let release!: () => void;
  let arrived!: () => void;
  const until = new Promise<void>((resolve) => (release = resolve));
  const arrivedPromise = new Promise<void>((resolve) => (arrived = resolve));
  sandbox().faults.tokenEndpointHold = { until, grantTypes: ['refresh_token'], onHeld: () => arrived() };
  return { arrived: arrivedPromise, release };
}

async function storedRecord(sessionId: string) {
  return fixture.stack.deps.store.getSession(sessionKey(sessionId), Math.floor(Date.now() / 1000));
}

describe('POST /sessions/{id}/refresh (SMART-REFRESH)', () => {
  it('renews the access token now, rotates the refresh token, and answers the new expiry', async () => {
    const { browser, patient, url } = await signedIn();
    sandbox().faults.accessTokenTtlSeconds = 120;

    const refreshed = await browser.call(`${url}/refresh`, { method: 'POST' });

    expect(refreshed.status).toBe(200);
    const expiresAt = Date.parse((refreshed.body as { expiresAt: string }).expiresAt);
    expect(expiresAt).toBeGreaterThan(Date.now() + 100_000);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 121_000);
    expect(sandbox().stats.tokenRequests.refresh_token).toBe(1);
    const read = await browser.call(`${url}/fhir/Patient/${patient.id}`);
    expect(read.status).toBe(200);
    // A second refresh presents the rotated refresh token: no reuse is ever detected.
    expect((await browser.call(`${url}/refresh`, { method: 'POST' })).status).toBe(200);
    expect(sandbox().stats.refreshReuseDetected).toBe(0);
  });

  it('renews once for a storm of 50 concurrent refresh requests; all succeed (invariant 8)', async () => {
    const { browser, url } = await signedIn(1);
    // The first refresh's token call is held at the EHR until every request of the storm is inside
    // the API: all 50 are concurrent with that one refresh, however slowly the machine answers.
    const grants = holdRefreshGrants();

    const answers = await withHeldApiClock(async () => {
      const storm = Promise.all(Array.from({ length: 50 }, () => browser.call(`${url}/refresh`, { method: 'POST' })));
      await Promise.all([grants.arrived, fixture.stack.requestsInFlight.atLeast(50)]);
      grants.release();
      return storm;
    });

    expect(answers.map((a) => a.status)).toEqual(Array(50).fill(200));
    expect(sandbox().stats.tokenRequests.refresh_token).toBe(1);
    expect(sandbox().stats.refreshReuseDetected).toBe(0);
  });

  it('refreshes once for 50 concurrent proxied requests on an expired access token, with rotation and reuse detection on (invariant 8)', async () => {
    // Sign in with a 60-second access token, then move the API's and the EHR's clocks past its expiry.
    sandbox().faults.accessTokenTtlSeconds = 60;
    const { browser, url, patient } = await signedIn(2);
    sandbox().faults.accessTokenTtlSeconds = undefined;

    const answers = await withHeldApiClock(async (held) => {
      held.advance(61_000);
      ehrClock.advance(61_000);
      const direct = await fetch(`${sandbox().fhirBaseUrl}/Patient/${patient.id}`, {
        headers: { authorization: `Bearer ${String(fixture.observed.tokenResponses.at(-1)!.access_token)}` },
      });
      expect(direct.status).toBe(401);
      return Promise.all(Array.from({ length: 50 }, () => browser.call(`${url}/fhir/Patient/${patient.id}`)));
    });

    expect(answers.map((a) => a.status)).toEqual(Array(50).fill(200));
    expect(answers.every((a) => (a.body as { id?: string }).id === patient.id)).toBe(true);
    expect(sandbox().stats.tokenRequests.refresh_token).toBe(1);
    expect(sandbox().stats.refreshReuseDetected).toBe(0);
  });

  it('ends the session with one relaunch answer when the grant was revoked at the EHR', async () => {
    const { browser, url, tokens } = await signedIn();
    await sandbox().revokeGrantOf(String(tokens.refresh_token));

    const refused = await browser.call(`${url}/refresh`, { method: 'POST' });
    const after = await browser.call(url);
    const again = await browser.call(`${url}/refresh`, { method: 'POST' });

    expect(refused.status).toBe(401);
    expect(refused.body).toMatchObject({ error: { code: 'SESSION_NOT_OPEN', hint: expect.stringMatching(/Open the app again/) } });
    // The same single answer before and after the session ended: one signal for the app.
    expect([after.status, after.body]).toEqual([refused.status, { error: { ...(refused.body as { error: object }).error, correlationId: expect.any(String) } }]);
    expect(again.status).toBe(401);
    expect(again.body).toMatchObject({ error: { code: 'SESSION_NOT_OPEN' } });
    // One call to the token endpoint, never a retry storm.
    expect(sandbox().stats.tokenRequests.refresh_token).toBe(1);
  });

  it.each([
    [{ status: 503 as const, retryAfterSeconds: 7 }, '7'],
    [{ status: 500 as const }, '5'],
    [{ status: 429 as const, retryAfterSeconds: 2 }, '2'],
  ])('answers a token endpoint fault %o with 503 and Retry-After, and keeps the session intact', async (fault, retryAfter) => {
    const { browser, url, patient, sessionId } = await signedIn();
    const before = await storedRecord(sessionId);
    sandbox().faults.tokenEndpoint = { ...fault, grantTypes: ['refresh_token'] };

    const failed = await browser.call(`${url}/refresh`, { method: 'POST' });

    expect(failed.status).toBe(503);
    expect(failed.response.headers.get('retry-after')).toBe(retryAfter);
    expect(failed.body).toMatchObject({ error: { code: 'REFRESH_UNAVAILABLE' } });
    const after = await storedRecord(sessionId);
    expect(after?.revision).toBe(before?.revision);
    expect(Buffer.from(after!.sealed).equals(Buffer.from(before!.sealed))).toBe(true);
    expect(after?.leaseUntil).toBeUndefined();
    expect((await browser.call(`${url}/fhir/Patient/${patient.id}`)).status).toBe(200);
    sandbox().clearFaults();
    expect((await browser.call(`${url}/refresh`, { method: 'POST' })).status).toBe(200);
  });

  it('reports invalid_client as a configuration error (502), never retried, session intact', async () => {
    const { browser, url, sessionId } = await signedIn();
    const before = await storedRecord(sessionId);
    sandbox().faults.invalidClient = true;

    const failed = await browser.call(`${url}/refresh`, { method: 'POST' });

    expect(failed.status).toBe(502);
    expect(failed.body).toMatchObject({ error: { code: 'CLIENT_AUTH_FAILED' } });
    expect(sandbox().stats.tokenRequests.refresh_token).toBe(1);
    expect((await storedRecord(sessionId))?.revision).toBe(before?.revision);
  });

  it('refuses a malformed token response and keeps the previous tokens usable', async () => {
    const { browser, url, patient, sessionId } = await signedIn();
    const before = await storedRecord(sessionId);
    sandbox().faults.malformedTokenResponse = true;

    const failed = await browser.call(`${url}/refresh`, { method: 'POST' });

    expect(failed.status).toBe(502);
    expect(failed.body).toMatchObject({ error: { code: 'TOKEN_RESPONSE_INVALID' } });
    expect(Buffer.from((await storedRecord(sessionId))!.sealed).equals(Buffer.from(before!.sealed))).toBe(true);
    expect((await browser.call(`${url}/fhir/Patient/${patient.id}`)).status).toBe(200);
  });

  it('recovers from an invocation that died holding the lease, within the lease time', async () => {
    const { browser, url, sessionId } = await signedIn();
    const record = await storedRecord(sessionId);
    const now = clock.now();
    // What a Lambda killed mid-refresh leaves behind: a lease that nobody will complete or release.
    expect(
      await fixture.stack.deps.store.acquireRefreshLease(sessionKey(sessionId), {
        revision: record!.revision,
        leaseId: 'crashed-invocation',
        nowMs: now,
        untilMs: now + LEASE_SECONDS * 1000,
      }),
    ).toBe(true);

    // The API's waits run on its clock: skip them instead of sleeping through the lease.
    clock.skipWaits = true;
    const started = clock.now();
    const refreshed = await browser.call(`${url}/refresh`, { method: 'POST' }).finally(() => {
      clock.skipWaits = false;
    });
    const waited = clock.now() - started;

    expect(refreshed.status).toBe(200);
    expect(waited).toBeGreaterThanOrEqual(LEASE_SECONDS * 1000 - 200);
    expect(waited).toBeLessThan(LEASE_SECONDS * 1000 + 2000);
    expect(sandbox().stats.tokenRequests.refresh_token).toBe(1);
  });

  it('answers a refresh without a refresh token with 409 REFRESH_NOT_AVAILABLE', async () => {
    const browser = new BrowserClient();
    const other = await startFixture({
      configure: ({ apiUrl, sandbox: sb }) => {
        const config = sampleConfig(apiUrl, sb!.fhirBaseUrl) as { issuers: Array<Record<string, unknown>> };
        config.issuers[0]!.scope = 'launch openid fhirUser patient/*.rs';
        return config;
      },
    });
    try {
      const sessionId = sessionIdFrom(await ehrLaunch(other, browser, other.stack.sandbox!.patients[0]!.id));
      const answer = await browser.call(`${other.stack.apiUrl}/sessions/${sessionId}/refresh`, { method: 'POST' });
      expect(answer.status).toBe(409);
      expect(answer.body).toMatchObject({ error: { code: 'REFRESH_NOT_AVAILABLE' } });
    } finally {
      await other.close();
    }
  });

  it('refuses a refresh from another browser or for an unknown session with the same 401 and touches nothing', async () => {
    const { url, sessionId } = await signedIn();
    const before = await storedRecord(sessionId);

    const foreign = await new BrowserClient().call(`${url}/refresh`, { method: 'POST' });
    const unknown = await new BrowserClient().call(`${api()}/sessions/${'A'.repeat(43)}/refresh`, { method: 'POST' });

    expect(foreign.status).toBe(401);
    expect(foreign.body).toMatchObject({ error: { code: 'SESSION_NOT_OPEN' } });
    expect(unknown.status).toBe(401);
    expect(unknown.body).toEqual({ error: { ...(foreign.body as { error: object }).error, correlationId: expect.any(String) } });
    expect((await storedRecord(sessionId))?.revision).toBe(before?.revision);
    expect(sandbox().stats.tokenRequests.refresh_token ?? 0).toBe(0);
  });
});

describe('POST /sessions/{id}/logout (RFC 7009)', () => {
  it('revokes the grant at the EHR, then the session and its tokens open nothing', async () => {
    const { browser, url, tokens } = await signedIn();

    const logout = await browser.call(`${url}/logout`, { method: 'POST' });

    expect(logout.status).toBe(200);
    expect(logout.body).toEqual({ loggedOut: true, revocation: 'revoked' });
    expect(sandbox().stats.revocations).toBe(1);
    expect(sandbox().stats.revocationsByTokenType).toEqual({ refresh_token: 1 });
    // The EHR no longer accepts the access token of the revoked grant.
    const direct = await fetch(`${sandbox().fhirBaseUrl}/Patient/${sandbox().patients[0]!.id}`, {
      headers: { authorization: `Bearer ${String(tokens.access_token)}` },
    });
    expect(direct.status).toBe(401);
    expect((await browser.call(url)).status).toBe(401);
  });

  it('deletes the session even when revocation at the EHR fails', async () => {
    const { browser, url } = await signedIn();
    const revocation = fixture.stack.sandbox!;
    // The revocation endpoint is part of the token service: make it unreachable by failing every grant type.
    revocation.faults.tokenEndpoint = { status: 503 };

    const logout = await browser.call(`${url}/logout`, { method: 'POST' });

    expect(logout.status).toBe(200);
    expect((await browser.call(url)).status).toBe(401);
  });
});
