import { describe, expect, it } from 'vitest';
import { createFhirProxyHandler } from '../../functions/fhir-proxy/handler.js';
import { createSessionsHandler } from '../../functions/sessions/handler.js';
import type { CoreDeps } from '../../shared/core/deps.js';
import { OpenSessionCache } from '../../shared/core/session-cache.js';
import { BINDING_COOKIE } from '../../shared/http/cookies.js';
import { sampleConfig } from '../fakes/deps.js';
import { json } from '../fakes/fake-ehr.js';
import { harness, signIn, type Harness } from '../fakes/launch-flow.js';
import { apiEvent, lambdaContext } from '../fixtures/api-event.js';

/*
 * The FHIR proxy's session cache end to end, with the functions as separate containers sharing one
 * store and one clock: the proxy function's containers each have their own cache, the sessions
 * function (logout, refresh) has none and never reaches into theirs, as deployed.
 */

async function signedIn(session: Record<string, unknown> = {}) {
  const h = await harness({ config: sampleConfig({ session }) });
  const { callback, launch } = await signIn(h);
  return { h, sessionId: callback.sessionId, cookies: { [BINDING_COOKIE]: launch.bindingSecret as string } };
}

function proxyContainer(h: Harness) {
  const deps: CoreDeps = { ...h.deps, sessionCache: new OpenSessionCache() };
  return createFhirProxyHandler(async () => deps);
}

const read = (sessionId: string, cookies: Record<string, string>) =>
  apiEvent({ resource: '/sessions/{id}/fhir/{proxy+}', path: `/sessions/${sessionId}/fhir/Patient/123`, pathParameters: { id: sessionId, proxy: 'Patient/123' }, cookies });

describe('the proxy\'s session cache across functions', () => {
  it('a logout through the sessions function: the proxy container that opened the session serves it within proxyCacheSeconds, answers 401 SESSION_NOT_OPEN after (the stated staleness)', async () => {
    const { h, sessionId, cookies } = await signedIn({ proxyCacheSeconds: 5 });
    const proxy = proxyContainer(h);
    const sessions = createSessionsHandler(async () => h.deps);
    expect((await proxy(read(sessionId, cookies), lambdaContext)).statusCode).toBe(200);

    const logout = await sessions(
      apiEvent({ resource: '/sessions/{id}/logout', path: `/sessions/${sessionId}/logout`, method: 'POST', pathParameters: { id: sessionId }, cookies }),
      lambdaContext,
    );
    expect(logout.statusCode).toBe(200);

    // Within the window: served from the container's memory, with the access token the EHR issued
    // (an EHR that refuses a revoked token answers 401 here, and the proxy's renewal then finds no session).
    h.deps.clock.advance(4_000);
    expect((await proxy(read(sessionId, cookies), lambdaContext)).statusCode).toBe(200);
    // Only for the browser it is bound to: another browser gets the one sign-in-again answer.
    const foreign = await proxy(read(sessionId, { [BINDING_COOKIE]: 'C'.repeat(43) }), lambdaContext);
    expect(foreign.statusCode).toBe(401);
    expect(foreign.body).toContain('SESSION_NOT_OPEN');
    // Any other proxy container reads the store: 401 at once.
    const other = await proxyContainer(h)(read(sessionId, cookies), lambdaContext);
    expect(other.statusCode).toBe(401);
    expect(other.body).toContain('SESSION_NOT_OPEN');

    // Past the window (5 s from the read): 401 SESSION_NOT_OPEN there too.
    h.deps.clock.advance(1_000);
    const after = await proxy(read(sessionId, cookies), lambdaContext);
    expect(after.statusCode).toBe(401);
    expect(after.body).toContain('SESSION_NOT_OPEN');
  });

  it('with proxyCacheSeconds 0, a logout shows at the proxy at once', async () => {
    const { h, sessionId, cookies } = await signedIn({ proxyCacheSeconds: 0 });
    const proxy = proxyContainer(h);
    expect((await proxy(read(sessionId, cookies), lambdaContext)).statusCode).toBe(200);

    await createSessionsHandler(async () => h.deps)(
      apiEvent({ resource: '/sessions/{id}/logout', path: `/sessions/${sessionId}/logout`, method: 'POST', pathParameters: { id: sessionId }, cookies }),
      lambdaContext,
    );

    const after = await proxy(read(sessionId, cookies), lambdaContext);
    expect(after.statusCode).toBe(401);
    expect(after.body).toContain('SESSION_NOT_OPEN');
  });

  it('a storm of proxied requests on a token due for renewal, over two proxy containers with warm caches, makes exactly one token endpoint call (invariant 8)', async () => {
    const { h, sessionId, cookies } = await signedIn();
    const containers = [proxyContainer(h), proxyContainer(h)];
    // Both containers have the session in memory.
    for (const proxy of containers) expect((await proxy(read(sessionId, cookies), lambdaContext)).statusCode).toBe(200);
    const sent: string[] = [];
    h.ehr.tokenAnswer = async (call) => {
      if (call.form.get('grant_type') !== 'refresh_token') return json({ error: 'unsupported_grant_type' }, 400);
      sent.push(call.form.get('refresh_token') ?? '');
      return json({ access_token: `at-refreshed-${sent.length}`, token_type: 'Bearer', expires_in: 3600, refresh_token: `rt-rotated-${sent.length}` });
    };
    // The token is now within the refresh skew: no cache serves it, every request goes to the store.
    h.deps.clock.advance(3600_000 - 30_000);

    const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => containers[i % 2]!(read(sessionId, cookies), lambdaContext)));

    expect(answers.map((a) => a.statusCode)).toEqual(Array(30).fill(200));
    expect(sent).toEqual([h.ehr.issued.refreshTokens[0]]);
    // And the next requests in both containers use the renewed token without another renewal.
    for (const proxy of containers) expect((await proxy(read(sessionId, cookies), lambdaContext)).statusCode).toBe(200);
    expect(sent).toHaveLength(1);
    const bearer = h.ehr.requests.filter((r) => r.url.includes('/Patient/123')).map((r) => r.headers.authorization);
    expect(bearer.slice(-2)).toEqual(['Bearer at-refreshed-1', 'Bearer at-refreshed-1']);
  });
});
