import { describe, expect, it } from 'vitest';
import { parseConfig, type IssuerConfig } from '../../shared/config/schema.js';
import {
  assessCapabilities,
  authorizeMethodFor,
  clientAuthFinding,
  launchModeFinding,
  launchScope,
  openidFinding,
  pkceFinding,
  requireCapabilities,
} from '../../shared/core/capabilities.js';
import { parseCapabilityStatement, readSmartConfiguration, type SmartConfiguration } from '../../shared/core/discovery.js';
import { sampleConfig, sampleIssuer } from '../fakes/deps.js';

const ISS = 'https://ehr.example.org/fhir/r4';

function smart(overrides: Record<string, unknown> = {}): SmartConfiguration {
  return readSmartConfiguration(
    {
      issuer: 'https://ehr.example.org/oauth2',
      jwks_uri: 'https://ehr.example.org/oauth2/jwks',
      authorization_endpoint: 'https://ehr.example.org/oauth2/authorize',
      token_endpoint: 'https://ehr.example.org/oauth2/token',
      grant_types_supported: ['authorization_code', 'refresh_token'],
      capabilities: ['launch-ehr', 'launch-standalone', 'client-confidential-symmetric', 'sso-openid-connect', 'permission-v2', 'permission-v1'],
      code_challenge_methods_supported: ['S256'],
      token_endpoint_auth_methods_supported: ['client_secret_basic'],
      ...overrides,
    },
    'aws',
    ISS,
  );
}

const v1Smart = (): SmartConfiguration =>
  parseCapabilityStatement(
    {
      resourceType: 'CapabilityStatement',
      rest: [
        {
          security: {
            extension: [
              {
                url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
                extension: [
                  { url: 'authorize', valueUri: 'https://ehr.example.org/a' },
                  { url: 'token', valueUri: 'https://ehr.example.org/t' },
                ],
              },
            ],
          },
        },
      ],
    },
    'aws',
    ISS,
  );

function issuer(overrides: Record<string, unknown> = {}): IssuerConfig {
  const config = parseConfig(sampleConfig({ issuers: [sampleIssuer({ iss: ISS, ...overrides })] }), 'local', '(test)');
  return config.issuers[0]!;
}

describe('capability checks before a launch (SMART-DISC-04, SMART-DISC-08)', () => {
  it('passes a server that offers everything the configuration needs', () => {
    expect(() => requireCapabilities(smart(), issuer(), 'ehr')).not.toThrow();
    expect(() => requireCapabilities(smart(), issuer(), 'standalone')).not.toThrow();
  });

  it('fails closed without S256 with PKCE_UNSUPPORTED, before any other check (SMART-DISC-04)', () => {
    const server = smart({ code_challenge_methods_supported: ['plain'], capabilities: [], token_endpoint_auth_methods_supported: ['private_key_jwt'] });

    expect(() => requireCapabilities(server, issuer(), 'ehr')).toThrow(
      expect.objectContaining({ code: 'PKCE_UNSUPPORTED', message: 'the SMART configuration does not list "S256" in code_challenge_methods_supported' }),
    );
  });

  it.each([
    ['client_secret_basic', { token_endpoint_auth_methods_supported: ['private_key_jwt', 'client_secret_post'] }, 'the EHR does not list "client_secret_basic" in token_endpoint_auth_methods_supported (it lists private_key_jwt, client_secret_post)'],
  ])('refuses clientAuth %s when the EHR does not offer it with CLIENT_AUTH_UNSUPPORTED (SMART-DISC-03)', (method, overrides, message) => {
    expect(() => requireCapabilities(smart(overrides), issuer({ clientAuth: method }), 'ehr')).toThrow(
      expect.objectContaining({ code: 'CLIENT_AUTH_UNSUPPORTED', status: 502, message, hint: expect.stringContaining('clientAuth') }),
    );
  });

  it.each([
    ['a method list with it', { token_endpoint_auth_methods_supported: ['client_secret_basic'] }, 'pass'],
    ['no method list (the OAuth default)', { token_endpoint_auth_methods_supported: undefined }, 'pass'],
    ['a method list without it', { token_endpoint_auth_methods_supported: ['client_secret_post'] }, 'fail'],
  ])('client_secret_basic against %s: %s', (_what, overrides, status) => {
    expect(clientAuthFinding(smart(overrides), issuer()).status).toBe(status);
  });

  it.each([
    ['a method list with it', { token_endpoint_auth_methods_supported: ['private_key_jwt'] }, 'pass'],
    ['no list but the asymmetric capability', { token_endpoint_auth_methods_supported: undefined, capabilities: ['launch-ehr', 'client-confidential-asymmetric'] }, 'pass'],
    ['no list and no asymmetric capability', { token_endpoint_auth_methods_supported: undefined }, 'fail'],
    ['a method list without it', { token_endpoint_auth_methods_supported: ['client_secret_basic'] }, 'fail'],
  ])('private_key_jwt against %s: %s (SMART-CAUTH-09)', (_what, overrides, status) => {
    const pkj = { ...issuer(), clientAuth: 'private_key_jwt', clientSecret: undefined } as IssuerConfig;

    expect(clientAuthFinding(smart(overrides), pkj).status).toBe(status);
  });

  it('only warns about a public client the EHR does not advertise (servers rarely list "none")', () => {
    const finding = clientAuthFinding(smart(), issuer({ clientAuth: 'none', clientSecret: undefined }));

    expect(finding.status).toBe('warn');
    expect(() => requireCapabilities(smart(), issuer({ clientAuth: 'none', clientSecret: undefined }), 'ehr')).not.toThrow();
  });

  it.each([
    ['ehr', ['launch-standalone'], 'the EHR does not advertise the "launch-ehr" capability needed for an EHR launch'],
    ['standalone', ['launch-ehr'], 'the EHR does not advertise the "launch-standalone" capability needed for a standalone launch'],
  ] as const)('refuses %s launch when the capability is missing with LAUNCH_MODE_UNSUPPORTED (SMART-DISC-08)', (mode, capabilities, message) => {
    expect(() => requireCapabilities(smart({ capabilities: [...capabilities, 'client-confidential-symmetric'] }), issuer({ scope: 'launch patient/*.rs' }), mode)).toThrow(
      expect.objectContaining({ code: 'LAUNCH_MODE_UNSUPPORTED', status: 502, message }),
    );
  });

  it('refuses an openid scope when discovery has no issuer or jwks_uri with OPENID_UNSUPPORTED, before the redirect (invariant 5)', () => {
    const server = smart({ issuer: undefined, jwks_uri: undefined, capabilities: ['launch-ehr', 'launch-standalone'] });

    expect(() => requireCapabilities(server, issuer(), 'ehr')).toThrow(
      expect.objectContaining({ code: 'OPENID_UNSUPPORTED', message: 'the scope asks for "openid" but the SMART configuration names no "issuer" and "jwks_uri"' }),
    );
    expect(() => requireCapabilities(server, issuer({ scope: 'launch patient/*.rs' }), 'ehr')).not.toThrow();
  });

  it('lets SMART v1 discovery through with unknown PKCE, client auth and launch modes: PKCE and state are still sent (SMART-DISC-07)', () => {
    const server = v1Smart();

    expect(() => requireCapabilities(server, issuer({ scope: 'launch patient/*.rs' }), 'ehr')).not.toThrow();
    expect(pkceFinding(server)).toMatchObject({ status: 'warn', summary: expect.stringContaining('PKCE S256 and state are sent anyway') });
    expect(launchModeFinding(server, 'ehr').status).toBe('info');
    expect(openidFinding(server, 'openid fhirUser')).toMatchObject({ status: 'fail', error: { code: 'OPENID_UNSUPPORTED' } });
  });
});

describe('launchScope: the issuer scope syntax (SMART-SCOPE-02)', () => {
  it('rewrites to v1 when the issuer says scopeSyntax "v1"', () => {
    expect(launchScope(issuer({ scopeSyntax: 'v1' }), 'ehr', smart()).scope).toBe('launch openid fhirUser patient/*.read offline_access');
  });

  it('rewrites to v1 on auto when the EHR advertises permission-v1 only', () => {
    const server = smart({ capabilities: ['launch-ehr', 'permission-v1'] });

    expect(launchScope(issuer(), 'standalone', server)).toMatchObject({ syntax: 'v1', scope: 'launch/patient openid fhirUser patient/*.read offline_access' });
  });

  it('sends the scope as configured on auto when the EHR advertises both syntaxes', () => {
    expect(launchScope(issuer(), 'ehr', smart())).toMatchObject({ syntax: undefined, scope: 'launch openid fhirUser patient/*.rs offline_access' });
  });

  it('rewrites v1 scopes of the config to v2 when the issuer says "v2"', () => {
    expect(launchScope(issuer({ scope: 'launch patient/Observation.read', scopeSyntax: 'v2' }), 'ehr', smart()).scope).toBe('launch patient/Observation.rs');
  });

  it('refuses granular scopes for a v1 EHR with SCOPE_NOT_EXPRESSIBLE (SMART-SCOPE-03)', () => {
    expect(() => launchScope(issuer({ scope: 'launch patient/Observation.rs?category=laboratory', scopeSyntax: 'v1' }), 'ehr', smart())).toThrow(
      expect.objectContaining({ code: 'SCOPE_NOT_EXPRESSIBLE' }),
    );
  });
});

describe('authorizeMethodFor (SMART-AUTHZ-10)', () => {
  const withPost = () => smart({ capabilities: ['launch-ehr', 'authorize-post'] });

  it.each([
    ['auto', 2000, true, 'GET'],
    ['auto', 2001, true, 'POST'],
    ['auto', 5000, false, 'GET'],
    ['GET', 5000, true, 'GET'],
    ['POST', 100, true, 'POST'],
  ] as const)('%s with a %i-character URL (authorize-post: %s) → %s', (setting, length, post, method) => {
    const server = post ? withPost() : smart();

    expect(authorizeMethodFor(issuer({ authorizeMethod: setting }), server, length)).toBe(method);
  });

  it('refuses authorizeMethod POST when the EHR does not advertise authorize-post with AUTHORIZE_POST_UNSUPPORTED', () => {
    expect(() => authorizeMethodFor(issuer({ authorizeMethod: 'POST' }), smart(), 100)).toThrow(
      expect.objectContaining({ code: 'AUTHORIZE_POST_UNSUPPORTED' }),
    );
  });

  it('allows authorizeMethod POST for SMART v1 discovery, where capabilities are unknown', () => {
    expect(authorizeMethodFor(issuer({ authorizeMethod: 'POST' }), v1Smart(), 100)).toBe('POST');
  });
});

describe('assessCapabilities: what doctor shows', () => {
  it('reports every failure at once, each with the code and message a launch gives', () => {
    const server = smart({
      code_challenge_methods_supported: ['plain'],
      token_endpoint_auth_methods_supported: ['private_key_jwt'],
      capabilities: ['sso-openid-connect'],
    });

    const findings = assessCapabilities(server, issuer({ default: true }));

    const failures = findings.filter((f) => f.status === 'fail').map((f) => [f.check, f.error?.code]);
    expect(failures).toEqual([
      ['pkce', 'PKCE_UNSUPPORTED'],
      ['client-auth', 'CLIENT_AUTH_UNSUPPORTED'],
      ['launch-ehr', 'LAUNCH_MODE_UNSUPPORTED'],
      ['launch-standalone', 'LAUNCH_MODE_UNSUPPORTED'],
    ]);
  });

  it('only warns about a missing launch mode when the other one works and the issuer is not the standalone default', () => {
    const server = smart({ capabilities: ['launch-ehr', 'sso-openid-connect'] });

    expect(assessCapabilities(server, issuer({ default: false })).find((f) => f.check === 'launch-standalone')).toMatchObject({
      status: 'warn',
      summary: expect.stringContaining('LAUNCH_MODE_UNSUPPORTED'),
    });
    expect(assessCapabilities(server, issuer({ default: true })).find((f) => f.check === 'launch-standalone')?.status).toBe('fail');
  });

  it('warns when v1 rewriting broadens a scope', () => {
    const finding = assessCapabilities(smart(), issuer({ scope: 'launch patient/Observation.r', scopeSyntax: 'v1' })).find((f) => f.check === 'scope-syntax');

    expect(finding).toMatchObject({ status: 'warn', summary: expect.stringContaining('patient/Observation.r') });
  });
});

describe('private_key_jwt assertion algorithm at doctor and launch (SMART-CAUTH-09)', () => {
  const pkj = (signingAlg?: 'RS384' | 'ES384') =>
    ({ ...issuer({ clientAuth: 'none', clientSecret: undefined }), clientAuth: 'private_key_jwt', ...(signingAlg ? { signingAlg } : {}) }) as IssuerConfig;
  const asymmetric = (algs?: string[]) =>
    smart({ token_endpoint_auth_methods_supported: ['private_key_jwt'], ...(algs ? { token_endpoint_auth_signing_alg_values_supported: algs } : {}) });

  it('refuses an EHR that lists assertion algorithms without ours, with the client-assertion check and its hint', () => {
    const findings = assessCapabilities(asymmetric(['ES384']), pkj());
    const failure = findings.find((f) => f.check === 'signing-alg');

    expect(failure).toMatchObject({ status: 'fail', error: { code: 'CLIENT_AUTH_FAILED', hint: expect.stringContaining('"signingAlg": "ES384"') } });
    expect(() => requireCapabilities(asymmetric(['ES384']), pkj(), 'ehr')).toThrow(expect.objectContaining({ message: failure?.summary }));
  });

  it('passes an EHR that lists ours, and notes an EHR that lists none', () => {
    expect(assessCapabilities(asymmetric(['RS384', 'ES384']), pkj('ES384')).find((f) => f.check === 'signing-alg')?.status).toBe('pass');
    expect(assessCapabilities(asymmetric(), pkj()).find((f) => f.check === 'signing-alg')?.status).toBe('info');
  });
});
