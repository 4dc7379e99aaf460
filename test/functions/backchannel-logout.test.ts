import { describe, expect, it } from 'vitest';
import { createSessionsHandler } from '../../functions/sessions/handler.js';
import { BACKCHANNEL_LOGOUT_EVENT } from '../../shared/core/backchannel-logout.js';
import { DiscoveryCache } from '../../shared/core/discovery.js';
import { FixedClock } from '../fakes/clock.js';
import { deps as testDeps } from '../fakes/deps.js';
import { FakeEhr } from '../fakes/fake-ehr.js';
import { apiEvent, lambdaContext } from '../fixtures/api-event.js';
import { harness, signIn } from '../fakes/launch-flow.js';
import { MemoryKeyRing } from '../fakes/memory-key-ring.js';
import { sessionStoreOnLocalTable } from '../fixtures/local-table.js';
import type { CoreDeps } from '../../shared/core/deps.js';

/*
 * `POST /backchannel-logout` is unauthenticated: what an anonymous POST may cost before its token is
 * known to be a signed JWT. The handler runs for real, on a real (dynalite) table and the fake EHR.
 */

const localStore = sessionStoreOnLocalTable('bcl');

async function receiver() {
  const clock = new FixedClock();
  const ehr = await FakeEhr.create({ clock });
  const deps = { ...testDeps({ clock, http: ehr.http }), discovery: new DiscoveryCache(), store: localStore() };
  const handler = createSessionsHandler(async () => deps);
  const post = async (body: string | undefined, contentType = 'application/x-www-form-urlencoded') => {
    const event = { ...apiEvent({ resource: '/backchannel-logout', path: '/backchannel-logout', method: 'POST', headers: { 'content-type': contentType } }), body: body ?? null };
    return handler(event, lambdaContext);
  };
  return { ehr, post, clock };
}

describe('POST /backchannel-logout: an anonymous POST costs nothing before its token is a signed JWT', () => {
  it.each([
    ['no body', undefined, undefined],
    ['another content type', `logout_token=a.b.c`, 'application/json'],
    ['no logout_token', 'token=x', undefined],
    ['two logout_tokens', 'logout_token=a.b.c&logout_token=a.b.c', undefined],
    ['not a JWT', 'logout_token=not-a-jwt', undefined],
    ['alg none', `logout_token=${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(`{"iss":"x","events":{"${BACKCHANNEL_LOGOUT_EVENT}":{}}}`).toString('base64url')}.`, undefined],
    ['an oversized form', `logout_token=${'a'.repeat(20_000)}`, undefined],
  ])('%s: 400 invalid_request, no-store, and no request to any EHR (no discovery, no JWKS)', async (_what, body, contentType) => {
    const { ehr, post } = await receiver();

    const result = await post(body, contentType);

    expect(result.statusCode).toBe(400);
    expect(JSON.parse(String(result.body))).toMatchObject({ error: 'invalid_request' });
    expect(String(result.headers?.['cache-control'])).toContain('no-store');
    expect(ehr.requests).toEqual([]);
  });

  it('a well-formed token of a configured issuer is checked against that issuer (discovery, then its JWKS)', async () => {
    const { ehr, post } = await receiver();
    const token = await ehr.signIdToken({ jti: 'j-1', sid: 's-1', events: { [BACKCHANNEL_LOGOUT_EVENT]: {} }, exp: undefined, aud: 'someone-else' });

    const result = await post(`logout_token=${token}`);

    expect(result.statusCode).toBe(400);
    expect(ehr.requests.map((request) => new URL(request.url).pathname)).toEqual(['/fhir/r4/.well-known/smart-configuration', '/oauth2/jwks']);
  });
});

describe('POST /backchannel-logout: a sign-out that could not be carried out', () => {
  it('answers an error, not 200, while a matching session could not be ended, and the EHR\'s retry of the same token then ends it', async () => {
    // Arrange: a session in the table, and a receiver whose key ring cannot open it (KMS failing for this container).
    const store = localStore();
    const h = await harness({ deps: { store: store as never } });
    const { callback, launch } = await signIn(h);
    const deps: CoreDeps = { ...h.deps, store };
    const post = (withDeps: CoreDeps, token: string) =>
      createSessionsHandler(async () => withDeps)(
        { ...apiEvent({ resource: '/backchannel-logout', path: '/backchannel-logout', method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' } }), body: `logout_token=${token}` },
        lambdaContext,
      );
    const token = await h.ehr.signIdToken({ jti: 'retried-1', events: { [BACKCHANNEL_LOGOUT_EVENT]: {} }, exp: undefined, fhirUser: undefined });

    // Act: the first delivery fails to open the session.
    const failed = await post({ ...deps, keyRing: new MemoryKeyRing() }, token);

    // Assert: not a 200 (the EHR would believe the user signed out), and the session is still there.
    expect(failed.statusCode).toBeGreaterThanOrEqual(500);
    expect(String(failed.headers?.['cache-control'])).toContain('no-store');
    const { openSession } = await import('../../shared/core/session.js');
    await expect(openSession(callback.sessionId, launch.bindingSecret, deps)).resolves.toBeDefined();

    // Act: the EHR sends the same token again, and this time the session opens.
    const retried = await post(deps, token);

    // Assert: accepted (not refused as a replay), and the session is ended.
    expect(retried.statusCode).toBe(200);
    await expect(openSession(callback.sessionId, launch.bindingSecret, deps)).rejects.toMatchObject({ code: 'SESSION_NOT_OPEN' });
    // A third delivery is a replay.
    expect((await post(deps, token)).statusCode).toBe(400);
  });
});
