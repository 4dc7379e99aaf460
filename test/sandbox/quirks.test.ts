import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { EMPTY_PATIENT, startSandbox, type Sandbox } from '../../local/sandbox/index.js';
import { browserGet, browserPostForm, buildAuthorizeUrl, CookieJar, createPkce, followRedirects, getJson, randomToken } from './smart-client.js';
import { sandboxSigningKey } from '../fixtures/keys.js';

/* The sandbox's quirk switches, seen from the wire (what each one makes the sandbox do). */

const CLIENT = { clientId: 'quirk-app', clientSecret: 'quirk-secret', redirectUri: 'http://localhost:3000/callback' };
let sandbox: Sandbox;

beforeAll(async () => {
  sandbox = await startSandbox({
    signingKey: await sandboxSigningKey(),
    clients: [{ clientId: CLIENT.clientId, clientAuth: 'client_secret_basic', clientSecret: CLIENT.clientSecret, redirectUris: [CLIENT.redirectUri] }],
    launchUrl: 'http://localhost:3000/launch',
  });
});
afterAll(async () => {
  await sandbox?.close();
});
beforeEach(() => {
  sandbox.clearQuirks();
});

const wellKnown = () => getJson<Record<string, unknown>>(`${sandbox.fhirBaseUrl}/.well-known/smart-configuration`);
const metadata = async () => JSON.stringify((await getJson(`${sandbox.fhirBaseUrl}/metadata`)).body);

function authorize(scope: string, launch?: string): URL {
  return buildAuthorizeUrl({
    authorizationEndpoint: `${sandbox.issuer}/auth`,
    clientId: CLIENT.clientId,
    redirectUri: CLIENT.redirectUri,
    scope,
    aud: sandbox.fhirBaseUrl,
    state: randomToken(),
    ...(launch ? { launch } : {}),
    codeChallenge: createPkce().challenge,
    codeChallengeMethod: 'S256',
  });
}

describe('sandbox quirk switches', () => {
  it('noS256: discovery lists only "plain" (SMART-DISC-04)', async () => {
    sandbox.quirks.noS256 = true;

    expect((await wellKnown()).body.code_challenge_methods_supported).toEqual(['plain']);
  });

  it('noRevocation: no revocation endpoint in the well-known file nor in the CapabilityStatement', async () => {
    sandbox.quirks.noRevocation = true;

    expect((await wellKnown()).body).not.toHaveProperty('revocation_endpoint');
    expect(await metadata()).not.toContain('"revoke"');
  });

  it('relativeEndpoints: endpoints relative to the FHIR base in both documents (SMART-DISC-05)', async () => {
    sandbox.quirks.relativeEndpoints = true;

    const doc = (await wellKnown()).body;
    expect(doc).toMatchObject({ authorization_endpoint: '/oauth/auth', token_endpoint: '../oauth/token', jwks_uri: '../oauth/jwks' });
    expect(new URL(doc.token_endpoint as string, `${sandbox.fhirBaseUrl}/`).href).toBe(`${sandbox.issuer}/token`);
    expect(await metadata()).toContain('"valueUri":"../oauth/token"');
  });

  it('noWellKnown: 404 for the well-known file; the CapabilityStatement still names the oauth endpoints (SMART-DISC-07)', async () => {
    sandbox.quirks.noWellKnown = true;

    const response = await fetch(`${sandbox.fhirBaseUrl}/.well-known/smart-configuration`);
    expect(response.status).toBe(404);
    await response.body?.cancel();
    expect(await metadata()).toContain('http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris');
  });

  it('v1Only: permission-v1 only, v1 scopes advertised, and v2 resource scopes refused with invalid_scope (SMART-SCOPE-02)', async () => {
    sandbox.quirks.v1Only = true;
    const doc = (await wellKnown()).body;
    expect(doc.capabilities).toContain('permission-v1');
    expect(doc.capabilities).not.toContain('permission-v2');
    expect(doc.scopes_supported).toEqual(expect.arrayContaining(['patient/*.read']));
    expect(doc.scopes_supported).not.toContain('patient/*.rs');

    const url = authorize('launch/patient openid patient/*.rs');
    const answer = await browserGet(url, new CookieJar());

    expect(answer.status).toBe(303);
    const back = new URL(answer.headers.get('location')!);
    expect(`${back.origin}${back.pathname}`).toBe(CLIENT.redirectUri);
    expect(back.searchParams.get('error')).toBe('invalid_scope');
    expect(back.searchParams.get('state')).toBe(url.searchParams.get('state'));
    expect(back.searchParams.get('iss')).toBe(sandbox.issuer);
  });

  it('v1Only: v1 resource scopes go through to sign-in', async () => {
    sandbox.quirks.v1Only = true;
    const url = authorize('launch/patient openid patient/*.read');

    const answer = await browserGet(url, new CookieJar());

    expect(answer.status).toBe(303);
    expect(answer.headers.get('location')).toMatch(/\/oauth\/interaction\//);
  });

  it('accepts the authorization request by POST (authorize-post, SMART-AUTHZ-10)', async () => {
    expect((await wellKnown()).body.capabilities).toContain('authorize-post');
    const jar = new CookieJar();
    const url = authorize('launch/patient openid patient/*.rs');

    const answer = await browserPostForm(new URL(`${sandbox.issuer}/auth`), Object.fromEntries(url.searchParams), jar);

    const stop = await followRedirects(answer, new URL(`${sandbox.issuer}/auth`), sandbox.url, jar);
    expect(stop.kind).toBe('page');
    if (stop.kind === 'page') {
      expect(stop.response.status).toBe(200);
      expect(await stop.response.text()).toContain('/login');
    }
  });

  it('emptyPatient: Dana Nodata exists only while the switch is on, with no observations', async () => {
    expect((await getJson(`${sandbox.fhirBaseUrl}/metadata`)).status).toBe(200);
    const page = async () => (await fetch(`${sandbox.url}/`)).text();
    expect(await page()).not.toContain(EMPTY_PATIENT.id);

    sandbox.quirks.emptyPatient = true;
    expect(await page()).toContain(EMPTY_PATIENT.id);
    const launch = await fetch(`${sandbox.url}/ehr/launch?patient=${EMPTY_PATIENT.id}`, { redirect: 'manual' });
    expect(launch.status).toBe(302);
    await launch.body?.cancel();

    sandbox.quirks.emptyPatient = false;
    expect(await page()).not.toContain(EMPTY_PATIENT.id);
  });

  it('the admin endpoint reads and switches quirks; {} turns all off', async () => {
    const post = (body: unknown) =>
      fetch(`${sandbox.url}/admin/quirks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

    const on = await post({ noS256: true, noRevocation: true });
    expect(on.status).toBe(200);
    expect(await on.json()).toEqual({ noS256: true, noRevocation: true });
    expect(sandbox.quirks).toEqual({ noS256: true, noRevocation: true });

    expect(await (await post({ noS256: false })).json()).toEqual({ noRevocation: true });
    expect(await (await fetch(`${sandbox.url}/admin/quirks`)).json()).toEqual({ noRevocation: true });
    const bad = await post({ noSuchQuirk: true });
    expect(bad.status).toBe(400);
    await bad.body?.cancel();
    expect(await (await post({})).json()).toEqual({});
    expect(sandbox.quirks).toEqual({});
  });
});
