import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sampleConfig } from '../../local/stack.js';
import { BrowserClient } from './browser-client.js';
import { ehrLaunch, sessionIdFrom, startFixture, type Fixture } from './stack-fixture.js';

/** The app lives on another origin than the API, as a deployed customer's app usually does. */
const APP_ORIGIN = 'http://127.0.0.1:4999';
let fixture: Fixture;

beforeAll(async () => {
  fixture = await startFixture({
    configure: ({ apiUrl, sandbox }) => ({ ...(sampleConfig(apiUrl, sandbox!.fhirBaseUrl) as object), app: { url: `${APP_ORIGIN}/app/` } }),
  });
});
afterAll(async () => {
  await fixture?.close();
});

describe('CORS for an app on another origin (BFF-06)', () => {
  it('answers the preflight of the app origin with credentials allowed, for the session and proxy routes', async () => {
    const browser = new BrowserClient();
    const sessionId = sessionIdFrom(await ehrLaunch(fixture, browser, fixture.stack.sandbox!.patients[0]!.id));

    for (const path of [`/sessions/${sessionId}`, `/sessions/${sessionId}/logout`, `/sessions/${sessionId}/fhir/Observation`, `/sessions/${sessionId}/fhir`]) {
      const preflight = await fetch(`${fixture.stack.apiUrl}${path}`, {
        method: 'OPTIONS',
        headers: { origin: APP_ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
      });
      expect(preflight.status, path).toBe(204);
      expect(preflight.headers.get('access-control-allow-origin')).toBe(APP_ORIGIN);
      expect(preflight.headers.get('access-control-allow-credentials')).toBe('true');
      expect(preflight.headers.get('access-control-allow-methods')).toContain('POST');
      expect(preflight.headers.get('access-control-allow-headers')).toContain('content-type');
    }
  });

  it('lets the app origin read answers and errors with credentials; never answers * (BFF-06)', async () => {
    const browser = new BrowserClient();
    const patient = fixture.stack.sandbox!.patients[0]!;
    const sessionId = sessionIdFrom(await ehrLaunch(fixture, browser, patient.id));

    const context = await browser.call(`${fixture.stack.apiUrl}/sessions/${sessionId}`, { headers: { origin: APP_ORIGIN } });
    const read = await browser.call(`${fixture.stack.apiUrl}/sessions/${sessionId}/fhir/Patient/${patient.id}`, { headers: { origin: APP_ORIGIN } });
    const refused = await new BrowserClient().call(`${fixture.stack.apiUrl}/sessions/${sessionId}`, { headers: { origin: APP_ORIGIN } });

    for (const answer of [context, read, refused]) {
      expect(answer.response.headers.get('access-control-allow-origin')).toBe(APP_ORIGIN);
      expect(answer.response.headers.get('access-control-allow-credentials')).toBe('true');
      expect(answer.response.headers.get('access-control-expose-headers')).toContain('x-correlation-id');
      expect(answer.response.headers.get('vary')).toContain('Origin');
    }
    expect(context.status).toBe(200);
    expect(read.status).toBe(200);
    expect(refused.status).toBe(401);
  });

  it('gives another origin no CORS headers, so its scripts cannot read the answers', async () => {
    const browser = new BrowserClient();
    const sessionId = sessionIdFrom(await ehrLaunch(fixture, browser, fixture.stack.sandbox!.patients[0]!.id));

    const preflight = await fetch(`${fixture.stack.apiUrl}/sessions/${sessionId}`, { method: 'OPTIONS', headers: { origin: 'https://evil.example' } });
    const answer = await browser.call(`${fixture.stack.apiUrl}/sessions/${sessionId}`, { headers: { origin: 'https://evil.example' } });

    expect(preflight.headers.get('access-control-allow-origin')).toBeNull();
    expect(answer.response.headers.get('access-control-allow-origin')).toBeNull();
    expect(answer.response.headers.get('access-control-allow-credentials')).toBeNull();
  });
});
