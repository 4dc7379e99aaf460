import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { completeCallback, startLaunch } from '../../shared/core/launch.js';
import { restartUrl } from '../../shared/core/urls.js';
import type { Query } from '../../shared/core/query.js';
import { OPAQUE_ID, TransactionSecretsSchema, UNBOUND } from '../../shared/core/records.js';
import { openJson, transactionSealKey } from '../../shared/core/sealed-records.js';
import { openSession } from '../../shared/core/session.js';
import { deps, APP_URL, PUBLIC_URL, sampleConfig, sampleIssuer } from '../fakes/deps.js';
import { EHR_CLIENT_SECRET, query } from '../fakes/fake-ehr.js';
import { ehrLaunchQuery, harness, signIn, type Harness } from '../fakes/launch-flow.js';
import type { StoredRecord } from '../fakes/memory-store.js';

const OTHER_BROWSER = randomBytes(32).toString('base64url');

/** Starts a launch and lets the EHR answer; returns what the browser carries to /callback. */
async function startAndAuthorize(h: Harness, options: Parameters<Harness['ehr']['authorize']>[1] = {}, launchQuery?: Query) {
  const launch = await startLaunch(launchQuery ?? ehrLaunchQuery(h.ehr), undefined, h.deps);
  const authorization = h.ehr.authorize(launch.authorizeUrl, options);
  return { launch, authorization, cookie: launch.bindingSecret };
}

/** Replaces one parameter of a callback query. */
function withParam(q: Record<string, string[]>, name: string, values: string[] | undefined): Query {
  const copy: Record<string, string[]> = { ...q };
  if (values === undefined) delete copy[name];
  else copy[name] = values;
  return copy;
}

/** Every byte a record holds, field by field, as the store would persist it. */
function fieldBytes(stored: StoredRecord): Array<{ field: string; bytes: Buffer }> {
  return Object.entries(stored.record).map(([field, value]) => ({
    field: `${stored.kind}.${field}`,
    bytes:
      value instanceof Uint8Array ? Buffer.from(value) : Buffer.from(typeof value === 'string' ? value : JSON.stringify(value), 'utf8'),
  }));
}

/** The forms a secret could take if someone stored it "encoded" rather than encrypted. */
function encodings(secret: string): Buffer[] {
  const raw = Buffer.from(secret, 'utf8');
  return [raw, Buffer.from(raw.toString('base64')), Buffer.from(raw.toString('base64url')), Buffer.from(raw.toString('hex'))];
}

describe('startLaunch and completeCallback', () => {
  describe('a full EHR launch', () => {
    it('stores one transaction at launch, then one session and no transaction after the callback', async () => {
      const h = await harness();

      const launch = await startLaunch(ehrLaunchQuery(h.ehr), undefined, h.deps);

      expect(h.deps.store.transactions()).toHaveLength(1);
      expect(h.deps.store.sessions()).toHaveLength(0);
      const authorization = h.ehr.authorize(launch.authorizeUrl);
      await completeCallback(authorization.callbackQuery, launch.bindingSecret, h.deps);
      expect(h.deps.store.transactions()).toHaveLength(0);
      expect(h.deps.store.sessions()).toHaveLength(1);
    });

    it('redirects to {app.url}#session={id} with a fresh opaque session id', async () => {
      const h = await harness();

      const { callback, launch } = await signIn(h);

      expect(callback.sessionId).toMatch(OPAQUE_ID);
      expect(callback.appUrl).toBe(`${APP_URL}#session=${callback.sessionId}`);
      expect(callback.bindingSecret).toBe(launch.bindingSecret);
      expect(launch.bindingSecret).toMatch(OPAQUE_ID);
    });

    it('stores the session under a hash of its id, bound to the browser, with the launch issuer and endpoints (SMART-DISC-09, AWS-01)', async () => {
      const h = await harness();

      const { callback } = await signIn(h);

      const [record] = h.deps.store.sessions();
      expect(record?.key).toBe(`ses#${createHash('sha256').update(callback.sessionId).digest('base64url')}`);
      expect(record?.iss).toBe(h.ehr.fhirBase);
      expect(record?.bindingHash).toMatch(/^b#/);
      expect(record?.endpoints).toMatchObject({ tokenEndpoint: h.ehr.tokenEndpoint, issuer: h.ehr.issuer });
      expect(record?.revision).toBe(1);
      // The idle timeout (60 min) counted from the access token's expiry (3600 s) comes before the 8 h lifetime.
      expect(record?.expiresAt).toBe(h.deps.clock.nowSeconds() + 3600 + 60 * 60);
    });

    it('redeems the code once with the same redirect_uri, the PKCE verifier of the challenge, and Basic client auth (SMART-AUTHZ-03, SMART-TOKEN-01, SMART-CAUTH-01)', async () => {
      const h = await harness();

      const { authorization } = await signIn(h);

      const calls = h.ehr.tokenRequests();
      expect(calls).toHaveLength(1);
      const form = new URLSearchParams(calls[0]?.body);
      expect(form.get('grant_type')).toBe('authorization_code');
      expect(form.get('code')).toBe(authorization.code);
      expect(form.get('redirect_uri')).toBe(authorization.params.get('redirect_uri'));
      expect(form.get('redirect_uri')).toBe(`${PUBLIC_URL}/callback`);
      const verifier = form.get('code_verifier') ?? '';
      expect(verifier).toMatch(/^[A-Za-z0-9\-._~]{43,128}$/);
      expect(createHash('sha256').update(verifier).digest('base64url')).toBe(authorization.codeChallenge);
      expect(form.has('client_id')).toBe(false);
      expect(calls[0]?.headers.authorization).toBe(`Basic ${Buffer.from(`my-app:${EHR_CLIENT_SECRET}`).toString('base64')}`);
    });

    it('completes with a public client that sends client_id and no Authorization header (SMART-TOKEN-01)', async () => {
      const h = await harness({
        config: sampleConfig({ issuers: [sampleIssuer({ clientAuth: 'none', clientSecret: undefined })] }),
        ehr: { clientSecret: undefined },
      });

      await signIn(h);

      const [call] = h.ehr.tokenRequests();
      expect(call?.headers).not.toHaveProperty('authorization');
      expect(new URLSearchParams(call?.body).get('client_id')).toBe('my-app');
      expect(h.deps.store.sessions()).toHaveLength(1);
    });

    it('keeps the launch context and fhirUser of the verified id_token in the session (SMART-CTX-01, SMART-OIDC-04)', async () => {
      const h = await harness();
      h.ehr.tokenResponse = { patient: 'pat-42', encounter: 'enc-7', fhirContext: [{ reference: 'DiagnosticReport/9' }], tenant: 't1' };

      const { callback, launch } = await signIn(h);

      const session = await openSession(callback.sessionId, launch.bindingSecret, h.deps);
      expect(session.secrets.launchMode).toBe('ehr');
      expect(session.secrets.context).toMatchObject({
        patient: 'pat-42',
        encounter: 'enc-7',
        fhirContext: [{ reference: 'DiagnosticReport/9' }],
        tenant: 't1',
        fhirUser: `${h.ehr.fhirBase}/Practitioner/abc`,
      });
    });

    it('assumes a 5 minute access token when expires_in is absent (SMART-TOKEN-05)', async () => {
      const h = await harness();
      h.ehr.tokenResponse = { expires_in: undefined };

      const { callback, launch } = await signIn(h);

      const session = await openSession(callback.sessionId, launch.bindingSecret, h.deps);
      expect(session.secrets.accessTokenExpiresAt).toBe(h.deps.clock.now() + 300_000);
    });

    it('records the requested scope as granted when the token response has no scope (RFC 6749 §5.1)', async () => {
      const h = await harness();
      h.ehr.tokenResponse = { scope: undefined };

      const { callback, launch, authorization } = await signIn(h);

      const session = await openSession(callback.sessionId, launch.bindingSecret, h.deps);
      expect(session.secrets.scope).toBe(authorization.params.get('scope'));
    });

    it('keeps the granted scope, not the requested one, when the EHR narrows it (SMART-SCOPE-07)', async () => {
      const h = await harness();
      h.ehr.tokenResponse = { scope: 'launch patient/Observation.rs' };

      const { callback, launch } = await signIn(h);

      expect((await openSession(callback.sessionId, launch.bindingSecret, h.deps)).secrets.scope).toBe('launch patient/Observation.rs');
    });

    it('completes a standalone launch on the default issuer with launchMode standalone (SMART-LAUNCH-04)', async () => {
      const h = await harness();

      const { callback, launch, authorization } = await signIn(h, { launchQuery: query() });

      expect(launch.mode).toBe('standalone');
      expect(authorization.params.has('launch')).toBe(false);
      expect((await openSession(callback.sessionId, launch.bindingSecret, h.deps)).secrets.launchMode).toBe('standalone');
    });

    it('accepts a matching RFC 9207 iss in the response (SMART-CB-03)', async () => {
      const h = await harness();
      h.ehr.smartConfiguration.authorization_response_iss_parameter_supported = true;

      const { authorization } = await signIn(h);

      expect(authorization.callbackQuery.iss).toEqual([h.ehr.issuer]);
      expect(h.deps.store.sessions()).toHaveLength(1);
    });
  });

  describe('one session per launch (SMART-LAUNCH-08, invariant 2)', () => {
    it('gives two launches in one browser two sessions with their own patients, both bound to the same cookie', async () => {
      const h = await harness();
      h.ehr.tokenResponse = { patient: 'patient-a' };
      const first = await signIn(h);
      h.ehr.tokenResponse = { patient: 'patient-b' };

      const second = await signIn(h, { cookie: first.launch.bindingSecret, launchQuery: ehrLaunchQuery(h.ehr, 'launch-b') });

      expect(second.launch.bindingSecret).toBe(first.launch.bindingSecret);
      expect(second.callback.sessionId).not.toBe(first.callback.sessionId);
      const cookie = first.launch.bindingSecret;
      expect((await openSession(first.callback.sessionId, cookie, h.deps)).secrets.context.patient).toBe('patient-a');
      expect((await openSession(second.callback.sessionId, cookie, h.deps)).secrets.context.patient).toBe('patient-b');
    });

    it('replaces a cookie value that is not one we issue with a fresh binding secret', async () => {
      const h = await harness();

      const launch = await startLaunch(ehrLaunchQuery(h.ehr), 'attacker-chosen-cookie', h.deps);

      expect(launch.bindingSecret).toMatch(OPAQUE_ID);
      expect(launch.bindingSecret).not.toBe('attacker-chosen-cookie');
    });
  });

  describe('issuer checks before any network call (invariant 3, SMART-LAUNCH-02)', () => {
    it.each([
      ['an unknown host', 'https://evil.example/fhir/r4'],
      ['a trailing slash more', 'https://ehr.example.org/fhir/r4/'],
      ['http instead of https', 'http://ehr.example.org/fhir/r4'],
      ['a different case', 'https://EHR.example.org/fhir/r4'],
    ])('refuses an iss with %s with ISSUER_NOT_ALLOWED and never fetches it (invariant 3)', async (_what, iss) => {
      const h = await harness();

      await expect(startLaunch(query(['iss', iss], ['launch', 'abc']), undefined, h.deps)).rejects.toMatchObject({
        code: 'ISSUER_NOT_ALLOWED',
        status: 403,
      });
      expect(h.ehr.requests).toEqual([]);
      expect(h.deps.store.records()).toEqual([]);
      expect(h.deps.keyRing.calls).toBe(0);
    });

    it('refuses launch without iss with LAUNCH_MISSING_ISS and fetches nothing (SMART-LAUNCH-01)', async () => {
      const h = await harness();

      await expect(startLaunch(query(['launch', 'abc']), undefined, h.deps)).rejects.toMatchObject({ code: 'LAUNCH_MISSING_ISS', status: 400 });
      expect(h.ehr.requests).toEqual([]);
      expect(h.deps.store.records()).toEqual([]);
    });

    it('refuses a repeated iss with INVALID_REQUEST and fetches nothing', async () => {
      const h = await harness();

      await expect(
        startLaunch(query(['iss', h.ehr.fhirBase], ['iss', 'https://evil.example/fhir'], ['launch', 'abc']), undefined, h.deps),
      ).rejects.toMatchObject({ code: 'INVALID_REQUEST', status: 400 });
      expect(h.ehr.requests).toEqual([]);
    });

    it.each([
      ['an empty launch', query(['iss', 'https://ehr.example.org/fhir/r4'], ['launch', ''])],
      ['a launch with a control character', query(['iss', 'https://ehr.example.org/fhir/r4'], ['launch', 'a\nb'])],
      ['an over-long launch', query(['iss', 'https://ehr.example.org/fhir/r4'], ['launch', 'x'.repeat(4097)])],
      ['an over-long iss', query(['iss', `https://ehr.example.org/${'x'.repeat(2048)}`])],
    ])('refuses %s with INVALID_REQUEST before any network call (SMART-LAUNCH-07)', async (_what, q) => {
      const h = await harness();

      await expect(startLaunch(q, undefined, h.deps)).rejects.toMatchObject({ code: 'INVALID_REQUEST', status: 400 });
      expect(h.ehr.requests).toEqual([]);
    });

    it('stores nothing and calls no key ring when discovery fails', async () => {
      const h = await harness();
      h.ehr.smartConfiguration.code_challenge_methods_supported = ['plain'];

      await expect(startLaunch(ehrLaunchQuery(h.ehr), undefined, h.deps)).rejects.toMatchObject({ code: 'PKCE_UNSUPPORTED', status: 502 });
      expect(h.deps.store.records()).toEqual([]);
      expect(h.deps.keyRing.calls).toBe(0);
    });

    it('refuses the callback with ISSUER_NOT_ALLOWED when the issuer left the config since the launch, without redeeming the code', async () => {
      const h = await harness();
      const { authorization, cookie } = await startAndAuthorize(h);
      const later = deps({
        config: sampleConfig({ issuers: [sampleIssuer({ iss: 'https://other.example.org/fhir' })] }),
        http: h.ehr.http,
        clock: h.deps.clock,
        store: h.deps.store,
        keyRing: h.deps.keyRing,
      });

      await expect(completeCallback(authorization.callbackQuery, cookie, later)).rejects.toMatchObject({ code: 'ISSUER_NOT_ALLOWED', status: 403 });
      expect(h.ehr.tokenRequests()).toEqual([]);
      expect(h.deps.store.sessions()).toEqual([]);
    });
  });

  describe('state (invariant 4, SMART-CB-01)', () => {
    it('refuses a replayed state with STATE_UNKNOWN and stores nothing new (invariant 4, SMART-CB-01)', async () => {
      const h = await harness();
      const { authorization, launch } = await signIn(h);
      const before = h.deps.store.records();

      await expect(completeCallback(authorization.callbackQuery, launch.bindingSecret, h.deps)).rejects.toMatchObject({
        code: 'STATE_UNKNOWN',
        status: 400,
      });
      expect(h.deps.store.records()).toEqual(before);
      expect(h.ehr.tokenRequests()).toHaveLength(1);
    });

    it('lets exactly one of two concurrent callbacks with the same state through (invariant 4)', async () => {
      const h = await harness();
      const { authorization, cookie } = await startAndAuthorize(h);

      const outcomes = await Promise.allSettled([
        completeCallback(authorization.callbackQuery, cookie, h.deps),
        completeCallback(authorization.callbackQuery, cookie, h.deps),
      ]);

      expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
      expect(outcomes.find((o) => o.status === 'rejected')).toMatchObject({ reason: { code: 'STATE_UNKNOWN', status: 400 } });
      expect(h.ehr.tokenRequests()).toHaveLength(1);
      expect(h.deps.store.sessions()).toHaveLength(1);
    });

    it('refuses a state that was never issued with STATE_UNKNOWN (SMART-CB-01)', async () => {
      const h = await harness();

      await expect(
        completeCallback(query(['state', randomBytes(32).toString('base64url')], ['code', 'c']), undefined, h.deps),
      ).rejects.toMatchObject({ code: 'STATE_UNKNOWN', status: 400 });
      expect(h.ehr.requests).toEqual([]);
    });

    it('refuses an expired transaction with STATE_UNKNOWN and never redeems its code (SMART-CB-08)', async () => {
      const h = await harness();
      const { authorization, cookie } = await startAndAuthorize(h);
      h.deps.clock.advance(10 * 60 * 1000);

      await expect(completeCallback(authorization.callbackQuery, cookie, h.deps)).rejects.toMatchObject({ code: 'STATE_UNKNOWN', status: 400 });
      expect(h.ehr.tokenRequests()).toEqual([]);
      expect(h.deps.store.records()).toEqual([]);
    });

    it('completes a transaction one second before it expires', async () => {
      const h = await harness();
      const { authorization, cookie } = await startAndAuthorize(h);
      h.deps.clock.advance(10 * 60 * 1000 - 1000);

      await expect(completeCallback(authorization.callbackQuery, cookie, h.deps)).resolves.toMatchObject({ sessionId: expect.stringMatching(OPAQUE_ID) });
    });

    it('refuses duplicate state parameters with CALLBACK_INVALID before consuming anything', async () => {
      const h = await harness();
      const { authorization, cookie } = await startAndAuthorize(h);
      const state = authorization.state;

      await expect(
        completeCallback(withParam(authorization.callbackQuery, 'state', [state, state]), cookie, h.deps),
      ).rejects.toMatchObject({ code: 'CALLBACK_INVALID', status: 400 });
      expect(h.deps.store.transactions()).toHaveLength(1);
      expect(h.ehr.tokenRequests()).toEqual([]);
    });

    it.each([
      ['no state', (q: Record<string, string[]>) => withParam(q, 'state', undefined)],
      ['neither code nor error', (q: Record<string, string[]>) => withParam(q, 'code', undefined)],
      ['duplicate code parameters', (q: Record<string, string[]>) => withParam(q, 'code', ['a', 'b'])],
      ['an over-long state', (q: Record<string, string[]>) => withParam(q, 'state', ['s'.repeat(513)])],
      ['an empty code', (q: Record<string, string[]>) => withParam(q, 'code', [''])],
    ])('refuses a callback with %s with CALLBACK_INVALID (SMART-CB-02)', async (_what, change) => {
      const h = await harness();
      const { authorization, cookie } = await startAndAuthorize(h);

      await expect(completeCallback(change(authorization.callbackQuery), cookie, h.deps)).rejects.toMatchObject({
        code: 'CALLBACK_INVALID',
        status: 400,
      });
      expect(h.ehr.tokenRequests()).toEqual([]);
      expect(h.deps.store.sessions()).toEqual([]);
    });
  });

  describe('browser binding (SMART-CB-07)', () => {
    it('refuses a callback from another browser with BROWSER_MISMATCH, a retryUrl, and no token request (SMART-CB-07)', async () => {
      const h = await harness();
      const { authorization } = await startAndAuthorize(h);

      await expect(completeCallback(authorization.callbackQuery, OTHER_BROWSER, h.deps)).rejects.toMatchObject({
        code: 'BROWSER_MISMATCH',
        status: 403,
        retryUrl: restartUrl(PUBLIC_URL, h.ehr.fhirBase),
      });
      expect(h.ehr.tokenRequests()).toEqual([]);
      expect(h.deps.store.sessions()).toEqual([]);
    });

    it.each([['another browser', OTHER_BROWSER], ['no cookie', undefined], ['a malformed cookie', 'garbage']])(
      'leaves the pending launch intact when %s presents its state: the browser it belongs to still signs in (SMART-CB-07, invariant 4)',
      async (_who, cookie) => {
        const h = await harness();
        const { authorization, cookie: owner } = await startAndAuthorize(h);
        const pending = h.deps.store.records();

        await expect(completeCallback(authorization.callbackQuery, cookie, h.deps)).rejects.toMatchObject({ code: 'BROWSER_MISMATCH' });
        expect(h.deps.store.records()).toEqual(pending);

        await expect(completeCallback(authorization.callbackQuery, owner, h.deps)).resolves.toMatchObject({ sessionId: expect.stringMatching(OPAQUE_ID) });
        expect(h.deps.store.sessions()).toHaveLength(1);
      },
    );

    it.each([['no cookie', undefined], ['a malformed cookie', 'not-a-binding-secret']])(
      'refuses a callback with %s with BROWSER_MISMATCH (SMART-CB-07)',
      async (_what, cookie) => {
        const h = await harness();
        const { authorization } = await startAndAuthorize(h);

        await expect(completeCallback(authorization.callbackQuery, cookie, h.deps)).rejects.toMatchObject({ code: 'BROWSER_MISMATCH', status: 403 });
        expect(h.deps.store.sessions()).toEqual([]);
      },
    );

    it('with binding off in config: no binding secret, and any browser may complete', async () => {
      const h = await harness({ config: sampleConfig({ cookie: { browserBinding: false } }) });
      const launch = await startLaunch(ehrLaunchQuery(h.ehr), undefined, h.deps);
      const authorization = h.ehr.authorize(launch.authorizeUrl);

      const callback = await completeCallback(authorization.callbackQuery, OTHER_BROWSER, h.deps);

      expect(launch.bindingSecret).toBeUndefined();
      expect(h.deps.store.sessions()[0]?.bindingHash).toBe(UNBOUND);
      await expect(openSession(callback.sessionId, undefined, h.deps)).resolves.toMatchObject({ sessionId: callback.sessionId });
    });

    it('with binding off, a callback without any cookie completes too', async () => {
      const h = await harness({ config: sampleConfig({ cookie: { browserBinding: false } }) });
      const { authorization } = await startAndAuthorize(h);

      await expect(completeCallback(authorization.callbackQuery, undefined, h.deps)).resolves.toMatchObject({ bindingSecret: undefined });
    });
  });

  describe('RFC 9207 iss (SMART-CB-03, invariant 4)', () => {
    it('refuses a mismatching iss with ISSUER_MISMATCH and never redeems the code (SMART-CB-03)', async () => {
      const h = await harness();
      const { authorization, cookie } = await startAndAuthorize(h, { iss: 'https://attacker.example/oauth2' });

      await expect(completeCallback(authorization.callbackQuery, cookie, h.deps)).rejects.toMatchObject({
        code: 'ISSUER_MISMATCH',
        status: 400,
        retryUrl: restartUrl(PUBLIC_URL, h.ehr.fhirBase),
      });
      expect(h.ehr.tokenRequests()).toEqual([]);
      expect(h.deps.store.records()).toEqual([]);
    });

    it('refuses an iss that differs from the issuer only by a trailing slash (SMART-CB-03)', async () => {
      const h = await harness();
      const { authorization, cookie } = await startAndAuthorize(h, { iss: `${h.ehr.issuer}/` });

      await expect(completeCallback(authorization.callbackQuery, cookie, h.deps)).rejects.toMatchObject({ code: 'ISSUER_MISMATCH', status: 400 });
      expect(h.ehr.tokenRequests()).toEqual([]);
    });

    it('refuses a response without iss when the EHR advertises authorization_response_iss_parameter_supported (SMART-CB-03)', async () => {
      const h = await harness();
      h.ehr.smartConfiguration.authorization_response_iss_parameter_supported = true;
      const { authorization, cookie } = await startAndAuthorize(h, { iss: false });

      await expect(completeCallback(authorization.callbackQuery, cookie, h.deps)).rejects.toMatchObject({ code: 'ISSUER_MISMATCH', status: 400 });
      expect(h.ehr.tokenRequests()).toEqual([]);
      expect(h.deps.store.sessions()).toEqual([]);
    });

    it('checks iss before honouring an error response (SMART-CB-03)', async () => {
      const h = await harness();
      const { authorization, cookie } = await startAndAuthorize(h, { iss: 'https://attacker.example/oauth2', error: 'access_denied' });

      await expect(completeCallback(authorization.callbackQuery, cookie, h.deps)).rejects.toMatchObject({ code: 'ISSUER_MISMATCH', status: 400 });
    });

    it('accepts a response without iss from an EHR that does not advertise it (SMART-CB-03)', async () => {
      const h = await harness();

      const { authorization } = await signIn(h, { authorize: { iss: false } });

      expect(authorization.callbackQuery).not.toHaveProperty('iss');
      expect(h.deps.store.sessions()).toHaveLength(1);
    });
  });

  describe('error responses (SMART-CB-02)', () => {
    it('maps error=access_denied to AUTHORIZATION_DENIED with a retryUrl, without redeeming anything', async () => {
      const h = await harness();
      const { authorization, cookie } = await startAndAuthorize(h, { error: 'access_denied' });

      await expect(completeCallback(authorization.callbackQuery, cookie, h.deps)).rejects.toMatchObject({
        code: 'AUTHORIZATION_DENIED',
        status: 403,
        retryUrl: `${PUBLIC_URL}/launch?iss=${encodeURIComponent(h.ehr.fhirBase)}`,
        details: { oauthError: 'access_denied' },
      });
      expect(h.ehr.tokenRequests()).toEqual([]);
      expect(h.deps.store.records()).toEqual([]);
    });

    it.each(['invalid_scope', 'server_error', 'unauthorized_client', 'invalid_request'])(
      'maps error=%s to AUTHORIZATION_FAILED with a retryUrl',
      async (error) => {
        const h = await harness();
        const { authorization, cookie } = await startAndAuthorize(h, { error });

        await expect(completeCallback(authorization.callbackQuery, cookie, h.deps)).rejects.toMatchObject({
          code: 'AUTHORIZATION_FAILED',
          status: 400,
          retryUrl: restartUrl(PUBLIC_URL, h.ehr.fhirBase),
          details: { oauthError: error },
        });
        expect(h.deps.store.sessions()).toEqual([]);
      },
    );

    it('does not reflect a non-printable error value (SMART-LAUNCH-07)', async () => {
      const h = await harness();
      const { authorization, cookie } = await startAndAuthorize(h, { error: '<script>alert(1)</script>é' });

      const error = await completeCallback(authorization.callbackQuery, cookie, h.deps).catch((e: unknown) => e);

      expect(error).toMatchObject({ code: 'AUTHORIZATION_FAILED', status: 400, details: { oauthError: 'invalid' } });
      expect((error as Error).message).not.toContain('<script>');
    });

    it('refuses an error value with control characters with CALLBACK_INVALID', async () => {
      const h = await harness();
      const { authorization, cookie } = await startAndAuthorize(h, { error: 'access_denied\r\nX-Injected: 1' });

      await expect(completeCallback(authorization.callbackQuery, cookie, h.deps)).rejects.toMatchObject({ code: 'CALLBACK_INVALID', status: 400 });
    });
  });

  describe('token and id_token failures', () => {
    it('refuses an id_token with a wrong nonce with ID_TOKEN_INVALID and stores no session (invariant 5)', async () => {
      const h = await harness();
      h.ehr.idTokenClaims = { nonce: 'not-the-nonce-we-sent' };
      const { authorization, cookie } = await startAndAuthorize(h);

      await expect(completeCallback(authorization.callbackQuery, cookie, h.deps)).rejects.toMatchObject({ code: 'ID_TOKEN_INVALID', status: 401 });
      expect(h.deps.store.records()).toEqual([]);
    });

    it('refuses an id_token issued to another client with ID_TOKEN_INVALID and stores no session (invariant 5)', async () => {
      const h = await harness();
      h.ehr.idTokenClaims = { aud: 'someone-else' };
      const { authorization, cookie } = await startAndAuthorize(h);

      await expect(completeCallback(authorization.callbackQuery, cookie, h.deps)).rejects.toMatchObject({ code: 'ID_TOKEN_INVALID', status: 401 });
      expect(h.deps.store.sessions()).toEqual([]);
    });

    it('sends the nonce of the authorization request and verifies it in the id_token (SMART-AUTHZ-13)', async () => {
      const h = await harness();

      const { authorization } = await signIn(h);

      expect(authorization.nonce).toMatch(OPAQUE_ID);
      const idToken = h.ehr.issued.idTokens[0] ?? '';
      const payload = JSON.parse(Buffer.from(idToken.split('.')[1] ?? '', 'base64url').toString('utf8')) as { nonce?: string };
      expect(payload.nonce).toBe(authorization.nonce);
    });

    it('maps invalid_grant to TOKEN_REQUEST_REJECTED with a retryUrl and stores no session (SMART-TOKEN-11)', async () => {
      const h = await harness();
      h.ehr.tokenAnswer = () => new Response(JSON.stringify({ error: 'invalid_grant' }), { status: 400, headers: { 'content-type': 'application/json' } });
      const { authorization, cookie } = await startAndAuthorize(h);

      await expect(completeCallback(authorization.callbackQuery, cookie, h.deps)).rejects.toMatchObject({
        code: 'TOKEN_REQUEST_REJECTED',
        status: 400,
        retryUrl: restartUrl(PUBLIC_URL, h.ehr.fhirBase),
      });
      expect(h.deps.store.records()).toEqual([]);
    });

    it('keeps Retry-After and the hint of a busy token endpoint when it adds the retryUrl (SMART-TOKEN-11)', async () => {
      const h = await harness();
      h.ehr.tokenAnswer = () => new Response('busy', { status: 503, headers: { 'retry-after': '7' } });
      const { authorization, cookie } = await startAndAuthorize(h);

      await expect(completeCallback(authorization.callbackQuery, cookie, h.deps)).rejects.toMatchObject({
        code: 'TOKEN_ENDPOINT_UNAVAILABLE',
        retryAfterSeconds: 7,
        hint: expect.any(String),
        retryUrl: restartUrl(PUBLIC_URL, h.ehr.fhirBase),
      });
      expect(h.deps.store.sessions()).toEqual([]);
    });

    it('maps a wrong client secret to CLIENT_AUTH_FAILED (SMART-TOKEN-11)', async () => {
      const h = await harness({ deps: { clientSecrets: { get: async () => 'wrong-secret' } } });
      const { authorization, cookie } = await startAndAuthorize(h);

      await expect(completeCallback(authorization.callbackQuery, cookie, h.deps)).rejects.toMatchObject({ code: 'CLIENT_AUTH_FAILED', status: 502 });
      expect(h.deps.store.sessions()).toEqual([]);
    });

    it('maps an unreachable token endpoint to TOKEN_ENDPOINT_UNAVAILABLE', async () => {
      const h = await harness();
      h.ehr.tokenAnswer = () => {
        throw new TypeError('fetch failed');
      };
      const { authorization, cookie } = await startAndAuthorize(h);

      await expect(completeCallback(authorization.callbackQuery, cookie, h.deps)).rejects.toMatchObject({
        code: 'TOKEN_ENDPOINT_UNAVAILABLE',
        status: 502,
      });
    });

    it('refuses a token response whose patient is a path with TOKEN_RESPONSE_INVALID and stores no session (SMART-CTX-01)', async () => {
      const h = await harness();
      h.ehr.tokenResponse = { patient: '../../Patient/other' };
      const { authorization, cookie } = await startAndAuthorize(h);

      await expect(completeCallback(authorization.callbackQuery, cookie, h.deps)).rejects.toMatchObject({ code: 'TOKEN_RESPONSE_INVALID', status: 502 });
      expect(h.deps.store.sessions()).toEqual([]);
    });
  });

  describe('key ring use (docs/design.md §5 budget, invariant 6)', () => {
    it('makes no key-ring call for an anonymous launch, and one GenerateDataKey (no decrypt) at the callback', async () => {
      const h = await harness();

      const launch = await startLaunch(ehrLaunchQuery(h.ehr), undefined, h.deps);
      expect(h.deps.keyRing.generateCalls).toBe(0);
      expect(h.deps.keyRing.decryptCalls).toBe(0);
      const authorization = h.ehr.authorize(launch.authorizeUrl);
      await completeCallback(authorization.callbackQuery, launch.bindingSecret, h.deps);

      expect(h.deps.keyRing.generateCalls).toBe(1);
      expect(h.deps.keyRing.decryptCalls).toBe(0);
    });

    it('stores a pending launch with no wrapped key, its secrets opening only with its state (invariant 1)', async () => {
      const h = await harness();
      const launch = await startLaunch(ehrLaunchQuery(h.ehr), undefined, h.deps);
      const state = new URL(launch.authorizeUrl).searchParams.get('state')!;
      const [txn] = h.deps.store.transactions();

      expect(txn?.wrappedKey).toEqual(new Uint8Array(0));
      expect(openJson(TransactionSecretsSchema, transactionSealKey(h.deps.config, state), txn!.sealed, txn!.key)).toMatchObject({ v: 1 });
      expect(() => openJson(TransactionSecretsSchema, transactionSealKey(h.deps.config, 'A'.repeat(43)), txn!.sealed, txn!.key)).toThrow(/sealed data/);
    });

    it('names the customer and the session record in the encryption context (AWS-02)', async () => {
      const h = await harness();

      await signIn(h);

      const [session] = h.deps.store.sessions();
      expect(h.deps.keyRing.generatedContexts).toEqual([{ service: 'smart-launch', customer: 'acme-health', session: session?.key }]);
    });

    it('checks the browser before calling the key ring at the callback', async () => {
      const h = await harness();
      const { authorization } = await startAndAuthorize(h);

      await expect(completeCallback(authorization.callbackQuery, OTHER_BROWSER, h.deps)).rejects.toMatchObject({ code: 'BROWSER_MISMATCH', status: 403 });
      expect(h.deps.keyRing.decryptCalls).toBe(0);
    });
  });

  describe('secrets never in clear (invariant 1)', () => {
    it('stores none of the tokens, code, verifier, client secret, session id, binding secret, state or nonce in any field', async () => {
      const h = await harness();
      const launchValue = `launch-${randomBytes(24).toString('base64url')}`;
      const launch = await startLaunch(ehrLaunchQuery(h.ehr, launchValue), undefined, h.deps);
      const transactionRecords = h.deps.store.records();
      const authorization = h.ehr.authorize(launch.authorizeUrl);

      const callback = await completeCallback(authorization.callbackQuery, launch.bindingSecret, h.deps);

      const stored = [...transactionRecords, ...h.deps.store.records()];
      expect(stored.map((r) => r.kind)).toEqual(['transaction', 'session']);
      const secrets: Record<string, string | undefined> = {
        accessToken: h.ehr.issued.accessTokens[0],
        refreshToken: h.ehr.issued.refreshTokens[0],
        idToken: h.ehr.issued.idTokens[0],
        code: authorization.code,
        verifier: h.ehr.issued.verifiers[0],
        clientSecret: EHR_CLIENT_SECRET,
        sessionId: callback.sessionId,
        bindingSecret: launch.bindingSecret,
        state: authorization.state,
        nonce: authorization.nonce,
        launch: launchValue,
      };
      for (const [name, secret] of Object.entries(secrets)) {
        expect(secret, name).toBeTypeOf('string');
        for (const { field, bytes } of stored.flatMap(fieldBytes)) {
          for (const form of encodings(secret as string)) {
            expect(bytes.includes(form), `${name} found in ${field}`).toBe(false);
          }
        }
      }
    });

    it('puts neither the verifier, the session id, the binding secret nor the client secret in the authorize URL (invariant 1)', async () => {
      const h = await harness();

      const { launch, callback } = await signIn(h);

      const url = launch.authorizeUrl;
      expect(url).not.toContain(h.ehr.issued.verifiers[0]);
      expect(url).not.toContain(callback.sessionId);
      expect(url).not.toContain(launch.bindingSecret);
      expect(url).not.toContain(EHR_CLIENT_SECRET);
    });

    it('carries the session id only in the fragment of the app URL (invariant 1)', async () => {
      const h = await harness();

      const { callback } = await signIn(h);

      const url = new URL(callback.appUrl);
      expect(url.hash).toBe(`#session=${callback.sessionId}`);
      expect(`${url.origin}${url.pathname}${url.search}`).not.toContain(callback.sessionId);
    });

    it('puts no code, state or token in the message or details of callback errors (invariant 1)', async () => {
      const h = await harness();
      h.ehr.tokenAnswer = () => new Response(JSON.stringify({ error: 'invalid_grant' }), { status: 400 });
      const cases: Array<Promise<unknown>> = [];
      for (const iss of ['https://attacker.example/oauth2', undefined]) {
        const { authorization, cookie } = await startAndAuthorize(h, iss === undefined ? {} : { iss });
        cases.push(completeCallback(authorization.callbackQuery, cookie, h.deps).catch((e: unknown) => ({ e, authorization })));
      }

      for (const outcome of (await Promise.all(cases)) as Array<{ e: Error & { details?: unknown }; authorization: { code?: string; state: string } }>) {
        const text = `${outcome.e.message} ${JSON.stringify(outcome.e.details ?? {})}`;
        expect(text).not.toContain(outcome.authorization.state);
        expect(text).not.toContain(outcome.authorization.code);
      }
    });
  });
});
