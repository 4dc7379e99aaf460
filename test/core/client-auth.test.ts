import { decodeJwt, decodeProtectedHeader } from 'jose';
import { describe, expect, it } from 'vitest';
import { cryptoRandom } from '../../shared/adapters/system.js';
import { parseConfig, type IssuerConfig } from '../../shared/config/schema.js';
import { CLIENT_ASSERTION_TYPE, createClientAssertion } from '../../shared/core/client-assertion.js';
import {
  clientAuthenticationFor,
  clientSecretBasic,
  privateKeyJwt,
  publicClient,
  type ClientAuthentication,
} from '../../shared/core/ehr/client-auth.js';
import type { ClientAssertionAlg } from '../../shared/core/ports.js';
import { FixedClock } from '../fakes/clock.js';
import { sampleConfig, sampleIssuer } from '../fakes/deps.js';
import { MemorySigner } from '../fakes/memory-signer.js';

const TOKEN_URL = 'https://ehr.example.org/oauth2/token';
const REVOKE_URL = 'https://ehr.example.org/oauth2/revoke';
const CODE_GRANT = { grant_type: 'authorization_code', code: 'the-code', redirect_uri: 'https://smart.acme.example/callback', code_verifier: 'v'.repeat(43) };
const REFRESH_GRANT = { grant_type: 'refresh_token', refresh_token: 'rt-1' };
const FORM_HEADERS = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
const SECRET = 'p4ss-w0rd_secret';

function issuerConfig(overrides: Record<string, unknown> = {}): IssuerConfig {
  const issuer = parseConfig(sampleConfig({ issuers: [sampleIssuer(overrides)] }), 'local').issuers[0];
  if (issuer === undefined) throw new Error('no issuer');
  return issuer;
}

const publicIssuer = () => issuerConfig({ clientAuth: 'none', clientSecret: undefined, clientId: 'public-app' });
const jwtIssuer = (overrides: Record<string, unknown> = {}) => issuerConfig({ clientAuth: 'private_key_jwt', clientSecret: undefined, clientId: 'jwt-app', ...overrides });

const signer = new MemorySigner();
const clock = new FixedClock();
const assertion = (alg: ClientAssertionAlg, audience = TOKEN_URL) => createClientAssertion(signer, { clientId: 'jwt-app', audience, alg, now: clock.now() }, cryptoRandom);

/** The strategy an issuer's configuration selects, with `secret` as what `ClientSecrets` answers. */
function authFor(issuer: IssuerConfig, secret?: string, withSigner = true): ClientAuthentication {
  return clientAuthenticationFor({ clientSecrets: { get: async () => secret }, signer: withSigner ? signer : undefined, clock, random: cryptoRandom }, issuer);
}

const formOf = (body: string) => Object.fromEntries(new URLSearchParams(body));

/** RFC 6749 Appendix B: application/x-www-form-urlencoded, as an independent reference. */
const formEncode = (value: string) => new URLSearchParams({ v: value }).toString().slice(2);

describe('client authentication strategies: the exact request each one makes', () => {
  it('none: client_id in the body, the form headers and no Authorization (SMART-TOKEN-01)', async () => {
    const request = await publicClient('public-app').formRequest(TOKEN_URL, CODE_GRANT);

    expect(request).toEqual({ url: TOKEN_URL, headers: FORM_HEADERS, body: new URLSearchParams({ ...CODE_GRANT, client_id: 'public-app' }).toString() });
  });

  it('client_secret_basic: the secret in the Authorization header only, no client_id in the body (SMART-CAUTH-01)', async () => {
    const request = await clientSecretBasic('my-app', async () => SECRET).formRequest(TOKEN_URL, CODE_GRANT);

    expect(request).toEqual({
      url: TOKEN_URL,
      headers: { ...FORM_HEADERS, authorization: `Basic ${Buffer.from(`my-app:${SECRET}`).toString('base64')}` },
      body: new URLSearchParams(CODE_GRANT).toString(),
    });
    expect(request.body).not.toContain(SECRET);
  });

  it('client_secret_basic with sendClientId: client_id in the body too, the secret still only in the header', async () => {
    const request = await clientSecretBasic('my-app', async () => SECRET, { sendClientId: true }).formRequest(REVOKE_URL, { token: 'rt-1' });

    expect(request.headers.authorization).toBe(`Basic ${Buffer.from(`my-app:${SECRET}`).toString('base64')}`);
    expect(formOf(request.body)).toEqual({ token: 'rt-1', client_id: 'my-app' });
    expect(request.body).not.toContain(SECRET);
  });

  it('private_key_jwt: client_assertion_type and an assertion for this URL in the body, no Authorization, no client_id (SMART-CAUTH-04)', async () => {
    const made: string[] = [];
    const auth = privateKeyJwt('jwt-app', async (audience) => {
      const jwt = await assertion('ES384', audience);
      made.push(jwt);
      return jwt;
    });

    const request = await auth.formRequest(REVOKE_URL, { token: 'rt-1', token_type_hint: 'refresh_token' });

    expect(made).toHaveLength(1);
    expect(request).toEqual({
      url: REVOKE_URL,
      headers: FORM_HEADERS,
      body: new URLSearchParams({ token: 'rt-1', token_type_hint: 'refresh_token', client_assertion_type: CLIENT_ASSERTION_TYPE, client_assertion: made[0]! }).toString(),
    });
    expect(decodeJwt(made[0]!).aud).toBe(REVOKE_URL);
  });

  it('each strategy names the method it implements', () => {
    expect(authFor(publicIssuer()).method).toBe('none');
    expect(authFor(issuerConfig(), SECRET).method).toBe('client_secret_basic');
    expect(authFor(jwtIssuer()).method).toBe('private_key_jwt');
  });
});

describe('clientAuthenticationFor: the strategy chosen from the issuer configuration', () => {
  it('sends grant_type, code, redirect_uri and code_verifier as a form (SMART-TOKEN-01)', async () => {
    const request = await authFor(issuerConfig(), 'secret').formRequest(TOKEN_URL, CODE_GRANT);

    expect(request.url).toBe(TOKEN_URL);
    expect(request.headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(formOf(request.body)).toEqual(CODE_GRANT);
  });

  it('authenticates a confidential client with Basic base64(id ":" secret) and no client_id in the body (SMART-CAUTH-01, SMART-TOKEN-01)', async () => {
    const request = await authFor(issuerConfig({ clientId: 'my-app' }), 'Unreserved-secret_1.2~3').formRequest(TOKEN_URL, CODE_GRANT);

    expect(request.headers.authorization).toBe(`Basic ${Buffer.from('my-app:Unreserved-secret_1.2~3').toString('base64')}`);
    expect(new URLSearchParams(request.body).has('client_id')).toBe(false);
  });

  it('form-urlencodes id and secret before base64 (SMART-CAUTH-02, RFC 6749 §2.3.1)', async () => {
    const clientId = 'my app:1/ü';
    const secret = 'p@ss w/rd+=&%:';

    const request = await authFor(issuerConfig({ clientId }), secret).formRequest(TOKEN_URL, CODE_GRANT);

    const header = request.headers.authorization ?? '';
    expect(header).toMatch(/^Basic [A-Za-z0-9+/]+=*$/);
    const decoded = Buffer.from(header.slice('Basic '.length), 'base64').toString('utf8');
    expect(decoded).toBe(`${formEncode(clientId)}:${formEncode(secret)}`);
    expect(decoded.split(':')).toHaveLength(2);
    expect(request.body).not.toContain(formEncode(secret));
  });

  it('refuses to build a confidential request without a secret, with CLIENT_AUTH_FAILED', async () => {
    await expect(authFor(issuerConfig(), undefined).formRequest(TOKEN_URL, CODE_GRANT)).rejects.toMatchObject({ code: 'CLIENT_AUTH_FAILED', status: 502 });
  });

  it('sends client_id and no Authorization header for a public client (SMART-TOKEN-01)', async () => {
    const request = await authFor(publicIssuer()).formRequest(TOKEN_URL, CODE_GRANT);

    expect(request.headers).not.toHaveProperty('authorization');
    expect(new URLSearchParams(request.body).get('client_id')).toBe('public-app');
  });

  it('never sends a secret for a public client even if the secret store has one', async () => {
    const request = await authFor(publicIssuer(), 'should-not-leak').formRequest(TOKEN_URL, CODE_GRANT);

    expect(request.body).not.toContain('should-not-leak');
    expect(JSON.stringify(request.headers)).not.toContain('should-not-leak');
  });

  it('never sends a client secret with private_key_jwt, even if the secret store has one', async () => {
    const request = await authFor(jwtIssuer(), 'should-not-leak').formRequest(TOKEN_URL, REFRESH_GRANT);

    expect(request.body).not.toContain('should-not-leak');
    expect(request.headers).not.toHaveProperty('authorization');
    expect(new URLSearchParams(request.body).get('client_assertion_type')).toBe(CLIENT_ASSERTION_TYPE);
  });

  it('adds client_id for an EHR that needs it with client authentication (sendClientIdWithAuth quirk)', async () => {
    const request = await authFor(jwtIssuer({ sendClientIdWithAuth: true })).formRequest(TOKEN_URL, REFRESH_GRANT);
    expect(new URLSearchParams(request.body).get('client_id')).toBe('jwt-app');

    const basic = issuerConfig({ sendClientIdWithAuth: true });
    const basicRequest = await authFor(basic, 'secret').formRequest(TOKEN_URL, REFRESH_GRANT);
    expect(basicRequest.headers.authorization).toMatch(/^Basic /);
    expect(new URLSearchParams(basicRequest.body).get('client_id')).toBe(basic.clientId);
  });
});

describe('private_key_jwt requests (SMART-CAUTH-04)', () => {
  it('sends client_assertion_type and client_assertion, no Authorization header and no client_id', async () => {
    const request = await authFor(jwtIssuer()).formRequest(TOKEN_URL, REFRESH_GRANT);

    expect(request.headers).not.toHaveProperty('authorization');
    const form = new URLSearchParams(request.body);
    expect(form.get('client_assertion_type')).toBe(CLIENT_ASSERTION_TYPE);
    expect(CLIENT_ASSERTION_TYPE).toBe('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
    expect(decodeJwt(form.get('client_assertion')!).iss).toBe('jwt-app');
    expect(form.has('client_id')).toBe(false);
    expect(form.get('grant_type')).toBe('refresh_token');
  });

  it('never sends an assertion to a URL other than its aud (SMART-CAUTH-07)', async () => {
    const forTokenEndpoint = await assertion('ES384', TOKEN_URL);
    const misdirected = privateKeyJwt('jwt-app', async () => forTokenEndpoint);

    await expect(misdirected.formRequest(REVOKE_URL, { token: 'rt-1' })).rejects.toMatchObject({ code: 'INTERNAL' });
    await expect(misdirected.formRequest(`${TOKEN_URL}/`, REFRESH_GRANT)).rejects.toMatchObject({ code: 'INTERNAL' });
    await expect(misdirected.formRequest(TOKEN_URL, REFRESH_GRANT)).resolves.toMatchObject({ url: TOKEN_URL });
  });

  it('makes a fresh assertion per request whose aud is the endpoint it is for (SMART-CAUTH-06, SMART-CAUTH-07)', async () => {
    const auth = authFor(jwtIssuer({ signingAlg: 'ES384' }));

    const first = await auth.formRequest(TOKEN_URL, REFRESH_GRANT);
    const second = await auth.formRequest(REVOKE_URL, { token: 'rt-1' });

    const [a, b] = [first, second].map((request) => new URLSearchParams(request.body).get('client_assertion')!);
    expect(decodeProtectedHeader(a!).alg).toBe('ES384');
    expect(decodeJwt(a!).aud).toBe(TOKEN_URL);
    expect(decodeJwt(b!).aud).toBe(REVOKE_URL);
    expect(decodeJwt(a!).jti).not.toBe(decodeJwt(b!).jti);
    expect(decodeJwt(a!).iat).toBe(Math.floor(clock.now() / 1000));
  });

  it('fails with CLIENT_AUTH_FAILED and a hint when no signer is configured', async () => {
    await expect(authFor(jwtIssuer(), undefined, false).formRequest(TOKEN_URL, REFRESH_GRANT)).rejects.toMatchObject({
      code: 'CLIENT_AUTH_FAILED',
      hint: expect.stringContaining('signing key'),
    });
  });
});
