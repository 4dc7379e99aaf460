import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BrowserClient } from './browser-client.js';
import { ehrLaunch, itemTexts, scanTable, sessionIdFrom, startFixture, standaloneLaunch, type Fixture } from './stack-fixture.js';

let fixture: Fixture;
let decoy: Server;
let decoyHits = 0;
let decoyUrl = '';

beforeAll(async () => {
  fixture = await startFixture();
  // An "EHR" that is not on the customer's list: it must never be contacted.
  decoy = createServer((_req, res) => {
    decoyHits++;
    res.end('{}');
  });
  await new Promise<void>((done) => decoy.listen(0, '127.0.0.1', () => done()));
  const address = decoy.address();
  decoyUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/fhir`;
});
afterAll(async () => {
  await fixture?.close();
  await new Promise<void>((done) => decoy?.close(() => done()));
});

const api = () => fixture.stack.apiUrl;
const patients = () => fixture.stack.sandbox!.patients;
const sessionCount = async () => (await scanTable(fixture)).filter((i) => i.pk?.S?.startsWith('ses#')).length;

function errorCodeOf(html: string): string | undefined {
  return html.match(/Error code <code>([A-Z_]+)<\/code>/)?.[1];
}

describe('per-launch sessions (SMART-LAUNCH-08, BFF-16)', () => {
  it('keeps two launches for two patients in one browser apart', async () => {
    const browser = new BrowserClient();
    const [a, b] = [patients()[0]!, patients()[1]!];

    const first = sessionIdFrom(await ehrLaunch(fixture, browser, a.id));
    const second = sessionIdFrom(await ehrLaunch(fixture, browser, b.id));

    expect(first).not.toBe(second);
    const ctxA = await browser.call(`${api()}/sessions/${first}`);
    const ctxB = await browser.call(`${api()}/sessions/${second}`);
    expect(ctxA.body).toMatchObject({ patient: a.id });
    expect(ctxB.body).toMatchObject({ patient: b.id });
    const readA = await browser.call(`${api()}/sessions/${first}/fhir/Patient/${a.id}`);
    const readB = await browser.call(`${api()}/sessions/${second}/fhir/Patient/${b.id}`);
    expect(readA.body).toMatchObject({ id: a.id });
    expect(readB.body).toMatchObject({ id: b.id });
    // Session A's patient-level token cannot be used for patient B: the EHR refuses it.
    const cross = await browser.call(`${api()}/sessions/${first}/fhir/Patient/${b.id}`);
    expect(cross.status).toBe(403);
  });

  it('opens nothing with the session id alone in another browser (invariant 2)', async () => {
    const owner = new BrowserClient();
    const sessionId = sessionIdFrom(await ehrLaunch(fixture, owner, patients()[0]!.id));
    const thief = new BrowserClient();

    const context = await thief.call(`${api()}/sessions/${sessionId}`);
    const proxied = await thief.call(`${api()}/sessions/${sessionId}/fhir/Patient/${patients()[0]!.id}`);
    thief.setCookie('localhost', '__Host-smart-launch', 'A'.repeat(43));
    const forged = await thief.call(`${api()}/sessions/${sessionId}`);

    expect(context.status).toBe(401);
    expect(context.body).toMatchObject({ error: { code: 'SESSION_NOT_OPEN' } });
    expect(proxied.status).toBe(401);
    expect(proxied.body).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ details: { coding: [{ code: 'SESSION_NOT_OPEN' }] } }] });
    expect(forged.status).toBe(401);
  });

  it('ends a session on logout; the id then opens nothing', async () => {
    const browser = new BrowserClient();
    const sessionId = sessionIdFrom(await ehrLaunch(fixture, browser, patients()[0]!.id));

    const logout = await browser.call(`${api()}/sessions/${sessionId}/logout`, { method: 'POST' });
    const after = await browser.call(`${api()}/sessions/${sessionId}`);

    expect(logout.status).toBe(200);
    expect(after.status).toBe(401);
    expect(after.body).toMatchObject({ error: { code: 'SESSION_NOT_OPEN' } });
  });
});

describe('one answer for "sign in again" on every /sessions/{id}/… route (invariant 2)', () => {
  /** The answer without its correlation id (the one field that differs per request). */
  function shape(answer: { status: number; body: unknown; response: Response }): unknown {
    const body = JSON.parse(JSON.stringify(answer.body)) as Record<string, unknown>;
    const error = body.error as Record<string, unknown> | undefined;
    if (error) delete error.correlationId;
    const issue = (body.issue as Array<Record<string, unknown>> | undefined)?.[0];
    if (issue) issue.diagnostics = String(issue.diagnostics).replace(/\(correlation id [^)]*\)/, '');
    return { status: answer.status, contentType: answer.response.headers.get('content-type'), body };
  }

  it('answers a live id without its cookie, a forged cookie, an unknown id, a logged-out id and an expired one alike: 401 SESSION_NOT_OPEN', async () => {
    const owner = new BrowserClient();
    const live = sessionIdFrom(await ehrLaunch(fixture, owner, patients()[0]!.id));
    const ended = sessionIdFrom(await ehrLaunch(fixture, owner, patients()[0]!.id));
    expect((await owner.call(`${api()}/sessions/${ended}/logout`, { method: 'POST' })).status).toBe(200);
    const unknown = 'A'.repeat(43);
    const forged = new BrowserClient();
    forged.setCookie('localhost', '__Host-smart-launch', 'B'.repeat(43));

    const routes: Array<[method: string, path: (id: string) => string]> = [
      ['GET', (id) => `${api()}/sessions/${id}`],
      ['POST', (id) => `${api()}/sessions/${id}/refresh`],
      ['POST', (id) => `${api()}/sessions/${id}/logout`],
      ['GET', (id) => `${api()}/sessions/${id}/fhir/Patient/${patients()[0]!.id}`],
    ];
    for (const [method, path] of routes) {
      const answers = [
        await new BrowserClient().call(path(live), { method }),
        await forged.call(path(live), { method }),
        await new BrowserClient().call(path(unknown), { method }),
        await owner.call(path(unknown), { method }),
        await owner.call(path(ended), { method }),
      ];
      const shapes = answers.map(shape);
      for (const other of shapes.slice(1)) expect(other).toEqual(shapes[0]);
      expect(answers[0]!.status).toBe(401);
      expect(JSON.stringify(answers[0]!.body)).toContain('SESSION_NOT_OPEN');
    }
    // The live session is still open for its own browser.
    expect((await owner.call(`${api()}/sessions/${live}`)).status).toBe(200);
    // Only a malformed id answers otherwise.
    expect((await owner.call(`${api()}/sessions/not-a-session-id`)).status).toBe(400);
  });
});

describe('launch input (SMART-LAUNCH-02, invariant 3)', () => {
  it('refuses an unknown iss with a 4xx page: never fetched, never redirected to', async () => {
    const browser = new BrowserClient();
    const before = fixture.observed.requests.length;

    const nav = await browser.navigate(`${api()}/launch?iss=${encodeURIComponent(decoyUrl)}&launch=abc`);

    expect(nav.response.status).toBe(403);
    expect(nav.response.headers.get('location')).toBeNull();
    expect(errorCodeOf(nav.body)).toBe('ISSUER_NOT_ALLOWED');
    expect(nav.body).not.toContain(decoyUrl);
    expect(decoyHits).toBe(0);
    expect(fixture.observed.requests.slice(before)).toEqual([]);
  });

  it('refuses an iss that differs from the configured one only by a trailing slash', async () => {
    const nav = await new BrowserClient().navigate(`${api()}/launch?iss=${encodeURIComponent(`${fixture.stack.sandbox!.fhirBaseUrl}/`)}&launch=x`);
    expect(nav.response.status).toBe(403);
    expect(errorCodeOf(nav.body)).toBe('ISSUER_NOT_ALLOWED');
  });

  it.each([
    ['launch without iss', '/launch?launch=abc', 400, 'LAUNCH_MISSING_ISS'],
    ['a repeated iss', `/launch?iss=a&iss=b`, 400, 'INVALID_REQUEST'],
    ['a callback without state', '/callback?code=abc', 400, 'CALLBACK_INVALID'],
    ['a callback without code or error', '/callback?state=abc', 400, 'CALLBACK_INVALID'],
    ['a callback with an unknown state', '/callback?code=abc&state=never-issued', 400, 'STATE_UNKNOWN'],
    ['a callback with a control character', '/callback?code=a%00b&state=x', 400, 'CALLBACK_INVALID'],
  ])('answers %s with a clear page and a stable code', async (_name, path, status, code) => {
    const nav = await new BrowserClient().navigate(`${api()}${path}`);
    expect(nav.response.status).toBe(status);
    expect(nav.response.headers.get('content-type')).toMatch(/text\/html/);
    expect(errorCodeOf(nav.body)).toBe(code);
    expect(nav.body).toMatch(/correlation id <code>[0-9a-f-]{36}<\/code>/);
    expect(nav.body).not.toMatch(/at .*\.ts:\d+/);
  });

  it('escapes hostile input on the error page (SMART-LAUNCH-07)', async () => {
    const nav = await new BrowserClient().navigate(`${api()}/callback?state=x&error=${encodeURIComponent('<script>alert(1)</script>')}`);
    expect(nav.response.status).toBe(400);
    expect(nav.body).not.toContain('<script>');
  });
});

describe('callback protection (invariant 4)', () => {
  async function authorizeOnly(browser: BrowserClient, patient: string): Promise<URL> {
    const sandbox = fixture.stack.sandbox!;
    // Follow the chain until the sandbox sends the browser back to our callback; stop before it.
    let url = `${sandbox.url}/ehr/launch?patient=${patient}`;
    for (let i = 0; i < 20; i++) {
      const response = await browser.fetch(url);
      const location = response.headers.get('location');
      await response.arrayBuffer();
      if (!location) throw new Error(`no redirect at ${url}`);
      const next = new URL(location, url);
      if (next.href.startsWith(`${api()}/callback`)) return next;
      url = next.href;
    }
    throw new Error('never reached the callback');
  }

  it('refuses a tampered state and stores nothing (SMART-CB-01)', async () => {
    const browser = new BrowserClient();
    const callback = await authorizeOnly(browser, patients()[0]!.id);
    const before = await sessionCount();
    callback.searchParams.set('state', `${callback.searchParams.get('state')}x`);

    const nav = await browser.navigate(callback.href);

    expect(nav.response.status).toBe(400);
    expect(errorCodeOf(nav.body)).toBe('STATE_UNKNOWN');
    expect(await sessionCount()).toBe(before);
  });

  it('accepts a state once: a replayed callback gets a 4xx and stores nothing', async () => {
    const browser = new BrowserClient();
    const callback = await authorizeOnly(browser, patients()[0]!.id);
    const first = await browser.navigate(callback.href);
    sessionIdFrom(first);
    const before = await sessionCount();

    const replay = await browser.navigate(callback.href);

    expect(replay.response.status).toBe(400);
    expect(errorCodeOf(replay.body)).toBe('STATE_UNKNOWN');
    expect(await sessionCount()).toBe(before);
  });

  it('refuses a callback completed in another browser (SMART-CB-07)', async () => {
    const callback = await authorizeOnly(new BrowserClient(), patients()[0]!.id);
    const before = await sessionCount();

    const nav = await new BrowserClient().navigate(callback.href);

    expect(nav.response.status).toBe(403);
    expect(errorCodeOf(nav.body)).toBe('BROWSER_MISMATCH');
    expect(nav.body).toContain('Start again');
    expect(await sessionCount()).toBe(before);
  });

  it('refuses an authorization response whose RFC 9207 iss is another issuer (SMART-CB-03)', async () => {
    const browser = new BrowserClient();
    const callback = await authorizeOnly(browser, patients()[0]!.id);
    expect(callback.searchParams.get('iss')).toBe(fixture.stack.sandbox!.issuer);
    callback.searchParams.set('iss', 'https://attacker.example/oauth');
    const before = await sessionCount();

    const nav = await browser.navigate(callback.href);

    expect(nav.response.status).toBe(400);
    expect(errorCodeOf(nav.body)).toBe('ISSUER_MISMATCH');
    expect(await sessionCount()).toBe(before);
  });

  it('shows a start-again page when the patient cancels at the EHR (SMART-CB-02)', async () => {
    const browser = new BrowserClient();
    const login = await browser.navigate(`${api()}/launch`);
    const cancel = login.body.match(/<form method="post" action="([^"]+\/cancel)">/)?.[1];
    expect(cancel).toBeDefined();

    const nav = await browser.submitForm(new URL(cancel!, login.url).href, {});

    expect(nav.response.status).toBe(403);
    expect(errorCodeOf(nav.body)).toBe('AUTHORIZATION_DENIED');
    expect(nav.body).toContain(`href="${api()}/launch?iss=`);
  });
});

describe('id_token verification (invariant 5)', () => {
  it.each(['wrong-aud', 'wrong-nonce', 'wrong-iss', 'expired', 'bad-signature'] as const)(
    'refuses an id_token with %s and stores no session',
    async (fault) => {
      const sandbox = fixture.stack.sandbox!;
      sandbox.faults.idToken = fault;
      try {
        const before = await sessionCount();
        const nav = await ehrLaunch(fixture, new BrowserClient(), patients()[0]!.id);
        expect(nav.response.status).toBe(401);
        expect(errorCodeOf(nav.body)).toBe('ID_TOKEN_INVALID');
        expect(await sessionCount()).toBe(before);
      } finally {
        sandbox.faults.idToken = undefined;
      }
    },
  );
});

describe('secrets never leave the server (invariant 1)', () => {
  it('puts no token, code, verifier, client secret, session id or cookie value in a response body or a stored attribute', async () => {
    const browser = new BrowserClient();
    const ehr = sessionIdFrom(await ehrLaunch(fixture, browser, patients()[2]!.id));
    const standalone = sessionIdFrom(await standaloneLaunch(fixture, browser, patients()[2]!.id));

    await browser.call(`${api()}/sessions/${ehr}`);
    await browser.call(`${api()}/sessions/${standalone}/fhir/Observation?patient=${patients()[2]!.id}&_count=5`);
    const binding = browser.cookies('localhost').get('__Host-smart-launch');
    expect(binding).toBeDefined();

    const secrets = [...fixture.observed.secrets];
    expect(secrets.length).toBeGreaterThanOrEqual(8); // codes, verifiers, access/refresh/id tokens, Basic credentials
    const stored = itemTexts(await scanTable(fixture));
    for (const secret of [...secrets, ehr, standalone, binding!, 'local-sandbox-secret']) {
      for (const text of stored) expect(text.includes(secret), 'stored attribute holds a secret').toBe(false);
    }
    for (const secret of secrets) {
      for (const text of browser.transcript) expect(text.includes(secret), 'a response carried a secret').toBe(false);
    }
  });
});

describe('FHIR proxy input (invariant 7)', () => {
  it.each([
    ['..%2f..%2fadmin'],
    ['Patient/..'],
    ['Patient/../../../oauth/token'],
    ['./Patient/1'],
    ['%2e%2e/secret'],
    ['Patient%2F123'],
    ['Patient/%252e%252e'],
    ['Patient\\..\\x'],
    ['Patient//1'],
    ['http://evil.example/Patient/1'],
    ['%2F%2Fevil.example/Patient'],
    ['Patient/1@evil.example'],
  ])('refuses the path %s with 400 and forwards nothing', async (path) => {
    const browser = new BrowserClient();
    const sessionId = sessionIdFrom(await ehrLaunch(fixture, browser, patients()[0]!.id));
    const before = fixture.observed.requests.length;

    const result = await browser.rawCall(api(), `/sessions/${sessionId}/fhir/${path}`);

    expect(result.status).toBe(400);
    expect(result.body).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ code: 'security', details: { coding: [{ code: 'PROXY_PATH_REJECTED' }] } }] });
    expect(fixture.observed.requests.slice(before)).toEqual([]);
  });

  it('refuses a malformed session id with 400', async () => {
    const result = await new BrowserClient().call(`${api()}/sessions/not-a-session/fhir/Patient/1`);
    expect(result.status).toBe(400);
    expect(result.body).toMatchObject({ issue: [{ details: { coding: [{ code: 'SESSION_ID_MALFORMED' }] } }] });
  });
});
