import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFixture, type Fixture } from '../integration/stack-fixture.js';
import { hasChromium, newContext, PAGE_SHOWS, releaseBrowser, screenshot, sharedBrowser } from './chromium.js';



let fixture: Fixture;
let browser: Browser;

beforeAll(async () => {
  if (!hasChromium) return;
  fixture = await startFixture();
  browser = await sharedBrowser();
});
afterAll(async () => {
  await releaseBrowser(browser);
  await fixture?.close();
});

describe.skipIf(!hasChromium)('a person clicking through a launch in Chromium', () => {
  it('"Launch app" on a patient in the sandbox EHR opens the demo app on that patient, via a real EHR launch', async () => {
    const context = await newContext(browser);
    const page = await context.newPage();
    const patient = fixture.stack.sandbox!.patients[0]!;

    await page.goto(`${fixture.stack.sandbox!.url}/`);
    await page.locator('tr', { hasText: patient.name }).getByRole('link', { name: 'Launch app' }).click();
    await page.waitForURL(`${fixture.stack.appUrl}**`);
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
    await context.close();
  });

  it('the "Patient portal" link runs a standalone launch: the patient signs in and sees their own record', async () => {
    const context = await newContext(browser);
    const page = await context.newPage();
    const patient = fixture.stack.sandbox!.patients[1]!;

    await page.goto(`${fixture.stack.sandbox!.url}/`);
    await page.getByRole('link', { name: 'Patient portal' }).click();
    await page.getByRole('button', { name: new RegExp(`Sign in as ${patient.name.split(' ')[0]}`) }).click();
    await page.waitForURL(`${fixture.stack.appUrl}**`);
    await expect.poll(() => page.locator('#patient-name').textContent(), PAGE_SHOWS).toBe(patient.name);
    expect(await page.locator('#context-list').textContent()).toContain('standalone');
    // A patient-facing launch asks the app for its own patient banner.
    expect(await page.locator('#banner').getAttribute('class')).not.toContain('compact');
    await screenshot(page, 'standalone-launch');

    // Signing out ends the session: the app says so, and the session is gone.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await expect.poll(() => page.locator('#status').textContent(), PAGE_SHOWS).toContain('Signed out');
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
