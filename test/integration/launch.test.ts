import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSandboxData } from '../../local/sandbox/data.js';
import { BrowserClient } from './browser-client.js';
import { ehrLaunch, sessionIdFrom, startFixture, standaloneLaunch, type Fixture } from './stack-fixture.js';

let fixture: Fixture;

beforeAll(async () => {
  fixture = await startFixture();
});
afterAll(async () => {
  await fixture?.close();
});

const patients = () => fixture.stack.sandbox!.patients;

describe('EHR launch over real HTTP against the sandbox EHR', () => {
  it('lands in the app with a per-launch session id and a __Host- binding cookie (invariant 2, SMART-LAUNCH-01)', async () => {
    // Arrange
    const browser = new BrowserClient();
    const patient = patients()[0]!;

    // Act
    const nav = await ehrLaunch(fixture, browser, patient.id);

    // Assert
    const sessionId = sessionIdFrom(nav);
    expect(nav.finalLocation).toBe(`${fixture.stack.appUrl}#session=${sessionId}`);
    const launchHop = nav.hops.find((h) => h.url.startsWith(`${fixture.stack.apiUrl}/launch?`));
    expect(launchHop?.status).toBe(302);
    const authorize = new URL(launchHop!.location!);
    expect(authorize.searchParams.get('aud')).toBe(fixture.stack.sandbox!.fhirBaseUrl);
    expect(authorize.searchParams.get('code_challenge_method')).toBe('S256');
    const cookie = browser.setCookieLines.find((c) => c.host === 'localhost' && c.line.startsWith('__Host-smart-launch='));
    expect(cookie?.line).toMatch(/; Path=\/; Secure; HttpOnly; SameSite=Lax/);
    expect(cookie?.line).not.toMatch(/Domain=/i);
  });

  it('answers the launch context of GET /sessions/{id} and never a token (invariant 1)', async () => {
    const browser = new BrowserClient();
    const patient = patients()[1]!;
    const sessionId = sessionIdFrom(await ehrLaunch(fixture, browser, patient.id));

    const { status, body, response } = await browser.call(`${fixture.stack.apiUrl}/sessions/${sessionId}`);

    expect(status).toBe(200);
    expect(response.headers.get('cache-control')).toBe('no-store');
    const context = body as Record<string, unknown>;
    expect(context).toMatchObject({
      patient: patient.id,
      fhirBaseUrl: `${fixture.stack.apiUrl}/sessions/${sessionId}/fhir`,
      launchMode: 'ehr',
      need_patient_banner: false,
      fhirUser: `${fixture.stack.sandbox!.fhirBaseUrl}/Practitioner/${fixture.stack.sandbox!.practitioner.id}`,
      canRefresh: true,
    });
    expect(typeof context.encounter).toBe('string');
    expect(String(context.scope).split(' ')).toEqual(expect.arrayContaining(['launch', 'openid', 'fhirUser', 'patient/*.rs']));
    expect(Object.keys(context).join(' ')).not.toMatch(/token/i);
  });

  it('reads the patient and pages every observation through the proxy; next links point at the proxy (SMART-FHIR-01)', async () => {
    const browser = new BrowserClient();
    const patient = patients()[2]!;
    const sessionId = sessionIdFrom(await ehrLaunch(fixture, browser, patient.id));
    const base = `${fixture.stack.apiUrl}/sessions/${sessionId}/fhir`;

    const read = await browser.call(`${base}/Patient/${patient.id}`);
    expect(read.status).toBe(200);
    expect(read.response.headers.get('content-type')).toMatch(/application\/fhir\+json/);
    expect(read.body).toMatchObject({ resourceType: 'Patient', id: patient.id, birthDate: patient.birthDate });

    let next: string | undefined = `${base}/Observation?patient=${patient.id}&_count=50`;
    const ids = new Set<string>();
    let pages = 0;
    while (next) {
      expect(next.startsWith(`${base}/`)).toBe(true);
      const page = await browser.call(next);
      expect(page.status).toBe(200);
      const bundle = page.body as { entry?: Array<{ fullUrl: string; resource: { id: string } }>; link?: Array<{ relation: string; url: string }> };
      for (const entry of bundle.entry ?? []) {
        expect(entry.fullUrl.startsWith(`${base}/Observation/`)).toBe(true);
        ids.add(entry.resource.id);
      }
      next = bundle.link?.find((l) => l.relation === 'next')?.url;
      pages++;
    }
    expect(pages).toBeGreaterThanOrEqual(3);
    expect(ids.size).toBeGreaterThan(100);
    expect(ids.size).toBe(directObservationCount(patient.id));
  });
});

/** What the sandbox's FHIR server holds for that patient (the seeded data is deterministic). */
function directObservationCount(patientId: string): number {
  return generateSandboxData().observations.filter((o) => o.subject?.reference === `Patient/${patientId}`).length;
}

describe('standalone launch', () => {
  it('signs the patient in at the sandbox and opens the app on their own record (SMART-LAUNCH-04)', async () => {
    const browser = new BrowserClient();
    const patient = patients()[1]!;

    const nav = await standaloneLaunch(fixture, browser, patient.id);

    const sessionId = sessionIdFrom(nav);
    const launchHop = nav.hops[0];
    expect(launchHop).toBeDefined();
    const { body } = await browser.call(`${fixture.stack.apiUrl}/sessions/${sessionId}`);
    expect(body).toMatchObject({
      patient: patient.id,
      launchMode: 'standalone',
      need_patient_banner: true,
      fhirUser: `${fixture.stack.sandbox!.fhirBaseUrl}/Patient/${patient.id}`,
    });
    expect(String((body as { scope: string }).scope).split(' ')).toContain('launch/patient');
  });
});
