import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { cryptoRandom } from '../../shared/adapters/system.js';
import { buildAuthorizeUrl, createPkce, pkceChallenge, requestedScope, scopeIncludes } from '../../shared/core/authorize.js';
import { startLaunch } from '../../shared/core/launch.js';
import type { Random } from '../../shared/core/ports.js';
import { PUBLIC_URL, sampleConfig, sampleIssuer } from '../fakes/deps.js';
import { query } from '../fakes/fake-ehr.js';
import { ehrLaunchQuery, harness } from '../fakes/launch-flow.js';

const UNRESERVED = /^[A-Za-z0-9\-._~]+$/;

/** Parses an authorize URL into its parameters, failing on any repeated name. */
function paramsOf(url: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of new URL(url).searchParams) {
    if (name in out) throw new Error(`parameter "${name}" appears twice`);
    out[name] = value;
  }
  return out;
}

describe('PKCE', () => {
  it('computes the S256 challenge of the RFC 7636 Appendix B example (SMART-AUTHZ-08)', () => {
    // RFC 7636 Appendix B: code_verifier → code_challenge (checked against `openssl dgst -sha256 | base64url`).
    expect(pkceChallenge('dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk')).toBe('E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM');
  });

  it('makes a verifier of 43..128 unreserved characters and its base64url(sha256) challenge (SMART-AUTHZ-08)', () => {
    for (let i = 0; i < 50; i += 1) {
      const { verifier, challenge } = createPkce(cryptoRandom);

      expect(verifier.length).toBeGreaterThanOrEqual(43);
      expect(verifier.length).toBeLessThanOrEqual(128);
      expect(verifier).toMatch(UNRESERVED);
      expect(challenge).toBe(createHash('sha256').update(verifier).digest('base64url'));
      expect(challenge).not.toContain('=');
    }
  });

  it('draws the verifier from 32 random octets', () => {
    const lengths: number[] = [];
    const counting: Random = { bytes: (n) => (lengths.push(n), cryptoRandom.bytes(n)) };

    const { verifier } = createPkce(counting);

    expect(lengths).toEqual([32]);
    expect(Buffer.from(verifier, 'base64url')).toHaveLength(32);
  });

  it('makes a different verifier each time', () => {
    const verifiers = new Set(Array.from({ length: 100 }, () => createPkce(cryptoRandom).verifier));

    expect(verifiers.size).toBe(100);
  });
});

describe('requestedScope', () => {
  it('adds the launch scope to an EHR launch that lacks it (SMART-LAUNCH-03)', () => {
    expect(requestedScope('openid fhirUser user/*.rs', 'ehr')).toBe('launch openid fhirUser user/*.rs');
  });

  it('keeps an EHR launch scope that already has launch unchanged (SMART-LAUNCH-03)', () => {
    expect(requestedScope('openid launch user/*.rs', 'ehr')).toBe('openid launch user/*.rs');
  });

  it('drops launch and adds launch/patient in a standalone launch with patient scopes (SMART-LAUNCH-04, SMART-SCOPE-09)', () => {
    expect(requestedScope('launch openid fhirUser patient/*.rs offline_access', 'standalone')).toBe(
      'launch/patient openid fhirUser patient/*.rs offline_access',
    );
  });

  it('does not add launch/patient twice in a standalone launch (SMART-LAUNCH-04)', () => {
    expect(requestedScope('openid launch/patient patient/Observation.rs', 'standalone')).toBe('openid launch/patient patient/Observation.rs');
  });

  it('adds no launch/patient to a standalone launch with user scopes only', () => {
    expect(requestedScope('launch openid fhirUser user/*.rs', 'standalone')).toBe('openid fhirUser user/*.rs');
  });

  it('removes duplicate scope tokens, keeping the first order', () => {
    expect(requestedScope('openid openid fhirUser openid', 'ehr')).toBe('launch openid fhirUser');
  });

  it('matches scope tokens whole, not as substrings', () => {
    expect(scopeIncludes('openidx fhirUser', 'openid')).toBe(false);
    expect(scopeIncludes('launch openid fhirUser', 'openid')).toBe(true);
  });
});

describe('buildAuthorizeUrl', () => {
  const request = {
    authorizationEndpoint: 'https://ehr.example.org/oauth2/authorize',
    clientId: 'my-app',
    redirectUri: 'https://smart.acme.example/callback',
    scope: 'launch openid fhirUser patient/*.rs',
    state: 's'.repeat(43),
    aud: 'https://ehr.example.org/fhir/r4/',
    codeChallenge: 'E9Melhoa2OwvFrEMTJguCGHeeITHtvePPeNDcdOaGa4',
  } as const;

  it('keeps query parameters already on the authorization endpoint', () => {
    const url = new URL(buildAuthorizeUrl({ ...request, authorizationEndpoint: 'https://ehr.example.org/oauth2/authorize?tenant=acme&ui=embedded' }));

    expect(url.origin + url.pathname).toBe('https://ehr.example.org/oauth2/authorize');
    expect(url.searchParams.get('tenant')).toBe('acme');
    expect(url.searchParams.get('ui')).toBe('embedded');
    expect(url.searchParams.get('response_type')).toBe('code');
  });

  it('sets each OAuth parameter once even when the endpoint already carries one of them', () => {
    const url = buildAuthorizeUrl({ ...request, authorizationEndpoint: 'https://ehr.example.org/oauth2/authorize?response_type=token&scope=evil' });

    expect(paramsOf(url)).toMatchObject({ response_type: 'code', scope: request.scope });
  });

  it('round-trips an aud with a trailing slash, reserved characters and a tenant path byte for byte (SMART-AUTHZ-07)', () => {
    const aud = 'https://ehr.example.org/fhir/r4/tenant%20a/?';
    expect(paramsOf(buildAuthorizeUrl({ ...request, aud })).aud).toBe(aud);
  });

  it('sends no launch and no nonce when none are given', () => {
    const params = paramsOf(buildAuthorizeUrl(request));

    expect(params).not.toHaveProperty('launch');
    expect(params).not.toHaveProperty('nonce');
  });

  it('never sends code_challenge_method plain (SMART-AUTHZ-08)', () => {
    expect(paramsOf(buildAuthorizeUrl(request)).code_challenge_method).toBe('S256');
  });
});

describe('the authorization request of startLaunch', () => {
  it('carries every parameter of SMART-AUTHZ-01..08 with the right value in an EHR launch', async () => {
    const h = await harness();

    const result = await startLaunch(ehrLaunchQuery(h.ehr, 'opaque-launch-42'), undefined, h.deps);

    const url = new URL(result.authorizeUrl);
    expect(url.origin + url.pathname).toBe(h.ehr.authorizationEndpoint);
    const params = paramsOf(result.authorizeUrl);
    expect(params.response_type).toBe('code'); // SMART-AUTHZ-01
    expect(params.client_id).toBe('my-app'); // SMART-AUTHZ-02
    expect(params.redirect_uri).toBe(`${PUBLIC_URL}/callback`); // SMART-AUTHZ-03
    expect(params.launch).toBe('opaque-launch-42'); // SMART-AUTHZ-04
    expect(params.scope).toBe('launch openid fhirUser patient/*.rs offline_access'); // SMART-AUTHZ-05
    expect(params.state).toMatch(/^[A-Za-z0-9_-]{43}$/); // SMART-AUTHZ-06
    expect(params.aud).toBe(h.ehr.fhirBase); // SMART-AUTHZ-07
    expect(params.code_challenge).toMatch(/^[A-Za-z0-9_-]{43}$/); // SMART-AUTHZ-08
    expect(params.code_challenge_method).toBe('S256'); // SMART-AUTHZ-08
    expect(params.nonce).toMatch(/^[A-Za-z0-9_-]{43}$/); // SMART-AUTHZ-13
    expect(Object.keys(params).sort()).toEqual(
      ['aud', 'client_id', 'code_challenge', 'code_challenge_method', 'launch', 'nonce', 'redirect_uri', 'response_type', 'scope', 'state'].sort(),
    );
    expect(result.mode).toBe('ehr');
  });

  it('sends aud exactly as the iss string received, without trailing-slash normalisation (SMART-AUTHZ-07)', async () => {
    const iss = 'https://ehr.example.org/fhir/r4/';
    const h = await harness({ config: sampleConfig({ issuers: [sampleIssuer({ iss })] }), ehr: { fhirBase: iss } });

    const result = await startLaunch(query(['iss', iss], ['launch', 'abc']), undefined, h.deps);

    expect(paramsOf(result.authorizeUrl).aud).toBe(iss);
  });

  it('uses a state of 32 random octets (43 base64url characters, 256 bits ≥ 122) (SMART-AUTHZ-06)', async () => {
    const h = await harness();

    const params = paramsOf((await startLaunch(ehrLaunchQuery(h.ehr), undefined, h.deps)).authorizeUrl);

    expect(Buffer.from(params.state as string, 'base64url')).toHaveLength(32);
  });

  it('uses a different state, challenge and nonce in every launch, even from the same browser (SMART-AUTHZ-06)', async () => {
    const h = await harness();
    const first = await startLaunch(ehrLaunchQuery(h.ehr), undefined, h.deps);

    const second = paramsOf((await startLaunch(ehrLaunchQuery(h.ehr), first.bindingSecret, h.deps)).authorizeUrl);

    const a = paramsOf(first.authorizeUrl);
    expect(second.state).not.toBe(a.state);
    expect(second.code_challenge).not.toBe(a.code_challenge);
    expect(second.nonce).not.toBe(a.nonce);
  });

  it('sends a nonce only when openid is requested (SMART-AUTHZ-13)', async () => {
    const h = await harness({ config: sampleConfig({ issuers: [sampleIssuer({ scope: 'launch patient/*.rs' })] }) });

    const params = paramsOf((await startLaunch(ehrLaunchQuery(h.ehr), undefined, h.deps)).authorizeUrl);

    expect(params).not.toHaveProperty('nonce');
  });

  it('adds the launch scope and echoes launch in an EHR launch whose configured scope lacks it (SMART-LAUNCH-03, SMART-AUTHZ-04)', async () => {
    const h = await harness({ config: sampleConfig({ issuers: [sampleIssuer({ scope: 'openid fhirUser user/*.rs' })] }) });

    const params = paramsOf((await startLaunch(ehrLaunchQuery(h.ehr, 'L-123'), undefined, h.deps)).authorizeUrl);

    expect(params.scope?.split(' ')).toContain('launch');
    expect(params.launch).toBe('L-123');
  });

  it('echoes an opaque launch value with reserved characters unchanged (SMART-LAUNCH-03)', async () => {
    const h = await harness();
    const launch = 'eyJhIjoiYiJ9.x+y/z==&n=1';

    const params = paramsOf((await startLaunch(ehrLaunchQuery(h.ehr, launch), undefined, h.deps)).authorizeUrl);

    expect(params.launch).toBe(launch);
  });

  it('in a standalone launch drops launch, adds launch/patient and sends no launch parameter (SMART-LAUNCH-04, SMART-SCOPE-09)', async () => {
    const h = await harness();

    const result = await startLaunch(query(), undefined, h.deps);

    const params = paramsOf(result.authorizeUrl);
    expect(result.mode).toBe('standalone');
    expect(params.scope).toBe('launch/patient openid fhirUser patient/*.rs offline_access');
    expect(params).not.toHaveProperty('launch');
    expect(params.aud).toBe(h.ehr.fhirBase);
  });

  it('keeps query parameters of the discovered authorization endpoint', async () => {
    const h = await harness();
    h.ehr.smartConfiguration.authorization_endpoint = `${h.ehr.authorizationEndpoint}?tenant=acme`;

    const url = new URL((await startLaunch(ehrLaunchQuery(h.ehr), undefined, h.deps)).authorizeUrl);

    expect(url.searchParams.get('tenant')).toBe('acme');
    expect(url.searchParams.get('response_type')).toBe('code');
  });
});
