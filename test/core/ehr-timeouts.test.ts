import { describe, expect, it } from 'vitest';
import { discoverCached, discoverIssuer } from '../../shared/core/discovery.js';
import { UPSTREAM_TIMEOUT_MS } from '../../shared/core/ehr/http.js';
import { JwksCache, verifyIdToken, type IdTokenExpectations } from '../../shared/core/id-token.js';
import type { HttpClient } from '../../shared/core/ports.js';
import { caught } from '../fakes/caught.js';
import { FixedClock } from '../fakes/clock.js';
import { FakeEhr, json } from '../fakes/fake-ehr.js';
import { completeCallback, startLaunch } from '../../shared/core/launch.js';
import { ehrLaunchQuery, harness, type Harness } from '../fakes/launch-flow.js';

/*
 * Discovery and the JWKS fetch time out on the clock port like every other call to the EHR: a test
 * clock moved past the deadline aborts them, and nothing waits for wall-clock time.
 */

const ISS = 'https://ehr.example.org/fhir';
const OPENID = 'https://ehr.example.org/oidc';
const JWKS_URI = 'https://ehr.example.org/oauth2/jwks';

/** Hangs on the URLs `hangs` accepts until their abort signal fires; the rest go to `otherwise`. */
function hangingOn(hangs: (url: string) => boolean, otherwise: HttpClient) {
  const hung: string[] = [];
  let hang!: () => void;
  const reached = new Promise<void>((resolve) => (hang = resolve));
  const http: HttpClient = async (url, init) => {
    if (!hangs(url)) return otherwise(url, init);
    hung.push(url);
    return new Promise<Response>((_resolve, reject) => {
      const signal = init?.signal;
      if (!signal) return reject(new Error(`the call to ${url} has no timeout signal`));
      signal.addEventListener('abort', () => reject(signal.reason), { once: true });
      hang();
    });
  };
  return { http, hung, reached };
}

/** Answers the URLs in `answers`; any other URL hangs until its abort signal fires. */
const hangingExcept = (answers: Record<string, () => Response>) => hangingOn((url) => answers[url] === undefined, async (url) => answers[url]!());

/** Runs `start` against a hanging URL: it must wait for the clock, and fail once the clock passes the deadline. */
async function expectTimesOutOnClock(clock: FixedClock, reached: Promise<void>, start: () => Promise<unknown>, code: string) {
  let settled = false;
  const before = clock.pendingTimeouts;
  const outcome = caught(start()).finally(() => (settled = true));
  await Promise.race([reached, outcome.then((error) => Promise.reject(new Error(`settled before reaching the hanging call: ${error.message}`)))]);
  expect(clock.pendingTimeouts).toBeGreaterThan(before);
  clock.advance(UPSTREAM_TIMEOUT_MS - 1);
  await new Promise((resolve) => setImmediate(resolve));
  expect(settled).toBe(false);
  clock.advance(1);
  expect(await outcome).toMatchObject({ code });
}

describe('discovery times out on the clock port', () => {
  it('the SMART configuration fetch, through discoverCached and its deps.clock', async () => {
    const clock = new FixedClock();
    const { http, hung, reached } = hangingExcept({});

    await expectTimesOutOnClock(clock, reached, () => discoverCached({ http, mode: 'aws', clock }, { iss: ISS }), 'DISCOVERY_UNAVAILABLE');
    expect(hung).toEqual([`${ISS}/.well-known/smart-configuration`]);
  });

  it('the CapabilityStatement fetch after a 404 (SMART-DISC-07)', async () => {
    const clock = new FixedClock();
    const { http, hung, reached } = hangingExcept({ [`${ISS}/.well-known/smart-configuration`]: () => json({}, 404) });

    await expectTimesOutOnClock(clock, reached, () => discoverIssuer(http, { iss: ISS }, 'aws', clock), 'DISCOVERY_UNAVAILABLE');
    expect(hung).toEqual([`${ISS}/metadata`]);
  });

  it('the OpenID configuration of the configured openidIssuer', async () => {
    const clock = new FixedClock();
    const ehr = await FakeEhr.create({ clock });
    delete ehr.smartConfiguration.issuer;
    delete ehr.smartConfiguration.jwks_uri;
    // Without sso-openid-connect an EHR need not publish them: the configured openidIssuer names them.
    ehr.smartConfiguration.capabilities = ['launch-ehr', 'client-confidential-symmetric'];
    const { http, hung, reached } = hangingOn((url) => url.startsWith(OPENID), ehr.http);

    await expectTimesOutOnClock(clock, reached, () => discoverIssuer(http, { iss: ehr.fhirBase, openidIssuer: OPENID }, 'aws', clock), 'DISCOVERY_UNAVAILABLE');
    expect(hung).toEqual([`${OPENID}/.well-known/openid-configuration`]);
  });
});

describe('the JWKS fetch of id_token verification times out on the clock port (invariant 5)', () => {
  const expectations = (clock: FixedClock): IdTokenExpectations => ({ issuer: 'https://ehr.example.org/oauth2', jwksUri: JWKS_URI, clientId: 'app', nonce: undefined, now: clock.now() });

  it('without a JWKS cache', async () => {
    const clock = new FixedClock();
    const { http, hung, reached } = hangingExcept({});

    await expectTimesOutOnClock(clock, reached, () => verifyIdToken(http, 'a.b.c', expectations(clock), undefined, clock), 'DISCOVERY_UNAVAILABLE');
    expect(hung).toEqual([JWKS_URI]);
  });

  it('through the JwksCache', async () => {
    const clock = new FixedClock();
    const { http, hung, reached } = hangingExcept({});

    await expectTimesOutOnClock(clock, reached, () => verifyIdToken(http, 'a.b.c', expectations(clock), new JwksCache(), clock), 'DISCOVERY_UNAVAILABLE');
    expect(hung).toEqual([JWKS_URI]);
  });
});

describe('sign-in calls to the EHR time out on the clock port', () => {
  /** A launch the EHR has authorized; the callback then runs with `http` in place of the EHR's. */
  async function authorized(hangs: (ehr: Harness['ehr']) => string) {
    const h = await harness();
    const launch = await startLaunch(ehrLaunchQuery(h.ehr), undefined, h.deps);
    const authorization = h.ehr.authorize(launch.authorizeUrl);
    const url = hangs(h.ehr);
    const hanging = hangingOn((candidate) => candidate === url, h.ehr.http);
    const callback = () => completeCallback(authorization.callbackQuery, launch.bindingSecret, { ...h.deps, http: hanging.http });
    return { h, url, callback, ...hanging };
  }

  it('the authorization-code exchange at the token endpoint', async () => {
    const { h, url, callback, hung, reached } = await authorized((ehr) => ehr.tokenEndpoint);

    await expectTimesOutOnClock(h.deps.clock, reached, callback, 'TOKEN_ENDPOINT_UNAVAILABLE');
    expect(hung).toEqual([url]);
  });

  it('the JWKS fetch that verifies the id_token (invariant 5)', async () => {
    const { h, url, callback, hung, reached } = await authorized((ehr) => ehr.jwksUri);

    await expectTimesOutOnClock(h.deps.clock, reached, callback, 'DISCOVERY_UNAVAILABLE');
    expect(hung).toEqual([url]);
  });
});
