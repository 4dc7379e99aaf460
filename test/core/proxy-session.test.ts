import { randomBytes } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import type { SessionRefresher } from '../../shared/core/proxy/forward.js';
import { cachingRefresher, openProxySession } from '../../shared/core/proxy-session.js';
import { ensureFreshSession } from '../../shared/core/refresh.js';
import type { OpenSession } from '../../shared/core/records.js';
import { sessionKey } from '../../shared/core/sealed-records.js';
import { OpenSessionCache } from '../../shared/core/session-cache.js';
import { openSession } from '../../shared/core/session.js';
import { SmartError } from '../../shared/core/errors.js';
import { sampleConfig, type TestDeps } from '../fakes/deps.js';
import { json, type FakeEhr } from '../fakes/fake-ehr.js';
import { harness, signIn } from '../fakes/launch-flow.js';
import { MemorySessionStore } from '../fakes/memory-store.js';

/**
 * The FHIR proxy's per-container session cache (`session.proxyCacheSeconds`, default 5 s): what it
 * serves without a store read, and the bound on how stale that can be (docs/design.md, "One sign in
 * again signal").
 */

async function proxyContainer(session: Record<string, unknown> = {}, cache = new OpenSessionCache()) {
  const h = await harness({ config: sampleConfig({ session }) });
  const { callback, launch } = await signIn(h);
  const deps: TestDeps = { ...h.deps, sessionCache: cache };
  const reads = vi.spyOn(h.deps.store, 'getSession');
  // `open()` with the signed-in browser's cookie, `open(x)` with `x` (undefined: no cookie).
  const open = (...cookie: [string | undefined] | []) => openProxySession(callback.sessionId, cookie.length === 0 ? launch.bindingSecret : cookie[0], deps);
  return { h, deps, cache, sessionId: callback.sessionId, cookie: launch.bindingSecret, reads, open, decrypts: () => h.deps.keyRing.decryptCalls };
}

/** The fake EHR answers refresh grants with fresh, rotated tokens, numbered by call; returns the calls. */
function answerRefresh(ehr: FakeEhr): string[] {
  const sent: string[] = [];
  ehr.tokenAnswer = async (call) => {
    if (call.form.get('grant_type') !== 'refresh_token') return json({ error: 'unsupported_grant_type' }, 400);
    sent.push(call.form.get('refresh_token') ?? '');
    const n = sent.length;
    return json({ access_token: `at-refreshed-${n}`, token_type: 'Bearer', expires_in: 3600, refresh_token: `rt-rotated-${n}` }, 200, { 'cache-control': 'no-store' });
  };
  return sent;
}

/** An opened session that is not from any store (for the cache's own bounds). */
function fakeSession(id: string): OpenSession {
  return { sessionId: id, record: { key: id } as OpenSession['record'], secrets: {} as OpenSession['secrets'], dataKey: new Uint8Array(32) };
}

describe('openProxySession: the proxy container\'s session cache', () => {
  it('serves a burst within the window from one store read and one unseal', async () => {
    const c = await proxyContainer();
    const decrypts = c.decrypts();

    const first = await c.open();
    for (let i = 0; i < 10; i++) {
      c.h.deps.clock.advance(400);
      expect(await c.open()).toEqual(first);
    }

    expect(c.reads).toHaveBeenCalledTimes(1);
    expect(c.decrypts() - decrypts).toBe(1);
    expect(first.secrets.accessToken).toBe(c.h.ehr.issued.accessTokens[0]);
  });

  it('reads the store again once the window has passed: the bound on staleness is proxyCacheSeconds', async () => {
    const c = await proxyContainer({ proxyCacheSeconds: 5 });
    await c.open();

    c.h.deps.clock.advance(4_999);
    await c.open();
    expect(c.reads).toHaveBeenCalledTimes(1);

    c.h.deps.clock.advance(1);
    await c.open();
    expect(c.reads).toHaveBeenCalledTimes(2);
  });

  it('keeps serving a session ended elsewhere until the window passes, then answers SESSION_NOT_OPEN (the stated staleness)', async () => {
    const c = await proxyContainer({ proxyCacheSeconds: 5 });
    await c.open();
    // Logout in the sessions function (another container): the record is gone from the store.
    await c.h.deps.store.deleteSession(sessionKey(c.sessionId));

    c.h.deps.clock.advance(4_000);
    await expect(c.open()).resolves.toMatchObject({ sessionId: c.sessionId });
    await expect(openSession(c.sessionId, c.cookie, c.h.deps)).rejects.toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401 });

    c.h.deps.clock.advance(1_000);
    await expect(c.open()).rejects.toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401, details: { notOpen: 'unknown-or-expired' } });
    expect(c.cache.size).toBe(0);
  });

  it('reads the store when the access token is due for renewal, so every refresh starts from the stored revision', async () => {
    const c = await proxyContainer({ refreshSkewSeconds: 60 });
    const first = await c.open();
    // Two seconds before the token is due (the fake EHR's tokens last an hour): kept...
    c.h.deps.clock.advance(first.secrets.accessTokenExpiresAt - c.h.deps.clock.now() - 62_000);
    await c.open();
    await c.open();
    expect(c.reads).toHaveBeenCalledTimes(2);

    // ... and within the skew, inside the window, not served from memory.
    c.h.deps.clock.advance(3_000);
    await c.open();
    expect(c.reads).toHaveBeenCalledTimes(3);
    expect(c.cache.size).toBe(0);
  });

  it('does not serve a session whose record expired within the window', async () => {
    const c = await proxyContainer({ lifetimeMinutes: 5 });
    c.h.deps.clock.advance(5 * 60_000 - 2_000);
    await c.open();
    expect(c.cache.size).toBe(1);

    c.h.deps.clock.advance(2_000);
    await expect(c.open()).rejects.toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401 });
    expect(c.reads).toHaveBeenCalledTimes(2);
  });

  it.each([
    ['another browser’s cookie', () => randomBytes(32).toString('base64url')],
    ['no cookie', () => undefined],
    ['a malformed cookie', () => 'garbage'],
  ])('checks the binding on a cached session too: %s gets the same 401 SESSION_NOT_OPEN as from the store (invariant 2)', async (_what, cookie) => {
    const cold = await proxyContainer();
    const fromStore = await cold.open(cookie()).catch((error: unknown) => error as SmartError);
    const c = await proxyContainer();
    await c.open();

    const fromCache = await c.open(cookie()).catch((error: unknown) => error as SmartError);

    expect(c.reads).toHaveBeenCalledTimes(1);
    expect(fromCache).toBeInstanceOf(SmartError);
    expect(fromStore).toBeInstanceOf(SmartError);
    const shape = (e: SmartError) => ({ code: e.code, status: e.status, message: e.message, details: e.details });
    expect(shape(fromCache as SmartError)).toEqual(shape(fromStore as SmartError));
    expect(shape(fromCache as SmartError)).toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401, details: { notOpen: 'not-bound' } });
    // The bound browser is still served.
    await expect(c.open()).resolves.toMatchObject({ sessionId: c.sessionId });
  });

  it('reads the store on every request with proxyCacheSeconds 0, or without a cache in the wiring', async () => {
    const off = await proxyContainer({ proxyCacheSeconds: 0 });
    await off.open();
    await off.open();
    expect(off.reads).toHaveBeenCalledTimes(2);
    expect(off.cache.size).toBe(0);

    const h = await harness();
    const { callback, launch } = await signIn(h);
    const reads = vi.spyOn(h.deps.store, 'getSession');
    await openProxySession(callback.sessionId, launch.bindingSecret, h.deps);
    await openProxySession(callback.sessionId, launch.bindingSecret, h.deps);
    expect(reads).toHaveBeenCalledTimes(2);
  });

  it('keys entries by the session key, never by the session id', async () => {
    const c = await proxyContainer();
    const set = vi.spyOn(c.cache, 'set');
    await c.open();
    expect(set.mock.calls[0]?.[0]).toBe(sessionKey(c.sessionId));
    expect(set.mock.calls[0]?.[0]).not.toContain(c.sessionId);
  });
});

/** A promise the test settles, and a way to wait until every request in flight is waiting on one. */
function gate() {
  let open!: () => void;
  let fail!: (error: unknown) => void;
  const passed = new Promise<void>((resolve, reject) => {
    open = resolve;
    fail = reject;
  });
  return { passed, open, fail };
}
const idle = async () => {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
};

describe('openProxySession: a burst of concurrent first requests (docs/design.md §5 budgets)', () => {
  const wrong = () => randomBytes(32).toString('base64url');

  it('8 concurrent misses share one store read and one unseal (one Decrypt), and all get the session', async () => {
    const c = await proxyContainer();
    const decrypts = c.decrypts();

    const sessions = await Promise.all(Array.from({ length: 8 }, () => c.open()));

    expect(c.reads).toHaveBeenCalledTimes(1);
    expect(c.decrypts() - decrypts).toBe(1);
    for (const session of sessions) expect(session).toBe(sessions[0]);
    expect(sessions[0]!.secrets.accessToken).toBe(c.h.ehr.issued.accessTokens[0]);
    expect(c.cache.size).toBe(1);
    expect(c.cache.opening).toBe(0);
    // The burst's session is kept: the next request within the window costs nothing.
    await c.open();
    expect(c.reads).toHaveBeenCalledTimes(1);
  });

  it('checks each request\'s own binding against the shared read: wrong or missing cookies get 401 SESSION_NOT_OPEN, the others are served (invariant 2)', async () => {
    const c = await proxyContainer();
    const decrypts = c.decrypts();
    const cookies = [c.cookie, wrong(), c.cookie, undefined, c.cookie, 'garbage', c.cookie, c.cookie];

    const results = await Promise.allSettled(cookies.map((cookie) => c.open(cookie)));

    results.forEach((result, i) => {
      if (cookies[i] === c.cookie) expect(result).toMatchObject({ status: 'fulfilled', value: { sessionId: c.sessionId } });
      else expect(result).toMatchObject({ status: 'rejected', reason: { code: 'SESSION_NOT_OPEN', status: 401, details: { notOpen: 'not-bound' } } });
    });
    expect(c.reads).toHaveBeenCalledTimes(1);
    expect(c.decrypts() - decrypts).toBe(1);
  });

  it('a burst of wrong or missing cookies only: one read, 401 SESSION_NOT_OPEN for each, no Decrypt at all, nothing kept (invariant 2)', async () => {
    const c = await proxyContainer();
    const decrypts = c.decrypts();

    const results = await Promise.allSettled([wrong(), undefined, wrong(), 'garbage'].map((cookie) => c.open(cookie)));

    for (const result of results) expect(result).toMatchObject({ status: 'rejected', reason: { code: 'SESSION_NOT_OPEN', details: { notOpen: 'not-bound' } } });
    expect(c.reads).toHaveBeenCalledTimes(1);
    expect(c.decrypts() - decrypts).toBe(0);
    expect(c.cache.size).toBe(0);
    expect(c.cache.opening).toBe(0);
    // The bound browser then opens it with its own read.
    await expect(c.open()).resolves.toMatchObject({ sessionId: c.sessionId });
    expect(c.reads).toHaveBeenCalledTimes(2);
  });

  it('a store read that fails goes to every request sharing it, is not kept, and the next request reads again', async () => {
    const c = await proxyContainer();
    const read = gate();
    c.reads.mockImplementationOnce(async () => {
      await read.passed;
      throw new SmartError('STORE_UNAVAILABLE', 'the session store did not answer');
    });

    const burst = Array.from({ length: 4 }, () => c.open().catch((error: unknown) => error));
    await idle();
    read.open();
    const errors = await Promise.all(burst);

    for (const error of errors) expect(error).toMatchObject({ code: 'STORE_UNAVAILABLE' });
    expect(new Set(errors).size).toBe(1);
    expect(c.reads).toHaveBeenCalledTimes(1);
    expect(c.cache.size).toBe(0);
    expect(c.cache.opening).toBe(0);
    await expect(c.open()).resolves.toMatchObject({ sessionId: c.sessionId });
    expect(c.reads).toHaveBeenCalledTimes(2);
  });

  it('an unseal that fails (the key service unavailable) goes to every admitted request, is not kept, and the next request tries again', async () => {
    const c = await proxyContainer();
    const decrypts = c.decrypts();
    const decrypt = vi.spyOn(c.h.deps.keyRing, 'decryptDataKey').mockRejectedValueOnce(new SmartError('KEYRING_UNAVAILABLE', 'the key service did not answer'));

    const results = await Promise.allSettled([c.cookie, c.cookie, wrong(), c.cookie].map((cookie) => c.open(cookie)));

    expect(results.map((r) => (r.status === 'rejected' ? (r.reason as SmartError).code : 'served'))).toEqual(['KEYRING_UNAVAILABLE', 'KEYRING_UNAVAILABLE', 'SESSION_NOT_OPEN', 'KEYRING_UNAVAILABLE']);
    expect(decrypt).toHaveBeenCalledTimes(1);
    expect(c.cache.size).toBe(0);
    expect(c.cache.opening).toBe(0);
    await expect(c.open()).resolves.toMatchObject({ sessionId: c.sessionId });
    expect(decrypt).toHaveBeenCalledTimes(2);
    expect(c.reads).toHaveBeenCalledTimes(2);
    expect(c.decrypts() - decrypts).toBe(1);
  });

  it('a request arriving while the shared unseal runs joins it; the window is counted from before the shared read', async () => {
    const c = await proxyContainer({ proxyCacheSeconds: 5 });
    const read = gate();
    const unseal = gate();
    const store = c.h.deps.store;
    c.reads.mockImplementationOnce(async (...args) => {
      await read.passed;
      return MemorySessionStore.prototype.getSession.apply(store, args);
    });
    const keyRing = c.h.deps.keyRing;
    const decryptDataKey = keyRing.decryptDataKey.bind(keyRing);
    vi.spyOn(keyRing, 'decryptDataKey').mockImplementationOnce(async (...args) => {
      await unseal.passed;
      return decryptDataKey(...args);
    });

    const first = c.open();
    await idle();
    c.h.deps.clock.advance(2_000);
    read.open();
    await idle();
    const joined = c.open();
    await idle();
    unseal.open();
    const [a, b] = await Promise.all([first, joined]);

    expect(b).toBe(a);
    expect(c.reads).toHaveBeenCalledTimes(1);
    expect(c.decrypts()).toBe(1);
    // 5 s from before the read: 2 s went by during it, so the session is kept 3 s more, not 5.
    c.h.deps.clock.advance(2_999);
    await c.open();
    expect(c.reads).toHaveBeenCalledTimes(1);
    c.h.deps.clock.advance(1);
    await c.open();
    expect(c.reads).toHaveBeenCalledTimes(2);
  });

  it('a store read that began a whole window ago is not joined: a slow read never serves what the store said longer ago than proxyCacheSeconds', async () => {
    const c = await proxyContainer({ proxyCacheSeconds: 5 });
    const read = gate();
    const store = c.h.deps.store;
    c.reads.mockImplementationOnce(async (...args) => {
      await read.passed;
      return MemorySessionStore.prototype.getSession.apply(store, args);
    });

    const first = c.open();
    await idle();
    c.h.deps.clock.advance(4_999);
    const joined = c.open();
    await idle();
    expect(c.reads).toHaveBeenCalledTimes(1);
    c.h.deps.clock.advance(1);
    const late = c.open();
    await idle();
    expect(c.reads).toHaveBeenCalledTimes(2);
    read.open();
    const [a, b, d] = await Promise.all([first, joined, late]);

    expect(b).toBe(a);
    expect(d).not.toBe(a);
    expect(d.record.key).toBe(a.record.key);
  });

  it('with proxyCacheSeconds 0, each of 8 concurrent requests reads the store (as documented for that mode)', async () => {
    const c = await proxyContainer({ proxyCacheSeconds: 0 });

    await Promise.all(Array.from({ length: 8 }, () => c.open()));

    expect(c.reads).toHaveBeenCalledTimes(8);
    expect(c.cache.size).toBe(0);
    expect(c.cache.opening).toBe(0);
  });
});

describe('OpenSessionCache bounds', () => {
  it('holds at most maxEntries sessions, dropping the oldest read first', () => {
    const cache = new OpenSessionCache({ maxEntries: 2 });
    cache.set('a', fakeSession('a'), 0, 5_000);
    cache.set('b', fakeSession('b'), 1, 5_000);
    cache.set('a', fakeSession('a'), 2, 5_000);
    cache.set('c', fakeSession('c'), 3, 5_000);

    expect(cache.size).toBe(2);
    expect(cache.get('b', 3, 5_000)).toBeUndefined();
    expect(cache.get('a', 3, 5_000)?.sessionId).toBe('a');
    expect(cache.get('c', 3, 5_000)?.sessionId).toBe('c');
  });

  it('drops entries past the window as new ones come, and on a look-up', () => {
    const cache = new OpenSessionCache();
    cache.set('a', fakeSession('a'), 0, 5_000);
    cache.set('b', fakeSession('b'), 4_000, 5_000);
    cache.set('c', fakeSession('c'), 5_000, 5_000);
    expect(cache.size).toBe(2);

    expect(cache.get('b', 9_000, 5_000)).toBeUndefined();
    expect(cache.size).toBe(1);
  });

  it('never replaces a kept revision with an older one (a read that began before this container\'s refresh and ended after it)', () => {
    const cache = new OpenSessionCache();
    const revision = (session: OpenSession, n: number): OpenSession => ({ ...session, record: { ...session.record, revision: n } });
    cache.set('a', revision(fakeSession('a'), 2), 1_000, 5_000);

    cache.set('a', revision(fakeSession('a'), 1), 1_500, 5_000);
    expect(cache.get('a', 1_600, 5_000)?.record.revision).toBe(2);

    cache.set('a', revision(fakeSession('a'), 3), 1_700, 5_000);
    expect(cache.get('a', 1_800, 5_000)?.record.revision).toBe(3);
  });

  it('keeps no per-request flag of the request that stored a session', () => {
    const cache = new OpenSessionCache();
    cache.set('a', { ...fakeSession('a'), waitedForRefresh: true, refreshNotStored: true }, 0, 5_000);
    expect(cache.get('a', 1, 5_000)).toEqual(fakeSession('a'));
  });
});

describe('cachingRefresher: what a renewal teaches this container', () => {
  async function dueForRenewal() {
    const c = await proxyContainer();
    const first = await c.open();
    c.h.deps.clock.advance(first.secrets.accessTokenExpiresAt - c.h.deps.clock.now() - 30_000);
    const due = await c.open();
    return { ...c, due };
  }

  it('keeps the revision a refresh stored: the next request is served without a store read', async () => {
    const c = await dueForRenewal();
    answerRefresh(c.h.ehr);
    const refreshed = await cachingRefresher(ensureFreshSession)(c.due, c.deps);
    expect(refreshed.record.revision).toBe(c.due.record.revision + 1);
    const reads = c.reads.mock.calls.length;

    const next = await c.open();

    expect(c.reads).toHaveBeenCalledTimes(reads);
    expect(next.record.revision).toBe(refreshed.record.revision);
    expect(next.secrets.accessToken).toBe('at-refreshed-1');
  });

  it('drops the entry on a forced renewal (the EHR refused the token) and on any failed renewal', async () => {
    const c = await proxyContainer();
    const session = await c.open();
    const seen: boolean[] = [];
    const failing: SessionRefresher = async () => {
      seen.push(c.cache.get(sessionKey(c.sessionId), c.h.deps.clock.now(), 5_000) !== undefined);
      throw new SmartError('REFRESH_UNAVAILABLE', 'the EHR token service did not renew the tokens');
    };

    await expect(cachingRefresher(failing)(session, c.deps, { force: true })).rejects.toMatchObject({ code: 'REFRESH_UNAVAILABLE' });
    expect(seen).toEqual([false]);
    expect(c.cache.size).toBe(0);

    await c.open();
    expect(c.cache.size).toBe(1);
    await expect(cachingRefresher(failing)(session, c.deps)).rejects.toMatchObject({ code: 'REFRESH_UNAVAILABLE' });
    expect(c.cache.size).toBe(0);
  });

  it('drops the entry when a refused refresh ended the session, so the next request hears SESSION_NOT_OPEN at once', async () => {
    const c = await dueForRenewal();
    c.h.ehr.tokenAnswer = () => new Response(JSON.stringify({ error: 'invalid_grant' }), { status: 400, headers: { 'content-type': 'application/json' } });

    await expect(cachingRefresher(ensureFreshSession)(c.due, c.deps)).rejects.toMatchObject({ code: 'SESSION_NOT_OPEN' });

    expect(c.cache.size).toBe(0);
    await expect(c.open()).rejects.toMatchObject({ code: 'SESSION_NOT_OPEN', status: 401 });
  });

  it('a forced renewal from a stale kept revision takes no lease and uses the newer stored tokens: the old refresh token is never sent (invariant 8)', async () => {
    const c = await proxyContainer();
    const stale = await c.open();
    const sent = answerRefresh(c.h.ehr);
    // Another container refreshed meanwhile: the store has a newer revision, this container the old one.
    const elsewhere = await ensureFreshSession(await openSession(c.sessionId, c.cookie, c.h.deps), c.h.deps, { force: true });
    expect(sent).toEqual([stale.secrets.refreshToken]);

    const after = await cachingRefresher(ensureFreshSession)(stale, c.deps, { force: true });

    expect(sent).toEqual([stale.secrets.refreshToken]);
    expect(after.waitedForRefresh).toBe(true);
    expect(after.record.revision).toBe(elsewhere.record.revision);
    expect(after.secrets.accessToken).toBe(elsewhere.secrets.accessToken);
    // And it is what the container keeps now, without the waiter's flag.
    const kept = await c.open();
    expect(kept.record.revision).toBe(elsewhere.record.revision);
    expect(kept.waitedForRefresh).toBeUndefined();
  });
});
