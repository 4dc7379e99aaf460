import type { Browser, BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOCAL_CLIENT } from '../../local/stack.js';
import { startFixture, type Fixture } from '../integration/stack-fixture.js';
import { hasChromium, newContext, PAGE_SHOWS, releaseBrowser, screenshot, sharedBrowser } from './chromium.js';

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
