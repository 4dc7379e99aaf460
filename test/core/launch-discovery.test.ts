import { describe, expect, it } from 'vitest';
import { DiscoveryCache, OAUTH_URIS_EXTENSION } from '../../shared/core/discovery.js';
import { JwksCache } from '../../shared/core/id-token.js';
import { completeCallback, startLaunch } from '../../shared/core/launch.js';
import { openSession, sessionView } from '../../shared/core/session.js';
import type { HttpClient } from '../../shared/core/ports.js';
import { runDoctor } from '../../cli/doctor.js';
import { sampleConfig, sampleIssuer } from '../fakes/deps.js';
import { json, query, type FakeEhr } from '../fakes/fake-ehr.js';
import { ehrLaunchQuery, harness, signIn, type Harness } from '../fakes/launch-flow.js';

/** The fake EHR as a SMART v1 server: no well-known file, the oauth-uris extension at /metadata (SMART-DISC-07). */
function asV1Server(ehr: FakeEhr, uris: Record<string, string> = { authorize: ehr.authorizationEndpoint, token: ehr.tokenEndpoint }): void {
  ehr.discoveryAnswer = () => json({ error: 'not_found' }, 404);
  const fhir = ehr.fhirAnswer;
  ehr.fhirAnswer = (url, request) =>
    url.pathname.endsWith('/metadata')
      ? json({
          resourceType: 'CapabilityStatement',
          rest: [{ security: { extension: [{ url: OAUTH_URIS_EXTENSION, extension: Object.entries(uris).map(([url, valueUri]) => ({ url, valueUri })) }] } }],
        })
      : fhir(url, request);
}

/** The EHR's http plus its OpenID configuration at `{issuer}/.well-known/openid-configuration`. */
function withOpenidConfiguration(ehr: FakeEhr): HttpClient {
  return async (url, init) =>
    url === `${ehr.issuer}/.well-known/openid-configuration` ? json({ issuer: ehr.issuer, jwks_uri: ehr.jwksUri }) : ehr.http(url, init);
}

async function sessionOf(h: Harness, sessionId: string, cookie: string | undefined) {
  return sessionView(h.deps.config, await openSession(sessionId, cookie, h.deps));
}

describe('launch through SMART v1 discovery (SMART-DISC-07)', () => {
  it('completes an EHR launch with the CapabilityStatement endpoints, still sending PKCE S256 and state', async () => {
    const h = await harness({ config: sampleConfig({ issuers: [sampleIssuer({ scope: 'launch patient/*.rs offline_access' })] }) });
    asV1Server(h.ehr);

    const { launch, callback } = await signIn(h);

    const url = new URL(launch.authorizeUrl);
    expect(`${url.origin}${url.pathname}`).toBe(h.ehr.authorizationEndpoint);
    expect(url.searchParams.get('code_challenge_method')).toBe('S256');
    expect(url.searchParams.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(url.searchParams.get('state')).toMatch(/^[A-Za-z0-9_-]{43,}$/);
    expect(h.ehr.requests.map((r) => new URL(r.url).pathname).slice(0, 2)).toEqual(['/fhir/r4/.well-known/smart-configuration', '/fhir/r4/metadata']);
    expect((await sessionOf(h, callback.sessionId, launch.bindingSecret)).patient).toBe('123');
  });

  it('refuses an openid scope without an OpenID issuer at launch with OPENID_UNSUPPORTED and stores nothing', async () => {
    const h = await harness();
    asV1Server(h.ehr);

    await expect(startLaunch(ehrLaunchQuery(h.ehr), undefined, h.deps)).rejects.toMatchObject({ code: 'OPENID_UNSUPPORTED' });
    expect(h.deps.store.transactions()).toHaveLength(0);
  });

  it('verifies the id_token with the JWKS of the openidIssuer setting (invariant 5)', async () => {
    const h = await harness({ config: sampleConfig({ issuers: [sampleIssuer({ openidIssuer: 'https://ehr.example.org/oauth2' })] }) });
    asV1Server(h.ehr);
    const deps = { ...h.deps, http: withOpenidConfiguration(h.ehr) };

    const launch = await startLaunch(ehrLaunchQuery(h.ehr), undefined, deps);
    const callback = await completeCallback(h.ehr.authorize(launch.authorizeUrl).callbackQuery, launch.bindingSecret, deps);

    expect((await sessionOf(h, callback.sessionId, launch.bindingSecret)).fhirUser).toBe(`${h.ehr.fhirBase}/Practitioner/abc`);
    expect(h.ehr.requestsTo(h.ehr.jwksUri)).toHaveLength(1);
  });
});

describe('launch with relative endpoints in discovery (SMART-DISC-05)', () => {
  it('resolves them against the FHIR base and redirects to the absolute authorization endpoint', async () => {
    const h = await harness();
    Object.assign(h.ehr.smartConfiguration, { authorization_endpoint: '/oauth2/authorize', token_endpoint: '../../oauth2/token', jwks_uri: '/oauth2/jwks' });

    const { launch, callback } = await signIn(h);

    expect(launch.authorizeUrl.startsWith(`${h.ehr.authorizationEndpoint}?`)).toBe(true);
    expect(h.ehr.tokenRequests()).toHaveLength(1);
    expect(h.deps.store.sessions()[0]?.endpoints).toMatchObject({ tokenEndpoint: h.ehr.tokenEndpoint, jwksUri: h.ehr.jwksUri });
    expect(callback.sessionId).toBeTruthy();
  });
});

describe('launch with the scope syntax of the EHR (SMART-SCOPE-02)', () => {
  it('asks a permission-v1-only EHR for v1 scopes and stores the scope it asked for', async () => {
    const h = await harness();
    h.ehr.smartConfiguration.capabilities = [...(h.ehr.smartConfiguration.capabilities as string[]), 'permission-v1'];

    const { launch, callback } = await signIn(h);

    expect(new URL(launch.authorizeUrl).searchParams.get('scope')).toBe('launch openid fhirUser patient/*.read offline_access');
    expect((await sessionOf(h, callback.sessionId, launch.bindingSecret)).scope).toBe('launch openid fhirUser patient/*.read offline_access');
  });

  it('asks for v2 scopes as configured when the EHR advertises nothing about syntax', async () => {
    const h = await harness();

    const { launch } = await signIn(h);

    expect(new URL(launch.authorizeUrl).searchParams.get('scope')).toBe('launch openid fhirUser patient/*.rs offline_access');
  });
});

describe('authorize by POST (SMART-AUTHZ-10)', () => {
  const longScope = ['launch openid fhirUser offline_access', ...Array.from({ length: 90 }, (_, i) => `patient/Type${String.fromCharCode(65 + (i % 26))}${i}.rs`)].join(' ');

  it('answers a form with every authorization parameter, PKCE included, when the URL is too long and the EHR has authorize-post', async () => {
    const h = await harness({ config: sampleConfig({ issuers: [sampleIssuer({ scope: longScope })] }) });
    h.ehr.smartConfiguration.capabilities = [...(h.ehr.smartConfiguration.capabilities as string[]), 'authorize-post'];

    const launch = await startLaunch(ehrLaunchQuery(h.ehr), undefined, h.deps);

    expect(launch.authorizeUrl.length).toBeGreaterThan(2000);
    expect(launch.authorizeForm?.action).toBe(h.ehr.authorizationEndpoint);
    const fields = new Map(launch.authorizeForm?.fields);
    expect([...fields.keys()]).toEqual(['response_type', 'client_id', 'redirect_uri', 'scope', 'state', 'aud', 'code_challenge', 'code_challenge_method', 'launch', 'nonce']);
    expect(fields.get('code_challenge_method')).toBe('S256');
    expect(fields.get('scope')).toBe(longScope);
    expect(fields.get('aud')).toBe(h.ehr.fhirBase);
    // The same request, so the EHR's answer completes it.
    const callback = await completeCallback(h.ehr.authorize(launch.authorizeUrl).callbackQuery, launch.bindingSecret, h.deps);
    expect(callback.sessionId).toBeTruthy();
  });

  it('stays with GET for a long URL when the EHR does not advertise authorize-post', async () => {
    const h = await harness({ config: sampleConfig({ issuers: [sampleIssuer({ scope: longScope })] }) });

    expect((await startLaunch(ehrLaunchQuery(h.ehr), undefined, h.deps)).authorizeForm).toBeUndefined();
  });

  it('refuses authorizeMethod POST without authorize-post with AUTHORIZE_POST_UNSUPPORTED and stores nothing', async () => {
    const h = await harness({ config: sampleConfig({ issuers: [sampleIssuer({ authorizeMethod: 'POST' })] }) });

    await expect(startLaunch(ehrLaunchQuery(h.ehr), undefined, h.deps)).rejects.toMatchObject({ code: 'AUTHORIZE_POST_UNSUPPORTED' });
    expect(h.deps.store.transactions()).toHaveLength(0);
  });
});

describe('per-container caches in a launch (SMART-DISC-10)', () => {
  it('fetches discovery once for many launches with a DiscoveryCache, and JWKS once for many sign-ins with a JwksCache', async () => {
    const h = await harness();
    const deps = { ...h.deps, discovery: new DiscoveryCache(), jwks: new JwksCache() };

    for (let i = 0; i < 3; i++) {
      const launch = await startLaunch(ehrLaunchQuery(h.ehr), undefined, deps);
      await completeCallback(h.ehr.authorize(launch.authorizeUrl).callbackQuery, launch.bindingSecret, deps);
    }

    expect(h.ehr.requestsTo(`${h.ehr.fhirBase}/.well-known`)).toHaveLength(1);
    expect(h.ehr.requestsTo(h.ehr.jwksUri)).toHaveLength(1);
  });
});

describe('the same clear message at doctor and at launch (SMART-DISC-02, SMART-DISC-04)', () => {
  const cases: Array<[string, (doc: Record<string, unknown>) => void, string, string]> = [
    ['no token_endpoint', (d) => delete d.token_endpoint, 'DISCOVERY_INVALID', 'SMART configuration field "token_endpoint" is missing or has the wrong type'],
    ['capabilities of the wrong type', (d) => (d.capabilities = 'launch-ehr'), 'DISCOVERY_INVALID', 'SMART configuration field "capabilities" is missing or has the wrong type'],
    ['grant_types_supported of numbers', (d) => (d.grant_types_supported = [1, 2]), 'DISCOVERY_INVALID', 'SMART configuration field "grant_types_supported.0" is missing or has the wrong type'],
    ['an http token endpoint', (d) => (d.token_endpoint = 'http://ehr.example.org/oauth2/token'), 'DISCOVERY_INVALID', '"token_endpoint" in the SMART configuration must use https'],
    ['sso-openid-connect without jwks_uri', (d) => delete d.jwks_uri, 'DISCOVERY_INVALID', 'SMART configuration field "jwks_uri" is required with the sso-openid-connect capability'],
    ['no S256', (d) => (d.code_challenge_methods_supported = ['plain']), 'PKCE_UNSUPPORTED', 'the SMART configuration does not list "S256" in code_challenge_methods_supported'],
    [
      'nothing usable at all',
      (d) => Object.assign(d, { code_challenge_methods_supported: [], token_endpoint_auth_methods_supported: ['private_key_jwt'], capabilities: [] }),
      'PKCE_UNSUPPORTED',
      'the SMART configuration does not list "S256" in code_challenge_methods_supported',
    ],
    [
      'no client_secret_basic',
      (d) => (d.token_endpoint_auth_methods_supported = ['private_key_jwt']),
      'CLIENT_AUTH_UNSUPPORTED',
      'the EHR does not list "client_secret_basic" in token_endpoint_auth_methods_supported (it lists private_key_jwt)',
    ],
  ];

  it.each(cases)('%s', async (_what, change, code, message) => {
    const h = await harness();
    change(h.ehr.smartConfiguration);

    const atLaunch = await startLaunch(ehrLaunchQuery(h.ehr), undefined, h.deps).then(
      () => undefined,
      (error: unknown) => error,
    );
    const report = await runDoctor({ config: h.deps.config, mode: 'local', http: h.ehr.http });

    expect(atLaunch).toMatchObject({ code, message });
    const firstFailure = report.issuers[0]?.findings.find((f) => f.status === 'fail');
    expect(firstFailure).toMatchObject({ summary: message, error: { code, message, hint: (atLaunch as { hint: string }).hint } });
    expect(report.failures).toBeGreaterThan(0);
  });

  it('a standalone launch too', async () => {
    const h = await harness();
    h.ehr.smartConfiguration.capabilities = ['launch-ehr', 'sso-openid-connect'];

    await expect(startLaunch(query(['iss', h.ehr.fhirBase]), undefined, h.deps)).rejects.toMatchObject({
      code: 'LAUNCH_MODE_UNSUPPORTED',
      message: 'the EHR does not advertise the "launch-standalone" capability needed for a standalone launch',
    });
    const report = await runDoctor({ config: h.deps.config, mode: 'local', http: h.ehr.http });
    expect(report.issuers[0]?.findings.find((f) => f.check === 'launch-standalone')).toMatchObject({
      status: 'fail',
      summary: 'the EHR does not advertise the "launch-standalone" capability needed for a standalone launch',
    });
  });
});
