import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SandboxFaults } from '../../local/sandbox/types.js';
import { sampleConfig } from '../../local/stack.js';
import { BrowserClient } from '../integration/browser-client.js';
import { ehrLaunch, scanTable, sessionIdFrom, startFixture, type Fixture } from '../integration/stack-fixture.js';

/*
 * EHR faults on the local stack with the bundled sandbox EHR and its fault switches: the token
 * endpoint slow, down or answering garbage; the FHIR server slow, down or resetting mid-body. Each
 * gets its documented answer, and the session stays stored and usable once the fault clears
 * (invariant 9).
 */

let fixture: Fixture;

beforeAll(async () => {
  fixture = await startFixture({
    configure: ({ apiUrl, sandbox }) => {
      const config = sampleConfig(apiUrl, sandbox!.fhirBaseUrl) as { issuers: Array<Record<string, unknown>> };
      // A 1-second proxy budget, so "FHIR too slow" is proven without a long wait.
      return { ...config, issuers: [{ ...config.issuers[0], proxy: { timeoutSeconds: 1 } }] };
    },
  });
});
afterAll(async () => {
  await fixture?.close();
});
afterEach(() => {
  fixture.stack.sandbox!.clearFaults();
});

const sandbox = () => fixture.stack.sandbox!;
const api = () => fixture.stack.apiUrl;

async function signedIn() {
  const browser = new BrowserClient();
  const patient = sandbox().patients[0]!;
  const sessionId = sessionIdFrom(await ehrLaunch(fixture, browser, patient.id));
  return { browser, sessionId, patient, url: `${api()}/sessions/${sessionId}` };
}

/** The stored record of a session (by its key's hash, as the table holds it). */
async function stored(): Promise<string> {
  const items = (await scanTable(fixture)).filter((item) => item.pk?.S?.startsWith('ses#'));
  return JSON.stringify(items.sort((a, b) => String(a.pk?.S).localeCompare(String(b.pk?.S))));
}

const errorCode = (body: unknown) => (body as { error?: { code?: string } }).error?.code;
const outcome = (body: unknown) => (body as { issue?: Array<{ details?: { coding?: Array<{ code?: string }> } }> }).issue?.[0]?.details?.coding?.[0]?.code;

/** The session still answers its context and reads its patient. */
async function expectUsable(s: Awaited<ReturnType<typeof signedIn>>): Promise<void> {
  expect((await s.browser.call(s.url)).status).toBe(200);
  const read = await s.browser.call(`${s.url}/fhir/Patient/${s.patient.id}`);
  expect(read.status).toBe(200);
}

/**
 * A signed-in session, the stored sessions as they are, then `fault` switched on in the sandbox.
 * `expectIntactOnceCleared` checks that nothing stored changed, clears the fault and proves the
 * session works again (invariant 9).
 */
async function signedInDuring(fault: Partial<SandboxFaults>) {
  const s = await signedIn();
  const before = await stored();
  Object.assign(sandbox().faults, fault);
  return {
    ...s,
    async expectIntactOnceCleared(): Promise<void> {
      expect(await stored()).toBe(before);
      sandbox().clearFaults();
      await expectUsable(s);
    },
  };
}

describe('token endpoint faults', () => {
  it('down (503) on refresh: 503 REFRESH_UNAVAILABLE with Retry-After, one token call, the session intact', async () => {
    const s = await signedInDuring({ tokenEndpoint: { status: 503, retryAfterSeconds: 4 } });
    const calls = sandbox().stats.tokenRequests.refresh_token ?? 0;

    const refused = await s.browser.call(`${s.url}/refresh`, { method: 'POST' });

    expect(refused.status).toBe(503);
    expect(errorCode(refused.body)).toBe('REFRESH_UNAVAILABLE');
    expect(refused.response.headers.get('retry-after')).toBe('4');
    expect((sandbox().stats.tokenRequests.refresh_token ?? 0) - calls).toBe(1);
    await s.expectIntactOnceCleared();
  });

  it('answering garbage (200 without access_token) on refresh: 502 TOKEN_RESPONSE_INVALID, the session intact', async () => {
    const s = await signedInDuring({ malformedTokenResponse: true });

    const refused = await s.browser.call(`${s.url}/refresh`, { method: 'POST' });

    expect(refused.status).toBe(502);
    expect(errorCode(refused.body)).toBe('TOKEN_RESPONSE_INVALID');
    await s.expectIntactOnceCleared();
  });

  it('slow (but within the budget) on refresh: the refresh completes', async () => {
    const s = await signedInDuring({ tokenEndpoint: { delayMs: 300, grantTypes: ['refresh_token'] } });

    const refreshed = await s.browser.call(`${s.url}/refresh`, { method: 'POST' });

    expect(refreshed.status).toBe(200);
    await expectUsable(s);
  });

  it('down at sign-in: a 502 TOKEN_ENDPOINT_UNAVAILABLE page, no session stored, other sessions intact', async () => {
    const other = await signedInDuring({ tokenEndpoint: { status: 503, grantTypes: ['authorization_code'] } });

    const navigation = await ehrLaunch(fixture, new BrowserClient(), sandbox().patients[0]!.id);

    expect(navigation.finalLocation).toBeUndefined();
    expect(navigation.body).toContain('TOKEN_ENDPOINT_UNAVAILABLE');
    await other.expectIntactOnceCleared();
  });

  it('answering garbage at sign-in: a 502 TOKEN_RESPONSE_INVALID page, no session stored', async () => {
    const before = await stored();
    sandbox().faults.malformedTokenResponse = true;

    const navigation = await ehrLaunch(fixture, new BrowserClient(), sandbox().patients[0]!.id);

    expect(navigation.body).toContain('TOKEN_RESPONSE_INVALID');
    expect(await stored()).toBe(before);
  });
});

describe('FHIR server faults', () => {
  it('slower than the proxy budget: 504 UPSTREAM_TIMEOUT, the session intact', async () => {
    const s = await signedInDuring({ fhirDelayMs: 3_000 });

    const slow = await s.browser.call(`${s.url}/fhir/Patient/${s.patient.id}`);

    expect(slow.status).toBe(504);
    expect(outcome(slow.body)).toBe('UPSTREAM_TIMEOUT');
    await s.expectIntactOnceCleared();
  });

  it('resetting the connection mid-body: 502 UPSTREAM_UNAVAILABLE, never a truncated body, the session intact', async () => {
    const s = await signedInDuring({ fhirDropConnection: true });

    const dropped = await s.browser.call(`${s.url}/fhir/Patient/${s.patient.id}`);

    expect(dropped.status).toBe(502);
    expect(outcome(dropped.body)).toBe('UPSTREAM_UNAVAILABLE');
    await s.expectIntactOnceCleared();
  });

  it('down (answering 503): the EHR\'s 503 is passed through inert, the session intact', async () => {
    const s = await signedInDuring({
      fhirAnswer: { status: 503, headers: { 'content-type': 'application/fhir+json', 'retry-after': '2' }, body: '{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient"}]}' },
    });

    const down = await s.browser.call(`${s.url}/fhir/Patient/${s.patient.id}`);

    expect(down.status).toBe(503);
    expect(down.response.headers.get('retry-after')).toBe('2');
    expect(down.response.headers.get('cache-control')).toBe('no-store');
    await s.expectIntactOnceCleared();
  });
});
