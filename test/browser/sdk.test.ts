import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, it, type ExpectStatic } from 'vitest';
import { sampleConfig } from '../../local/stack.js';
import { startFixture, type Fixture } from '../integration/stack-fixture.js';
import { hasChromium, newContext, PAGE_SHOWS, releaseBrowser, screenshot, sharedBrowser } from './chromium.js';


let fixture: Fixture;
let browser: Browser;
const contexts: BrowserContext[] = [];

beforeAll(async () => {
  if (!hasChromium) return;
  // SameSite=None (sent with Partitioned): what a customer embedding the app in EHR frames configures.
  fixture = await startFixture({
    configure: ({ apiUrl, sandbox }) => ({ ...(sampleConfig(apiUrl, sandbox!.fhirBaseUrl) as object), cookie: { sameSite: 'None' } }),
  });
  browser = await sharedBrowser();
});
afterAll(async () => {
  for (const context of contexts) await context.close().catch(() => undefined);
  await releaseBrowser(browser);
  await fixture?.close();
});

const sandbox = () => fixture.stack.sandbox!;
const patients = () => sandbox().patients;

async function newPage(): Promise<{ context: BrowserContext; page: Page }> {
  const context = await newContext(browser);
  contexts.push(context);
  return { context, page: await context.newPage() };
}

/** Runs an EHR launch in `page` for a patient and waits for the demo app to show them. */
async function ehrLaunch(expect: ExpectStatic, page: Page, patient: { id: string; name: string }, query = ''): Promise<void> {
  await page.goto(`${sandbox().url}/ehr/launch?patient=${encodeURIComponent(patient.id)}${query}`);
  await page.waitForURL(`${fixture.stack.appUrl}**`);
  await eventually(expect, () => page.locator('#patient-name').textContent()).toBe(patient.name);
}

/**
 * Polls until the page shows what is expected; generous, as the machine may be busy and pages run side
 * by side. Takes the test's own `expect`, as the tests run concurrently.
 */
const eventually = <T>(expect: ExpectStatic, read: () => T | Promise<T>) => expect.poll(read, { timeout: 45_000, interval: PAGE_SHOWS.interval });
const shot = screenshot;
/** What the SDK keeps in this tab: its sessionStorage entries. */
const storedEntries = (page: Page) => page.evaluate(() => Object.keys(sessionStorage).filter((k) => k.startsWith('smart-launch:')).length);

/*
 * Each test has its own browser context (its own cookies and storage), so they run side by side on
 * the one stack. The two marked `sequential` run alone: one moves the stack's clock, one takes the
 * last token the EHR issued; concurrent launches would change those. Signing out of a standalone
 * launch (the revocation, the tab cleared, the old id ended) is checked in launch.test.ts, on the
 * default stack, in the launch the patient portal starts there.
 */
describe.skipIf(!hasChromium)('the browser SDK and the demo app in Chromium', { concurrent: true, timeout: 120_000 }, () => {
  it('EHR launch in a new window: the EHR page opens the app in its own window (SMART-LAUNCH-05); there the fhirclient.js bridge reads patient, user and encounter and a paged, flat request() with resolveReferences through the proxy', async ({ expect }) => {
    const { context, page } = await newPage();
    const patient = patients()[0]!;
    const requested: string[] = [];
    context.on('request', (request) => requested.push(request.url()));
    await page.goto(`${sandbox().url}/`);
    await shot(page, 'sdk-sandbox-ehr-page');
    const opened = context.waitForEvent('page');
    await page.locator('tr', { hasText: patient.name }).getByRole('link', { name: 'New window' }).click();
    const app = await opened;
    await app.waitForURL(`${fixture.stack.appUrl}**`);
    await eventually(expect, () => app.locator('#patient-name').textContent()).toBe(patient.name);
    // The session id left the address bar at once; the EHR page stayed where it was.
    expect(app.url()).toBe(fixture.stack.appUrl);
    expect(page.url()).toBe(`${sandbox().url}/`);
    expect(await app.locator('#condition-list li').count()).toBeGreaterThan(0);
    // The sandbox's seeded MedicationRequests fill the medications section.
    await eventually(expect, () => app.locator('#medication-list').textContent()).toContain('lisinopril 10 MG Oral Tablet — Take 1 tablet by mouth once daily');
    expect(await app.locator('#vitals-chart svg polyline').count()).toBe(3);
    // The EHR's smart_style_url is honoured: its highlight colour drives the app's bar.
    await eventually(expect, () => app.evaluate(() => document.documentElement.dataset.smartStyle)).toBe('applied');
    expect(await app.locator('header.bar').evaluate((e) => getComputedStyle(e).backgroundColor)).toBe('rgb(43, 95, 173)');
    await shot(app, 'sdk-new-window');

    // The fhirclient.js bridge page, in the same tab: the session the SDK keeps for the tab.
    await app.goto(`${fixture.stack.appUrl}fhirclient.html`);
    await eventually(expect, () => app.locator('#result').getAttribute('data-state')).toBe('done');
    const result = JSON.parse((await app.locator('#result').textContent()) ?? '{}') as Record<string, unknown>;
    expect(result).toMatchObject({
      patient: { resourceType: 'Patient', id: patient.id },
      user: { resourceType: 'Practitioner', id: sandbox().practitioner.id },
      encounter: { resourceType: 'Encounter' },
      pages: 3,
      observations: 15,
      everyObservationOfPatient: true,
      resolvedSubject: patient.name,
    });
    // Every FHIR request of the launch, the app and the bridge went through this session's proxy; none to the EHR itself, none with a token.
    const fhirCalls = requested.filter((url) => url.includes('/fhir/'));
    expect(fhirCalls.length).toBeGreaterThanOrEqual(6);
    expect(fhirCalls.every((url) => url.startsWith(`${fixture.stack.apiUrl}/sessions/`))).toBe(true);
    await shot(app, 'sdk-fhirclient-bridge');
  });

  it('inside the EHR\'s cross-site, sandboxed iframe the launch runs in the frame with a SameSite=None; Partitioned cookie (BFF-12, SMART-LAUNCH-05)', async ({ expect }) => {
    const { context, page } = await newPage();
    const patient = patients()[1]!;
    await page.goto(`${sandbox().url}/`);
    await page.locator('tr', { hasText: patient.name }).getByRole('link', { name: 'In EHR frame' }).click();
    const iframe = page.locator('#app-frame');
    expect(await iframe.getAttribute('sandbox')).toContain('allow-popups-to-escape-sandbox');
    const frame = page.frameLocator('#app-frame');
    await eventually(expect, () => frame.locator('#patient-name').textContent()).toBe(patient.name);
    // The EHR (127.0.0.1) and the app (localhost) are different sites: the frame is cross-site.
    expect(new URL(sandbox().url).hostname).not.toBe(new URL(fixture.stack.appUrl).hostname);
    const cookie = (await context.cookies(fixture.stack.apiUrl)).find((c) => c.name === '__Host-smart-launch');
    expect(cookie).toMatchObject({ httpOnly: true, secure: true, sameSite: 'None' });
    expect((cookie as { partitionKey?: string }).partitionKey).toBe(`http://127.0.0.1`);
    await shot(page, 'sdk-ehr-iframe');
  });

  it('sign-in from a frame whose EHR sign-in page refuses framing: a popup signs in and hands the session to the frame (BFF-13)', async ({ expect }) => {
    const { context, page } = await newPage();
    const patient = patients()[2]!;
    const interactionHeaders: Array<Record<string, string>> = [];
    context.on('response', (response) => {
      if (response.url().includes('/oauth/interaction/') && response.request().method() === 'GET') interactionHeaders.push(response.headers());
    });
    await page.goto(`${sandbox().url}/`);
    await page.locator('tr', { hasText: patient.name }).getByRole('link', { name: 'Frame, sign-in refuses framing' }).click();
    const frame = page.frameLocator('#app-frame');
    await eventually(expect, () => frame.locator('#signin').isVisible()).toBe(true);
    await shot(page, 'sdk-popup-signin-needed');

    const popupOpened = page.waitForEvent('popup');
    await frame.getByRole('button', { name: 'Sign in (opens a window)' }).click();
    const popup = await popupOpened;
    await popup.getByRole('button', { name: 'Allow' }).click();
    await popup.waitForEvent('close');
    await eventually(expect, () => frame.locator('#patient-name').textContent()).toBe(patient.name);

    // The EHR's sign-in page would not have loaded in the frame.
    expect(interactionHeaders.length).toBeGreaterThan(0);
    expect(interactionHeaders[0]!['x-frame-options']).toBe('DENY');
    expect(interactionHeaders[0]!['content-security-policy']).toContain("frame-ancestors 'none'");
    // The frame holds its own binding cookie, in the EHR's partition, set by the hand-off.
    const cookies = (await context.cookies(fixture.stack.apiUrl)).filter((c) => c.name === '__Host-smart-launch');
    expect(cookies.map((c) => (c as { partitionKey?: string }).partitionKey ?? 'none').sort()).toEqual(['http://127.0.0.1', 'http://localhost'].sort());
    await shot(page, 'sdk-popup-handoff');
  });

  it('two tabs on two patients: each tab fetches only its own patient through its own session and keeps it across a reload, the fragment gone from history; a new tab gets none and says how to start (BFF-16)', async ({ expect }) => {
    const { context, page } = await newPage();
    const [a, b] = [patients()[0]!, patients()[1]!];
    const tabs = [page, await context.newPage()];
    const seen: string[][] = [[], []];
    tabs.forEach((tab, i) => tab.on('request', (request) => request.url().includes('/sessions/') && seen[i]!.push(request.url())));
    await ehrLaunch(expect, tabs[0]!, a);
    await ehrLaunch(expect, tabs[1]!, b);
    await Promise.all(tabs.map((tab) => tab.reload()));
    await eventually(expect, () => tabs[0]!.locator('#patient-name').textContent()).toBe(a.name);
    await eventually(expect, () => tabs[1]!.locator('#patient-name').textContent()).toBe(b.name);
    for (const tab of tabs) {
      expect(tab.url()).toBe(fixture.stack.appUrl);
      expect(await tab.evaluate(() => history.length)).toBeLessThanOrEqual(3);
    }
    const ids = await Promise.all(tabs.map((tab) => tab.evaluate(() => (window as unknown as { demo: { session: { id: string } } }).demo.session.id)));
    expect(ids[0]).not.toBe(ids[1]);
    for (const [i, own, other] of [
      [0, a, b],
      [1, b, a],
    ] as const) {
      expect(seen[i]!.length).toBeGreaterThan(5);
      for (const url of seen[i]!) {
        expect(url).toContain(`/sessions/${ids[i]}`);
        expect(url).not.toContain(other.id);
      }
      expect(seen[i]!.some((url) => url.includes(own.id))).toBe(true);
    }
    await shot(tabs[0]!, 'sdk-two-tabs-a');
    await shot(tabs[1]!, 'sdk-two-tabs-b');

    const fresh = await context.newPage();
    await fresh.goto(fixture.stack.appUrl);
    await eventually(expect, () => fresh.locator('#status').textContent()).toContain('No launch in progress');
    expect(await fresh.locator('#patient-name').textContent()).toBe('');
  });

  it.sequential('tokens that expire with the page open are refreshed by the proxy; the page keeps working (invariant 8)', async ({ expect }) => {
    const { page } = await newPage();
    const patient = patients()[2]!;
    await ehrLaunch(expect, page, patient, '&tokenTtl=120');
    const before = await page.evaluate(() => (window as unknown as { demo: { session: { context: { expiresAt: string } } } }).demo.session.context.expiresAt);
    expect(Date.parse(before) - Date.now()).toBeLessThan(125_000);
    const refreshes = sandbox().stats.tokenRequests.refresh_token ?? 0;
    const clock = fixture.stack.deps.clock as { now: () => number };
    const realNow = clock.now;
    clock.now = () => realNow() + 121_000;
    try {
      await page.getByRole('button', { name: 'Refresh data' }).click();
      await eventually(expect, () => sandbox().stats.tokenRequests.refresh_token ?? 0).toBe(refreshes + 1);
      await eventually(expect, () => page.locator('#observation-rows tr').count()).toBe(10);
      await eventually(expect, () => page.locator('#context-list').textContent()).not.toContain(before);
      expect(await page.locator('#patient-name').textContent()).toBe(patient.name);
      expect(await page.locator('#ended').isVisible()).toBe(false);
    } finally {
      clock.now = realNow;
    }
    await shot(page, 'sdk-refresh-after-expiry');
  });

  it.sequential('a revoked grant: the next request ends the session once, the page shows the way back, and nothing cached remains (SMART-REVOKE-02)', async ({ expect }) => {
    const { page } = await newPage();
    const patient = patients()[0]!;
    await ehrLaunch(expect, page, patient);
    await page.evaluate(() => {
      const w = window as unknown as { ended: number; demo: { session: { onSessionEnded(f: () => void): void } } };
      w.ended = 0;
      w.demo.session.onSessionEnded(() => (w.ended += 1));
    });
    expect(await page.evaluate(() => (window as unknown as { demo: { session: { cacheSize: number } } }).demo.session.cacheSize)).toBeGreaterThan(0);
    expect(await storedEntries(page)).toBe(1);
    const last = fixture.observed.tokenResponses.at(-1)!;
    await sandbox().revokeGrantOf(last.refresh_token as string);

    const refreshCalls: string[] = [];
    page.on('request', (request) => request.url().endsWith('/refresh') && refreshCalls.push(request.method()));
    await page.getByRole('button', { name: 'Refresh data' }).click();
    await eventually(expect, () => page.locator('#ended').isVisible()).toBe(true);
    // Four sections failed at once: one refresh attempt between them, then one sessionEnded.
    expect(refreshCalls).toEqual(['POST']);
    expect(await page.locator('#ended-title').textContent()).toBe('Your session has ended');
    expect(await page.locator('#ended-action').textContent()).toContain('open the app again');
    expect(await page.locator('#patient-name').textContent()).toBe('');
    expect(await page.locator('#observation-rows tr').count()).toBe(0);
    expect(await page.locator('#chart-area').isVisible()).toBe(false);
    expect(await page.evaluate(() => (window as unknown as { demo: { session: { cacheSize: number } } }).demo.session.cacheSize)).toBe(0);
    expect(await storedEntries(page)).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { ended: number }).ended)).toBe(1);
    await shot(page, 'sdk-revoked');
    // A reload finds nothing to resume.
    await page.reload();
    await eventually(expect, () => page.locator('#status').textContent()).toContain('No launch in progress');
  });

  it('a narrowed grant: the user unticks scopes at the EHR and the app says what it did not get (SMART-SCOPE-07)', async ({ expect }) => {
    const { page } = await newPage();
    const patient = patients()[0]!;
    await page.goto(`${sandbox().url}/ehr/launch?patient=${patient.id}&consent=1`);
    await page.getByRole('checkbox', { name: 'offline_access' }).uncheck();
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.waitForURL(`${fixture.stack.appUrl}**`);
    await eventually(expect, () => page.locator('#patient-name').textContent()).toBe(patient.name);
    expect(await page.locator('#reduced-text').textContent()).toContain('No refresh was granted');
    expect(await page.locator('#context-list').textContent()).not.toContain('offline_access');
    await shot(page, 'sdk-narrowed-grant');

    // Nothing of the patient record shared: a clear message, no blank page, nothing fetched from the EHR.
    await page.goto(`${sandbox().url}/ehr/launch?patient=${patient.id}&consent=1`);
    await page.getByRole('checkbox', { name: 'patient/*.rs' }).uncheck();
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.waitForURL(`${fixture.stack.appUrl}**`);
    await eventually(expect, () => page.locator('#status').textContent()).toContain('did not grant this app access');
    expect(await page.locator('#reduced-text').textContent()).toContain('did not grant access to conditions, medications, observations, vital signs');
    expect(await page.locator('.state[data-for="conditions"]').textContent()).toContain('Not shared with this app');
    await shot(page, 'sdk-refused-scope');
  });

  it('errors at the authorize step each end on a page that says what happened and how to go on', async ({ expect }) => {
    const { page } = await newPage();
    const patient = patients()[1]!;
    const launch = (outcome: string) => page.goto(`${sandbox().url}/ehr/launch?patient=${patient.id}&authorize=${outcome}`);
    await launch('invalid_client');
    expect(await page.locator('h1').textContent()).toBe('invalid_client');
    expect(await page.locator('body').textContent()).toContain('does not know this app');
    await launch('invalid_redirect');
    expect(await page.locator('body').textContent()).toContain('redirect_uri is not registered');
    await launch('invalid_scope');
    await eventually(expect, () => page.locator('h1').textContent()).toBe('Sign-in could not be completed');
    expect(await page.locator('body').textContent()).toContain('AUTHORIZATION_FAILED');
    await launch('access_denied');
    await eventually(expect, () => page.locator('body').textContent()).toContain('AUTHORIZATION_DENIED');
    expect(await page.getByRole('link', { name: 'Start again' }).count()).toBe(1);
    await shot(page, 'sdk-authorize-denied');
    // Launch options the sandbox does not understand are refused with a reason, before any launch.
    const refused = await page.goto(`${sandbox().url}/ehr/launch?patient=${patient.id}&tokenTtl=0`);
    expect(refused?.status()).toBe(400);
    expect(await page.locator('body').textContent()).toContain('between 1 and 86400');
    expect((await page.goto(`${sandbox().url}/ehr/frame?patient=${patient.id}&authorize=teapot`))?.status()).toBe(400);
  });

  it('a foreign session id (well-formed, not this browser\'s) shows "session ended", never a blank page', async ({ expect }) => {
    const { page } = await newPage();
    await page.goto(`${fixture.stack.appUrl}#session=${'A'.repeat(43)}`);
    await eventually(expect, () => page.locator('#ended').isVisible()).toBe(true);
    expect(await page.locator('#ended-action').textContent()).toContain('open the app again');
    expect(page.url()).toBe(fixture.stack.appUrl);
    await page.goto('about:blank');
    await page.goto(`${fixture.stack.appUrl}#session=not-a-session`);
    await eventually(expect, () => page.locator('#ended').isVisible()).toBe(true);
    await shot(page, 'sdk-foreign-session');
  });
});
