import { compactVerify, createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSandboxData } from '../../local/sandbox/data.js';
import { startSandbox } from '../../local/sandbox/index.js';
import type { Sandbox } from '../../local/sandbox/index.js';
import {
  basicAuth,
  browserGet,
  browserPostForm,
  buildAuthorizeUrl,
  CookieJar,
  createPkce,
  followRedirects,
  getJson,
  postForm,
  randomToken,
} from './smart-client.js';
import { sandboxSigningKey } from '../fixtures/keys.js';

const LAUNCH_URL = 'http://localhost:3000/launch';
const CONFIDENTIAL = {
  clientId: 'bff-test',
  clientSecret: 'test-secret-123',
  redirectUri: 'http://localhost:3000/callback',
};
const PUBLIC = { clientId: 'spa-test', redirectUri: 'http://localhost:3000/public-callback' };

// The expected data comes from the same deterministic generator the sandbox seeds its repository with.
const DATA = generateSandboxData();
const observationsOf = (patientId: string): number =>
  DATA.observations.filter((o) => o.subject?.reference === `Patient/${patientId}`).length;

interface SmartConfiguration {
  issuer: string;
  jwks_uri: string;
  authorization_endpoint: string;
  token_endpoint: string;
  revocation_endpoint: string;
  introspection_endpoint: string;
  grant_types_supported: string[];
  response_types_supported: string[];
  code_challenge_methods_supported: string[];
  token_endpoint_auth_methods_supported: string[];
  token_endpoint_auth_signing_alg_values_supported?: string[];
  scopes_supported: string[];
  capabilities: string[];
  authorization_response_iss_parameter_supported: boolean;
}

interface Bundle {
  resourceType: string;
  total: number;
  link?: { relation: string; url: string }[];
  entry?: { fullUrl: string; resource: { resourceType: string; id: string; subject?: { reference: string }; effectiveDateTime?: string } }[];
}

let sandbox: Sandbox;
let config: SmartConfiguration;

beforeAll(async () => {
  sandbox = await startSandbox({
    signingKey: await sandboxSigningKey(),
    clients: [
      { clientId: CONFIDENTIAL.clientId, clientAuth: 'client_secret_basic', clientSecret: CONFIDENTIAL.clientSecret, redirectUris: [CONFIDENTIAL.redirectUri] },
      { clientId: PUBLIC.clientId, clientAuth: 'none', redirectUris: [PUBLIC.redirectUri] },
    ],
    launchUrl: LAUNCH_URL,
  });
  config = (await getJson<SmartConfiguration>(`${sandbox.fhirBaseUrl}/.well-known/smart-configuration`)).body;
});

afterAll(async () => {
  await sandbox?.close();
});

interface AuthorizeOptions {
  readonly scope: string;
  readonly launch?: string;
  readonly client?: 'confidential' | 'public';
  readonly aud?: string | null;
  readonly pkce?: 'S256' | 'plain' | 'none';
}

interface AuthorizeAttempt {
  readonly jar: CookieJar;
  readonly state: string;
  readonly nonce: string;
  readonly verifier: string;
  readonly redirectUri: string;
  readonly stop: Awaited<ReturnType<typeof followRedirects>>;
}

/** Sends the browser to the authorization endpoint and follows redirects until it leaves the sandbox. */
async function startAuthorization(options: AuthorizeOptions, jar = new CookieJar()): Promise<AuthorizeAttempt> {
  const client = options.client === 'public' ? PUBLIC : CONFIDENTIAL;
  const pkce = createPkce();
  const state = randomToken();
  const nonce = randomToken();
  const method = options.pkce ?? 'S256';
  const url = buildAuthorizeUrl({
    authorizationEndpoint: config.authorization_endpoint,
    clientId: client.clientId,
    redirectUri: client.redirectUri,
    scope: options.scope,
    aud: options.aud === null ? undefined : (options.aud ?? sandbox.fhirBaseUrl),
    state,
    // oidc-provider refuses nonce without openid (OIDC Core), so a SMART client sends it only then.
    ...(options.scope.split(' ').includes('openid') ? { nonce } : {}),
    ...(options.launch === undefined ? {} : { launch: options.launch }),
    ...(method === 'none'
      ? {}
      : { codeChallenge: method === 'plain' ? pkce.verifier : pkce.challenge, codeChallengeMethod: method }),
  });
  const stop = await followRedirects(await browserGet(url, jar), url, sandbox.url, jar);
  return { jar, state, nonce, verifier: pkce.verifier, redirectUri: client.redirectUri, stop };
}

function callbackParams(attempt: AuthorizeAttempt): URLSearchParams {
  if (attempt.stop.kind !== 'left-origin') {
    throw new Error(`expected a redirect to the app, got a page (${attempt.stop.response.status})`);
  }
  expect(`${attempt.stop.location.origin}${attempt.stop.location.pathname}`).toBe(attempt.redirectUri);
  return attempt.stop.location.searchParams;
}

async function exchangeCode(attempt: AuthorizeAttempt, client: 'confidential' | 'public' = 'confidential') {
  const params = callbackParams(attempt);
  const code = params.get('code');
  expect(code).toBeTruthy();
  const form: Record<string, string> = {
    grant_type: 'authorization_code',
    code: code ?? '',
    redirect_uri: attempt.redirectUri,
    code_verifier: attempt.verifier,
  };
  if (client === 'public') {
    return postForm(config.token_endpoint, { ...form, client_id: PUBLIC.clientId });
  }
  return postForm(config.token_endpoint, form, basicAuth(CONFIDENTIAL.clientId, CONFIDENTIAL.clientSecret));
}

/** EHR launch from the EHR page, returning the token response. */
async function ehrLaunch(patient: string, scope: string, jar = new CookieJar()) {
  const launchPage = await browserGet(new URL(`/ehr/launch?patient=${patient}`, sandbox.url), jar);
  expect(launchPage.status).toBe(302);
  const appLaunch = new URL(launchPage.headers.get('location') ?? '');
  const launch = appLaunch.searchParams.get('launch') ?? '';
  const attempt = await startAuthorization({ scope, launch }, jar);
  const token = await exchangeCode(attempt);
  return { attempt, appLaunch, launch, token };
}

/** The sandbox's sign-in page for a standalone launch, and the URL of its form for `account`. */
async function loginForm(attempt: AuthorizeAttempt, account: string): Promise<URL> {
  if (attempt.stop.kind !== 'page') {
    throw new Error(`expected the sign-in page, got a redirect to ${attempt.stop.location.href}`);
  }
  expect(attempt.stop.response.status).toBe(200);
  const html = await attempt.stop.response.text();
  const action = new RegExp(`<form method="post" action="([^"]+/login)">\\s*<input type="hidden" name="account" value="${account}">`).exec(html)?.[1];
  if (action === undefined) {
    throw new Error(`the sign-in page offers no form for ${account}`);
  }
  return new URL(action, attempt.stop.url);
}

/** Presses "Sign in as …" on the sign-in page and follows the browser back to the app. */
async function signIn(attempt: AuthorizeAttempt, loginUrl: URL, account: string): Promise<AuthorizeAttempt> {
  const posted = await browserPostForm(loginUrl, { account }, attempt.jar);
  const stop = await followRedirects(posted, loginUrl, sandbox.url, attempt.jar);
  if (stop.kind === 'page') {
    // e.g. oidc-provider's "Submitting Callback" form to the end-session confirmation
    const title = /<title>([^<]*)<\/title>/.exec(await stop.response.text())?.[1];
    throw new Error(`signing in as ${account} ended on a page (${stop.response.status} "${title ?? ''}" at ${stop.url.pathname}), not at the app`);
  }
  return { ...attempt, stop };
}

/** Standalone launch (patient portal) in `jar`, signing in as the given patient; returns the token response. */
async function standaloneLaunch(patient: string, scope: string, jar: CookieJar) {
  const attempt = await startAuthorization({ scope, client: 'public' }, jar);
  const account = `patient-${patient}`;
  const done = await signIn(attempt, await loginForm(attempt, account), account);
  expect(callbackParams(done).get('state')).toBe(attempt.state);
  const token = await exchangeCode(done, 'public');
  expect(token.status).toBe(200);
  return { attempt: done, token };
}

async function readAll(firstUrl: string, accessToken: string): Promise<{ pages: number; bundles: Bundle[] }> {
  const bundles: Bundle[] = [];
  let next: string | undefined = firstUrl;
  while (next !== undefined) {
    const page: { status: number; body: Bundle } = await getJson<Bundle>(next, accessToken);
    expect(page.status).toBe(200);
    const bundle: Bundle = page.body;
    bundles.push(bundle);
    next = bundle.link?.find((l) => l.relation === 'next')?.url;
    if (bundles.length > 50) {
      throw new Error('paging does not terminate');
    }
  }
  return { pages: bundles.length, bundles };
}

describe('sandbox EHR: discovery and pages', () => {
  it('publishes a SMART configuration whose endpoints are oidc-provider routes under the issuer', async () => {
    expect(config.issuer).toBe(sandbox.issuer);
    expect(sandbox.issuer).toBe(`${sandbox.url}/oauth`);
    expect(sandbox.fhirBaseUrl).toBe(`${sandbox.url}/fhir`);
    for (const endpoint of [config.authorization_endpoint, config.token_endpoint, config.revocation_endpoint, config.introspection_endpoint, config.jwks_uri]) {
      expect(endpoint.startsWith(`${sandbox.issuer}/`)).toBe(true);
    }
    expect(config.grant_types_supported).toEqual(['authorization_code', 'refresh_token']);
    expect(config.response_types_supported).toEqual(['code']);
    expect(config.code_challenge_methods_supported).toEqual(['S256']);
    expect(config.token_endpoint_auth_methods_supported).toEqual(['client_secret_basic', 'private_key_jwt', 'none']);
    expect(config.token_endpoint_auth_signing_alg_values_supported).toEqual(['RS384', 'ES384']);
    expect(config.capabilities).toContain('client-confidential-asymmetric');
    expect(config.capabilities).toEqual(
      expect.arrayContaining(['launch-ehr', 'launch-standalone', 'client-public', 'client-confidential-symmetric', 'context-ehr-patient', 'context-ehr-encounter', 'context-standalone-patient', 'context-banner', 'context-style', 'permission-offline', 'permission-online', 'permission-patient', 'permission-user', 'permission-v2', 'permission-v1', 'sso-openid-connect']),
    );
    expect(config.authorization_response_iss_parameter_supported).toBe(true);
    expect(config.scopes_supported).toEqual(expect.arrayContaining(['openid', 'fhirUser', 'launch', 'launch/patient', 'offline_access']));

    const discovery = await fetch(`${sandbox.fhirBaseUrl}/.well-known/smart-configuration`);
    expect(discovery.headers.get('cache-control')).toMatch(/max-age=\d+/);
    const jwks = await getJson(config.jwks_uri);
    expect((jwks.body.keys as { kty: string; kid: string; d?: string }[]).map((k) => [k.kty, typeof k.kid, k.d])).toEqual([['RSA', 'string', undefined]]);
  });

  it('serves a CapabilityStatement without a token, naming the oauth endpoints', async () => {
    const metadata = await getJson(`${sandbox.fhirBaseUrl}/metadata`);
    expect(metadata.status).toBe(200);
    expect(metadata.headers.get('content-type')).toContain('application/fhir+json');
    expect(metadata.body.resourceType).toBe('CapabilityStatement');
    expect(JSON.stringify(metadata.body)).toContain(config.token_endpoint);
  });

  it('exposes the deterministic synthetic patients and practitioner', () => {
    expect(sandbox.patients).toEqual([
      { id: 'amy-sample', name: 'Amy Sample', birthDate: '1985-03-14' },
      { id: 'ben-testwell', name: 'Ben Testwell', birthDate: '1958-11-02' },
      { id: 'cara-demoson', name: 'Cara Demoson', birthDate: '2001-07-23' },
    ]);
    expect(sandbox.practitioner).toEqual({ id: 'erin-example', name: 'Dr. Erin Example' });
    expect(sandbox.patients.map((p) => observationsOf(p.id))).toEqual([120, 132, 144]);
  });

  it('renders the EHR page with launch buttons and the patient portal link', async () => {
    const response = await fetch(`${sandbox.url}/`);
    const html = await response.text();
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/html');
    expect(html).toContain('Sandbox EHR');
    expect(html).toContain('Amy Sample');
    expect(html).toContain('1958-11-02');
    expect(html).toContain('href="/ehr/launch?patient=cara-demoson"');
    expect(html).toContain(`href="${LAUNCH_URL}?iss=${encodeURIComponent(sandbox.fhirBaseUrl)}"`);
  });

  it('redirects an EHR launch to the app with iss and an opaque launch id, and refuses unknown patients', async () => {
    const launch = await fetch(`${sandbox.url}/ehr/launch?patient=ben-testwell`, { redirect: 'manual' });
    expect(launch.status).toBe(302);
    const location = new URL(launch.headers.get('location') ?? '');
    expect(`${location.origin}${location.pathname}`).toBe(LAUNCH_URL);
    expect(location.searchParams.get('iss')).toBe(sandbox.fhirBaseUrl);
    expect(location.searchParams.get('launch')).toMatch(/^[A-Za-z0-9_-]{20,}$/);

    const unknown = await fetch(`${sandbox.url}/ehr/launch?patient=nobody`, { redirect: 'manual' });
    expect(unknown.status).toBe(400);
    expect(await unknown.text()).toContain('Unknown patient');
  });
});

describe('sandbox EHR: EHR launch', () => {
  const scope = 'launch openid fhirUser offline_access patient/*.rs';
  let ehr: Awaited<ReturnType<typeof ehrLaunch>>;

  beforeAll(async () => {
    ehr = await ehrLaunch('amy-sample', scope);
  });

  it('returns the code with state and iss, and a token response carrying the launch context', async () => {
    const params = callbackParams(ehr.attempt);
    expect(params.get('state')).toBe(ehr.attempt.state);
    expect(params.get('iss')).toBe(sandbox.issuer);
    expect(ehr.appLaunch.searchParams.get('iss')).toBe(sandbox.fhirBaseUrl);

    const { status, body, headers } = ehr.token;
    expect(status).toBe(200);
    expect(headers.get('cache-control')).toBe('no-store');
    expect(body.token_type).toBe('Bearer');
    expect(body.expires_in).toBe(300);
    expect(body.patient).toBe('amy-sample');
    expect(body.encounter).toBe('amy-sample-encounter-10'); // the most recent of Amy's ten visits
    expect(body.need_patient_banner).toBe(false);
    expect(body.smart_style_url).toBe(`${sandbox.url}/smart-style.json`);
    expect(typeof body.tenant).toBe('string');
    expect(body.fhirContext).toEqual([{ reference: 'Condition/amy-sample-condition-2' }]);
    expect(String(body.scope).split(' ').sort()).toEqual(['fhirUser', 'launch', 'offline_access', 'openid', 'patient/*.rs']);
    expect(typeof body.refresh_token).toBe('string');

    const style = await getJson(String(body.smart_style_url));
    expect(style.body.color_highlight).toMatch(/^#/);
  });

  it('issues an id_token signed by the published key, with the nonce and an absolute fhirUser', async () => {
    const jwks = createRemoteJWKSet(new URL(config.jwks_uri));
    const { payload, protectedHeader } = await jwtVerify(String(ehr.token.body.id_token), jwks, {
      issuer: config.issuer,
      audience: CONFIDENTIAL.clientId,
    });
    expect(protectedHeader.alg).toBe('RS256');
    expect(payload.nonce).toBe(ehr.attempt.nonce);
    expect(payload.fhirUser).toBe(`${sandbox.fhirBaseUrl}/Practitioner/erin-example`);
  });

  it('issues a JWT access token for the FHIR base with the patient claim and the granted scopes', () => {
    const claims = decodeJwt(String(ehr.token.body.access_token));
    expect(claims.aud).toBe(sandbox.fhirBaseUrl);
    expect(claims.iss).toBe(sandbox.issuer);
    expect(claims.patient).toBe('amy-sample');
    expect(claims.scope).toBe('patient/*.rs');
    expect((claims.exp ?? 0) - (claims.iat ?? 0)).toBe(300);
  });

  it('reads the patient and pages through all of her observations by following next links', async () => {
    const token = String(ehr.token.body.access_token);
    const patient = await getJson(`${sandbox.fhirBaseUrl}/Patient/amy-sample`, token);
    expect(patient.status).toBe(200);
    expect(patient.headers.get('content-type')).toContain('application/fhir+json');
    expect(patient.body.birthDate).toBe('1985-03-14');

    const { pages, bundles } = await readAll(`${sandbox.fhirBaseUrl}/Observation?patient=amy-sample&_count=50`, token);
    const entries = bundles.flatMap((b) => b.entry ?? []);
    expect(pages).toBe(3);
    expect(entries.map((e) => e.resource.id).length).toBe(observationsOf('amy-sample'));
    expect(new Set(entries.map((e) => e.resource.id)).size).toBe(120);
    expect(bundles.every((b) => b.total === 120)).toBe(true);
    expect(entries.every((e) => e.resource.subject?.reference === 'Patient/amy-sample')).toBe(true);
    expect(entries.every((e) => e.fullUrl === `${sandbox.fhirBaseUrl}/Observation/${e.resource.id}`)).toBe(true);
    expect(bundles[1]?.link?.find((l) => l.relation === 'previous')?.url.startsWith(`${sandbox.fhirBaseUrl}/Observation?`)).toBe(true);
    expect(bundles[0]?.link?.find((l) => l.relation === 'self')?.url.startsWith(`${sandbox.fhirBaseUrl}/Observation?`)).toBe(true);
  });

  it('sorts observations by date descending with _sort=-date', async () => {
    const token = String(ehr.token.body.access_token);
    const sorted = await getJson<Bundle>(`${sandbox.fhirBaseUrl}/Observation?patient=Patient/amy-sample&_sort=-date&_count=5`, token);
    const dates = (sorted.body.entry ?? []).map((e) => e.resource.effectiveDateTime ?? '');
    const newest = DATA.observations
      .filter((o) => o.subject?.reference === 'Patient/amy-sample')
      .map((o) => o.effectiveDateTime ?? '')
      .sort()
      .reverse()
      .slice(0, 5);
    expect(dates).toEqual(newest);
  });

  it('confines a patient-level token to its patient: 403 for others, implicit filter otherwise', async () => {
    const token = String(ehr.token.body.access_token);
    const otherPatient = await getJson(`${sandbox.fhirBaseUrl}/Patient/ben-testwell`, token);
    expect(otherPatient.status).toBe(403);
    expect(otherPatient.body.resourceType).toBe('OperationOutcome');

    for (const query of ['patient=ben-testwell', 'subject=Patient/ben-testwell', `patient=${sandbox.fhirBaseUrl}/Patient/ben-testwell`]) {
      const search = await getJson<Bundle>(`${sandbox.fhirBaseUrl}/Observation?${query}`, token);
      expect(search.status, query).toBe(403);
    }
    const otherObservation = await getJson(`${sandbox.fhirBaseUrl}/Observation/ben-testwell-encounter-1-obs-01`, token);
    expect(otherObservation.status).toBe(403);

    const implicit = await getJson<Bundle>(`${sandbox.fhirBaseUrl}/Observation?_count=1`, token);
    expect(implicit.body.total).toBe(120);
    const patients = await getJson<Bundle>(`${sandbox.fhirBaseUrl}/Patient`, token);
    expect((patients.body.entry ?? []).map((e) => e.resource.id)).toEqual(['amy-sample']);
  });

  it('answers 401 with a Bearer challenge without a token or with a bad one', async () => {
    const missing = await getJson(`${sandbox.fhirBaseUrl}/Patient/amy-sample`);
    expect(missing.status).toBe(401);
    expect(missing.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(missing.body.resourceType).toBe('OperationOutcome');

    const token = String(ehr.token.body.access_token);
    const [head, payload] = token.split('.');
    const forged = `${head}.${payload}.${Buffer.from('not a signature').toString('base64url')}`;
    const bad = await getJson(`${sandbox.fhirBaseUrl}/Patient/amy-sample`, forged);
    expect(bad.status).toBe(401);
    expect(bad.headers.get('www-authenticate')).toContain('error="invalid_token"');
  });

  it('lets a user-level token see every patient', async () => {
    const user = await ehrLaunch('ben-testwell', 'launch openid fhirUser user/*.rs');
    expect(user.token.body.patient).toBe('ben-testwell');
    expect(user.token.body.refresh_token).toBeUndefined(); // neither offline_access nor online_access
    const token = String(user.token.body.access_token);
    const all = await getJson<Bundle>(`${sandbox.fhirBaseUrl}/Observation?_count=1`, token);
    expect(all.body.total).toBe(DATA.observations.length);
    const amy = await getJson(`${sandbox.fhirBaseUrl}/Patient/amy-sample`, token);
    expect(amy.status).toBe(200);
  });

  it('honours v1 scopes and refuses resource types outside the granted scopes', async () => {
    const v1 = await ehrLaunch('cara-demoson', 'launch patient/Observation.read');
    expect(v1.token.body.scope).toBe('launch patient/Observation.read');
    const token = String(v1.token.body.access_token);
    const observations = await getJson<Bundle>(`${sandbox.fhirBaseUrl}/Observation?_count=1`, token);
    expect(observations.body.total).toBe(observationsOf('cara-demoson'));
    const conditions = await getJson(`${sandbox.fhirBaseUrl}/Condition`, token);
    expect(conditions.status).toBe(403);
  });

  it('enforces granular (query-qualified) scopes on search and read', async () => {
    const labs = 'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
    const granular = await ehrLaunch('amy-sample', `launch ${labs}`);
    expect(String(granular.token.body.scope).split(' ')).toContain(labs);
    const token = String(granular.token.body.access_token);
    const expected = DATA.observations.filter(
      (o) => o.subject?.reference === 'Patient/amy-sample' && o.category?.[0]?.coding?.[0]?.code === 'laboratory',
    ).length;
    const search = await getJson<Bundle>(`${sandbox.fhirBaseUrl}/Observation?_count=1`, token);
    expect(search.body.total).toBe(expected);
    expect(expected).toBe(40);
    const vital = await getJson(`${sandbox.fhirBaseUrl}/Observation/amy-sample-encounter-1-obs-01`, token);
    expect(vital.status).toBe(403);
    const lab = await getJson(`${sandbox.fhirBaseUrl}/Observation/amy-sample-encounter-1-obs-09`, token);
    expect(lab.status).toBe(200);
  });

  it('binds each launch in the same browser to its own patient', async () => {
    const jar = new CookieJar();
    const launchFor = async (patient: string) => {
      const launchPage = await browserGet(new URL(`/ehr/launch?patient=${patient}`, sandbox.url), jar);
      const launch = new URL(launchPage.headers.get('location') ?? '').searchParams.get('launch') ?? '';
      return exchangeCode(await startAuthorization({ scope: 'launch patient/*.rs', launch }, jar));
    };
    const first = await launchFor('amy-sample');
    const second = await launchFor('ben-testwell');
    expect(first.body.patient).toBe('amy-sample');
    expect(second.body.patient).toBe('ben-testwell');
    // The first launch's token still works, for its own patient only.
    expect((await getJson(`${sandbox.fhirBaseUrl}/Patient/amy-sample`, String(first.body.access_token))).status).toBe(200);
    expect((await getJson(`${sandbox.fhirBaseUrl}/Patient/amy-sample`, String(second.body.access_token))).status).toBe(403);
  });
});

describe('sandbox EHR: standalone launch', () => {
  const scope = 'launch/patient openid fhirUser offline_access patient/*.rs';

  it('signs a patient in through the login form and makes them the patient context', async () => {
    const attempt = await startAuthorization({ scope, client: 'public' });
    if (attempt.stop.kind !== 'page') {
      throw new Error('expected the login page');
    }
    const html = await attempt.stop.response.text();
    expect(attempt.stop.response.status).toBe(200);
    for (const name of ['Amy Sample', 'Ben Testwell', 'Cara Demoson']) {
      expect(html).toContain(`Sign in as ${name}`);
    }
    const action = /<form method="post" action="([^"]+\/login)">\s*<input type="hidden" name="account" value="patient-cara-demoson">/.exec(html)?.[1];
    expect(action).toBeDefined();
    const loginUrl = new URL(action ?? '', attempt.stop.url);
    const posted = await browserPostForm(loginUrl, { account: 'patient-cara-demoson' }, attempt.jar);
    const stop = await followRedirects(posted, loginUrl, sandbox.url, attempt.jar);
    const done: typeof attempt = { ...attempt, stop };
    expect(callbackParams(done).get('state')).toBe(attempt.state);

    const token = await exchangeCode(done, 'public');
    expect(token.status).toBe(200);
    expect(token.body.patient).toBe('cara-demoson');
    expect(token.body.need_patient_banner).toBe(true);
    expect(token.body.encounter).toBeUndefined();
    expect(String(token.body.scope).split(' ').sort()).toEqual(['fhirUser', 'launch/patient', 'offline_access', 'openid', 'patient/*.rs']);
    const idToken = decodeJwt(String(token.body.id_token));
    expect(idToken.fhirUser).toBe(`${sandbox.fhirBaseUrl}/Patient/cara-demoson`);
    expect(idToken.aud).toBe(PUBLIC.clientId);

    const me = await getJson(`${sandbox.fhirBaseUrl}/Patient/cara-demoson`, String(token.body.access_token));
    expect(me.status).toBe(200);
  });

  it('finishes with access_denied when the user cancels', async () => {
    const attempt = await startAuthorization({ scope });
    if (attempt.stop.kind !== 'page') {
      throw new Error('expected the login page');
    }
    const cancelUrl = new URL(/action="([^"]+\/cancel)"/.exec(await attempt.stop.response.text())?.[1] ?? '', attempt.stop.url);
    const posted = await browserPostForm(cancelUrl, {}, attempt.jar);
    const params = callbackParams({ ...attempt, stop: await followRedirects(posted, cancelUrl, sandbox.url, attempt.jar) });
    expect(params.get('error')).toBe('access_denied');
    expect(params.get('state')).toBe(attempt.state);
    expect(params.get('code')).toBeNull();
  });
});

describe('sandbox EHR: several launches in one browser', () => {
  const ehrScope = 'launch openid fhirUser patient/*.rs';
  const standaloneScope = 'launch/patient openid fhirUser patient/*.rs';
  const idTokenOf = (token: { body: Record<string, unknown> }) => decodeJwt(String(token.body.id_token));
  const read = async (path: string, token: { body: Record<string, unknown> }) =>
    (await getJson(`${sandbox.fhirBaseUrl}/${path}`, String(token.body.access_token))).status;

  it('signs a patient in for a standalone launch after an EHR launch, without an end-session detour', async () => {
    const jar = new CookieJar();
    const ehr = await ehrLaunch('amy-sample', ehrScope, jar);
    expect(ehr.token.status).toBe(200);
    expect(ehr.token.body.patient).toBe('amy-sample');
    expect(idTokenOf(ehr.token).sub).toBe('practitioner-erin-example');

    // The browser now holds the practitioner's sandbox session; the portal still asks who signs in.
    const portal = await standaloneLaunch('cara-demoson', standaloneScope, jar);
    expect(portal.token.body.patient).toBe('cara-demoson');
    expect(portal.token.body.encounter).toBeUndefined();
    expect(portal.token.body.need_patient_banner).toBe(true);
    expect(idTokenOf(portal.token).sub).toBe('patient-cara-demoson');
    expect(idTokenOf(portal.token).fhirUser).toBe(`${sandbox.fhirBaseUrl}/Patient/cara-demoson`);
    expect(decodeJwt(String(portal.token.body.access_token)).patient).toBe('cara-demoson');
    expect(await read('Patient/cara-demoson', portal.token)).toBe(200);
    expect(await read('Patient/amy-sample', portal.token)).toBe(403);

    // Switching the browser's account signs nobody out: the EHR launch's token keeps working.
    expect(await read('Patient/amy-sample', ehr.token)).toBe(200);
  });

  it('runs an EHR launch after a standalone launch with the EHR context', async () => {
    const jar = new CookieJar();
    const portal = await standaloneLaunch('ben-testwell', standaloneScope, jar);
    expect(portal.token.body.patient).toBe('ben-testwell');
    expect(idTokenOf(portal.token).sub).toBe('patient-ben-testwell');

    const ehr = await ehrLaunch('cara-demoson', ehrScope, jar);
    expect(ehr.token.status).toBe(200);
    expect(ehr.token.body.patient).toBe('cara-demoson');
    expect(ehr.token.body.encounter).toBe('cara-demoson-encounter-12');
    expect(ehr.token.body.need_patient_banner).toBe(false);
    expect(idTokenOf(ehr.token).sub).toBe('practitioner-erin-example');
    expect(idTokenOf(ehr.token).fhirUser).toBe(`${sandbox.fhirBaseUrl}/Practitioner/erin-example`);
    expect(await read('Patient/cara-demoson', ehr.token)).toBe(200);
    expect(await read('Patient/ben-testwell', ehr.token)).toBe(403);
    expect(await read('Patient/ben-testwell', portal.token)).toBe(200);

    // And back to the portal once more: the practitioner's session gives way to the patient again.
    const again = await standaloneLaunch('ben-testwell', standaloneScope, jar);
    expect(again.token.body.patient).toBe('ben-testwell');
    expect(idTokenOf(again.token).sub).toBe('patient-ben-testwell');
  });

  it('signs in a second patient for a standalone launch after another patient', async () => {
    const jar = new CookieJar();
    const first = await standaloneLaunch('amy-sample', standaloneScope, jar);
    expect(first.token.body.patient).toBe('amy-sample');

    const second = await standaloneLaunch('ben-testwell', standaloneScope, jar);
    expect(second.token.body.patient).toBe('ben-testwell');
    expect(idTokenOf(second.token).sub).toBe('patient-ben-testwell');
    expect(await read('Patient/ben-testwell', second.token)).toBe(200);
    expect(await read('Patient/amy-sample', second.token)).toBe(403);
    expect(await read('Patient/amy-sample', first.token)).toBe(200);
  });

  it('finishes a sign-in page left open while an EHR launch completed in the same browser', async () => {
    const jar = new CookieJar();
    // The browser already has a patient's session, so both interactions below start from it.
    await standaloneLaunch('amy-sample', standaloneScope, jar);
    const pending = await startAuthorization({ scope: standaloneScope, client: 'public' }, jar);
    const loginUrl = await loginForm(pending, 'patient-cara-demoson');

    const ehr = await ehrLaunch('ben-testwell', ehrScope, jar);
    expect(ehr.token.body.patient).toBe('ben-testwell');
    expect(idTokenOf(ehr.token).sub).toBe('practitioner-erin-example');

    const done = await signIn(pending, loginUrl, 'patient-cara-demoson');
    expect(callbackParams(done).get('state')).toBe(pending.state);
    const token = await exchangeCode(done, 'public');
    expect(token.status).toBe(200);
    expect(token.body.patient).toBe('cara-demoson');
    expect(idTokenOf(token).sub).toBe('patient-cara-demoson');
  });

  it('finishes a sign-in page opened in a fresh browser after an EHR launch completed there', async () => {
    const jar = new CookieJar();
    // No session yet when the sign-in page opens; the EHR launch then creates one for the practitioner.
    const pending = await startAuthorization({ scope: standaloneScope, client: 'public' }, jar);
    const loginUrl = await loginForm(pending, 'patient-amy-sample');
    const ehr = await ehrLaunch('cara-demoson', ehrScope, jar);
    expect(ehr.token.body.patient).toBe('cara-demoson');

    const done = await signIn(pending, loginUrl, 'patient-amy-sample');
    const token = await exchangeCode(done, 'public');
    expect(token.status).toBe(200);
    expect(token.body.patient).toBe('amy-sample');
    expect(idTokenOf(token).sub).toBe('patient-amy-sample');
  });
});

describe('sandbox EHR: refresh and revocation', () => {
  it('rotates the refresh token, keeps the context, and revokes the grant when an old one is reused', async () => {
    const before = sandbox.stats.tokenRequests.refresh_token ?? 0;
    const { token } = await ehrLaunch('ben-testwell', 'launch openid fhirUser offline_access patient/*.rs');
    const firstRefresh = String(token.body.refresh_token);
    const auth = basicAuth(CONFIDENTIAL.clientId, CONFIDENTIAL.clientSecret);

    const refreshed = await postForm(config.token_endpoint, { grant_type: 'refresh_token', refresh_token: firstRefresh }, auth);
    expect(refreshed.status).toBe(200);
    expect(typeof refreshed.body.refresh_token).toBe('string');
    expect(refreshed.body.refresh_token).not.toBe(firstRefresh);
    expect(refreshed.body.patient).toBe('ben-testwell');
    expect(refreshed.body.encounter).toBe('ben-testwell-encounter-11');
    expect(String(refreshed.body.scope).split(' ')).toEqual(expect.arrayContaining(['openid', 'fhirUser', 'launch', 'offline_access', 'patient/*.rs']));
    const newAccess = String(refreshed.body.access_token);
    expect((await getJson(`${sandbox.fhirBaseUrl}/Patient/ben-testwell`, newAccess)).status).toBe(200);

    const reuse = await postForm(config.token_endpoint, { grant_type: 'refresh_token', refresh_token: firstRefresh }, auth);
    expect(reuse.status).toBe(400);
    expect(reuse.body.error).toBe('invalid_grant');
    // Reuse detection revokes the whole grant: the rotated token and its access token die too.
    const rotated = await postForm(config.token_endpoint, { grant_type: 'refresh_token', refresh_token: String(refreshed.body.refresh_token) }, auth);
    expect(rotated.body.error).toBe('invalid_grant');
    expect((await getJson(`${sandbox.fhirBaseUrl}/Patient/ben-testwell`, newAccess)).status).toBe(401);

    expect(sandbox.stats.tokenRequests.refresh_token).toBe(before + 3);
  });

  it('revokes a refresh token at the revocation endpoint and counts the call', async () => {
    const { token } = await ehrLaunch('amy-sample', 'launch openid online_access patient/*.rs');
    expect(String(token.body.scope).split(' ')).toContain('online_access');
    const refreshToken = String(token.body.refresh_token);
    const auth = basicAuth(CONFIDENTIAL.clientId, CONFIDENTIAL.clientSecret);
    const revocations = sandbox.stats.revocations;

    const revoked = await postForm(config.revocation_endpoint, { token: refreshToken, token_type_hint: 'refresh_token' }, auth);
    expect(revoked.status).toBe(200);
    expect(sandbox.stats.revocations).toBe(revocations + 1);

    const after = await postForm(config.token_endpoint, { grant_type: 'refresh_token', refresh_token: refreshToken }, auth);
    expect(after.body.error).toBe('invalid_grant');
  });

  it('counts token endpoint calls by grant_type', async () => {
    const before = sandbox.stats.tokenRequests.authorization_code ?? 0;
    await ehrLaunch('cara-demoson', 'launch patient/*.rs');
    expect(sandbox.stats.tokenRequests.authorization_code).toBe(before + 1);
  });
});

describe('sandbox EHR: refused requests', () => {
  async function expectAuthorizeError(options: AuthorizeOptions, error: string): Promise<string> {
    const attempt = await startAuthorization(options);
    const params = callbackParams(attempt);
    expect(params.get('code')).toBeNull();
    expect(params.get('error')).toBe(error);
    return params.get('error_description') ?? '';
  }

  it('refuses an aud that is not exactly the FHIR base, or no aud', async () => {
    const scope = 'launch/patient patient/*.rs';
    expect(await expectAuthorizeError({ scope, aud: `${sandbox.fhirBaseUrl}/` }, 'invalid_request')).toContain('aud');
    expect(await expectAuthorizeError({ scope, aud: 'https://fhir.example.org/r4' }, 'invalid_request')).toContain('aud');
    expect(await expectAuthorizeError({ scope, aud: null }, 'invalid_request')).toContain('aud');
  });

  it('requires PKCE with S256', async () => {
    await expectAuthorizeError({ scope: 'launch/patient patient/*.rs', pkce: 'none' }, 'invalid_request');
    await expectAuthorizeError({ scope: 'launch/patient patient/*.rs', pkce: 'plain' }, 'invalid_request');
  });

  it('refuses an unknown launch id', async () => {
    const description = await expectAuthorizeError({ scope: 'launch patient/*.rs', launch: 'not-a-launch' }, 'invalid_request');
    expect(description).toContain('launch');
  });

  it('rejects a wrong code_verifier at the token endpoint', async () => {
    const launch = sandbox.createLaunch({ patient: 'amy-sample' });
    const attempt = await startAuthorization({ scope: 'launch patient/*.rs', launch });
    const token = await exchangeCode({ ...attempt, verifier: createPkce().verifier });
    expect(token.status).toBe(400);
    expect(token.body.error).toBe('invalid_grant');
  });
});

describe('sandbox EHR: faults and createLaunch', () => {
  it('tampers the id_token nonce when faults.idToken is wrong-nonce, keeping a valid signature', async () => {
    sandbox.faults.idToken = 'wrong-nonce';
    try {
      const { attempt, token } = await ehrLaunch('amy-sample', 'launch openid fhirUser patient/*.rs');
      const jwks = createRemoteJWKSet(new URL(config.jwks_uri));
      const { payload } = await jwtVerify(String(token.body.id_token), jwks, { issuer: config.issuer, audience: CONFIDENTIAL.clientId });
      expect(typeof payload.nonce).toBe('string');
      expect(payload.nonce).not.toBe(attempt.nonce);
      expect(payload.fhirUser).toBe(`${sandbox.fhirBaseUrl}/Practitioner/erin-example`);
    } finally {
      sandbox.faults.idToken = undefined;
    }
  });

  it('breaks the id_token signature when faults.idToken is bad-signature', async () => {
    sandbox.faults.idToken = 'bad-signature';
    try {
      const { token } = await ehrLaunch('amy-sample', 'launch openid patient/*.rs');
      const jwks = createRemoteJWKSet(new URL(config.jwks_uri));
      await expect(jwtVerify(String(token.body.id_token), jwks)).rejects.toThrow(/signature/i);
    } finally {
      sandbox.faults.idToken = undefined;
    }
  });

  it.each([
    ['wrong-aud', (claims: Record<string, unknown>) => expect(claims.aud).not.toBe(CONFIDENTIAL.clientId)],
    ['wrong-iss', (claims: Record<string, unknown>) => expect(claims.iss).not.toBe(sandbox.issuer)],
    ['expired', (claims: Record<string, unknown>) => expect(Number(claims.exp)).toBeLessThan(Date.now() / 1000)],
  ] as const)('re-signs the id_token with only the claim named by %s wrong', async (fault, check) => {
    sandbox.faults.idToken = fault;
    try {
      const { attempt, token } = await ehrLaunch('amy-sample', 'launch openid fhirUser patient/*.rs');
      const jwks = createRemoteJWKSet(new URL(config.jwks_uri));
      const { payload } = await compactVerify(String(token.body.id_token), jwks);
      const claims = JSON.parse(new TextDecoder().decode(payload)) as Record<string, unknown>;
      check(claims);
      expect(claims.nonce).toBe(attempt.nonce);
      expect(claims.sub).toBe('practitioner-erin-example');
    } finally {
      sandbox.faults.idToken = undefined;
    }
  });

  it('binds createLaunch context, with or without an encounter', async () => {
    const launch = sandbox.createLaunch({ patient: 'ben-testwell', encounter: 'ben-testwell-encounter-3' });
    const attempt = await startAuthorization({ scope: 'launch patient/*.rs', launch });
    const token = await exchangeCode(attempt);
    expect(token.body.patient).toBe('ben-testwell');
    expect(token.body.encounter).toBe('ben-testwell-encounter-3');

    const bare = sandbox.createLaunch({ patient: 'cara-demoson' });
    const second = await exchangeCode(await startAuthorization({ scope: 'launch patient/*.rs', launch: bare }));
    expect(second.body.patient).toBe('cara-demoson');
    expect(second.body.encounter).toBeUndefined();
    expect(second.body.fhirContext).toBeUndefined();

    expect(() => sandbox.createLaunch({ patient: 'nobody' })).toThrow(/unknown patient/);
    expect(() => sandbox.createLaunch({ patient: 'amy-sample', encounter: 'ben-testwell-encounter-1' })).toThrow(/does not belong/);
  });
});

describe('sandbox EHR: without a launch URL', () => {
  it('says so on the EHR page, escapes what it renders, and refuses EHR launches', async () => {
    const bare = await startSandbox({
      clients: [{ clientId: 'odd<client>&"id"', clientAuth: 'none', redirectUris: ['http://localhost:3000/cb?x=<y>'] }],
    });
    try {
      const html = await (await fetch(`${bare.url}/`)).text();
      expect(html).toContain('No app launch URL was configured');
      expect(html).not.toContain('href="/ehr/launch');
      expect(html).toContain('odd&lt;client&gt;&amp;&quot;id&quot;');
      expect(html).not.toContain('<client>');
      const launch = await fetch(`${bare.url}/ehr/launch?patient=amy-sample`, { redirect: 'manual' });
      expect(launch.status).toBe(400);
      // Two sandboxes in one process keep separate state: the other sandbox's issuer is not this one.
      expect(bare.issuer).not.toBe(sandbox.issuer);
    } finally {
      await bare.close();
    }
  });
});
