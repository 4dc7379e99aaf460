import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jwksUrlOf, LOCAL_JWT_CLIENT, sampleConfig } from '../../local/stack.js';
import { CLIENT_ASSERTION_TYPE } from '../../shared/core/client-assertion.js';
import type { ClientAssertionAlg, PublicJwk } from '../../shared/core/ports.js';
import { BrowserClient } from './browser-client.js';
import { ehrLaunch, itemTexts, scanTable, sessionIdFrom, startFixture, type Fixture } from './stack-fixture.js';

/*
 * private_key_jwt end to end over real HTTP: the local stack signs client assertions with the keys in
 * its data folder and publishes them at GET /.well-known/jwks.json; the sandbox EHR (oidc-provider)
 * fetches that JWKS URL and verifies every assertion, refusing any jti it has seen.
 */

interface Sent {
  readonly url: string;
  readonly body: string;
  readonly authorization: string | null;
  readonly assertion: string | undefined;
}

/** The real fetch, recording what the API sends to the EHR's token and revocation endpoints. */
function recordingFetch(sent: Sent[]): typeof fetch {
  return async (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    if (typeof init?.body === 'string' && init.method === 'POST') {
      sent.push({
        url,
        body: init.body,
        authorization: new Headers(init.headers).get('authorization'),
        assertion: new URLSearchParams(init.body).get('client_assertion') ?? undefined,
      });
    }
    return fetch(input, init);
  };
}

const SCOPE = 'launch openid fhirUser patient/*.rs offline_access';

function jwtConfig(apiUrl: string, fhirBaseUrl: string, clientId: string, alg: ClientAssertionAlg): unknown {
  const base = sampleConfig(apiUrl, fhirBaseUrl) as Record<string, unknown>;
  return { ...base, issuers: [{ iss: fhirBaseUrl, clientId, clientAuth: 'private_key_jwt', signingAlg: alg, scope: SCOPE, default: true }] };
}

describe.each(['RS384', 'ES384'] as const)('private_key_jwt %s against the sandbox EHR, verified through our JWKS URL (SMART-CAUTH-04..07, SMART-REG-03..05)', (alg) => {
  const clientId = `smart-launch-jwt-${alg.toLowerCase()}`;
  const sent: Sent[] = [];
  let fixture: Fixture;
  let tokenEndpoint: string;
  let revocationEndpoint: string;

  beforeAll(async () => {
    fixture = await startFixture({
      http: recordingFetch(sent),
      // The EHR registers the client with our JWKS URL and pins the algorithm (token_endpoint_auth_signing_alg).
      sandboxClients: (apiUrl) => [{ clientId, clientAuth: 'private_key_jwt', jwksUri: jwksUrlOf(apiUrl), signingAlg: alg, redirectUris: [`${apiUrl}/callback`] }],
      configure: ({ apiUrl, sandbox }) => jwtConfig(apiUrl, sandbox!.fhirBaseUrl, clientId, alg),
    }, undefined, { seededSigningKeys: 0 });
    const discovery = (await (await fetch(`${fixture.stack.sandbox!.fhirBaseUrl}/.well-known/smart-configuration`)).json()) as Record<string, string>;
    tokenEndpoint = discovery.token_endpoint!;
    revocationEndpoint = discovery.revocation_endpoint!;
  });
  afterAll(async () => {
    await fixture?.close();
  });

  it('serves the JWKS the EHR fetches: public keys only, unique kids, Cache-Control (SMART-REG-04)', async () => {
    const response = await fetch(jwksUrlOf(fixture.stack.apiUrl));

    expect(response.status).toBe(200);
    expect(response.headers.get('cache-control')).toBe('public, max-age=300');
    expect(response.headers.get('content-type')).toBe('application/json');
    const { keys } = (await response.json()) as { keys: PublicJwk[] };
    expect(keys.map((k) => [k.kty, k.alg, k.use])).toEqual([
      ['RSA', 'RS384', 'sig'],
      ['EC', 'ES384', 'sig'],
    ]);
    expect(new Set(keys.map((k) => k.kid)).size).toBe(2);
    expect(JSON.stringify(keys)).not.toMatch(/"(d|p|q|dp|dq|qi)":/);
  });

  it('runs an EHR launch, a refresh and a logout, each authenticated with a fresh assertion for its own endpoint', async () => {
    // Arrange
    const sandbox = fixture.stack.sandbox!;
    sandbox.resetStats();
    sent.length = 0;
    const browser = new BrowserClient();
    const patient = sandbox.patients[0]!;

    // Act: EHR launch (code exchange), a FHIR read, refresh now, log out (revocation).
    const sessionId = sessionIdFrom(await ehrLaunch(fixture, browser, patient.id));
    const url = `${fixture.stack.apiUrl}/sessions/${sessionId}`;
    const read = await browser.call(`${url}/fhir/Patient/${patient.id}`);
    const refreshed = await browser.call(`${url}/refresh`, { method: 'POST' });
    const readAfter = await browser.call(`${url}/fhir/Patient/${patient.id}`);
    const loggedOut = await browser.call(`${url}/logout`, { method: 'POST' });

    // Assert: the EHR accepted each one...
    expect(read.status).toBe(200);
    expect(refreshed.status).toBe(200);
    expect(readAfter.status).toBe(200);
    expect(loggedOut).toMatchObject({ status: 200, body: { loggedOut: true, revocation: 'revoked' } });
    expect(sandbox.stats.tokenRequestsAnswered).toEqual({ authorization_code: { '200': 1 }, refresh_token: { '200': 1 } });
    expect(sandbox.stats.revocations).toBe(1);

    // ...and each carried its own assertion, for exactly the URL it was posted to.
    const authenticated = sent.filter((s) => s.url === tokenEndpoint || s.url === revocationEndpoint);
    expect(authenticated.map((s) => s.url)).toEqual([tokenEndpoint, tokenEndpoint, revocationEndpoint]);
    const jwks = (await (await fetch(jwksUrlOf(fixture.stack.apiUrl))).json()) as { keys: PublicJwk[] };
    const jtis = new Set<unknown>();
    for (const request of authenticated) {
      const form = new URLSearchParams(request.body);
      expect(request.authorization).toBeNull();
      expect(form.has('client_id')).toBe(false);
      expect(form.get('client_assertion_type')).toBe(CLIENT_ASSERTION_TYPE);
      const header = decodeProtectedHeader(request.assertion!);
      expect(header).toEqual({ alg, kid: jwks.keys.find((k) => k.alg === alg)!.kid, typ: 'JWT' });
      const claims = decodeJwt(request.assertion!);
      expect(claims).toMatchObject({ iss: clientId, sub: clientId, aud: request.url });
      expect(claims.exp! - claims.iat!).toBeLessThanOrEqual(300);
      jtis.add(claims.jti);
    }
    expect(jtis.size).toBe(3);
    // Assertions are made per request and kept nowhere (invariant 1): not in any stored item.
    const stored = itemTexts(await scanTable(fixture)).join('\n');
    for (const request of authenticated) expect(stored).not.toContain(request.assertion!.split('.')[2]!);
  });

  it('has the sandbox refuse a replayed assertion: the code exchange and the refresh sent again are invalid_client (SMART-CAUTH-06)', async () => {
    const sandbox = fixture.stack.sandbox!;
    sent.length = 0;
    const browser = new BrowserClient();
    const sessionId = sessionIdFrom(await ehrLaunch(fixture, browser, sandbox.patients[1]!.id));
    expect((await browser.call(`${fixture.stack.apiUrl}/sessions/${sessionId}/refresh`, { method: 'POST' })).status).toBe(200);
    const [codeExchange, refresh] = sent.filter((s) => s.url === tokenEndpoint);

    for (const original of [codeExchange!, refresh!]) {
      const replay = await fetch(tokenEndpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: original.body,
      });
      expect(replay.status).toBe(401);
      expect(((await replay.json()) as { error: string }).error).toBe('invalid_client');
    }
  });
});

describe('the local stack\'s default sandbox clients', () => {
  let fixture: Fixture;
  beforeAll(async () => {
    // No sandboxClients: the defaults, which include a private_key_jwt client verifying through our JWKS URL.
    fixture = await startFixture({ configure: ({ apiUrl, sandbox }) => jwtConfig(apiUrl, sandbox!.fhirBaseUrl, LOCAL_JWT_CLIENT, 'RS384') }, undefined, { seededSigningKeys: 0 });
  });
  afterAll(async () => {
    await fixture?.close();
  });

  it(`include "${LOCAL_JWT_CLIENT}", a private_key_jwt client that signs in through the JWKS URL (SMART-REG-03)`, async () => {
    const browser = new BrowserClient();
    const sessionId = sessionIdFrom(await ehrLaunch(fixture, browser, fixture.stack.sandbox!.patients[2]!.id));

    const context = await browser.call(`${fixture.stack.apiUrl}/sessions/${sessionId}`);

    expect(context.status).toBe(200);
    expect(fixture.stack.sandbox!.stats.tokenRequestsAnswered.authorization_code).toEqual({ '200': 1 });
  });
});
