import { describe, expect, it } from 'vitest';
import { completeCallback, startLaunch } from '../../shared/core/launch.js';
import { JwksCache } from '../../shared/core/id-token.js';
import type { DataKey, EncryptionContext, HttpClient } from '../../shared/core/ports.js';
import { SmartError } from '../../shared/core/errors.js';
import { FixedClock } from '../fakes/clock.js';
import { deps, sampleConfig } from '../fakes/deps.js';
import { FakeEhr, json } from '../fakes/fake-ehr.js';
import { ehrLaunchQuery } from '../fakes/launch-flow.js';
import { MemoryKeyRing } from '../fakes/memory-key-ring.js';

/*
 * The callback's waits, in order (docs/design.md §5 budget): the consuming delete of the pending
 * launch; the code exchange, with the issuer's key set fetched alongside it; then the id_token check
 * and the patient read, with the session's data key generated alongside them; then the one write.
 * The EHR's endpoints are held here to show which requests are already in flight, never by sleeping.
 */

/** A promise and its resolver. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** A key ring whose `generateDataKey` answers only when `release` is called (or fails with `failWith`). */
class HeldKeyRing extends MemoryKeyRing {
  readonly called = deferred();
  readonly #gate = deferred();
  failWith: Error | undefined;

  release(): void {
    this.#gate.resolve();
  }

  override async generateDataKey(context: EncryptionContext): Promise<DataKey> {
    this.called.resolve();
    await this.#gate.promise;
    if (this.failWith) throw this.failWith;
    return super.generateDataKey(context);
  }
}

/** The fake EHR with its token endpoint and patient read held until released, each arrival announced. */
async function heldEhr() {
  const clock = new FixedClock();
  const ehr = await FakeEhr.create({ clock });
  const token = { arrived: deferred(), release: deferred() };
  const patient = { arrived: deferred(), answered: deferred() };
  const jwksRequested = deferred();
  const jwks = { answer: undefined as ((n: number) => Response | undefined) | undefined, requests: 0 };
  const http: HttpClient = async (url, init) => {
    if (url.startsWith(ehr.jwksUri)) {
      jwksRequested.resolve();
      const replaced = jwks.answer?.(++jwks.requests);
      if (replaced) return replaced;
    }
    if (url === ehr.tokenEndpoint) {
      token.arrived.resolve();
      await token.release.promise;
    }
    const response = await ehr.http(url, init);
    if (/\/Patient\/[^/]+$/.test(new URL(url).pathname)) patient.answered.resolve();
    return response;
  };
  const keyRing = new HeldKeyRing();
  const cache = new JwksCache();
  const d = { ...deps({ config: sampleConfig(), http, clock, keyRing }), jwks: cache };
  const launch = await startLaunch(ehrLaunchQuery(ehr), undefined, d);
  const authorization = ehr.authorize(launch.authorizeUrl);
  const callback = () => completeCallback(authorization.callbackQuery, launch.bindingSecret, d);
  return { ehr, deps: d, keyRing, jwks: cache, jwksAnswers: jwks, token, patient, jwksRequested, callback };
}

describe('the callback runs its independent waits side by side, every check unchanged', () => {
  it('asks for the issuer key set while the token endpoint is still answering, and verifies the id_token with that one fetch', async () => {
    const t = await heldEhr();
    const done = t.callback();

    await t.token.arrived.promise;
    await t.jwksRequested.promise; // before the change, only after the token answer: this never resolved
    expect(t.keyRing.generateCalls).toBe(0);
    t.token.release.resolve();
    await t.keyRing.called.promise;
    t.keyRing.release();
    const result = await done;

    expect(result.signedIn?.fhirUser).toBeDefined();
    expect(t.jwks.fetches).toBe(1);
    expect(t.ehr.requests.filter((r) => r.url.startsWith(t.ehr.jwksUri))).toHaveLength(1);
    expect(t.deps.store.sessions()).toHaveLength(1);
  }, 5_000);

  it('makes no key-ring call before the EHR redeemed the code, then reads the patient while the data key is being generated', async () => {
    const t = await heldEhr();
    const done = t.callback();

    await t.token.arrived.promise;
    await t.jwksRequested.promise;
    expect(t.keyRing.generateCalls).toBe(0);
    t.token.release.resolve();
    await t.keyRing.called.promise;
    // The key ring has not answered, yet the patient read completes: it no longer waits for KMS.
    await t.patient.answered.promise;
    expect(t.deps.store.sessions()).toHaveLength(0);
    t.keyRing.release();
    await done;

    expect(t.keyRing.generateCalls).toBe(1);
    const [session] = t.deps.store.sessions();
    expect(t.keyRing.generatedContexts).toEqual([{ service: 'smart-launch', customer: 'acme-health', session: session?.key }]);
  }, 5_000);

  it('a key set that cannot be fetched ahead is fetched again for the verification: the sign-in still succeeds', async () => {
    const t = await heldEhr();
    t.jwksAnswers.answer = (n) => (n === 1 ? json({ error: 'busy' }, 503) : undefined);
    t.token.release.resolve();
    t.keyRing.release();

    const result = await t.callback();

    expect(result.sessionId).toBeDefined();
    expect(t.jwksAnswers.requests).toBe(2);
  });

  it('a refused code ends the sign-in with the token error: no key-ring call, no stray failure from the key set fetched ahead', async () => {
    const t = await heldEhr();
    t.ehr.tokenAnswer = () => json({ error: 'invalid_grant' }, 400);
    t.jwksAnswers.answer = () => json({}, 500);
    t.token.release.resolve();

    await expect(t.callback()).rejects.toMatchObject({ code: 'TOKEN_REQUEST_REJECTED' });
    expect(t.keyRing.generateCalls).toBe(0);
    expect(t.deps.store.sessions()).toHaveLength(0);
  });

  it('an id_token that fails verification is refused as before, whatever the key ring answers meanwhile', async () => {
    const t = await heldEhr();
    t.ehr.idTokenClaims = { nonce: 'not-the-nonce' };
    t.keyRing.failWith = new SmartError('KEYRING_UNAVAILABLE', 'down');
    t.token.release.resolve();
    t.keyRing.release();

    await expect(t.callback()).rejects.toMatchObject({ code: 'ID_TOKEN_INVALID', details: { claim: 'nonce' } });
    expect(t.deps.store.sessions()).toHaveLength(0);
  });
});
