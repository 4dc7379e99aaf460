import { describe, expect, it, vi } from 'vitest';
import { parseConfig } from '../../shared/config/schema.js';
import type { HttpClient } from '../../shared/core/ports.js';
import type { SessionRecord } from '../../shared/core/records.js';
import { sessionKey } from '../../shared/core/sealed-records.js';
import { ensureFreshSession, refreshedScope, sessionExpiresAt } from '../../shared/core/refresh.js';
import { openSession, type OpenSession } from '../../shared/core/session.js';
import { T0 } from '../fakes/clock.js';
import type { TestDeps } from '../fakes/deps.js';
import { sampleConfig, sampleIssuer } from '../fakes/deps.js';
import { EHR_CLIENT_ID, EHR_CLIENT_SECRET, json, type FakeEhr, type TokenCall } from '../fakes/fake-ehr.js';
import { harness, signIn, type Harness } from '../fakes/launch-flow.js';
import { caught } from '../fakes/caught.js';
import { rs256 } from '../fixtures/keys.js';

const SECOND = 1000;
const MINUTE = 60 * SECOND;
/** The fake EHR's access tokens at sign-in live one hour. */
const SIGN_IN_EXPIRES_IN_MS = 3600 * SECOND;
const SKEW_MS = 60 * SECOND;
const LEASE_MS = 15 * SECOND;
const SIGN_IN_SCOPE = 'launch openid fhirUser patient/*.rs offline_access';
const BASIC = `Basic ${Buffer.from(`${EHR_CLIENT_ID}:${EHR_CLIENT_SECRET}`).toString('base64')}`;

/** A successful refresh answer: fresh tokens numbered by call, with `overrides` (an `undefined` member removes it). */
function refreshTokens(n: number, overrides: Record<string, unknown> = {}): Response {
  const body: Record<string, unknown> = {
    access_token: `at-refreshed-${n}`,
    token_type: 'Bearer',
    expires_in: 3600,
    refresh_token: `rt-rotated-${n}`,
    ...overrides,
  };
  return json(Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined)), 200, { 'cache-control': 'no-store' });
}

/**
 * Makes the fake EHR answer `grant_type=refresh_token` with `answer` (by default fresh, rotated tokens)
 * and returns the list of refresh calls it received, in order.
 */
function answerRefresh(ehr: FakeEhr, answer: (call: TokenCall, n: number) => Response | Promise<Response> = (_c, n) => refreshTokens(n)): TokenCall[] {
  const calls: TokenCall[] = [];
  ehr.tokenAnswer = async (call) => {
    if (call.form.get('grant_type') !== 'refresh_token') return json({ error: 'unsupported_grant_type' }, 400);
    calls.push(call);
    return answer(call, calls.length);
  };
  return calls;
}

interface SignedIn {
  readonly h: Harness;
  readonly deps: TestDeps;
  readonly ehr: FakeEhr;
  readonly sessionId: string;
  readonly cookie: string | undefined;
  readonly key: string;
  /** What sign-in stored. */
  readonly signedInRecord: SessionRecord;
  readonly accessToken: string;
  readonly refreshToken: string | undefined;
  /** `openSession` as a request (a Lambda) would call it. */
  open(): Promise<OpenSession>;
  /** The stored session record as it is, expired or not (no lease logic, no copy semantics to worry about). */
  stored(): SessionRecord | undefined;
}

async function signedIn(
  options: { config?: unknown; ehr?: { clientSecret?: string | undefined }; tokenResponse?: Record<string, unknown> } = {},
): Promise<SignedIn> {
  const h = await harness({ config: options.config, ehr: options.ehr });
  h.ehr.tokenResponse = options.tokenResponse ?? {};
  const { callback, launch } = await signIn(h);
  const key = sessionKey(callback.sessionId);
  const stored = () => h.deps.store.sessions().find((record) => record.key === key);
  const signedInRecord = stored();
  if (!signedInRecord) throw new Error('sign-in stored no session');
  return {
    h,
    deps: h.deps,
    ehr: h.ehr,
    sessionId: callback.sessionId,
    cookie: launch.bindingSecret,
    key,
    signedInRecord,
    accessToken: h.ehr.issued.accessTokens[0] as string,
    refreshToken: h.ehr.issued.refreshTokens[0],
    open: () => openSession(callback.sessionId, launch.bindingSecret, h.deps),
    stored,
  };
}

/** Moves the clock to `ms` after the sign-in access token's expiry (negative: before it). */
function atExpiry(s: SignedIn, ms: number): void {
  s.deps.clock.advance(T0 + SIGN_IN_EXPIRES_IN_MS + ms - s.deps.clock.now());
}

function expectUnchanged(s: SignedIn, before: SessionRecord): void {
  const after = s.stored();
  expect(after).toBeDefined();
  expect(after?.sealed).toEqual(before.sealed);
  expect(after?.wrappedKey).toEqual(before.wrappedKey);
  expect(after?.revision).toBe(before.revision);
  expect(after?.expiresAt).toBe(before.expiresAt);
  expect(after?.leaseUntil).toBeUndefined();
}

describe('ensureFreshSession', () => {
  describe('when to refresh (SMART-REFRESH-05)', () => {
    it('returns a session whose access token is not within refreshSkewSeconds of expiry unchanged, without a token call or a store write', async () => {
      // Arrange
      const s = await signedIn();
      const calls = answerRefresh(s.ehr);
      atExpiry(s, -SKEW_MS - 1);
      const session = await s.open();

      // Act
      const result = await ensureFreshSession(session, s.deps);

      // Assert
      expect(result).toBe(session);
      expect(calls).toHaveLength(0);
      expect(s.stored()).toEqual(s.signedInRecord);
    });

    it.each([
      ['exactly refreshSkewSeconds', -SKEW_MS],
      ['one second', -SECOND],
      ['no time at all (expired half an hour ago)', 30 * MINUTE],
    ])('refreshes an access token with %s left before expiry', async (_what, offset) => {
      // Arrange
      const s = await signedIn();
      const calls = answerRefresh(s.ehr);
      atExpiry(s, offset);

      // Act
      const result = await ensureFreshSession(await s.open(), s.deps);

      // Assert
      expect(calls).toHaveLength(1);
      expect(result.secrets.accessToken).toBe('at-refreshed-1');
      expect(result.secrets.accessTokenExpiresAt).toBe(s.deps.clock.now() + 3600 * SECOND);
    });

    it('honours a configured refreshSkewSeconds', async () => {
      // Arrange
      const s = await signedIn({ config: sampleConfig({ session: { refreshSkewSeconds: 300 } }) });
      const calls = answerRefresh(s.ehr);
      atExpiry(s, -300 * SECOND - 1);
      const early = await ensureFreshSession(await s.open(), s.deps);
      atExpiry(s, -300 * SECOND);

      // Act
      const due = await ensureFreshSession(await s.open(), s.deps);

      // Assert
      expect(early.secrets.accessToken).toBe(s.accessToken);
      expect(due.secrets.accessToken).toBe('at-refreshed-1');
      expect(calls).toHaveLength(1);
    });

    it('refreshes when forced (after an upstream 401) even though the access token is far from expiry', async () => {
      // Arrange
      const s = await signedIn();
      const calls = answerRefresh(s.ehr);

      // Act
      const result = await ensureFreshSession(await s.open(), s.deps, { force: true });

      // Assert
      expect(calls).toHaveLength(1);
      expect(result.secrets.accessToken).toBe('at-refreshed-1');
      expect(s.stored()?.revision).toBe(2);
    });
  });

  describe('forced refreshes after an upstream 401 (invariant 8)', () => {
    it('does not refresh again when forced with a token obtained after the request began (requestStartedAt)', async () => {
      // Arrange: a request of the same storm started, then another request refreshed the session.
      const s = await signedIn();
      const calls = answerRefresh(s.ehr);
      atExpiry(s, 1);
      const requestStartedAt = s.deps.clock.now();
      await ensureFreshSession(await s.open(), s.deps);
      s.deps.clock.advance(100);
      const justRefreshed = await s.open();

      // Act: its FHIR call (with the token it read before the refresh) got 401.
      const result = await ensureFreshSession(justRefreshed, s.deps, { force: true, requestStartedAt });

      // Assert
      expect(result).toBe(justRefreshed);
      expect(result.secrets.accessToken).toBe('at-refreshed-1');
      expect(calls).toHaveLength(1);
      expect(s.stored()?.revision).toBe(2);
    });

    it('refreshes when forced with a token obtained before the request began (requestStartedAt)', async () => {
      // Arrange
      const s = await signedIn();
      const calls = answerRefresh(s.ehr);
      s.deps.clock.advance(10 * SECOND);
      const requestStartedAt = s.deps.clock.now();

      // Act
      const result = await ensureFreshSession(await s.open(), s.deps, { force: true, requestStartedAt });

      // Assert
      expect(calls).toHaveLength(1);
      expect(result.secrets.accessToken).toBe('at-refreshed-1');
      expect(s.stored()?.revision).toBe(2);
    });

    it('records when the new access token was obtained, so a later forced refresh can tell', async () => {
      // Arrange
      const s = await signedIn();
      answerRefresh(s.ehr);
      atExpiry(s, 1);

      // Act
      const result = await ensureFreshSession(await s.open(), s.deps);

      // Assert
      expect(result.secrets.obtainedAt).toBe(s.deps.clock.now());
      expect((await s.open()).secrets.obtainedAt).toBe(s.deps.clock.now());
    });
  });

  describe('the refresh request (SMART-REFRESH-02)', () => {
    it('POSTs grant_type=refresh_token with the stored refresh token and HTTP Basic client authentication, without a scope', async () => {
      // Arrange
      const s = await signedIn();
      const calls = answerRefresh(s.ehr);
      atExpiry(s, 1);

      // Act
      await ensureFreshSession(await s.open(), s.deps);

      // Assert
      const [request] = s.ehr.tokenRequests().slice(-1);
      expect(request?.method).toBe('POST');
      expect(request?.url).toBe(s.ehr.tokenEndpoint);
      expect(request?.headers['content-type']).toMatch(/^application\/x-www-form-urlencoded/);
      expect(request?.headers.authorization).toBe(BASIC);
      expect(Object.fromEntries(calls[0]?.form ?? [])).toStrictEqual({ grant_type: 'refresh_token', refresh_token: s.refreshToken });
    });

    it('sends client_id and no Authorization header for a public client', async () => {
      // Arrange
      const s = await signedIn({
        config: sampleConfig({ issuers: [sampleIssuer({ clientAuth: 'none', clientSecret: undefined })] }),
        ehr: { clientSecret: undefined },
      });
      const calls = answerRefresh(s.ehr);
      atExpiry(s, 1);

      // Act
      await ensureFreshSession(await s.open(), s.deps);

      // Assert
      expect(calls[0]?.headers).not.toHaveProperty('authorization');
      expect(Object.fromEntries(calls[0]?.form ?? [])).toStrictEqual({
        grant_type: 'refresh_token',
        refresh_token: s.refreshToken,
        client_id: EHR_CLIENT_ID,
      });
    });

    it('holds a lease of refreshLeaseSeconds on the record while the token endpoint is called, and clears it when done (AWS-04)', async () => {
      // Arrange
      const s = await signedIn();
      let leaseDuringCall: number | undefined;
      answerRefresh(s.ehr, (_call, n) => {
        leaseDuringCall = s.stored()?.leaseUntil;
        return refreshTokens(n);
      });
      atExpiry(s, 1);
      const leaseStart = s.deps.clock.now();

      // Act
      await ensureFreshSession(await s.open(), s.deps);

      // Assert
      expect(leaseDuringCall).toBe(leaseStart + LEASE_MS);
      expect(s.stored()?.leaseUntil).toBeUndefined();
    });
  });

  describe('what a refresh stores', () => {
    it('replaces the refresh token with the new one the EHR returned, and uses the new one next time (SMART-REFRESH-03)', async () => {
      // Arrange
      const s = await signedIn();
      const calls = answerRefresh(s.ehr);
      atExpiry(s, 1);

      // Act
      const first = await ensureFreshSession(await s.open(), s.deps);
      s.deps.clock.advance(SIGN_IN_EXPIRES_IN_MS);
      const second = await ensureFreshSession(await s.open(), s.deps);

      // Assert
      expect(first.secrets.refreshToken).toBe('rt-rotated-1');
      expect(calls.map((call) => call.form.get('refresh_token'))).toStrictEqual([s.refreshToken, 'rt-rotated-1']);
      expect(second.secrets.refreshToken).toBe('rt-rotated-2');
      expect((await s.open()).secrets.refreshToken).toBe('rt-rotated-2');
    });

    it('keeps the previous refresh token when the response has none (SMART-REFRESH-03)', async () => {
      // Arrange
      const s = await signedIn();
      const calls = answerRefresh(s.ehr, (_call, n) => refreshTokens(n, { refresh_token: undefined }));
      atExpiry(s, 1);

      // Act
      const first = await ensureFreshSession(await s.open(), s.deps);
      s.deps.clock.advance(SIGN_IN_EXPIRES_IN_MS);
      await ensureFreshSession(await s.open(), s.deps);

      // Assert
      expect(first.secrets.accessToken).toBe('at-refreshed-1');
      expect(first.secrets.refreshToken).toBe(s.refreshToken);
      expect((await s.open()).secrets.refreshToken).toBe(s.refreshToken);
      expect(calls.map((call) => call.form.get('refresh_token'))).toStrictEqual([s.refreshToken, s.refreshToken]);
    });

    it.each([
      ['an absent scope keeps the previous scope', undefined, SIGN_IN_SCOPE],
      ['the same scope stays', SIGN_IN_SCOPE, SIGN_IN_SCOPE],
      ['a narrower scope replaces the previous', 'openid patient/*.rs', 'openid patient/*.rs'],
      ['broader scope tokens are dropped', 'openid fhirUser patient/*.rs patient/*.cruds user/*.rs', 'openid fhirUser patient/*.rs'],
      ['a scope of only new tokens leaves nothing', 'user/*.cruds', ''],
    ])('lets the granted scope only shrink: %s (SMART-REFRESH-06)', async (_what, granted, expected) => {
      // Arrange
      const s = await signedIn();
      answerRefresh(s.ehr, (_call, n) => refreshTokens(n, { scope: granted }));
      atExpiry(s, 1);

      // Act
      const result = await ensureFreshSession(await s.open(), s.deps);

      // Assert
      expect(result.secrets.scope).toBe(expected);
      expect((await s.open()).secrets.scope).toBe(expected);
    });

    it('keeps the patient and encounter of sign-in even when the refresh names others, and fills in missing context (SMART-REFRESH-06)', async () => {
      // Arrange
      const s = await signedIn({ tokenResponse: { encounter: 'enc-1' } });
      const before = (await s.open()).secrets.context;
      answerRefresh(s.ehr, (_call, n) =>
        refreshTokens(n, {
          patient: '999',
          encounter: 'enc-2',
          need_patient_banner: false,
          smart_style_url: 'https://ehr.example.org/styles/smart-v1.json',
          intent: 'reconcile-medications',
          tenant: 'tenant-7',
          fhirContext: [{ reference: 'DiagnosticReport/dr-1' }],
        }),
      );
      atExpiry(s, 1);

      // Act
      const result = await ensureFreshSession(await s.open(), s.deps);

      // Assert
      expect(before).toMatchObject({ patient: '123', encounter: 'enc-1', need_patient_banner: true });
      const expected = {
        patient: '123',
        encounter: 'enc-1',
        need_patient_banner: true,
        fhirUser: before.fhirUser,
        patientAccess: 'verified',
        smart_style_url: 'https://ehr.example.org/styles/smart-v1.json',
        intent: 'reconcile-medications',
        tenant: 'tenant-7',
        fhirContext: [{ reference: 'DiagnosticReport/dr-1' }],
      };
      expect(result.secrets.context).toStrictEqual(expected);
      expect((await s.open()).secrets.context).toStrictEqual(expected);
    });

    it('keeps the stored launch context when the refresh response carries none (SMART-REFRESH-06)', async () => {
      // Arrange
      const s = await signedIn({ tokenResponse: { encounter: 'enc-1' } });
      const before = (await s.open()).secrets.context;
      answerRefresh(s.ehr);
      atExpiry(s, 1);

      // Act
      const result = await ensureFreshSession(await s.open(), s.deps);

      // Assert
      expect(result.secrets.context).toStrictEqual(before);
      expect(result.secrets.launchMode).toBe('ehr');
    });

    it('assumes 300 s when the refresh response has no expires_in (SMART-TOKEN-05)', async () => {
      // Arrange
      const s = await signedIn();
      answerRefresh(s.ehr, (_call, n) => refreshTokens(n, { expires_in: undefined }));
      atExpiry(s, 1);

      // Act
      const result = await ensureFreshSession(await s.open(), s.deps);

      // Assert
      expect(result.secrets.accessTokenExpiresAt).toBe(s.deps.clock.now() + 300 * SECOND);
    });

    it('bumps the revision, re-seals under the same data key without a key ring call, and sets the TTL from the idle timeout', async () => {
      // Arrange
      const s = await signedIn();
      answerRefresh(s.ehr);
      atExpiry(s, 1);
      const session = await s.open();
      const keyRingCalls = s.deps.keyRing.calls;
      const now = s.deps.clock.now();

      // Act
      const result = await ensureFreshSession(session, s.deps);

      // Assert
      const stored = s.stored();
      expect(s.deps.keyRing.calls).toBe(keyRingCalls);
      expect(stored?.revision).toBe(2);
      expect(stored?.wrappedKey).toEqual(s.signedInRecord.wrappedKey);
      expect(stored?.sealed).not.toEqual(s.signedInRecord.sealed);
      expect(stored?.createdAt).toBe(s.signedInRecord.createdAt);
      // Default idle timeout 60 min after the new access token's expiry (now + 1 h); absolute 8 h is later.
      expect(stored?.expiresAt).toBe(Math.ceil((now + 3600 * SECOND) / SECOND) + 60 * 60);
      expect(result.record.revision).toBe(2);
      expect(result.record.expiresAt).toBe(stored?.expiresAt);
      expect(result.record.leaseUntil).toBeUndefined();
    });

    it('never extends the record beyond its absolute lifetime from sign-in', async () => {
      // Arrange: 2 h absolute lifetime, 60 min idle timeout; a refresh after 1 h would otherwise reach 3 h.
      const s = await signedIn({ config: sampleConfig({ session: { lifetimeMinutes: 120, idleTimeoutMinutes: 60 } }) });
      answerRefresh(s.ehr);
      atExpiry(s, 1);

      // Act
      await ensureFreshSession(await s.open(), s.deps);

      // Assert
      expect(s.stored()?.expiresAt).toBe(s.signedInRecord.createdAt + 120 * 60);
      expect(s.stored()?.revision).toBe(2);
    });

    it('verifies an id_token in the refresh response and stores it (invariant 5)', async () => {
      // Arrange
      const s = await signedIn();
      const idTokens: string[] = [];
      answerRefresh(s.ehr, async (_call, n) => {
        idTokens.push(await s.ehr.signIdToken());
        return refreshTokens(n, { id_token: idTokens[0] });
      });
      atExpiry(s, 1);

      // Act
      const result = await ensureFreshSession(await s.open(), s.deps);

      // Assert
      expect(idTokens).toHaveLength(1);
      expect(result.secrets.idToken).toBe(idTokens[0]);
      expect((await s.open()).secrets.idToken).toBe(idTokens[0]);
      expect(s.ehr.requestsTo(s.ehr.jwksUri).length).toBeGreaterThanOrEqual(2);
    });

    it.each([
      ['for another audience', () => ({ aud: 'another-app' })],
      ['from another issuer', () => ({ iss: 'https://evil.example/oauth2' })],
      ['that expired', () => ({ iat: Math.floor(T0 / 1000), exp: Math.floor(T0 / 1000) + 60 })],
    ])('refuses an id_token %s in the refresh response with ID_TOKEN_INVALID and leaves the record unchanged (invariant 5)', async (_what, claims) => {
      // Arrange
      const s = await signedIn();
      answerRefresh(s.ehr, async (_call, n) => refreshTokens(n, { id_token: await s.ehr.signIdToken(claims()) }));
      atExpiry(s, 1);

      // Act
      const error = await caught(ensureFreshSession(await s.open(), s.deps));

      // Assert
      expect(error).toMatchObject({ code: 'ID_TOKEN_INVALID', status: 401 });
      expectUnchanged(s, s.signedInRecord);
    });

    it('refuses an id_token signed with a key the EHR does not publish with ID_TOKEN_INVALID, leaving the record unchanged (invariant 5)', async () => {
      // Arrange
      const s = await signedIn();
      const { privateKey } = await rs256(2);
      answerRefresh(s.ehr, async (_call, n) => refreshTokens(n, { id_token: await s.ehr.signIdToken({}, privateKey) }));
      atExpiry(s, 1);

      // Act
      const error = await caught(ensureFreshSession(await s.open(), s.deps));

      // Assert
      expect(error).toMatchObject({ code: 'ID_TOKEN_INVALID', status: 401 });
      expectUnchanged(s, s.signedInRecord);
      expect((await s.open()).secrets.accessToken).toBe(s.accessToken);
    });
  });

  describe('without a refresh token (SMART-SCOPE-12, SMART-REFRESH-01)', () => {
    const noRefreshToken = { tokenResponse: { refresh_token: undefined } };

    it('answers SESSION_NOT_OPEN for an expired access token, although offline_access was granted', async () => {
      // Arrange
      const s = await signedIn(noRefreshToken);
      const calls = answerRefresh(s.ehr);
      atExpiry(s, 0);
      const session = await s.open();
      expect(session.secrets.scope).toContain('offline_access');

      // Act
      const error = await caught(ensureFreshSession(session, s.deps));

      // Assert
      expect(error).toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401 });
      expect(calls).toHaveLength(0);
      expect(s.stored()).toEqual(s.signedInRecord);
    });

    it('returns a session near expiry but not yet expired as it is', async () => {
      // Arrange
      const s = await signedIn(noRefreshToken);
      const calls = answerRefresh(s.ehr);
      atExpiry(s, -1);
      const session = await s.open();

      // Act
      const result = await ensureFreshSession(session, s.deps);

      // Assert
      expect(result).toBe(session);
      expect(calls).toHaveLength(0);
    });

    it('answers SESSION_NOT_OPEN to a forced refresh', async () => {
      // Arrange
      const s = await signedIn(noRefreshToken);
      const calls = answerRefresh(s.ehr);

      // Act
      const error = await caught(ensureFreshSession(await s.open(), s.deps, { force: true }));

      // Assert
      expect(error).toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401 });
      expect(calls).toHaveLength(0);
      expect(s.stored()).toEqual(s.signedInRecord);
    });

    it('refreshes with a refresh token although offline_access is not in the granted scope (EPIC-06)', async () => {
      // Arrange
      const s = await signedIn({ tokenResponse: { scope: 'launch openid fhirUser patient/*.rs' } });
      const calls = answerRefresh(s.ehr);
      atExpiry(s, 1);

      // Act
      const result = await ensureFreshSession(await s.open(), s.deps);

      // Assert
      expect(calls).toHaveLength(1);
      expect(result.secrets.accessToken).toBe('at-refreshed-1');
    });
  });

  describe('single flight across concurrent requests (invariant 8, SMART-REFRESH-04, AWS-04)', () => {
    it('makes exactly one token call for a storm of 50 concurrent requests on an expired token, and every request gets the new token', async () => {
      // Arrange: 50 Lambdas, each with its own openSession of the same expired session.
      const s = await signedIn();
      const calls = answerRefresh(s.ehr);
      atExpiry(s, 1);
      const sessions = await Promise.all(Array.from({ length: 50 }, () => s.open()));
      expect(new Set(sessions.map((session) => session.record.revision))).toStrictEqual(new Set([1]));

      // Act
      const results = await Promise.all(sessions.map((session) => ensureFreshSession(session, s.deps)));

      // Assert
      expect(calls).toHaveLength(1);
      expect(calls[0]?.form.get('refresh_token')).toBe(s.refreshToken);
      expect(results.map((result) => result.secrets.accessToken)).toStrictEqual(Array(50).fill('at-refreshed-1'));
      expect(results.map((result) => result.secrets.refreshToken)).toStrictEqual(Array(50).fill('rt-rotated-1'));
      expect(results.every((result) => result.refreshNotStored !== true)).toBe(true);
      expect(s.stored()?.revision).toBe(2);
      expect(s.stored()?.leaseUntil).toBeUndefined();
    });

    it('recovers from a lease left by a crashed holder once the lease expires, and refreshes once', async () => {
      // Arrange: an invocation took the lease and died before calling the token endpoint.
      const s = await signedIn();
      const calls = answerRefresh(s.ehr);
      atExpiry(s, 1);
      const crashedAt = s.deps.clock.now();
      const taken = await s.deps.store.acquireRefreshLease(s.key, { revision: 1, leaseId: 'crashed-holder', nowMs: crashedAt, untilMs: crashedAt + LEASE_MS });
      expect(taken).toBe(true);

      // Act
      const result = await ensureFreshSession(await s.open(), s.deps);

      // Assert
      const waited = s.deps.clock.now() - crashedAt;
      expect(waited).toBeGreaterThan(LEASE_MS);
      expect(waited).toBeLessThanOrEqual(LEASE_MS + 1000);
      expect(calls).toHaveLength(1);
      expect(result.secrets.accessToken).toBe('at-refreshed-1');
      expect(s.stored()?.revision).toBe(2);
      expect(s.stored()?.leaseUntil).toBeUndefined();
      // The crashed holder, should it come back, can no longer store anything.
      expect(await s.deps.store.completeRefresh(s.key, { revision: 1, leaseId: 'crashed-holder', sealed: new Uint8Array([1]), expiresAt: 1 })).toBe(false);
    });

    it('uses the newer token of a refresh another request already stored when forced after an upstream 401, without a token call', async () => {
      // Arrange: request A read revision 1; request B refreshed meanwhile (revision 2).
      const s = await signedIn();
      const calls = answerRefresh(s.ehr);
      const stale = await s.open();
      atExpiry(s, 1);
      await ensureFreshSession(await s.open(), s.deps);
      expect(calls).toHaveLength(1);

      // Act: A's FHIR call with the old token got 401.
      const result = await ensureFreshSession(stale, s.deps, { force: true });

      // Assert
      expect(calls).toHaveLength(1);
      expect(result.secrets.accessToken).toBe('at-refreshed-1');
      expect(result.record.revision).toBe(2);
    });

    it.each([
      ['HTTP 503', () => json({ error: 'temporarily_unavailable' }, 503)],
      ['HTTP 429 with Retry-After: 7', () => json({ error: 'slow_down' }, 429, { 'retry-after': '7' })],
    ])('sends the refresh token once for a storm of 50 requests when the token endpoint answers %s, and answers them all REFRESH_UNAVAILABLE (invariant 8: no retry storm)', async (_what, answer) => {
      // Arrange
      const s = await signedIn();
      const calls = answerRefresh(s.ehr, answer);
      atExpiry(s, 1);
      const sessions = await Promise.all(Array.from({ length: 50 }, () => s.open()));

      // Act
      const outcomes = await Promise.allSettled(sessions.map((session) => ensureFreshSession(session, s.deps)));

      // Assert
      for (const outcome of outcomes) {
        expect(outcome.status).toBe('rejected');
        if (outcome.status === 'rejected') expect(outcome.reason).toMatchObject({ code: 'REFRESH_UNAVAILABLE', status: 503 });
      }
      expectUnchanged(s, s.signedInRecord);
      // The waiters must not each take the released lease and send the same refresh token again.
      expect(calls).toHaveLength(1);
    });

    it('lets a waiter take over after the holder released its lease on a 503, so the next request can retry', async () => {
      // Arrange
      const s = await signedIn();
      const calls = answerRefresh(s.ehr, (_call, n) => (n === 1 ? json({ error: 'temporarily_unavailable' }, 503) : refreshTokens(n)));
      atExpiry(s, 1);

      // Act
      const first = await caught(ensureFreshSession(await s.open(), s.deps));
      const second = await ensureFreshSession(await s.open(), s.deps);

      // Assert
      expect(first).toMatchObject({ code: 'REFRESH_UNAVAILABLE', status: 503 });
      expect(second.secrets.accessToken).toBe('at-refreshed-2');
      expect(calls).toHaveLength(2);
    });
  });

  describe('failures (invariant 8, invariant 9, SMART-TOKEN-11)', () => {
    it('ends the session on invalid_grant with SESSION_NOT_OPEN; later requests get SESSION_NOT_OPEN and the EHR is never asked again (SMART-REFRESH-07)', async () => {
      // Arrange
      const s = await signedIn();
      const calls = answerRefresh(s.ehr, () => json({ error: 'invalid_grant', error_description: 'refresh token revoked' }, 400));
      atExpiry(s, 1);
      const session = await s.open();

      // Act
      const error = await caught(ensureFreshSession(session, s.deps));

      // Assert
      expect(error).toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401 });
      expect(error.details).toMatchObject({ oauthError: 'invalid_grant' });
      expect(s.stored()).toBeUndefined();
      await expect(s.open()).rejects.toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401 });
      await expect(ensureFreshSession(session, s.deps)).rejects.toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401 });
      expect(calls).toHaveLength(1);
    });

    it('answers every request of a storm with SESSION_NOT_OPEN after a single invalid_grant, the session deleted under the waiters', async () => {
      // Arrange
      const s = await signedIn();
      const calls = answerRefresh(s.ehr, () => json({ error: 'invalid_grant' }, 400));
      atExpiry(s, 1);
      const sessions = await Promise.all(Array.from({ length: 20 }, () => s.open()));

      // Act
      const outcomes = await Promise.allSettled(sessions.map((session) => ensureFreshSession(session, s.deps)));

      // Assert
      expect(calls).toHaveLength(1);
      for (const outcome of outcomes) {
        expect(outcome.status).toBe('rejected');
        if (outcome.status === 'rejected') expect(outcome.reason).toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401 });
      }
      expect(s.stored()).toBeUndefined();
    });

    it.each([
      ['401 with WWW-Authenticate', () => json({ error: 'invalid_client' }, 401, { 'www-authenticate': 'Basic' })],
      ['400 invalid_client', () => json({ error: 'invalid_client' }, 400)],
    ])('answers CLIENT_AUTH_FAILED to %s, calls the EHR once and keeps the session intact (SMART-TOKEN-11)', async (_what, answer) => {
      // Arrange
      const s = await signedIn();
      const calls = answerRefresh(s.ehr, answer);
      atExpiry(s, 1);

      // Act
      const error = await caught(ensureFreshSession(await s.open(), s.deps));

      // Assert
      expect(error).toMatchObject({ code: 'CLIENT_AUTH_FAILED', status: 502 });
      expect(calls).toHaveLength(1);
      expectUnchanged(s, s.signedInRecord);
    });

    it.each([
      ['HTTP 500 (JSON)', () => json({ error: 'server_error' }, 500), 5],
      ['HTTP 503 (HTML)', () => new Response('<html>down for maintenance</html>', { status: 503, headers: { 'content-type': 'text/html' } }), 5],
      ['HTTP 429 with Retry-After: 7 (JSON body)', () => json({ error: 'slow_down' }, 429, { 'retry-after': '7' }), 7],
      ['HTTP 429 with Retry-After: 7 (text body)', () => new Response('Too Many Requests', { status: 429, headers: { 'content-type': 'text/plain', 'retry-after': '7' } }), 7],
      ['HTTP 503 with Retry-After: 7 and no body', () => new Response(null, { status: 503, headers: { 'retry-after': '7' } }), 7],
      [
        'a network error',
        () => {
          throw new TypeError('fetch failed');
        },
        5,
      ],
    ])('answers REFRESH_UNAVAILABLE with Retry-After to %s, keeps the session intact and lets the next request retry', async (_what, answer, retryAfter) => {
      // Arrange
      const s = await signedIn();
      let failing = true;
      const calls = answerRefresh(s.ehr, (_call, n) => (failing ? answer() : refreshTokens(n)));
      atExpiry(s, 1);

      // Act
      const error = await caught(ensureFreshSession(await s.open(), s.deps));

      // Assert
      expect(error).toMatchObject({ code: 'REFRESH_UNAVAILABLE', status: 503, retryAfterSeconds: retryAfter });
      expect(calls).toHaveLength(1);
      expectUnchanged(s, s.signedInRecord);
      failing = false;
      const retried = await ensureFreshSession(await s.open(), s.deps);
      expect(retried.secrets.accessToken).toBe('at-refreshed-2');
      expect(calls).toHaveLength(2);
    });

    it('lets a holder whose lease lapsed before the EHR refused its refresh token end nothing: the renewal of the request that took over stays (invariant 8)', async () => {
      // Arrange: request A sends the refresh token, then its invocation is paused past the lease (the
      // fake EHR, like a frozen process, ignores A's timeout); request B takes over and renews.
      const s = await signedIn();
      let refuseFirst!: (response: Response) => void;
      const calls = answerRefresh(s.ehr, (_call, n) => (n === 1 ? new Promise<Response>((resolve) => (refuseFirst = resolve)) : refreshTokens(n)));
      atExpiry(s, 1);
      const a = ensureFreshSession(await s.open(), s.deps);
      const aOutcome = caught(a);
      await vi.waitFor(() => expect(calls).toHaveLength(1));
      s.deps.clock.advance(LEASE_MS + 1);
      const b = await ensureFreshSession(await s.open(), s.deps);
      expect(b.secrets.accessToken).toBe('at-refreshed-2');

      // Act: the EHR refuses A's (now rotated) refresh token.
      refuseFirst(json({ error: 'invalid_grant' }, 400));
      const error = await aOutcome;

      // Assert: A gives a retryable answer and deletes nothing; B's renewal is what is stored.
      expect(error).toMatchObject({ code: 'REFRESH_UNAVAILABLE', status: 503 });
      expect(s.stored()).toMatchObject({ revision: 2 });
      const next = await ensureFreshSession(await s.open(), s.deps);
      expect(next.secrets.accessToken).toBe('at-refreshed-2');
      expect(calls).toHaveLength(2);
    });

    it('gives up on a token endpoint that never answers within the lease, with REFRESH_UNAVAILABLE, the session intact', async () => {
      // Arrange: the shortest lease (3 s) bounds the token call at 1 s on the clock port.
      const s = await signedIn({ config: sampleConfig({ session: { refreshLeaseSeconds: 3 } }) });
      let tokenCalls = 0;
      let called!: () => void;
      const reached = new Promise<void>((resolve) => (called = resolve));
      const hanging: HttpClient = (url, init) => {
        if (!url.startsWith(s.ehr.tokenEndpoint)) return s.ehr.http(url, init);
        tokenCalls += 1;
        return new Promise<Response>((_resolve, reject) => {
          const signal = init?.signal;
          if (!signal) return reject(new Error('the token call has no timeout signal'));
          signal.addEventListener('abort', () => reject(signal.reason), { once: true });
          called();
        });
      };
      const deps: TestDeps = { ...s.deps, http: hanging };
      atExpiry(s, 1);
      const session = await openSession(s.sessionId, s.cookie, deps);

      // Act: the token endpoint hangs; time moves to just short of the bound, then past it.
      let settled = false;
      const timeoutsBefore = s.deps.clock.pendingTimeouts;
      const outcome = caught(ensureFreshSession(session, deps)).finally(() => (settled = true));
      await reached;
      expect(s.deps.clock.pendingTimeouts).toBe(timeoutsBefore + 1);
      s.deps.clock.advance(999);
      await new Promise((resolve) => setImmediate(resolve));
      expect(settled).toBe(false);
      s.deps.clock.advance(1);
      const error = await outcome;

      // Assert
      expect(error).toMatchObject({ code: 'REFRESH_UNAVAILABLE', status: 503, retryAfterSeconds: 5 });
      expect(tokenCalls).toBe(1);
      expectUnchanged(s, s.signedInRecord);
    });

    it.each([
      ['no access_token', () => json({ token_type: 'Bearer', expires_in: 3600, refresh_token: 'rt-new' })],
      ['a token_type other than Bearer', () => json({ access_token: 'at-new', token_type: 'mac', expires_in: 3600 })],
      ['a body that is not JSON', () => new Response('<html>ok</html>', { status: 200, headers: { 'content-type': 'text/html' } })],
    ])('refuses a 200 answer with %s as TOKEN_RESPONSE_INVALID; the previous tokens stay usable', async (_what, answer) => {
      // Arrange
      const s = await signedIn();
      const calls = answerRefresh(s.ehr, answer);
      atExpiry(s, 1);

      // Act
      const error = await caught(ensureFreshSession(await s.open(), s.deps));

      // Assert
      expect(error).toMatchObject({ code: 'TOKEN_RESPONSE_INVALID', status: 502 });
      expect(calls).toHaveLength(1);
      expectUnchanged(s, s.signedInRecord);
      const reopened = await s.open();
      expect(reopened.secrets.accessToken).toBe(s.accessToken);
      expect(reopened.secrets.refreshToken).toBe(s.refreshToken);
    });

    it('gives up with REFRESH_BUSY when a live lease never produces a new revision within the bound', async () => {
      // Arrange: a holder whose lease outlives every waiter's patience.
      const s = await signedIn();
      const calls = answerRefresh(s.ehr);
      atExpiry(s, 1);
      const start = s.deps.clock.now();
      await s.deps.store.acquireRefreshLease(s.key, { revision: 1, leaseId: 'slow-holder', nowMs: start, untilMs: start + 10 * MINUTE });
      const leased = s.stored();

      // Act
      const error = await caught(ensureFreshSession(await s.open(), s.deps));

      // Assert
      expect(error).toMatchObject({ code: 'REFRESH_BUSY', status: 503, retryAfterSeconds: 1 });
      expect(calls).toHaveLength(0);
      const waited = s.deps.clock.now() - start;
      expect(waited).toBeGreaterThanOrEqual(LEASE_MS);
      expect(waited).toBeLessThanOrEqual(LEASE_MS + 3 * SECOND);
      expect(s.stored()).toEqual(leased);
    });

    it('answers SESSION_NOT_OPEN to a waiter whose session disappears while it waits', async () => {
      // Arrange
      const s = await signedIn();
      const calls = answerRefresh(s.ehr);
      atExpiry(s, 1);
      const now = s.deps.clock.now();
      await s.deps.store.acquireRefreshLease(s.key, { revision: 1, leaseId: 'holder', nowMs: now, untilMs: now + LEASE_MS });
      const session = await s.open();

      // Act: the holder got invalid_grant and deleted the session while this request waited.
      const waiting = ensureFreshSession(session, s.deps);
      await s.deps.store.deleteSession(s.key);
      const error = await caught(waiting);

      // Assert
      expect(error).toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401 });
      expect(calls).toHaveLength(0);
    });
  });
});

describe('sessionExpiresAt', () => {
  const config = (session: Record<string, number>) => parseConfig(sampleConfig({ session }), 'local', '(test)');
  const created = Math.floor(T0 / 1000);

  it.each([
    ['the idle timeout after the access token expiry when that is sooner', { lifetimeMinutes: 480, idleTimeoutMinutes: 60 }, T0 + 3600 * SECOND, created + 7200],
    ['the absolute lifetime when that is sooner', { lifetimeMinutes: 120, idleTimeoutMinutes: 60 }, T0 + 5400 * SECOND, created + 7200],
    ['either when both are equal', { lifetimeMinutes: 120, idleTimeoutMinutes: 60 }, T0 + 3600 * SECOND, created + 7200],
    ['the access token expiry rounded up to a whole second', { lifetimeMinutes: 480, idleTimeoutMinutes: 1 }, T0 + 1, created + 1 + 60],
    ['the absolute lifetime even for a token already past it', { lifetimeMinutes: 5, idleTimeoutMinutes: 60 }, T0 + 24 * 3600 * SECOND, created + 300],
  ])('is %s', (_what, session, accessTokenExpiresAtMs, expected) => {
    expect(sessionExpiresAt(config(session), created, accessTokenExpiresAtMs)).toBe(expected);
  });

  it('uses the defaults of 8 h absolute and 60 min idle', () => {
    const defaults = parseConfig(sampleConfig(), 'local', '(test)');
    expect(sessionExpiresAt(defaults, created, T0 + 3600 * SECOND)).toBe(created + 7200);
    expect(sessionExpiresAt(defaults, created, T0 + 8 * 3600 * SECOND)).toBe(created + 8 * 3600);
  });
});

describe('refreshedScope (SMART-REFRESH-06)', () => {
  const previous = 'launch openid fhirUser patient/*.rs offline_access';

  it.each([
    ['absent: the previous scope', undefined, previous],
    ['the same: unchanged', previous, previous],
    ['narrower: the granted tokens', 'openid patient/*.rs', 'openid patient/*.rs'],
    ['broader: only tokens granted before', 'openid patient/*.rs user/*.cruds', 'openid patient/*.rs'],
    ['a broader form of a granted token: dropped', 'patient/*.cruds', ''],
    ['reordered: in the granted order', 'patient/*.rs openid', 'patient/*.rs openid'],
    ['with extra spaces: normalised', ' openid  patient/*.rs ', 'openid patient/*.rs'],
    ['a prefix of a granted token: dropped', 'patient/*.r', ''],
  ])('is, when the refresh scope is %s', (_what, granted, expected) => {
    expect(refreshedScope(previous, granted)).toBe(expected);
  });
});
