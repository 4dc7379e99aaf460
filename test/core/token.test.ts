import { describe, expect, it } from 'vitest';
import type { HttpClient } from '../../shared/core/ports.js';
import { callTokenEndpoint, parseTokenResponse } from '../../shared/core/ehr/token-endpoint.js';
import { json } from '../fakes/fake-ehr.js';

const TOKEN_URL = 'https://ehr.example.org/oauth2/token';
const GRANT = { grant_type: 'authorization_code', code: 'the-code', redirect_uri: 'https://smart.acme.example/callback', code_verifier: 'v'.repeat(43) };

/** A token request as a client authentication strategy would make it (client-auth.test.ts covers those). */
const GRANT_REQUEST = {
  url: TOKEN_URL,
  headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', authorization: 'Basic YXBwOnNlY3JldA==' },
  body: new URLSearchParams(GRANT).toString(),
};

function tokenBody(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { access_token: 'at-123', token_type: 'Bearer', expires_in: 3600, scope: 'launch openid patient/*.rs', ...overrides };
}

const parse = (body: unknown, status = 200) => parseTokenResponse(json(body, status));

describe('parseTokenResponse: token_type', () => {
  it.each(['Bearer', 'bearer', 'BEARER', 'bEaReR'])('accepts token_type "%s" case-insensitively (SMART-TOKEN-04)', async (tokenType) => {
    await expect(parse(tokenBody({ token_type: tokenType }))).resolves.toMatchObject({ access_token: 'at-123', token_type: tokenType });
  });

  it.each(['mac', 'DPoP', 'Basic', '', 'Bearer '])('refuses token_type "%s" with TOKEN_RESPONSE_INVALID (SMART-TOKEN-04)', async (tokenType) => {
    await expect(parse(tokenBody({ token_type: tokenType }))).rejects.toMatchObject({
      code: 'TOKEN_RESPONSE_INVALID',
      status: 502,
      details: { field: 'token_type' },
    });
  });

  it('refuses a response without token_type (SMART-TOKEN-03)', async () => {
    await expect(parse(tokenBody({ token_type: undefined }))).rejects.toMatchObject({ code: 'TOKEN_RESPONSE_INVALID', status: 502, details: { field: 'token_type' } });
  });
});

describe('parseTokenResponse: fields', () => {
  it('accepts expires_in as a number', async () => {
    await expect(parse(tokenBody({ expires_in: 570 }))).resolves.toMatchObject({ expires_in: 570 });
  });

  it('accepts expires_in as a numeric string and turns it into a number', async () => {
    const tokens = await parse(tokenBody({ expires_in: '3600' }));

    expect(tokens.expires_in).toBe(3600);
  });

  it('accepts a response without expires_in (SMART-TOKEN-05)', async () => {
    expect((await parse(tokenBody({ expires_in: undefined }))).expires_in).toBeUndefined();
  });

  it.each([['a negative number', -1], ['zero', 0], ['a fraction', 1.5], ['a non-numeric string', 'soon'], ['an exponent string', '1e3']])(
    'refuses expires_in as %s with TOKEN_RESPONSE_INVALID',
    async (_what, value) => {
      await expect(parse(tokenBody({ expires_in: value }))).rejects.toMatchObject({ code: 'TOKEN_RESPONSE_INVALID', status: 502, details: { field: 'expires_in' } });
    },
  );

  it('refuses a response without access_token with TOKEN_RESPONSE_INVALID naming the field (SMART-TOKEN-03)', async () => {
    await expect(parse(tokenBody({ access_token: undefined }))).rejects.toMatchObject({
      code: 'TOKEN_RESPONSE_INVALID',
      status: 502,
      details: { field: 'access_token' },
      message: expect.stringContaining('"access_token"'),
    });
  });

  it('refuses an empty access_token', async () => {
    await expect(parse(tokenBody({ access_token: '' }))).rejects.toMatchObject({ code: 'TOKEN_RESPONSE_INVALID', status: 502, details: { field: 'access_token' } });
  });

  it('accepts a response without scope (RFC 6749 §5.1: scope as requested)', async () => {
    expect((await parse(tokenBody({ scope: undefined }))).scope).toBeUndefined();
  });

  it('returns refresh_token and id_token when present, and none when absent (SMART-SCOPE-12)', async () => {
    await expect(parse(tokenBody({ refresh_token: 'rt', id_token: 'a.b.c' }))).resolves.toMatchObject({ refresh_token: 'rt', id_token: 'a.b.c' });
    const without = await parse(tokenBody());
    expect(without.refresh_token).toBeUndefined();
  });

  it('returns the launch context: patient, encounter, banner, style, intent, tenant (SMART-CTX-01, SMART-CTX-02, SMART-CTX-04)', async () => {
    const tokens = await parse(
      tokenBody({
        patient: 'pat-123',
        encounter: 'enc.456',
        need_patient_banner: false,
        smart_style_url: 'https://ehr.example.org/style.json',
        intent: 'reconcile-medications',
        tenant: 'org-1',
      }),
    );

    expect(tokens).toMatchObject({
      patient: 'pat-123',
      encounter: 'enc.456',
      need_patient_banner: false,
      smart_style_url: 'https://ehr.example.org/style.json',
      intent: 'reconcile-medications',
      tenant: 'org-1',
    });
  });

  it.each(['Patient/123', '../123', '123?x=1', 'a'.repeat(65), '', '12 3', '%2e%2e'])(
    'refuses patient id "%s" that is not a FHIR id, so context cannot smuggle a path (SMART-CTX-01)',
    async (patient) => {
      await expect(parse(tokenBody({ patient }))).rejects.toMatchObject({ code: 'TOKEN_RESPONSE_INVALID', status: 502, details: { field: 'patient' } });
    },
  );

  it('refuses an encounter id containing "/" (SMART-CTX-02)', async () => {
    await expect(parse(tokenBody({ encounter: 'Encounter/1' }))).rejects.toMatchObject({ code: 'TOKEN_RESPONSE_INVALID', status: 502, details: { field: 'encounter' } });
  });

  it('drops unknown and extension members (SMART-CTX-05)', async () => {
    const tokens = await parse(
      tokenBody({ 'https://example.org/smart/ext': { a: 1 }, __vendor_thing: true, unexpected: 'x', authorization_details: [] }),
    );

    expect(Object.keys(tokens).sort()).toEqual(['access_token', 'expires_in', 'scope', 'token_type']);
  });
});

describe('parseTokenResponse: fhirContext (SMART-CTX-03)', () => {
  it('accepts the object form with reference, canonical or identifier (SMART-CTX-03)', async () => {
    const fhirContext = [
      { reference: 'DiagnosticReport/123' },
      { canonical: 'http://example.org/Questionnaire/q|1.0', type: 'Questionnaire' },
      { identifier: { system: 'urn:ietf:rfc:3986', value: 'urn:uuid:1' }, type: 'ImagingStudy' },
      { reference: 'Patient/456', role: 'https://example.org/role/sibling' },
    ];

    await expect(parse(tokenBody({ fhirContext }))).resolves.toMatchObject({ fhirContext });
  });

  it('accepts the legacy array-of-strings form (SMART-CTX-03)', async () => {
    await expect(parse(tokenBody({ fhirContext: ['DiagnosticReport/123', 'Observation/1'] }))).resolves.toMatchObject({
      fhirContext: ['DiagnosticReport/123', 'Observation/1'],
    });
  });

  it('refuses an empty object item with TOKEN_RESPONSE_INVALID (SMART-CTX-03)', async () => {
    await expect(parse(tokenBody({ fhirContext: [{}] }))).rejects.toMatchObject({
      code: 'TOKEN_RESPONSE_INVALID',
      status: 502,
      details: { field: expect.stringMatching(/^fhirContext/) },
    });
  });

  it('refuses an item with only type and role (SMART-CTX-03)', async () => {
    await expect(parse(tokenBody({ fhirContext: [{ type: 'Patient', role: 'launch' }] }))).rejects.toMatchObject({ code: 'TOKEN_RESPONSE_INVALID', status: 502 });
  });

  it('refuses an empty role, which the IG forbids (SMART-CTX-03)', async () => {
    await expect(parse(tokenBody({ fhirContext: [{ reference: 'Patient/1', role: '' }] }))).rejects.toMatchObject({ code: 'TOKEN_RESPONSE_INVALID', status: 502 });
  });

  it('refuses fhirContext that is not an array', async () => {
    await expect(parse(tokenBody({ fhirContext: { reference: 'Patient/1' } }))).rejects.toMatchObject({
      code: 'TOKEN_RESPONSE_INVALID', status: 502,
      details: { field: 'fhirContext' },
    });
  });
});

describe('parseTokenResponse: errors (SMART-TOKEN-11)', () => {
  it('maps 400 invalid_grant to TOKEN_REQUEST_REJECTED (SMART-TOKEN-11)', async () => {
    await expect(parse({ error: 'invalid_grant', error_description: 'code expired' }, 400)).rejects.toMatchObject({
      code: 'TOKEN_REQUEST_REJECTED',
      status: 400,
      details: { oauthError: 'invalid_grant' },
    });
  });

  it('maps 400 invalid_client to CLIENT_AUTH_FAILED (SMART-TOKEN-11)', async () => {
    await expect(parse({ error: 'invalid_client' }, 400)).rejects.toMatchObject({ code: 'CLIENT_AUTH_FAILED', status: 502 });
  });

  it('maps 401 invalid_client to CLIENT_AUTH_FAILED (SMART-TOKEN-11)', async () => {
    await expect(parse({ error: 'invalid_client' }, 401)).rejects.toMatchObject({ code: 'CLIENT_AUTH_FAILED', status: 502 });
  });

  it('maps any 401 with a JSON body to CLIENT_AUTH_FAILED (SMART-TOKEN-11)', async () => {
    await expect(parse({ message: 'unauthorized' }, 401)).rejects.toMatchObject({ code: 'CLIENT_AUTH_FAILED', status: 502 });
  });

  it('maps a 401 with an empty body (only WWW-Authenticate) to CLIENT_AUTH_FAILED (SMART-TOKEN-11)', async () => {
    const response = new Response(null, { status: 401, headers: { 'www-authenticate': 'Basic realm="oauth"' } });

    await expect(parseTokenResponse(response)).rejects.toMatchObject({ code: 'CLIENT_AUTH_FAILED', status: 502 });
  });

  it('maps a 400 that is not an OAuth error body to TOKEN_REQUEST_REJECTED with oauthError "unknown"', async () => {
    await expect(parse({ message: 'bad' }, 400)).rejects.toMatchObject({ code: 'TOKEN_REQUEST_REJECTED', status: 400, details: { oauthError: 'unknown' } });
  });

  it('does not carry an over-long error value into its details', async () => {
    const error = await parse({ error: 'x'.repeat(5000) }, 400).catch((e: unknown) => e);

    expect(error).toMatchObject({ code: 'TOKEN_REQUEST_REJECTED', status: 400 });
    expect(String((error as { details: { oauthError: string } }).details.oauthError).length).toBeLessThanOrEqual(64);
  });

  it.each([500, 502, 503, 429])('maps HTTP %i with a JSON body to TOKEN_ENDPOINT_UNAVAILABLE', async (status) => {
    await expect(parse({ error: 'temporarily_unavailable' }, status)).rejects.toMatchObject({
      code: 'TOKEN_ENDPOINT_UNAVAILABLE',
      status: 502,
    });
  });

  it.each([500, 429])('maps HTTP %i with a non-JSON body to TOKEN_ENDPOINT_UNAVAILABLE', async (status) => {
    const response = new Response('<html>Service Unavailable</html>', { status, headers: { 'content-type': 'text/html' } });

    await expect(parseTokenResponse(response)).rejects.toMatchObject({ code: 'TOKEN_ENDPOINT_UNAVAILABLE', status: 502 });
  });

  it('maps a 200 that is not JSON to TOKEN_RESPONSE_INVALID', async () => {
    const response = new Response('access_token=x&token_type=bearer', { status: 200, headers: { 'content-type': 'text/plain' } });

    await expect(parseTokenResponse(response)).rejects.toMatchObject({ code: 'TOKEN_RESPONSE_INVALID', status: 502 });
  });

  it('maps a 200 whose body is a JSON array to TOKEN_RESPONSE_INVALID', async () => {
    await expect(parse([tokenBody()])).rejects.toMatchObject({ code: 'TOKEN_RESPONSE_INVALID', status: 502 });
  });
});

describe('callTokenEndpoint', () => {
  it('POSTs the form without following redirects and with a timeout signal', async () => {
    const calls: Array<{ url: string; init: RequestInit | undefined }> = [];
    const http: HttpClient = async (url, init) => (calls.push({ url, init }), json(tokenBody()));
    const request = GRANT_REQUEST;

    await callTokenEndpoint(http, request);

    expect(calls).toHaveLength(1);
    expect(calls[0]?.url).toBe(TOKEN_URL);
    expect(calls[0]?.init).toMatchObject({ method: 'POST', body: request.body, redirect: 'manual' });
    expect(calls[0]?.init?.signal).toBeInstanceOf(AbortSignal);
  });

  it('maps a network error to TOKEN_ENDPOINT_UNAVAILABLE', async () => {
    const http: HttpClient = async () => {
      throw new TypeError('fetch failed');
    };

    await expect(callTokenEndpoint(http, GRANT_REQUEST)).rejects.toMatchObject({
      code: 'TOKEN_ENDPOINT_UNAVAILABLE',
      status: 502,
    });
  });

  it('maps a timeout to TOKEN_ENDPOINT_UNAVAILABLE', async () => {
    const http: HttpClient = async () => {
      throw new DOMException('timed out', 'TimeoutError');
    };

    await expect(callTokenEndpoint(http, GRANT_REQUEST)).rejects.toMatchObject({
      code: 'TOKEN_ENDPOINT_UNAVAILABLE',
      status: 502,
    });
  });
});
