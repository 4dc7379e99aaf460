import { createHash } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { EMPTY_PATIENT } from '../../local/sandbox/index.js';
import { sampleConfig } from '../../local/stack.js';
import { BrowserClient } from './browser-client.js';
import { ehrLaunch, sessionIdFrom, startFixture, standaloneLaunch, type Fixture } from './stack-fixture.js';

/*
 * What OUR side does with the EHR behaviours real deployments meet, switched on in the sandbox
 * (`sandbox.quirks`), over real HTTP: the local stack, the sandbox EHR, no mocks.
 */

let fixture: Fixture;

beforeAll(async () => {
  fixture = await startFixture({
    configure: ({ apiUrl, sandbox }) => {
      const config = sampleConfig(apiUrl, sandbox!.fhirBaseUrl) as { issuers: Array<Record<string, unknown>> };
      // For the SMART v1 case: the sandbox's OpenID issuer, used only when discovery names none.
      config.issuers[0]!.openidIssuer = sandbox!.issuer;
      return config;
    },
  });
});
afterAll(async () => {
  await fixture?.close();
});
beforeEach(() => {
  fixture.stack.sandbox!.clearQuirks();
  // Discovery is cached per container: each case starts from what the sandbox serves now.
  fixture.stack.deps.discovery?.clear();
});

const api = () => fixture.stack.apiUrl;
const sandbox = () => fixture.stack.sandbox!;

async function signedIn(patient = sandbox().patients[0]!.id) {
  const browser = new BrowserClient();
  const nav = await ehrLaunch(fixture, browser, patient);
  const sessionId = sessionIdFrom(nav);
  const url = `${api()}/sessions/${sessionId}`;
  const context = (await browser.call(url)).body as Record<string, unknown>;
  return { browser, nav, sessionId, url, context };
}

describe('sandbox quirks: what smart-launch does with them', () => {
  it('no S256 in discovery: the launch page says PKCE_UNSUPPORTED and nothing is redirected (SMART-DISC-04)', async () => {
    sandbox().quirks.noS256 = true;
    const browser = new BrowserClient();

    const nav = await ehrLaunch(fixture, browser, sandbox().patients[0]!.id);

    expect(nav.response.status).toBe(502);
    expect(nav.url.startsWith(`${api()}/launch?`)).toBe(true);
    expect(nav.body).toContain('PKCE_UNSUPPORTED');
    expect(nav.body).toContain('code_challenge_methods_supported');
    expect(nav.hops.some((hop) => hop.url.startsWith(sandbox().issuer))).toBe(false);
  });

  it('no well-known file: the launch works through the v1 CapabilityStatement and the id_token is verified with the openidIssuer JWKS (SMART-DISC-07)', async () => {
    sandbox().quirks.noWellKnown = true;

    const { context, nav } = await signedIn();

    expect(context).toMatchObject({ patient: sandbox().patients[0]!.id, fhirUser: `${sandbox().fhirBaseUrl}/Practitioner/${sandbox().practitioner.id}` });
    expect(fixture.observed.requests).toContain(`${sandbox().fhirBaseUrl}/metadata`);
    const authorize = new URL(nav.hops.find((h) => h.url.startsWith(`${api()}/launch?`))!.location!);
    expect(authorize.searchParams.get('code_challenge_method')).toBe('S256');
    expect(authorize.searchParams.get('state')).toBeTruthy();
  });

  it('relative endpoints in discovery: resolved against the FHIR base; sign-in, FHIR reads and revocation work (SMART-DISC-05)', async () => {
    sandbox().quirks.relativeEndpoints = true;
    const before = sandbox().stats.revocations;

    const { browser, url, nav } = await signedIn();

    expect(new URL(nav.hops.find((h) => h.url.startsWith(`${api()}/launch?`))!.location!).href.startsWith(`${sandbox().issuer}/auth?`)).toBe(true);
    expect((await browser.call(`${url}/fhir/Patient/${sandbox().patients[0]!.id}`)).status).toBe(200);
    const logout = await browser.call(`${url}/logout`, { method: 'POST' });
    expect(logout.body).toEqual({ loggedOut: true, revocation: 'revoked' });
    expect(sandbox().stats.revocations).toBe(before + 1);
  });

  it('no revocation endpoint: logout deletes the session and answers revocation "not-offered" (SMART-REVOKE-02)', async () => {
    sandbox().quirks.noRevocation = true;
    const before = sandbox().stats.revocations;
    const { browser, url } = await signedIn();

    const logout = await browser.call(`${url}/logout`, { method: 'POST' });

    expect(logout.status).toBe(200);
    expect(logout.body).toEqual({ loggedOut: true, revocation: 'not-offered' });
    expect(sandbox().stats.revocations).toBe(before);
    expect((await browser.call(url)).status).toBe(401);
  });

  it('v1-only EHR: the launch asks for v1 scopes (auto syntax), the grant is v1, and the proxy reads with it (SMART-SCOPE-02)', async () => {
    sandbox().quirks.v1Only = true;

    const { browser, url, nav, context } = await signedIn();

    const authorize = new URL(nav.hops.find((h) => h.url.startsWith(`${api()}/launch?`))!.location!);
    expect(authorize.searchParams.get('scope')).toBe('launch openid fhirUser patient/*.read offline_access');
    expect(String(context.scope).split(' ')).toContain('patient/*.read');
    expect((await browser.call(`${url}/fhir/Patient/${sandbox().patients[0]!.id}`)).status).toBe(200);
  });

  it('narrower scopes granted than asked: the session shows the granted scope, cannot refresh, and the proxy refuses the rest (SMART-SCOPE-07, CERT-01)', async () => {
    sandbox().quirks.narrowScopes = true;
    const patient = sandbox().patients[1]!.id;

    const { browser, url, context } = await signedIn(patient);

    const granted = String(context.scope).split(' ');
    expect(granted).toContain('patient/Patient.rs');
    expect(granted).not.toContain('patient/*.rs');
    expect(granted).not.toContain('offline_access');
    expect(context.canRefresh).toBe(false);
    expect((await browser.call(`${url}/fhir/Patient/${patient}`)).status).toBe(200);
    expect((await browser.call(`${url}/fhir/Observation?patient=${patient}`)).status).toBe(403);
  });

  it('no refresh token: canRefresh is false and a refresh answers REFRESH_NOT_AVAILABLE (SMART-SCOPE-12, CERT-03)', async () => {
    sandbox().quirks.noRefreshToken = true;

    const { browser, url, context } = await signedIn();

    expect(context.canRefresh).toBe(false);
    expect(String(context.scope).split(' ')).not.toContain('offline_access');
    const refresh = await browser.call(`${url}/refresh`, { method: 'POST' });
    expect(refresh.status).toBe(409);
    expect(refresh.body).toMatchObject({ error: { code: 'REFRESH_NOT_AVAILABLE' } });
  });

  it('no patient context in the token response: the session has no patient, and the demo app says so (SMART-CTX-01)', async () => {
    sandbox().quirks.noPatientContext = true;

    const { context } = await signedIn();

    expect(context.patient).toBeUndefined();
    expect(context.encounter).toBeUndefined();
    expect(context.fhirUser).toBeTruthy();
    const app = await fetch(new URL('app.js', fixture.stack.appUrl));
    // What the app shows for it (clicked through in Chromium by test/browser/browser.test.ts).
    expect(await app.text()).toContain('This launch has no patient in context.');
  });

  it('a patient with no data: the session has that patient, the proxy answers empty searches, not errors', async () => {
    sandbox().quirks.emptyPatient = true;

    const { browser, url, context } = await signedIn(EMPTY_PATIENT.id);

    expect(context.patient).toBe(EMPTY_PATIENT.id);
    expect(context.encounter).toBeUndefined();
    const patient = await browser.call(`${url}/fhir/Patient/${EMPTY_PATIENT.id}`);
    expect(patient.body).toMatchObject({ resourceType: 'Patient', id: EMPTY_PATIENT.id });
    const observations = await browser.call(`${url}/fhir/Observation?patient=${EMPTY_PATIENT.id}`);
    expect(observations.status).toBe(200);
    expect(observations.body).toMatchObject({ resourceType: 'Bundle', type: 'searchset' });
    expect((observations.body as { entry?: unknown[] }).entry ?? []).toHaveLength(0);
  });
});

describe('authorize by POST over real HTTP (SMART-AUTHZ-10)', () => {
  let post: Fixture;

  beforeAll(async () => {
    post = await startFixture({
      configure: ({ apiUrl, sandbox: sb }) => {
        const config = sampleConfig(apiUrl, sb!.fhirBaseUrl) as { issuers: Array<Record<string, unknown>> };
        config.issuers[0]!.authorizeMethod = 'POST';
        return config;
      },
    });
  });
  afterAll(async () => {
    await post?.close();
  });

  it('answers a CSP-safe auto-submitting form whose POST signs the patient in, landing in the app', async () => {
    const browser = new BrowserClient();

    const page = await browser.navigate(`${post.stack.apiUrl}/launch`);

    expect(page.response.status).toBe(200);
    expect(page.response.headers.get('content-type')).toMatch(/^text\/html/);
    const csp = page.response.headers.get('content-security-policy') ?? '';
    const script = /<script>([^<]*)<\/script>/.exec(page.body)?.[1] ?? '';
    expect(csp).toContain(`script-src 'sha256-${createHash('sha256').update(script).digest('base64')}'`);
    expect(csp).toMatch(/default-src 'none'/);
    expect(csp).not.toContain('unsafe-inline\'; script');
    expect(page.body).toContain('<noscript>');
    const action = /<form id="authorize" method="post" action="([^"]+)">/.exec(page.body)?.[1];
    expect(action).toBe(`${post.stack.sandbox!.issuer}/auth`);
    const fields = Object.fromEntries([...page.body.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)].map((m) => [m[1]!, m[2]!.replace(/&#(\d+);/g, (_, c: string) => String.fromCharCode(Number(c)))]));
    expect(fields).toMatchObject({ response_type: 'code', code_challenge_method: 'S256', aud: post.stack.sandbox!.fhirBaseUrl });
    expect(browser.setCookieLines.some((c) => c.line.startsWith('__Host-smart-launch='))).toBe(true);

    const login = await browser.submitForm(action!, fields);
    const loginAction = login.body.match(/<form method="post" action="([^"]+\/login)">/)?.[1];
    expect(loginAction).toBeTruthy();
    const patient = post.stack.sandbox!.patients[0]!.id;
    const done = await browser.submitForm(new URL(loginAction!.replace(/&#(\d+);/g, (_, c: string) => String.fromCharCode(Number(c))), login.url).href, {
      account: `patient-${patient}`,
    });
    const sessionId = sessionIdFrom(done);
    const context = (await browser.call(`${post.stack.apiUrl}/sessions/${sessionId}`)).body as Record<string, unknown>;
    expect(context.patient).toBe(patient);
  });

  it('an EHR launch by POST lands in the app too', async () => {
    const browser = new BrowserClient();
    const first = await ehrLaunch(post, browser, post.stack.sandbox!.patients[2]!.id);
    expect(first.response.status).toBe(200);
    const action = /action="([^"]+)"/.exec(first.body)![1]!;
    const fields = Object.fromEntries([...first.body.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)].map((m) => [m[1]!, m[2]!.replace(/&#(\d+);/g, (_, c: string) => String.fromCharCode(Number(c)))]));

    const done = await browser.submitForm(action, fields);

    expect(sessionIdFrom(done)).toBeTruthy();
  });
});

describe('the standalone launch with quirks', () => {
  it('a v1-only EHR with narrowed scopes: the patient signs in and the session shows what was granted', async () => {
    Object.assign(sandbox().quirks, { v1Only: true, narrowScopes: true });
    const browser = new BrowserClient();
    const patient = sandbox().patients[2]!.id;

    const nav = await standaloneLaunch(fixture, browser, patient);

    const context = (await browser.call(`${api()}/sessions/${sessionIdFrom(nav)}`)).body as Record<string, unknown>;
    expect(context.patient).toBe(patient);
    expect(String(context.scope).split(' ')).toEqual(expect.arrayContaining(['patient/Patient.read']));
    expect(context.canRefresh).toBe(false);
  });
});
