import { describe, expect, it } from 'vitest';
import type { ConfigMode } from '../../shared/config/schema.js';
import { checkPkceSupported, discoverIssuer, readSmartConfiguration, smartConfigurationUrl, type SmartConfiguration } from '../../shared/core/discovery.js';
import type { HttpClient } from '../../shared/core/ports.js';
import { FixedClock } from '../fakes/clock.js';
import { FakeEhr, json } from '../fakes/fake-ehr.js';

/** Reading a document and the PKCE judgement the launch makes on it (SMART-DISC-04), together. */
function parseSmartConfiguration(document: unknown, mode: ConfigMode): SmartConfiguration {
  const smart = readSmartConfiguration(document, mode);
  checkPkceSupported(smart);
  return smart;
}

/** The launch's discovery of one issuer, with the same PKCE judgement. */
async function discover(http: HttpClient, iss: string, mode: ConfigMode): Promise<SmartConfiguration> {
  const smart = await discoverIssuer(http, { iss }, mode);
  checkPkceSupported(smart);
  return smart;
}

const ISS = 'https://ehr.example.org/fhir/r4';

function document(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    issuer: 'https://ehr.example.org/oauth2',
    jwks_uri: 'https://ehr.example.org/oauth2/jwks',
    authorization_endpoint: 'https://ehr.example.org/oauth2/authorize',
    token_endpoint: 'https://ehr.example.org/oauth2/token',
    grant_types_supported: ['authorization_code'],
    capabilities: ['launch-ehr'],
    code_challenge_methods_supported: ['S256'],
    ...overrides,
  };
}

function without(field: string): Record<string, unknown> {
  const doc = document();
  delete doc[field];
  return doc;
}

describe('smartConfigurationUrl', () => {
  it('appends /.well-known/smart-configuration to a base that has a path (SMART-DISC-01)', () => {
    expect(smartConfigurationUrl('https://ehr.example.org/fhir/r4')).toBe('https://ehr.example.org/fhir/r4/.well-known/smart-configuration');
  });

  it('appends after a trailing slash without doubling it (SMART-DISC-01)', () => {
    expect(smartConfigurationUrl('https://ehr.example.org/fhir/r4/')).toBe('https://ehr.example.org/fhir/r4/.well-known/smart-configuration');
  });

  it('keeps the tenant segment of a multi-tenant base (SMART-DISC-01)', () => {
    expect(smartConfigurationUrl('https://fhir-ehr.example.com/r4/ec2458f2-1e24-41c8-b71b-0e701af7583d')).toBe(
      'https://fhir-ehr.example.com/r4/ec2458f2-1e24-41c8-b71b-0e701af7583d/.well-known/smart-configuration',
    );
  });
});

describe('parseSmartConfiguration', () => {
  it('returns the endpoints, issuer and RFC 9207 support of a valid document (SMART-DISC-09)', () => {
    const smart = parseSmartConfiguration(
      document({ revocation_endpoint: 'https://ehr.example.org/oauth2/revoke', authorization_response_iss_parameter_supported: true }),
      'aws',
    );

    expect(smart.endpoints).toEqual({
      authorizationEndpoint: 'https://ehr.example.org/oauth2/authorize',
      tokenEndpoint: 'https://ehr.example.org/oauth2/token',
      issuer: 'https://ehr.example.org/oauth2',
      jwksUri: 'https://ehr.example.org/oauth2/jwks',
      revocationEndpoint: 'https://ehr.example.org/oauth2/revoke',
      issParameterSupported: true,
    });
    expect(smart.capabilities).toEqual(['launch-ehr']);
  });

  it('treats an absent authorization_response_iss_parameter_supported as false', () => {
    expect(parseSmartConfiguration(document(), 'aws').endpoints.issParameterSupported).toBe(false);
  });

  it.each(['authorization_endpoint', 'token_endpoint', 'grant_types_supported', 'capabilities', 'code_challenge_methods_supported'])(
    'refuses a document without "%s" with DISCOVERY_INVALID naming the field (SMART-DISC-02)',
    (field) => {
      expect(() => parseSmartConfiguration(without(field), 'aws')).toThrow(
        expect.objectContaining({ code: 'DISCOVERY_INVALID', status: 502, details: { field }, message: expect.stringContaining(`"${field}"`) }),
      );
    },
  );

  it.each(['issuer', 'jwks_uri'])(
    'refuses a document that advertises sso-openid-connect without "%s" with DISCOVERY_INVALID naming the field (SMART-DISC-02)',
    (field) => {
      const doc = without(field);
      doc.capabilities = ['launch-ehr', 'sso-openid-connect'];

      expect(() => parseSmartConfiguration(doc, 'aws')).toThrow(
        expect.objectContaining({ code: 'DISCOVERY_INVALID', status: 502, details: { field } }),
      );
    },
  );

  it('accepts a document without issuer and jwks_uri when it does not advertise sso-openid-connect (SMART-DISC-02)', () => {
    const doc = without('issuer');
    delete doc.jwks_uri;

    expect(parseSmartConfiguration(doc, 'aws').endpoints).toMatchObject({ issuer: undefined, jwksUri: undefined });
  });

  it.each([
    ['token_endpoint', 42],
    ['authorization_endpoint', ['https://ehr.example.org/oauth2/authorize']],
    ['capabilities', 'launch-ehr'],
    ['grant_types_supported', [1, 2]],
    ['code_challenge_methods_supported', 'S256'],
    ['issuer', true],
    ['jwks_uri', {}],
    ['authorization_response_iss_parameter_supported', 'true'],
  ])('refuses a "%s" of the wrong type with DISCOVERY_INVALID naming the field (SMART-DISC-02)', (field, value) => {
    expect(() => parseSmartConfiguration(document({ [field]: value }), 'aws')).toThrow(
      expect.objectContaining({ code: 'DISCOVERY_INVALID', status: 502, details: { field: expect.stringMatching(new RegExp(`^${field}`)) } }),
    );
  });

  it.each([['a JSON array', []], ['null', null], ['a string', 'hello']])('refuses %s as the document with DISCOVERY_INVALID', (_what, value) => {
    expect(() => parseSmartConfiguration(value, 'aws')).toThrow(expect.objectContaining({ code: 'DISCOVERY_INVALID', status: 502 }));
  });

  it.each([
    ['only plain', ['plain']],
    ['an empty list', []],
    ['lower-case s256', ['s256']],
  ])('fails closed with PKCE_UNSUPPORTED when code_challenge_methods_supported has %s (SMART-DISC-04)', (_what, methods) => {
    expect(() => parseSmartConfiguration(document({ code_challenge_methods_supported: methods }), 'aws')).toThrow(
      expect.objectContaining({ code: 'PKCE_UNSUPPORTED', status: 502 }),
    );
  });

  it('tolerates extra grant types, URI capabilities and unknown members (SMART-DISC-06)', () => {
    const smart = parseSmartConfiguration(
      document({
        grant_types_supported: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:jwt-bearer', 'urn:ietf:params:oauth:grant-type:token-exchange'],
        capabilities: ['launch-ehr', 'http://example.org/fhir/ig/capability/something', 'permission-v2'],
        code_challenge_methods_supported: ['S256', 'S512'],
        management_endpoint: 'https://ehr.example.org/manage',
        associated_endpoints: [{ url: 'https://x.example', capabilities: [] }],
        'x-vendor-extension': { deeply: ['nested'] },
      }),
      'aws',
    );

    expect(smart.capabilities).toContain('http://example.org/fhir/ig/capability/something');
    expect(smart.endpoints.tokenEndpoint).toBe('https://ehr.example.org/oauth2/token');
  });

  it.each(['authorization_endpoint', 'token_endpoint', 'jwks_uri', 'revocation_endpoint'])(
    'refuses an http "%s" in aws mode with DISCOVERY_INVALID (SMART-DISC-05)',
    (field) => {
      expect(() => parseSmartConfiguration(document({ [field]: 'http://ehr.example.org/oauth2/x' }), 'aws')).toThrow(
        expect.objectContaining({ code: 'DISCOVERY_INVALID', status: 502, message: expect.stringContaining(`"${field}"`) }),
      );
    },
  );

  it('refuses loopback http endpoints in aws mode', () => {
    expect(() => parseSmartConfiguration(document({ token_endpoint: 'http://localhost:9000/token' }), 'aws')).toThrow(
      expect.objectContaining({ code: 'DISCOVERY_INVALID', status: 502 }),
    );
  });

  it.each(['http://localhost:9000/token', 'http://127.0.0.1:9000/token', 'http://[::1]:9000/token'])(
    'accepts loopback http endpoint %s in local mode',
    (url) => {
      expect(parseSmartConfiguration(document({ token_endpoint: url }), 'local').endpoints.tokenEndpoint).toBe(url);
    },
  );

  it('refuses non-loopback http endpoints in local mode too', () => {
    expect(() => parseSmartConfiguration(document({ token_endpoint: 'http://ehr.example.org/token' }), 'local')).toThrow(
      expect.objectContaining({ code: 'DISCOVERY_INVALID', status: 502 }),
    );
  });

  it.each(['/oauth2/token', 'oauth2/token', 'javascript:alert(1)', 'file:///etc/passwd'])(
    'refuses a token_endpoint "%s" that is not an absolute https URL (SMART-DISC-05)',
    (url) => {
      expect(() => parseSmartConfiguration(document({ token_endpoint: url }), 'local')).toThrow(
        expect.objectContaining({ code: 'DISCOVERY_INVALID', status: 502 }),
      );
    },
  );
});

describe('discover', () => {
  const recording = (answer: () => Response | Promise<Response>) => {
    const calls: Array<{ url: string; init: RequestInit | undefined }> = [];
    const http: HttpClient = async (url, init) => {
      calls.push({ url, init });
      return answer();
    };
    return { http, calls };
  };

  it('GETs {iss}/.well-known/smart-configuration with Accept: application/json (SMART-DISC-01)', async () => {
    const { http, calls } = recording(() => json(document()));

    await discover(http, ISS, 'aws');

    expect(calls).toHaveLength(1);
    expect(calls[0]?.url).toBe(`${ISS}/.well-known/smart-configuration`);
    expect(calls[0]?.init?.method ?? 'GET').toBe('GET');
    expect(new Headers(calls[0]?.init?.headers).get('accept')).toBe('application/json');
  });

  it('reads the document the fake EHR serves', async () => {
    const ehr = await FakeEhr.create({ clock: new FixedClock() });

    const smart = await discover(ehr.http, ehr.fhirBase, 'aws');

    expect(smart.endpoints.authorizationEndpoint).toBe(ehr.authorizationEndpoint);
    expect(ehr.requests.map((r) => r.url)).toEqual([`${ehr.fhirBase}/.well-known/smart-configuration`]);
  });

  it.each([500, 503, 404, 401])('maps HTTP %i to DISCOVERY_UNAVAILABLE', async (status) => {
    const { http } = recording(() => json({ error: 'x' }, status));

    await expect(discover(http, ISS, 'aws')).rejects.toMatchObject({ code: 'DISCOVERY_UNAVAILABLE', status: 502, details: { status } });
  });

  it('maps a network error to DISCOVERY_UNAVAILABLE', async () => {
    const http: HttpClient = async () => {
      throw new TypeError('fetch failed');
    };

    await expect(discover(http, ISS, 'aws')).rejects.toMatchObject({ code: 'DISCOVERY_UNAVAILABLE', status: 502 });
  });

  it('maps a timeout to DISCOVERY_UNAVAILABLE', async () => {
    const http: HttpClient = async () => {
      throw new DOMException('The operation was aborted due to timeout', 'TimeoutError');
    };

    await expect(discover(http, ISS, 'aws')).rejects.toMatchObject({ code: 'DISCOVERY_UNAVAILABLE', status: 502 });
  });

  it('passes an abort signal so a hanging EHR cannot hold the Lambda', async () => {
    const { http, calls } = recording(() => json(document()));

    await discover(http, ISS, 'aws');

    expect(calls[0]?.init?.signal).toBeInstanceOf(AbortSignal);
  });

  it('maps a 200 answer that is not JSON to DISCOVERY_INVALID', async () => {
    const { http } = recording(() => new Response('<html>Login</html>', { status: 200, headers: { 'content-type': 'text/html' } }));

    await expect(discover(http, ISS, 'aws')).rejects.toMatchObject({ code: 'DISCOVERY_INVALID', status: 502 });
  });

  it('validates the fetched document (no S256 → PKCE_UNSUPPORTED) (SMART-DISC-04)', async () => {
    const { http } = recording(() => json(document({ code_challenge_methods_supported: ['plain'] })));

    await expect(discover(http, ISS, 'aws')).rejects.toMatchObject({ code: 'PKCE_UNSUPPORTED', status: 502 });
  });
});
