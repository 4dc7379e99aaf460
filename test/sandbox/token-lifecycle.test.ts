import { request as httpRequest } from 'node:http';
import { decodeJwt } from 'jose';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startSandbox } from '../../local/sandbox/index.js';
import type { Sandbox, SandboxStats, TokenEndpointFault } from '../../local/sandbox/index.js';
import { HeldClock } from '../fakes/clock.js';
import { basicAuth, browserGet, buildAuthorizeUrl, CookieJar, createPkce, followRedirects, getJson, postForm, randomToken } from './smart-client.js';
import { sandboxSigningKey } from '../fixtures/keys.js';

/*
 * Fault injection and counters for the token lifecycle, over real HTTP against a sandbox of this
 * file's own (faults and stats are per sandbox, so the other sandbox test files are not disturbed).
 * Every test starts with zeroed stats and no faults, so counter assertions are exact.
 */

const CLIENT = { clientId: 'lifecycle-bff', clientSecret: 'lifecycle-secret', redirectUri: 'http://localhost:3000/callback' };
const AUTH = basicAuth(CLIENT.clientId, CLIENT.clientSecret);
const SCOPE = 'launch openid fhirUser offline_access patient/*.rs';

/** The FHIR server's clock for access token expiry: moved forward instead of waiting for a token to expire. */
const fhirClock = new HeldClock();
let sandbox: Sandbox;
let tokenEndpoint: string;
let authorizationEndpoint: string;
let revocationEndpoint: string;

beforeAll(async () => {
  sandbox = await startSandbox({
    signingKey: await sandboxSigningKey(),
    clients: [{ clientId: CLIENT.clientId, clientAuth: 'client_secret_basic', clientSecret: CLIENT.clientSecret, redirectUris: [CLIENT.redirectUri] }],
    now: () => fhirClock.now(),
  });
  const config = (await getJson<Record<string, string>>(`${sandbox.fhirBaseUrl}/.well-known/smart-configuration`)).body;
  tokenEndpoint = config.token_endpoint ?? '';
  authorizationEndpoint = config.authorization_endpoint ?? '';
  revocationEndpoint = config.revocation_endpoint ?? '';
});

afterAll(async () => {
  await sandbox?.close();
});

beforeEach(() => {
  sandbox.resetStats();
});

afterEach(() => {
  sandbox.clearFaults();
});

/** An EHR launch up to the authorization code (no UI: the sandbox EHR resolves the launch itself). */
async function authorize(patient = 'amy-sample'): Promise<{ code: string; verifier: string }> {
  const pkce = createPkce();
  const jar = new CookieJar();
  const url = buildAuthorizeUrl({
    authorizationEndpoint,
    clientId: CLIENT.clientId,
    redirectUri: CLIENT.redirectUri,
    scope: SCOPE,
    aud: sandbox.fhirBaseUrl,
    state: randomToken(),
    nonce: randomToken(),
    launch: sandbox.createLaunch({ patient }),
    codeChallenge: pkce.challenge,
    codeChallengeMethod: 'S256',
  });
  const stop = await followRedirects(await browserGet(url, jar), url, sandbox.url, jar);
  if (stop.kind !== 'left-origin') {
    throw new Error(`expected a redirect to the app, got a page (${stop.response.status})`);
  }
  const code = stop.location.searchParams.get('code');
  if (code === null) {
    throw new Error(`no code: ${stop.location.search}`);
  }
  return { code, verifier: pkce.verifier };
}

const exchange = (code: string, verifier: string) =>
  postForm(tokenEndpoint, { grant_type: 'authorization_code', code, redirect_uri: CLIENT.redirectUri, code_verifier: verifier }, AUTH);

const refresh = (refreshToken: string) => postForm(tokenEndpoint, { grant_type: 'refresh_token', refresh_token: refreshToken }, AUTH);

/** A fresh grant: the code exchange's access and refresh token. */
async function launch(patient = 'amy-sample'): Promise<{ accessToken: string; refreshToken: string; body: Record<string, unknown> }> {
  const { code, verifier } = await authorize(patient);
  const token = await exchange(code, verifier);
  expect(token.status).toBe(200);
  return { accessToken: String(token.body.access_token), refreshToken: String(token.body.refresh_token), body: token.body };
}

const fhirStatus = async (accessToken: string, patient = 'amy-sample') =>
  (await getJson(`${sandbox.fhirBaseUrl}/Patient/${patient}`, accessToken)).status;

function expectStats(expected: Partial<SandboxStats>): void {
  expect(sandbox.stats).toEqual({
    tokenRequests: {},
    tokenRequestsAnswered: {},
    refreshReuseDetected: 0,
    revocations: 0,
    revocationsByTokenType: {},
    ...expected,
  });
}

describe('access token lifetime', () => {
  it('issues access tokens of faults.accessTokenTtlSeconds, on code exchange and refresh, until cleared', async () => {
    sandbox.faults.accessTokenTtlSeconds = 1;
    const first = await launch();
    expect(first.body.expires_in).toBe(1);
    const claims = decodeJwt(first.accessToken);
    expect((claims.exp ?? 0) - (claims.iat ?? 0)).toBe(1);

    const refreshed = await refresh(first.refreshToken);
    expect(refreshed.status).toBe(200);
    expect(refreshed.body.expires_in).toBe(1);
    const accessToken = String(refreshed.body.access_token);
    expect(await fhirStatus(accessToken)).toBe(200);

    // Move the FHIR server's clock into the second in which the token expires.
    const exp = decodeJwt(accessToken).exp ?? 0;
    fhirClock.advance(Math.max(0, exp * 1000 - fhirClock.now()) + 20);
    const expired = await getJson(`${sandbox.fhirBaseUrl}/Patient/amy-sample`, accessToken);
    expect(expired.status).toBe(401);
    expect(expired.headers.get('www-authenticate')).toContain('invalid_token');

    sandbox.faults.accessTokenTtlSeconds = undefined;
    const normal = await refresh(String(refreshed.body.refresh_token));
    expect(normal.body.expires_in).toBe(300);
  });
});

describe('refresh token rotation and reuse detection', () => {
  it('revokes the whole grant when a rotated refresh token is presented again, and counts it', async () => {
    const { refreshToken: first } = await launch('ben-testwell');
    const rotated = await refresh(first);
    expect(rotated.status).toBe(200);
    const second = String(rotated.body.refresh_token);
    expect(second).not.toBe(first);
    const accessToken = String(rotated.body.access_token);
    expect(await fhirStatus(accessToken, 'ben-testwell')).toBe(200);

    const reuse = await refresh(first);
    expect(reuse.status).toBe(400);
    expect(reuse.body.error).toBe('invalid_grant');
    expect((await refresh(second)).body.error).toBe('invalid_grant');
    expect(await fhirStatus(accessToken, 'ben-testwell')).toBe(401);

    expectStats({
      tokenRequests: { authorization_code: 1, refresh_token: 3 },
      tokenRequestsAnswered: { authorization_code: { '200': 1 }, refresh_token: { '200': 1, '400': 2 } },
      refreshReuseDetected: 1,
    });
  });

  it('lets exactly one of several concurrent refreshes with the same token win; the others revoke the grant', async () => {
    const { refreshToken } = await launch();
    const results = await Promise.all(Array.from({ length: 5 }, () => refresh(refreshToken)));
    const winners = results.filter((r) => r.status === 200);
    expect(winners).toHaveLength(1);
    expect(results.filter((r) => r.body.error === 'invalid_grant')).toHaveLength(4);
    expect(await fhirStatus(String(winners[0]?.body.access_token))).toBe(401);
    expect(sandbox.stats.refreshReuseDetected).toBe(1);
    expect(sandbox.stats.tokenRequestsAnswered.refresh_token).toEqual({ '200': 1, '400': 4 });
  });
});

describe('faults.tokenEndpoint', () => {
  it('answers 503 with Retry-After for the listed grant type only, `times` times, without rotating anything', async () => {
    sandbox.faults.tokenEndpoint = { status: 503, retryAfterSeconds: 7, grantTypes: ['refresh_token'], times: 2 };
    // authorization_code is not listed: the code exchange goes through untouched.
    const { refreshToken } = await launch();

    for (let i = 0; i < 2; i++) {
      const failed = await refresh(refreshToken);
      expect(failed.status).toBe(503);
      expect(failed.body.error).toBe('temporarily_unavailable');
      expect(failed.body.access_token).toBeUndefined();
      expect(failed.headers.get('retry-after')).toBe('7');
      expect(failed.headers.get('cache-control')).toBe('no-store');
    }
    expect(sandbox.faults.tokenEndpoint).toBeUndefined(); // used up: cleared itself

    const retried = await refresh(refreshToken); // the refresh token presented twice is still valid
    expect(retried.status).toBe(200);
    expect(await fhirStatus(String(retried.body.access_token))).toBe(200);

    expectStats({
      tokenRequests: { authorization_code: 1, refresh_token: 3 },
      tokenRequestsAnswered: { authorization_code: { '200': 1 }, refresh_token: { '200': 1, '503': 2 } },
    });
  });

  it('answers 500 until cleared, to every grant type, and leaves the authorization code usable', async () => {
    const { code, verifier } = await authorize();
    sandbox.faults.tokenEndpoint = { status: 500 };
    for (let i = 0; i < 3; i++) {
      const failed = await exchange(code, verifier);
      expect(failed.status).toBe(500);
      expect(failed.body).toEqual({ error: 'temporarily_unavailable', error_description: expect.any(String) });
      expect(failed.headers.get('retry-after')).toBeNull();
    }
    const garbage = await postForm(tokenEndpoint, { grant_type: 'password', username: 'x', password: 'y' }, AUTH);
    expect(garbage.status).toBe(500);
    expect(sandbox.faults.tokenEndpoint).toEqual({ status: 500 });

    sandbox.faults.tokenEndpoint = undefined;
    const token = await exchange(code, verifier);
    expect(token.status).toBe(200);
    expect(typeof token.body.refresh_token).toBe('string');

    expectStats({
      tokenRequests: { authorization_code: 4, password: 1 },
      tokenRequestsAnswered: { authorization_code: { '200': 1, '500': 3 }, password: { '500': 1 } },
    });
  });

  it('answers 429 slow_down with a default Retry-After', async () => {
    const { refreshToken } = await launch();
    sandbox.faults.tokenEndpoint = { status: 429, times: 1 };
    const limited = await refresh(refreshToken);
    expect(limited.status).toBe(429);
    expect(limited.body.error).toBe('slow_down');
    expect(limited.headers.get('retry-after')).toBe('1');
    expect((await refresh(refreshToken)).status).toBe(200);
    expect(sandbox.stats.tokenRequestsAnswered.refresh_token).toEqual({ '200': 1, '429': 1 });
  });

  it('delays answers by delayMs, then answers normally', async () => {
    const { refreshToken } = await launch();
    sandbox.faults.tokenEndpoint = { delayMs: 300, grantTypes: ['refresh_token'], times: 1 };
    const started = performance.now();
    const slow = await refresh(refreshToken);
    const slowMs = performance.now() - started;
    expect(slowMs).toBeGreaterThanOrEqual(290);
    expect(slow.status).toBe(200);
    expect(sandbox.faults.tokenEndpoint).toBeUndefined();

    // Not delayed: the same refresh without the 300 ms takes less than the delayed one. A fixed bound
    // (say 250 ms) fails on a busy machine; the delayed answer's own time is the yardstick.
    const fastStart = performance.now();
    expect((await refresh(String(slow.body.refresh_token))).status).toBe(200);
    expect(performance.now() - fastStart).toBeLessThan(slowMs);
    expect(sandbox.stats.tokenRequestsAnswered.refresh_token).toEqual({ '200': 2 });
  });

  it('holds token requests of faults.tokenEndpointHold until the test lets them go, then answers normally', async () => {
    const { refreshToken } = await launch();
    let release!: () => void;
    const until = new Promise<void>((resolve) => (release = resolve));
    let arrived!: (grantType: string) => void;
    const held = new Promise<string>((resolve) => (arrived = resolve));
    sandbox.faults.tokenEndpointHold = { until, grantTypes: ['refresh_token'], onHeld: (grantType) => arrived(grantType) };
    let answered = false;

    const pending = refresh(refreshToken).then((answer) => {
      answered = true;
      return answer;
    });
    expect(await held).toBe('refresh_token');
    // Another grant type passes while the refresh waits.
    const other = await launch('ben-testwell');
    expect(answered).toBe(false);
    expect(sandbox.stats.tokenRequests.refresh_token ?? 0).toBe(0);
    release();

    const answer = await pending;
    expect(answer.status).toBe(200);
    expect(other.refreshToken).not.toBe('undefined');
    expect(sandbox.stats.tokenRequestsAnswered).toEqual({ authorization_code: { '200': 2 }, refresh_token: { '200': 1 } });
  });

  it('can be reused as the same object after it cleared itself', async () => {
    const { refreshToken } = await launch();
    const once: TokenEndpointFault = { status: 503, times: 1 };
    sandbox.faults.tokenEndpoint = once;
    expect((await refresh(refreshToken)).status).toBe(503);
    sandbox.faults.tokenEndpoint = once;
    expect((await refresh(refreshToken)).status).toBe(503);
    expect((await refresh(refreshToken)).status).toBe(200);
  });
});

describe('faults.invalidClient and faults.malformedTokenResponse', () => {
  it('answers every token request 401 invalid_client while set, consuming nothing', async () => {
    const { code, verifier } = await authorize();
    sandbox.faults.invalidClient = true;
    const refused = await exchange(code, verifier);
    expect(refused.status).toBe(401);
    expect(refused.body.error).toBe('invalid_client');
    expect((await postForm(tokenEndpoint, { grant_type: 'refresh_token', refresh_token: 'whatever' })).status).toBe(401);

    sandbox.faults.invalidClient = undefined;
    const token = await exchange(code, verifier);
    expect(token.status).toBe(200);
    expectStats({
      tokenRequests: { authorization_code: 2, refresh_token: 1 },
      tokenRequestsAnswered: { authorization_code: { '200': 1, '401': 1 }, refresh_token: { '401': 1 } },
    });
  });

  it('answers 200 without access_token while set, leaving the refresh token valid', async () => {
    const { refreshToken } = await launch();
    sandbox.faults.malformedTokenResponse = true;
    const malformed = await refresh(refreshToken);
    expect(malformed.status).toBe(200);
    expect(malformed.body.access_token).toBeUndefined();
    expect(malformed.body.refresh_token).toBeUndefined();
    expect(malformed.body.token_type).toBe('Bearer');

    sandbox.faults.malformedTokenResponse = false;
    const token = await refresh(refreshToken);
    expect(token.status).toBe(200);
    expect(typeof token.body.access_token).toBe('string');
    expect(sandbox.stats.tokenRequestsAnswered.refresh_token).toEqual({ '200': 2 });
  });
});

describe('server-side grant revocation', () => {
  it.each([
    ['revokeGrantForAccessToken', (t: { accessToken: string }) => sandbox.revokeGrantForAccessToken(t.accessToken)],
    ['revokeGrantForRefreshToken', (t: { refreshToken: string }) => sandbox.revokeGrantForRefreshToken(t.refreshToken)],
    ['revokeGrantOf(access token)', (t: { accessToken: string }) => sandbox.revokeGrantOf(t.accessToken)],
    ['revokeGrantOf(refresh token)', (t: { refreshToken: string }) => sandbox.revokeGrantOf(t.refreshToken)],
  ] as const)('%s: refresh gets invalid_grant and every access token of the grant 401', async (_name, revoke) => {
    const other = await launch('cara-demoson');
    const first = await launch();
    const rotated = await refresh(first.refreshToken);
    const current = { accessToken: String(rotated.body.access_token), refreshToken: String(rotated.body.refresh_token) };
    expect(await fhirStatus(first.accessToken)).toBe(200);

    await revoke(current);

    const after = await refresh(current.refreshToken);
    expect(after.status).toBe(400);
    expect(after.body.error).toBe('invalid_grant');
    expect(await fhirStatus(first.accessToken)).toBe(401);
    expect(await fhirStatus(current.accessToken)).toBe(401);
    // Another grant is untouched.
    expect(await fhirStatus(other.accessToken, 'cara-demoson')).toBe(200);
    expect((await refresh(other.refreshToken)).status).toBe(200);
    // Not a reuse: the refresh token was simply gone.
    expect(sandbox.stats.refreshReuseDetected).toBe(0);
  });

  it('rejects tokens it does not know', async () => {
    await expect(sandbox.revokeGrantForRefreshToken('no-such-token')).rejects.toThrow(/unknown refresh token/);
    await expect(sandbox.revokeGrantForAccessToken('not-a-jwt')).rejects.toThrow(/JWT/);
    await expect(sandbox.revokeGrantOf('no-such-token')).rejects.toThrow(/unknown token/);
  });
});

describe('revocation endpoint counters', () => {
  it('counts RFC 7009 calls by token_type_hint', async () => {
    const { accessToken, refreshToken } = await launch();
    const second = await launch();
    expect((await postForm(revocationEndpoint, { token: refreshToken, token_type_hint: 'refresh_token' }, AUTH)).status).toBe(200);
    // JWT access tokens are not stored by oidc-provider: unsupported_token_type, still counted.
    await postForm(revocationEndpoint, { token: accessToken, token_type_hint: 'access_token' }, AUTH);
    expect((await postForm(revocationEndpoint, { token: second.refreshToken }, AUTH)).status).toBe(200);
    expect((await refresh(second.refreshToken)).body.error).toBe('invalid_grant');

    expectStats({
      tokenRequests: { authorization_code: 2, refresh_token: 1 },
      tokenRequestsAnswered: { authorization_code: { '200': 2 }, refresh_token: { '400': 1 } },
      revocations: 3,
      revocationsByTokenType: { refresh_token: 1, access_token: 1, none: 1 },
    });
  });
});

describe('resetStats and clearFaults', () => {
  it('zero the counters and remove the faults in place', async () => {
    const stats = sandbox.stats;
    const faults = sandbox.faults;
    await launch();
    expect(stats.tokenRequests.authorization_code).toBe(1);
    sandbox.resetStats();
    expect(sandbox.stats).toBe(stats);
    expectStats({});

    Object.assign(sandbox.faults, { idToken: 'wrong-nonce', accessTokenTtlSeconds: 5, tokenEndpoint: { status: 500 }, invalidClient: true, malformedTokenResponse: true });
    sandbox.clearFaults();
    expect(sandbox.faults).toBe(faults);
    expect(sandbox.faults).toEqual({});
  });
});

/** Raw HTTP (fetch will not send a Host header of our choosing). */
function adminRequest(
  method: string,
  path: string,
  options: { json?: unknown; body?: string; contentType?: string; host?: string } = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const url = new URL(path, sandbox.url);
  const body = options.json === undefined ? options.body : JSON.stringify(options.json);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      {
        method,
        headers: {
          ...(options.host === undefined ? {} : { host: options.host }),
          ...(body === undefined ? {} : { 'content-type': options.contentType ?? 'application/json', 'content-length': Buffer.byteLength(body) }),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode ?? 0, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('admin endpoints', () => {
  it('serves the stats and switches faults over HTTP', async () => {
    const { refreshToken } = await launch();
    expect(await adminRequest('GET', '/admin/stats')).toEqual({ status: 200, body: sandbox.stats });

    const set = await adminRequest('POST', '/admin/faults', { json: { tokenEndpoint: { status: 503, times: 1 }, accessTokenTtlSeconds: 60 } });
    expect(set).toEqual({ status: 200, body: { tokenEndpoint: { status: 503, times: 1 }, accessTokenTtlSeconds: 60 } });
    expect((await refresh(refreshToken)).status).toBe(503);

    // Merged: only the named fault changes; null removes one.
    await adminRequest('POST', '/admin/faults', { json: { invalidClient: true, accessTokenTtlSeconds: null } });
    expect(sandbox.faults).toEqual({ invalidClient: true });
    expect((await adminRequest('GET', '/admin/faults')).body).toEqual({ invalidClient: true });
    expect((await refresh(refreshToken)).status).toBe(401);

    // {} clears everything.
    expect(await adminRequest('POST', '/admin/faults', { json: {} })).toEqual({ status: 200, body: {} });
    const ok = await refresh(refreshToken);
    expect(ok.status).toBe(200);

    expect((await adminRequest('GET', '/admin/stats')).body.tokenRequestsAnswered).toEqual({ authorization_code: { '200': 1 }, refresh_token: { '200': 1, '401': 1, '503': 1 } });
    expect(await adminRequest('POST', '/admin/stats/reset')).toEqual({
      status: 200,
      body: { tokenRequests: {}, tokenRequestsAnswered: {}, refreshReuseDetected: 0, revocations: 0, revocationsByTokenType: {} },
    });

    expect((await adminRequest('POST', '/admin/revoke-grant', { json: { token: String(ok.body.access_token) } })).status).toBe(204);
    expect((await refresh(String(ok.body.refresh_token))).body.error).toBe('invalid_grant');
    expect((await adminRequest('POST', '/admin/revoke-grant', { json: { token: 'nope' } })).status).toBe(404);
  });

  it('refuses invalid faults, non-JSON bodies and foreign Host headers', async () => {
    expect((await adminRequest('POST', '/admin/faults', { json: { tokenEndpoint: { status: 418 } } })).status).toBe(400);
    expect((await adminRequest('POST', '/admin/faults', { json: { nonsense: true } })).status).toBe(400);
    expect((await adminRequest('POST', '/admin/faults', { body: 'invalidClient=true', contentType: 'application/x-www-form-urlencoded' })).status).toBe(415);
    expect((await adminRequest('POST', '/admin/faults', { body: '{', contentType: 'application/json' })).status).toBe(400);
    expect((await adminRequest('GET', '/admin/stats', { host: 'attacker.example:80' })).status).toBe(403);
    expect((await adminRequest('GET', '/admin/stats', { host: `localhost:${new URL(sandbox.url).port}` })).status).toBe(200);
    expect((await adminRequest('DELETE', '/admin/stats')).status).toBe(405);
    expect((await adminRequest('GET', '/admin/nothing')).status).toBe(404);
    expect(sandbox.faults).toEqual({});
  });
});
