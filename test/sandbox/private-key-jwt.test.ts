import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { base64url, decodeJwt } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startSandbox, type Sandbox } from '../../local/sandbox/index.js';
import { LocalSigner } from '../../shared/adapters/local-signer.js';
import { cryptoRandom } from '../../shared/adapters/system.js';
import { CLIENT_ASSERTION_TYPE, createClientAssertion } from '../../shared/core/client-assertion.js';
import type { ClientAssertionAlg, ClientSigner } from '../../shared/core/ports.js';
import { browserGet, buildAuthorizeUrl, CookieJar, createPkce, followRedirects, getJson, postForm, randomToken } from './smart-client.js';
import { sandboxSigningKey, seedSigningKeys } from '../fixtures/keys.js';

/*
 * The sandbox as a private_key_jwt authorization server (SMART client-confidential-asymmetric):
 * oidc-provider fetches the client's keys from its JWKS URL (here a tiny server publishing a
 * LocalSigner's keys) and verifies each assertion, refusing a jti it has seen (RFC 7523 §3, SMART-CAUTH-06).
 */

const REDIRECT_URI = 'http://localhost:3000/callback';
const SCOPE = 'launch openid fhirUser offline_access patient/*.rs';
const CLIENTS = { rs384: 'jwt-rs384', es384: 'jwt-es384', any: 'jwt-any' } as const;

let dataDir: string;
let signer: LocalSigner;
let jwksServer: Server;
let jwksFetches = 0;
let sandbox: Sandbox;
let tokenEndpoint: string;
let revocationEndpoint: string;
let authorizationEndpoint: string;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'smart-launch-sandbox-jwt-'));
  await seedSigningKeys(dataDir);
  signer = new LocalSigner(dataDir, cryptoRandom);
  await signer.publicJwks();
  jwksServer = createServer((_req, res) => {
    jwksFetches += 1;
    void signer.publicJwks().then((jwks) => {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'public, max-age=300' });
      res.end(JSON.stringify(jwks));
    });
  });
  await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
  const jwksUri = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/.well-known/jwks.json`;
  sandbox = await startSandbox({
    signingKey: await sandboxSigningKey(),
    clients: [
      { clientId: CLIENTS.rs384, clientAuth: 'private_key_jwt', jwksUri, signingAlg: 'RS384', redirectUris: [REDIRECT_URI] },
      { clientId: CLIENTS.es384, clientAuth: 'private_key_jwt', jwksUri, signingAlg: 'ES384', redirectUris: [REDIRECT_URI] },
      { clientId: CLIENTS.any, clientAuth: 'private_key_jwt', jwksUri, redirectUris: [REDIRECT_URI] },
    ],
  });
  const config = (await getJson<Record<string, unknown>>(`${sandbox.fhirBaseUrl}/.well-known/smart-configuration`)).body;
  tokenEndpoint = String(config.token_endpoint);
  revocationEndpoint = String(config.revocation_endpoint);
  authorizationEndpoint = String(config.authorization_endpoint);
});

afterAll(async () => {
  await sandbox?.close();
  jwksServer?.close();
  await rm(dataDir, { recursive: true, force: true });
});

beforeEach(() => {
  sandbox.resetStats();
});

const assertion = (clientId: string, alg: ClientAssertionAlg, audience = tokenEndpoint, now = Date.now(), using: ClientSigner = signer) =>
  createClientAssertion(using, { clientId, audience, alg, now }, cryptoRandom);

const withAssertion = (jwt: string, form: Record<string, string>) => postForm(tokenEndpoint, { ...form, client_assertion_type: CLIENT_ASSERTION_TYPE, client_assertion: jwt });

/** A refresh with a refresh token the sandbox never issued: a valid client gets `invalid_grant`, an invalid one `invalid_client`. */
const probe = (jwt: string) => withAssertion(jwt, { grant_type: 'refresh_token', refresh_token: `unknown-${randomToken()}` });

async function authorize(clientId: string): Promise<{ code: string; verifier: string }> {
  const pkce = createPkce();
  const jar = new CookieJar();
  const url = buildAuthorizeUrl({
    authorizationEndpoint,
    clientId,
    redirectUri: REDIRECT_URI,
    scope: SCOPE,
    aud: sandbox.fhirBaseUrl,
    state: randomToken(),
    nonce: randomToken(),
    launch: sandbox.createLaunch({ patient: 'amy-sample' }),
    codeChallenge: pkce.challenge,
    codeChallengeMethod: 'S256',
  });
  const stop = await followRedirects(await browserGet(url, jar), url, sandbox.url, jar);
  if (stop.kind !== 'left-origin') throw new Error(`expected a redirect to the app, got a page (${stop.response.status})`);
  const code = stop.location.searchParams.get('code');
  if (code === null) throw new Error(`no code: ${stop.location.search}`);
  return { code, verifier: pkce.verifier };
}

describe('sandbox EHR: private_key_jwt clients (SMART-CAUTH-04..06)', () => {
  it.each([
    [CLIENTS.rs384, 'RS384'],
    [CLIENTS.es384, 'ES384'],
  ] as const)('%s: exchanges a code with an assertion verified through the JWKS URL, refreshes and revokes with fresh ones', async (clientId, alg) => {
    const { code, verifier } = await authorize(clientId);

    const token = await withAssertion(await assertion(clientId, alg), { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier });
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    const refreshed = await withAssertion(await assertion(clientId, alg), { grant_type: 'refresh_token', refresh_token: String(token.body.refresh_token) });
    expect(refreshed.status).toBe(200);
    const revoked = await postForm(revocationEndpoint, {
      token: String(refreshed.body.refresh_token),
      token_type_hint: 'refresh_token',
      client_assertion_type: CLIENT_ASSERTION_TYPE,
      client_assertion: await assertion(clientId, alg, revocationEndpoint),
    });
    expect(revoked.status).toBe(200);
    expect(sandbox.stats.revocations).toBe(1);
    expect(sandbox.stats.tokenRequestsAnswered).toEqual({ authorization_code: { '200': 1 }, refresh_token: { '200': 1 } });
  });

  it('refuses a replayed jti: the same assertion twice at the token endpoint is invalid_client the second time (SMART-CAUTH-06)', async () => {
    const jwt = await assertion(CLIENTS.any, 'ES384');

    const first = await probe(jwt);
    const replay = await probe(jwt);
    const fresh = await probe(await assertion(CLIENTS.any, 'ES384'));

    // The first and the fresh one authenticate (the unknown refresh token is what fails them);
    // the replay fails client authentication itself.
    expect([first.status, first.body.error]).toEqual([400, 'invalid_grant']);
    expect([replay.status, replay.body.error]).toEqual([401, 'invalid_client']);
    expect([fresh.status, fresh.body.error]).toEqual([400, 'invalid_grant']);
  });

  it('refuses a replayed code-exchange assertion even with a new, valid code (SMART-CAUTH-06)', async () => {
    const first = await authorize(CLIENTS.rs384);
    const jwt = await assertion(CLIENTS.rs384, 'RS384');
    const ok = await withAssertion(jwt, { grant_type: 'authorization_code', code: first.code, redirect_uri: REDIRECT_URI, code_verifier: first.verifier });
    expect(ok.status).toBe(200);

    const second = await authorize(CLIENTS.rs384);
    const replayed = await withAssertion(jwt, { grant_type: 'authorization_code', code: second.code, redirect_uri: REDIRECT_URI, code_verifier: second.verifier });

    expect([replayed.status, replayed.body.error]).toEqual([401, 'invalid_client']);
  });

  it('refuses an assertion for another audience, an expired one, and the algorithm a client did not register (SMART-CAUTH-05/06/07)', async () => {
    const wrongAud = await probe(await assertion(CLIENTS.any, 'RS384', `${sandbox.url}/elsewhere/token`));
    const expired = await probe(await assertion(CLIENTS.any, 'RS384', tokenEndpoint, Date.now() - 10 * 60_000));
    const wrongAlg = await probe(await assertion(CLIENTS.rs384, 'ES384'));
    const wrongClient = await probe(await assertion('nobody', 'RS384'));

    for (const refused of [wrongAud, expired, wrongAlg, wrongClient]) expect([refused.status, refused.body.error]).toEqual([401, 'invalid_client']);
  });

  it('refuses an assertion signed by a key that is not in the JWKS, and a tampered signature', async () => {
    const otherDir = await mkdtemp(join(tmpdir(), 'smart-launch-sandbox-jwt-other-'));
    try {
      await seedSigningKeys(otherDir, 1);
      const stranger = await probe(await assertion(CLIENTS.any, 'ES384', tokenEndpoint, Date.now(), new LocalSigner(otherDir, cryptoRandom)));
      expect([stranger.status, stranger.body.error]).toEqual([401, 'invalid_client']);
    } finally {
      await rm(otherDir, { recursive: true, force: true });
    }
    const [header, payload, signature] = (await assertion(CLIENTS.any, 'RS384')).split('.') as [string, string, string];
    const bytes = base64url.decode(signature);
    bytes[10] = (bytes[10] ?? 0) ^ 0xff;
    const tampered = await probe(`${header}.${payload}.${base64url.encode(bytes)}`);
    expect([tampered.status, tampered.body.error]).toEqual([401, 'invalid_client']);
  });

  it('fetched the JWKS through the client\'s JWKS URL and caches it for its max-age', async () => {
    const before = jwksFetches;
    for (let i = 0; i < 3; i += 1) await probe(await assertion(CLIENTS.any, 'RS384'));

    expect(jwksFetches).toBeGreaterThan(0);
    expect(jwksFetches - before).toBe(0);
    expect(decodeJwt(await assertion(CLIENTS.any, 'RS384')).aud).toBe(tokenEndpoint);
  });
});
