import { describe, expect, it } from 'vitest';
import type { HttpClient } from '../../shared/core/ports.js';
import { sessionKey } from '../../shared/core/sealed-records.js';
import { ensureFreshSession } from '../../shared/core/refresh.js';
import { endSession, endSessionUrl } from '../../shared/core/logout.js';
import { DISCOVERY_STALE_MS, DiscoveryCache, readSmartConfiguration } from '../../shared/core/discovery.js';
import { openSession } from '../../shared/core/session.js';
import { APP_URL, sampleConfig, sampleIssuer, type TestDeps } from '../fakes/deps.js';
import { EHR_CLIENT_ID, EHR_CLIENT_SECRET, json, type FakeEhr, type TokenCall } from '../fakes/fake-ehr.js';
import { harness, signIn, type Harness } from '../fakes/launch-flow.js';

const BASIC = `Basic ${Buffer.from(`${EHR_CLIENT_ID}:${EHR_CLIENT_SECRET}`).toString('base64')}`;

interface SignedIn {
  readonly h: Harness;
  readonly deps: TestDeps;
  readonly ehr: FakeEhr;
  readonly sessionId: string;
  readonly cookie: string | undefined;
  readonly key: string;
}

/**
 * A signed-in session at the fake EHR; `revocation: true` makes discovery advertise the EHR's
 * RFC 7009 endpoint, so the session's stored endpoints carry it.
 */
async function signedIn(
  options: { revocation?: boolean; config?: unknown; ehr?: { clientSecret?: string | undefined }; tokenResponse?: Record<string, unknown> } = {},
): Promise<SignedIn> {
  const h = await harness({ config: options.config, ehr: options.ehr });
  if (options.revocation ?? true) h.ehr.smartConfiguration.revocation_endpoint = h.ehr.revocationEndpoint;
  h.ehr.tokenResponse = options.tokenResponse ?? {};
  const { callback, launch } = await signIn(h);
  return { h, deps: h.deps, ehr: h.ehr, sessionId: callback.sessionId, cookie: launch.bindingSecret, key: sessionKey(callback.sessionId) };
}

const open = (s: SignedIn) => openSession(s.sessionId, s.cookie, s.deps);

async function expectEnded(s: SignedIn): Promise<void> {
  expect(s.deps.store.sessions().find((record) => record.key === s.key)).toBeUndefined();
  await expect(open(s)).rejects.toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401 });
}

describe('endSession (POST /sessions/{id}/logout)', () => {
  it('revokes the refresh token at exactly the revocation endpoint with HTTP Basic client authentication, then deletes the record (RFC 7009)', async () => {
    // Arrange
    const s = await signedIn();
    const refreshToken = s.ehr.issued.refreshTokens[0];
    const session = await open(s);
    const before = s.ehr.requests.length;

    // Act
    const outcome = await endSession(session, s.deps);

    // Assert
    expect(outcome).toStrictEqual({ revocation: 'revoked', status: 200 });
    const sent = s.ehr.requests.slice(before);
    expect(sent).toHaveLength(1);
    const [request] = sent;
    expect(request?.url).toBe(s.ehr.revocationEndpoint);
    expect(request?.method).toBe('POST');
    expect(request?.headers['content-type']).toMatch(/^application\/x-www-form-urlencoded/);
    expect(request?.headers.authorization).toBe(BASIC);
    expect(Object.fromEntries(new URLSearchParams(request?.body))).toStrictEqual({ token: refreshToken, token_type_hint: 'refresh_token' });
    expect(s.ehr.revoked).toStrictEqual([refreshToken]);
    await expectEnded(s);
  });

  it('authenticates a public client with client_id in the form and no Authorization header (RFC 7009 §2.1)', async () => {
    // Arrange
    const s = await signedIn({
      config: sampleConfig({ issuers: [sampleIssuer({ clientAuth: 'none', clientSecret: undefined })] }),
      ehr: { clientSecret: undefined },
    });
    const refreshToken = s.ehr.issued.refreshTokens[0];

    // Act
    const outcome = await endSession(await open(s), s.deps);

    // Assert
    expect(outcome.revocation).toBe('revoked');
    const [request] = s.ehr.requestsTo(s.ehr.revocationEndpoint);
    expect(request?.headers).not.toHaveProperty('authorization');
    expect(Object.fromEntries(new URLSearchParams(request?.body))).toStrictEqual({
      token: refreshToken,
      token_type_hint: 'refresh_token',
      client_id: EHR_CLIENT_ID,
    });
    await expectEnded(s);
  });

  it('revokes the access token when the session has no refresh token (SMART-SCOPE-12)', async () => {
    // Arrange
    const s = await signedIn({ tokenResponse: { refresh_token: undefined } });
    const accessToken = s.ehr.issued.accessTokens[0];

    // Act
    const outcome = await endSession(await open(s), s.deps);

    // Assert
    expect(outcome).toStrictEqual({ revocation: 'revoked', status: 200 });
    const requests = s.ehr.requestsTo(s.ehr.revocationEndpoint);
    expect(requests).toHaveLength(1);
    expect(Object.fromEntries(new URLSearchParams(requests[0]?.body))).toStrictEqual({ token: accessToken, token_type_hint: 'access_token' });
    expect(s.ehr.revoked).toStrictEqual([accessToken]);
    await expectEnded(s);
  });

  it('deletes the record without any EHR call when discovery offered no revocation endpoint (not-offered)', async () => {
    // Arrange
    const s = await signedIn({ revocation: false });
    const session = await open(s);
    expect(session.record.endpoints.revocationEndpoint).toBeUndefined();
    const before = s.ehr.requests.length;

    // Act
    const outcome = await endSession(session, s.deps);

    // Assert
    expect(outcome).toStrictEqual({ revocation: 'not-offered' });
    expect(s.ehr.requests.slice(before)).toHaveLength(0);
    await expectEnded(s);
  });

  it.each([
    ['HTTP 503', () => new Response('<html>unavailable</html>', { status: 503 }), 503],
    ['HTTP 401 invalid_client', () => json({ error: 'invalid_client' }, 401, { 'www-authenticate': 'Basic' }), 401],
    ['HTTP 400 unsupported_token_type', () => json({ error: 'unsupported_token_type' }, 400), 400],
    ['a redirect (never followed)', () => new Response(null, { status: 302, headers: { location: 'https://elsewhere.example/revoke' } }), 302],
  ])('deletes the session anyway when the revocation endpoint answers %s (failed)', async (_what, answer, status) => {
    // Arrange
    const s = await signedIn();
    const calls: TokenCall[] = [];
    s.ehr.revocationAnswer = (call) => {
      calls.push(call);
      return answer();
    };

    // Act
    const outcome = await endSession(await open(s), s.deps);

    // Assert
    expect(outcome).toStrictEqual({ revocation: 'failed', status });
    expect(calls).toHaveLength(1);
    expect(s.ehr.requestsTo('https://elsewhere.example')).toHaveLength(0);
    await expectEnded(s);
  });

  it('deletes the session anyway when the revocation request fails on the network (failed)', async () => {
    // Arrange
    const s = await signedIn();
    s.ehr.revocationAnswer = () => {
      throw new TypeError('fetch failed');
    };

    // Act
    const outcome = await endSession(await open(s), s.deps);

    // Assert
    expect(outcome).toStrictEqual({ revocation: 'failed' });
    await expectEnded(s);
  });

  it('bounds the revocation call with a timeout and deletes the session when it times out (failed)', async () => {
    // Arrange
    const s = await signedIn();
    const signals: Array<AbortSignal | null | undefined> = [];
    const http: HttpClient = async (url, init) => {
      if (!url.startsWith(s.ehr.revocationEndpoint)) return s.ehr.http(url, init);
      signals.push(init?.signal);
      throw new DOMException('The operation was aborted due to timeout', 'TimeoutError');
    };
    const deps: TestDeps = { ...s.deps, http };

    // Act
    const outcome = await endSession(await openSession(s.sessionId, s.cookie, deps), deps);

    // Assert
    expect(outcome).toStrictEqual({ revocation: 'failed' });
    expect(signals).toHaveLength(1);
    expect(signals[0]).toBeInstanceOf(AbortSignal);
    await expectEnded(s);
  });

  it('leaves the session unusable after a failed revocation: a stale open session cannot refresh either (invariant 8)', async () => {
    // Arrange
    const s = await signedIn();
    s.ehr.revocationAnswer = () => new Response(null, { status: 503 });
    const session = await open(s);
    let refreshCalls = 0;
    s.ehr.tokenAnswer = () => {
      refreshCalls += 1;
      return json({ access_token: 'at-new', token_type: 'Bearer', expires_in: 3600 });
    };

    // Act
    const outcome = await endSession(session, s.deps);

    // Assert: even once its access token expired, the stale session has nothing to refresh.
    expect(outcome.revocation).toBe('failed');
    s.deps.clock.advance(session.secrets.accessTokenExpiresAt - s.deps.clock.now() + 1);
    await expect(ensureFreshSession(session, s.deps)).rejects.toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401 });
    expect(refreshCalls).toBe(0);
    await expectEnded(s);
  });
});

const BASE_DOCUMENT = {
  authorization_endpoint: 'https://ehr.example/authorize',
  token_endpoint: 'https://ehr.example/token',
  grant_types_supported: ['authorization_code'],
  capabilities: [],
  code_challenge_methods_supported: ['S256'],
};

describe('endSessionUrl (RP-initiated logout)', () => {
  it('a warm logout takes end_session_endpoint from the discovery cache and asks the EHR nothing (SMART-DISC-10)', async () => {
    // Arrange: the EHR publishes end_session_endpoint; the container's discovery cache is warm.
    const s = await signedIn();
    const endpoint = `${s.ehr.origin}/oauth2/logout`;
    s.ehr.smartConfiguration.end_session_endpoint = endpoint;
    const deps = { ...s.deps, discovery: new DiscoveryCache() };
    const session = await openSession(s.sessionId, s.cookie, deps);
    const cold = await endSessionUrl(session, deps);
    const before = s.ehr.requests.length;

    // Act
    const warm = await endSessionUrl(session, deps);

    // Assert
    expect(s.ehr.requests.slice(before)).toHaveLength(0);
    for (const url of [cold, warm]) {
      const parsed = new URL(url ?? 'missing:');
      expect(`${parsed.origin}${parsed.pathname}`).toBe(endpoint);
      expect(parsed.searchParams.get('post_logout_redirect_uri')).toBe(deps.config.app.url);
    }
  });

  it('an end_session_endpoint found only in the OpenID configuration is cached as discovery is: two logouts make one fetch (SMART-DISC-10)', async () => {
    // Arrange: a SMART v2 EHR whose SMART configuration names its issuer and JWKS but no end_session_endpoint.
    const s = await signedIn();
    const endpoint = `${s.ehr.origin}/oauth2/logout`;
    const openidConfiguration = `${s.ehr.issuer}/.well-known/openid-configuration`;
    const fetched: string[] = [];
    const http: HttpClient = async (url, init) => {
      if (url !== openidConfiguration) return s.ehr.http(url, init);
      fetched.push(url);
      return json({ issuer: s.ehr.issuer, jwks_uri: s.ehr.jwksUri, end_session_endpoint: endpoint });
    };
    const deps = { ...s.deps, http, discovery: new DiscoveryCache() };
    const session = await openSession(s.sessionId, s.cookie, deps);

    // Act: two logouts in one container.
    const first = await endSessionUrl(session, deps);
    const second = await endSessionUrl(session, deps);

    // Assert: both offer the endpoint; the OpenID configuration was read once.
    for (const url of [first, second]) expect(new URL(url ?? 'missing:').href.split('?')[0]).toBe(endpoint);
    expect(fetched).toHaveLength(1);

    // Once discovery's stale window has passed, it is read again, as discovery is.
    s.deps.clock.advance(DISCOVERY_STALE_MS);
    await endSessionUrl(session, deps);
    expect(fetched).toHaveLength(2);
  });

  it('keeps end_session_endpoint with the discovered endpoints, from the SMART configuration or the OpenID configuration', async () => {
    const smart = readSmartConfiguration(
      { ...BASE_DOCUMENT, issuer: 'https://ehr.example/oauth2', jwks_uri: 'https://ehr.example/jwks', end_session_endpoint: 'https://ehr.example/logout' },
      'aws',
    );
    expect(smart.endpoints.endSessionEndpoint).toBe('https://ehr.example/logout');
    const plain = readSmartConfiguration(
      { ...BASE_DOCUMENT, end_session_endpoint: 'http://ehr.example/logout' },
      'aws',
    );
    // Not https in a deployed stack: no end-session redirect, and discovery itself still succeeds.
    expect(plain.endpoints).not.toHaveProperty('endSessionEndpoint');
  });
});

describe('endSessionUrl (RP-initiated logout): never an open redirect, never a hostile scheme', () => {
  it.each([
    ['javascript:', 'javascript:alert(document.cookie)'],
    ['data:', 'data:text/html,<script>alert(1)</script>'],
    ['http on a non-loopback host', 'http://ehr.example.org/oauth2/logout'],
    ['not a string', 42],
  ])('offers no end-session URL for an end_session_endpoint that is %s', async (_what, endpoint) => {
    const s = await signedIn();
    s.ehr.smartConfiguration.end_session_endpoint = endpoint;
    await expect(endSessionUrl(await open(s), s.deps)).resolves.toBeUndefined();
  });

  it('resolves a relative end_session_endpoint on the EHR itself, as every discovered endpoint (SMART-DISC-05)', async () => {
    const s = await signedIn();
    s.ehr.smartConfiguration.end_session_endpoint = '/oauth2/logout';

    const url = new URL((await endSessionUrl(await open(s), s.deps))!);

    expect(url.origin).toBe(s.ehr.origin);
    expect(url.pathname).toBe('/oauth2/logout');
  });

  it('returns only to the configured app URL, whatever return URL the endpoint already carries', async () => {
    const s = await signedIn();
    s.ehr.smartConfiguration.end_session_endpoint = 'https://ehr.example.org/oauth2/logout?post_logout_redirect_uri=https://evil.example/&client_id=evil';

    const url = new URL((await endSessionUrl(await open(s), s.deps))!);

    expect(url.origin + url.pathname).toBe('https://ehr.example.org/oauth2/logout');
    expect(url.searchParams.getAll('post_logout_redirect_uri')).toEqual([APP_URL]);
    expect(url.searchParams.getAll('client_id')).toEqual([EHR_CLIENT_ID]);
    // The id_token never reaches the browser (invariant 1): client_id identifies the client instead.
    expect(url.searchParams.has('id_token_hint')).toBe(false);
  });
});
