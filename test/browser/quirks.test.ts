import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sampleConfig } from '../../local/stack.js';
import { startFixture, type Fixture } from '../integration/stack-fixture.js';
import { hasChromium, newContext, PAGE_SHOWS, releaseBrowser, sharedBrowser } from './chromium.js';


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
