import { describe, expect, it } from 'vitest';
import {
  DiscoveryCache,
  discoverCached,
  discoverIssuer,
  OAUTH_URIS_EXTENSION,
  parseCapabilityStatement,
  readSmartConfiguration,
  type SmartConfiguration,
} from '../../shared/core/discovery.js';
import type { HttpClient } from '../../shared/core/ports.js';
import { FixedClock } from '../fakes/clock.js';
import { json } from '../fakes/fake-ehr.js';

const ISS = 'https://ehr.example.org/fhir/r4';

function smartDocument(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    issuer: 'https://ehr.example.org/oauth2',
    jwks_uri: 'https://ehr.example.org/oauth2/jwks',
    authorization_endpoint: 'https://ehr.example.org/oauth2/authorize',
    token_endpoint: 'https://ehr.example.org/oauth2/token',
    grant_types_supported: ['authorization_code'],
    capabilities: ['launch-ehr', 'launch-standalone'],
    code_challenge_methods_supported: ['S256'],
    ...overrides,
  };
}

function capabilityStatement(uris: Record<string, string>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    kind: 'instance',
    fhirVersion: '4.0.1',
    rest: [
      {
        mode: 'server',
        security: {
          extension: [
            { url: 'http://example.org/other-extension', valueString: 'x' },
            { url: OAUTH_URIS_EXTENSION, extension: Object.entries(uris).map(([url, valueUri]) => ({ url, valueUri })) },
          ],
        },
      },
    ],
    ...extra,
  };
}

/** An EHR as a map from URL to answer; anything else is 404. Records every URL asked for. */
function ehr(answers: Record<string, () => Response>) {
  const calls: string[] = [];
  const http: HttpClient = async (url) => {
    calls.push(url);
    const answer = answers[url];
    return answer ? answer() : json({ error: 'not_found' }, 404);
  };
  return { http, calls };
}

const WELL_KNOWN = `${ISS}/.well-known/smart-configuration`;
const METADATA = `${ISS}/metadata`;

describe('SMART v1 fallback: the CapabilityStatement oauth-uris extension (SMART-DISC-07)', () => {
  it('reads authorize, token and revoke from rest[].security.extension', () => {
    const smart = parseCapabilityStatement(
      capabilityStatement({
        authorize: 'https://ehr.example.org/oauth2/authorize',
        token: 'https://ehr.example.org/oauth2/token',
        revoke: 'https://ehr.example.org/oauth2/revoke',
        register: 'https://ehr.example.org/oauth2/register',
      }),
      'aws',
      ISS,
    );

    expect(smart.endpoints).toEqual({
      authorizationEndpoint: 'https://ehr.example.org/oauth2/authorize',
      tokenEndpoint: 'https://ehr.example.org/oauth2/token',
      revocationEndpoint: 'https://ehr.example.org/oauth2/revoke',
      issuer: undefined,
      jwksUri: undefined,
      issParameterSupported: false,
    });
    expect(smart.source).toBe('capability-statement');
  });

  it('leaves PKCE, client authentication and capabilities unknown (PKCE S256 and state are still sent) (SMART-DISC-07)', () => {
    const smart = parseCapabilityStatement(capabilityStatement({ authorize: 'https://e.example/a', token: 'https://e.example/t' }), 'aws', ISS);

    expect(smart.codeChallengeMethods).toBeUndefined();
    expect(smart.tokenEndpointAuthMethods).toBeUndefined();
    expect(smart.capabilities).toEqual([]);
    expect(smart.endpoints.revocationEndpoint).toBeUndefined();
  });

  it('accepts valueUrl as well as valueUri', () => {
    const doc = capabilityStatement({});
    (doc.rest as Array<{ security: { extension: Array<{ extension?: unknown[] }> } }>)[0]!.security.extension[1]!.extension = [
      { url: 'authorize', valueUrl: 'https://e.example/a' },
      { url: 'token', valueUrl: 'https://e.example/t' },
    ];

    expect(parseCapabilityStatement(doc, 'aws', ISS).endpoints.tokenEndpoint).toBe('https://e.example/t');
  });

  it.each(['authorize', 'token'])('refuses an oauth-uris extension without "%s" with DISCOVERY_INVALID naming it (SMART-DISC-07)', (missing) => {
    const uris: Record<string, string> = { authorize: 'https://e.example/a', token: 'https://e.example/t' };
    delete uris[missing];

    expect(() => parseCapabilityStatement(capabilityStatement(uris), 'aws', ISS)).toThrow(
      expect.objectContaining({ code: 'DISCOVERY_INVALID', details: { field: `oauth-uris.${missing}` }, message: expect.stringContaining(`"${missing}"`) }),
    );
  });

  it('refuses a CapabilityStatement without the oauth-uris extension with DISCOVERY_INVALID (SMART-DISC-07)', () => {
    const doc = capabilityStatement({ authorize: 'https://e.example/a', token: 'https://e.example/t' });
    (doc.rest as Array<{ security: unknown }>)[0]!.security = {};

    expect(() => parseCapabilityStatement(doc, 'aws', ISS)).toThrow(expect.objectContaining({ code: 'DISCOVERY_INVALID', message: expect.stringContaining('oauth-uris') }));
  });

  it.each([
    ['resourceType', { resourceType: 'Patient' }],
    ['rest', { rest: 'nope' }],
  ])('refuses a document with a wrong "%s" with DISCOVERY_INVALID naming the field', (field, extra) => {
    expect(() => parseCapabilityStatement(capabilityStatement({ authorize: 'https://e.example/a', token: 'https://e.example/t' }, extra), 'aws', ISS)).toThrow(
      expect.objectContaining({ code: 'DISCOVERY_INVALID', details: { field: expect.stringMatching(new RegExp(`^${field}`)) } }),
    );
  });

  it('refuses an http token URI in aws mode (SMART-DISC-05)', () => {
    expect(() => parseCapabilityStatement(capabilityStatement({ authorize: 'https://e.example/a', token: 'http://e.example/t' }), 'aws', ISS)).toThrow(
      expect.objectContaining({ code: 'DISCOVERY_INVALID', message: '"token" in the CapabilityStatement oauth-uris extension must use https' }),
    );
  });
});

describe('discoverIssuer: well-known first, v1 fallback on 404 (SMART-DISC-01, SMART-DISC-07)', () => {
  it('uses .well-known/smart-configuration when it exists and never asks for /metadata (SMART-DISC-01)', async () => {
    const { http, calls } = ehr({ [WELL_KNOWN]: () => json(smartDocument()) });

    const smart = await discoverIssuer(http, { iss: ISS }, 'aws');

    expect(smart.source).toBe('well-known');
    expect(calls).toEqual([WELL_KNOWN]);
  });

  it.each([404, 410])('falls back to {iss}/metadata when the well-known file answers %i (SMART-DISC-07)', async (status) => {
    const { http, calls } = ehr({
      [WELL_KNOWN]: () => json({ error: 'gone' }, status),
      [METADATA]: () => json(capabilityStatement({ authorize: 'https://ehr.example.org/a', token: 'https://ehr.example.org/t' })),
    });

    const smart = await discoverIssuer(http, { iss: ISS }, 'aws');

    // Then the OpenID issuer is looked for at the authorization server's origin (none here).
    expect(calls).toEqual([WELL_KNOWN, METADATA, 'https://ehr.example.org/.well-known/openid-configuration']);
    expect(smart).toMatchObject({ source: 'capability-statement', endpoints: { tokenEndpoint: 'https://ehr.example.org/t', issuer: undefined } });
  });

  it.each([500, 503, 401, 403])('does not fall back when the well-known file answers %i: DISCOVERY_UNAVAILABLE', async (status) => {
    const { http, calls } = ehr({ [WELL_KNOWN]: () => json({}, status), [METADATA]: () => json(capabilityStatement({})) });

    await expect(discoverIssuer(http, { iss: ISS }, 'aws')).rejects.toMatchObject({ code: 'DISCOVERY_UNAVAILABLE', details: { status } });
    expect(calls).toEqual([WELL_KNOWN]);
  });

  it('does not fall back when the well-known file is invalid: the field is named (SMART-DISC-02)', async () => {
    const { http } = ehr({ [WELL_KNOWN]: () => json(smartDocument({ token_endpoint: 7 })) });

    await expect(discoverIssuer(http, { iss: ISS }, 'aws')).rejects.toMatchObject({
      code: 'DISCOVERY_INVALID',
      message: 'SMART configuration field "token_endpoint" is missing or has the wrong type',
    });
  });

  it('answers DISCOVERY_UNAVAILABLE when neither the well-known file nor /metadata exists', async () => {
    const { http } = ehr({});

    await expect(discoverIssuer(http, { iss: ISS }, 'aws')).rejects.toMatchObject({
      code: 'DISCOVERY_UNAVAILABLE',
      message: expect.stringContaining('CapabilityStatement'),
    });
  });

  it('does not judge S256: a well-known file without it is read (launch and doctor judge it) (SMART-DISC-04)', async () => {
    const { http } = ehr({ [WELL_KNOWN]: () => json(smartDocument({ code_challenge_methods_supported: ['plain'] })) });

    await expect(discoverIssuer(http, { iss: ISS }, 'aws')).resolves.toMatchObject({ codeChallengeMethods: ['plain'] });
  });
});

describe('relative endpoints resolved against the FHIR base (SMART-DISC-05)', () => {
  it.each([
    ['/oauth2/token', 'https://ehr.example.org/oauth2/token'],
    ['oauth2/token', 'https://ehr.example.org/fhir/r4/oauth2/token'],
    ['../../oauth2/token', 'https://ehr.example.org/oauth2/token'],
    ['./token', 'https://ehr.example.org/fhir/r4/token'],
    ['https://auth.example.net/token', 'https://auth.example.net/token'],
  ])('token_endpoint "%s" → %s', (relative, absolute) => {
    expect(readSmartConfiguration(smartDocument({ token_endpoint: relative }), 'aws', ISS).endpoints.tokenEndpoint).toBe(absolute);
  });

  it('resolves every endpoint of the document, including jwks_uri and revocation_endpoint (SMART-DISC-05)', () => {
    const smart = readSmartConfiguration(
      smartDocument({ authorization_endpoint: '/auth', token_endpoint: '../token', jwks_uri: 'keys', revocation_endpoint: '/revoke' }),
      'aws',
      `${ISS}/`,
    );

    expect(smart.endpoints).toMatchObject({
      authorizationEndpoint: 'https://ehr.example.org/auth',
      tokenEndpoint: 'https://ehr.example.org/fhir/token',
      jwksUri: 'https://ehr.example.org/fhir/r4/keys',
      revocationEndpoint: 'https://ehr.example.org/revoke',
    });
  });

  it('resolves relative URIs of the CapabilityStatement too', () => {
    const smart = parseCapabilityStatement(capabilityStatement({ authorize: '/oauth/authorize', token: '../oauth/token' }), 'aws', ISS);

    expect(smart.endpoints).toMatchObject({ authorizationEndpoint: 'https://ehr.example.org/oauth/authorize', tokenEndpoint: 'https://ehr.example.org/fhir/oauth/token' });
  });

  it('never takes a network-path reference (//host/…) as relative: it names another server (SMART-DISC-05)', () => {
    expect(() => readSmartConfiguration(smartDocument({ token_endpoint: '//evil.example/token' }), 'aws', ISS)).toThrow(
      expect.objectContaining({ code: 'DISCOVERY_INVALID', message: '"token_endpoint" in the SMART configuration is not an absolute URL' }),
    );
  });

  it('applies the https rule to the resolved URL: an http FHIR base in aws mode is refused', () => {
    expect(() => readSmartConfiguration(smartDocument({ token_endpoint: '/token' }), 'aws', 'http://ehr.example.org/fhir')).toThrow(
      expect.objectContaining({ code: 'DISCOVERY_INVALID', message: '"token_endpoint" in the SMART configuration must use https' }),
    );
  });

  it('accepts a relative endpoint of a loopback http base in local mode', () => {
    expect(readSmartConfiguration(smartDocument({ token_endpoint: '/oauth/token' }), 'local', 'http://127.0.0.1:3001/fhir').endpoints.tokenEndpoint).toBe(
      'http://127.0.0.1:3001/oauth/token',
    );
  });
});

describe('the openidIssuer setting: an OpenID issuer for EHRs whose discovery names none', () => {
  const OPENID = 'https://ehr.example.org/openid';
  const OPENID_CONFIGURATION = `${OPENID}/.well-known/openid-configuration`;
  const v1 = {
    [WELL_KNOWN]: () => json({}, 404),
    [METADATA]: () => json(capabilityStatement({ authorize: 'https://ehr.example.org/a', token: 'https://ehr.example.org/t' })),
  };

  it('fills in issuer and jwks_uri from {openidIssuer}/.well-known/openid-configuration (SMART-DISC-07)', async () => {
    const { http, calls } = ehr({ ...v1, [OPENID_CONFIGURATION]: () => json({ issuer: OPENID, jwks_uri: `${OPENID}/jwks` }) });

    const smart = await discoverIssuer(http, { iss: ISS, openidIssuer: OPENID }, 'aws');

    expect(smart.endpoints).toMatchObject({ issuer: OPENID, jwksUri: `${OPENID}/jwks` });
    expect(smart.openidFromConfig).toBe(true);
    expect(calls).toEqual([WELL_KNOWN, METADATA, OPENID_CONFIGURATION]);
  });

  it('refuses an OpenID configuration that names another issuer (OIDC Discovery §4.3)', async () => {
    const { http } = ehr({ ...v1, [OPENID_CONFIGURATION]: () => json({ issuer: 'https://evil.example', jwks_uri: `${OPENID}/jwks` }) });

    await expect(discoverIssuer(http, { iss: ISS, openidIssuer: OPENID }, 'aws')).rejects.toMatchObject({ code: 'DISCOVERY_INVALID', details: { field: 'issuer' } });
  });

  it('is not used when the well-known file publishes issuer and jwks_uri', async () => {
    const { http, calls } = ehr({ [WELL_KNOWN]: () => json(smartDocument()) });

    const smart = await discoverIssuer(http, { iss: ISS, openidIssuer: OPENID }, 'aws');

    expect(smart.endpoints.issuer).toBe('https://ehr.example.org/oauth2');
    expect(calls).toEqual([WELL_KNOWN]);
  });
});

describe('SMART v1 + OpenID: the OpenID issuer found at the authorization server, without configuration (SMART-DISC-07)', () => {
  const AS = 'https://ehr.example.org/oauth2';
  const OPENID_CONFIGURATION = `${AS}/.well-known/openid-configuration`;
  const ORIGIN_CONFIGURATION = 'https://ehr.example.org/.well-known/openid-configuration';
  const v1 = (authorize = `${AS}/authorize`, token = `${AS}/token`) => ({
    [WELL_KNOWN]: () => json({}, 404),
    [METADATA]: () => json(capabilityStatement({ authorize, token })),
  });

  it('takes {token endpoint parent}/.well-known/openid-configuration when it names exactly that issuer', async () => {
    const { http, calls } = ehr({ ...v1(), [OPENID_CONFIGURATION]: () => json({ issuer: AS, jwks_uri: `${AS}/jwks` }) });

    const smart = await discoverIssuer(http, { iss: ISS }, 'aws');

    expect(smart.endpoints).toMatchObject({ issuer: AS, jwksUri: `${AS}/jwks` });
    expect(smart.openidDiscovery).toEqual({ found: OPENID_CONFIGURATION, tried: [OPENID_CONFIGURATION] });
    expect(calls).toEqual([WELL_KNOWN, METADATA, OPENID_CONFIGURATION]);
  });

  it('falls back to the origin of the authorization server', async () => {
    const { http, calls } = ehr({ ...v1(), [ORIGIN_CONFIGURATION]: () => json({ issuer: 'https://ehr.example.org', jwks_uri: 'https://ehr.example.org/keys' }) });

    const smart = await discoverIssuer(http, { iss: ISS }, 'aws');

    expect(smart.endpoints).toMatchObject({ issuer: 'https://ehr.example.org', jwksUri: 'https://ehr.example.org/keys' });
    expect(calls).toEqual([WELL_KNOWN, METADATA, OPENID_CONFIGURATION, ORIGIN_CONFIGURATION]);
  });

  it.each([
    ['an issuer on another origin', { issuer: 'https://evil.example/oauth2', jwks_uri: 'https://evil.example/jwks' }],
    ['another issuer on the same origin', { issuer: 'https://ehr.example.org/other', jwks_uri: `${AS}/jwks` }],
    ['a jwks_uri over http', { issuer: AS, jwks_uri: 'http://ehr.example.org/jwks' }],
    ['no jwks_uri', { issuer: AS }],
  ])('refuses a configuration with %s: no issuer, and openid launches fail with OPENID_UNSUPPORTED', async (_, document) => {
    const { http } = ehr({ ...v1(), [OPENID_CONFIGURATION]: () => json(document), [ORIGIN_CONFIGURATION]: () => json(document) });

    const smart = await discoverIssuer(http, { iss: ISS }, 'aws');

    expect(smart.endpoints.issuer).toBeUndefined();
    expect(smart.endpoints.jwksUri).toBeUndefined();
    expect(smart.openidDiscovery).toEqual({ found: undefined, tried: [OPENID_CONFIGURATION, ORIGIN_CONFIGURATION] });
  });

  it('follows no redirect from a candidate to another origin', async () => {
    const moved = () => new Response(null, { status: 302, headers: { location: 'https://evil.example/.well-known/openid-configuration' } });
    const { http, calls } = ehr({ ...v1(), [OPENID_CONFIGURATION]: moved, [ORIGIN_CONFIGURATION]: moved });

    const smart = await discoverIssuer(http, { iss: ISS }, 'aws');

    expect(smart.endpoints.issuer).toBeUndefined();
    expect(calls.some((url) => url.startsWith('https://evil.example'))).toBe(false);
  });

  it('stops at the first candidate that gives no HTTP answer at all (the others are on the same origin)', async () => {
    const base = ehr(v1());
    const http: HttpClient = async (url, init) => {
      if (url === OPENID_CONFIGURATION) {
        base.calls.push(url);
        throw new TypeError('fetch failed');
      }
      return base.http(url, init);
    };

    const smart = await discoverIssuer(http, { iss: ISS }, 'aws');

    expect(smart.endpoints.issuer).toBeUndefined();
    expect(base.calls).toEqual([WELL_KNOWN, METADATA, OPENID_CONFIGURATION]);
  });

  it('asks nothing when the authorization and token endpoints are on different origins', async () => {
    const { http, calls } = ehr({ ...v1(`${AS}/authorize`, 'https://token.example.org/token') });

    const smart = await discoverIssuer(http, { iss: ISS }, 'aws');

    expect(smart.endpoints.issuer).toBeUndefined();
    expect(calls).toEqual([WELL_KNOWN, METADATA]);
  });

  it('the openidIssuer setting overrides it: only that issuer is asked', async () => {
    const OTHER = 'https://login.example.org';
    const { http, calls } = ehr({ ...v1(), [`${OTHER}/.well-known/openid-configuration`]: () => json({ issuer: OTHER, jwks_uri: `${OTHER}/jwks` }) });

    const smart = await discoverIssuer(http, { iss: ISS, openidIssuer: OTHER }, 'aws');

    expect(smart.endpoints.issuer).toBe(OTHER);
    expect(calls).not.toContain(OPENID_CONFIGURATION);
  });

  it('once warm, the cached discovery serves launches with no further call', async () => {
    const { http, calls } = ehr({ ...v1(), [OPENID_CONFIGURATION]: () => json({ issuer: AS, jwks_uri: `${AS}/jwks` }) });
    const deps = { http, mode: 'aws' as const, clock: new FixedClock(0), discovery: new DiscoveryCache() };

    await discoverCached(deps, { iss: ISS });
    const second = await discoverCached(deps, { iss: ISS });

    expect(second.endpoints.issuer).toBe(AS);
    expect(calls).toEqual([WELL_KNOWN, METADATA, OPENID_CONFIGURATION]);
  });
});

describe('DiscoveryCache: per container, fresh then stale-while-revalidate (SMART-DISC-10)', () => {
  const FRESH = 5 * 60_000;
  const STALE = 60 * 60_000;

  /** A loader that answers configurations numbered 1, 2, 3... (or fails while `failing`). */
  function loader() {
    const state = { calls: 0, failing: false, gate: undefined as Promise<void> | undefined };
    const load = async (): Promise<SmartConfiguration> => {
      state.calls += 1;
      const n = state.calls;
      if (state.gate) await state.gate;
      if (state.failing) throw new Error(`load ${n} failed`);
      return { endpoints: { authorizationEndpoint: `https://e.example/a${n}`, tokenEndpoint: 'https://e.example/t' }, capabilities: [], tokenEndpointAuthMethods: undefined };
    };
    return { state, load };
  }
  const version = (smart: SmartConfiguration) => smart.endpoints.authorizationEndpoint.slice(-2);

  it('has 5 minutes fresh and 1 hour stale by default', () => {
    expect(new DiscoveryCache()).toMatchObject({ freshMs: FRESH, staleMs: STALE });
  });

  it('serves a fresh entry without loading again (SMART-DISC-10)', async () => {
    const cache = new DiscoveryCache();
    const clock = new FixedClock();
    const { state, load } = loader();

    await cache.get(ISS, clock, load);
    clock.advance(FRESH - 1);
    const again = await cache.get(ISS, clock, load);

    expect(version(again)).toBe('a1');
    expect(state.calls).toBe(1);
  });

  it('serves a stale entry at once and refreshes it in the background; the next call gets the new one (SMART-DISC-10)', async () => {
    const cache = new DiscoveryCache();
    const clock = new FixedClock();
    const { state, load } = loader();
    await cache.get(ISS, clock, load);
    clock.advance(FRESH + 1);
    let open!: () => void;
    state.gate = new Promise((resolve) => (open = resolve));

    const stale = await cache.get(ISS, clock, load);

    expect(version(stale)).toBe('a1');
    expect(state.calls).toBe(2);
    open();
    await new Promise((resolve) => setImmediate(resolve));
    expect(version(await cache.get(ISS, clock, load))).toBe('a2');
    expect(state.calls).toBe(2);
  });

  it('starts one background refresh however many requests see the stale entry', async () => {
    const cache = new DiscoveryCache();
    const clock = new FixedClock();
    const { state, load } = loader();
    await cache.get(ISS, clock, load);
    clock.advance(FRESH + 1);
    state.gate = new Promise(() => undefined);

    const answers = await Promise.all(Array.from({ length: 20 }, () => cache.get(ISS, clock, load)));

    expect(answers.every((a) => version(a) === 'a1')).toBe(true);
    expect(state.calls).toBe(2);
  });

  it('keeps the stale entry when the background refresh fails, and counts the failure (SMART-DISC-10)', async () => {
    const cache = new DiscoveryCache();
    const clock = new FixedClock();
    const { state, load } = loader();
    await cache.get(ISS, clock, load);
    clock.advance(FRESH + 1);
    state.failing = true;

    expect(version(await cache.get(ISS, clock, load))).toBe('a1');
    await new Promise((resolve) => setImmediate(resolve));
    expect(cache.revalidationFailures).toBe(1);
    expect(version(await cache.get(ISS, clock, load))).toBe('a1');
    expect(state.calls).toBe(2);
  });

  it('retries a failed background refresh only after retryMs (30 s), not on every request', async () => {
    const cache = new DiscoveryCache();
    const clock = new FixedClock();
    const { state, load } = loader();
    await cache.get(ISS, clock, load);
    clock.advance(FRESH + 1);
    state.failing = true;
    await cache.get(ISS, clock, load);
    await new Promise((resolve) => setImmediate(resolve));

    clock.advance(29_000);
    await cache.get(ISS, clock, load);
    expect(state.calls).toBe(2);
    clock.advance(1_000);
    state.failing = false;
    expect(version(await cache.get(ISS, clock, load))).toBe('a1');
    await new Promise((resolve) => setImmediate(resolve));

    expect(state.calls).toBe(3);
    expect(version(await cache.get(ISS, clock, load))).toBe('a3');
  });

  it('loads before answering once the entry is older than the stale limit, and fails when that load fails', async () => {
    const cache = new DiscoveryCache();
    const clock = new FixedClock();
    const { state, load } = loader();
    await cache.get(ISS, clock, load);
    clock.advance(STALE + 1);
    state.failing = true;

    await expect(cache.get(ISS, clock, load)).rejects.toThrow('load 2 failed');
    state.failing = false;
    expect(version(await cache.get(ISS, clock, load))).toBe('a3');
  });

  it('never caches a failure: the next request loads again', async () => {
    const cache = new DiscoveryCache();
    const clock = new FixedClock();
    const { state, load } = loader();
    state.failing = true;
    await expect(cache.get(ISS, clock, load)).rejects.toThrow();
    state.failing = false;

    expect(version(await cache.get(ISS, clock, load))).toBe('a2');
  });

  it('shares one load among concurrent misses', async () => {
    const cache = new DiscoveryCache();
    const clock = new FixedClock();
    const { state, load } = loader();

    const answers = await Promise.all([cache.get(ISS, clock, load), cache.get(ISS, clock, load), cache.get(ISS, clock, load)]);

    expect(state.calls).toBe(1);
    expect(new Set(answers).size).toBe(1);
  });

  it('keys entries by issuer', async () => {
    const cache = new DiscoveryCache();
    const clock = new FixedClock();
    const { state, load } = loader();

    await cache.get(ISS, clock, load);
    await cache.get('https://other.example/fhir', clock, load);

    expect(state.calls).toBe(2);
  });

  it('clear() forgets every entry', async () => {
    const cache = new DiscoveryCache();
    const clock = new FixedClock();
    const { state, load } = loader();
    await cache.get(ISS, clock, load);

    cache.clear();
    await cache.get(ISS, clock, load);

    expect(state.calls).toBe(2);
  });

  it('discoverCached fetches once per fresh period with a cache, on every call without one (SMART-DISC-10)', async () => {
    const clock = new FixedClock();
    const { http, calls } = ehr({ [WELL_KNOWN]: () => json(smartDocument()) });
    const cached = { http, mode: 'aws' as const, clock, discovery: new DiscoveryCache() };

    await discoverCached(cached, { iss: ISS });
    await discoverCached(cached, { iss: ISS });
    await discoverCached({ http, mode: 'aws', clock }, { iss: ISS });
    await discoverCached({ http, mode: 'aws', clock }, { iss: ISS });

    expect(calls).toHaveLength(3);
  });
});
