import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BINDING_COOKIE,
  body,
  call,
  captureLogs,
  checkAnswer,
  drainLogs,
  event,
  expectHandlerLogs,
  fc,
  FUZZ_RUNS,
  FUZZ_SEED,
  headers,
  query,
  stopCapturingLogs,
  storedSnapshot,
  Tally,
  text,
  world,
  type World,
} from './harness.js';

/*
 * Every route, fuzzed with what a browser or an attacker can send: paths, query strings, headers,
 * cookies, bodies (invariant 9). Each answer is well-formed, never a 5xx, never cacheable; refused
 * input changes nothing stored; no log line grows with the input.
 */

type Handlers = {
  launch: Awaited<ReturnType<typeof import('../../functions/launch/handler.js')['createLaunchHandler']>>;
  sessions: Awaited<ReturnType<typeof import('../../functions/sessions/handler.js')['createSessionsHandler']>>;
  fhir: Awaited<ReturnType<typeof import('../../functions/fhir-proxy/handler.js')['createFhirProxyHandler']>>;
};

let w: World;
let handlers: Handlers;

beforeAll(async () => {
  captureLogs();
  w = await world();
  const { createLaunchHandler } = await import('../../functions/launch/handler.js');
  const { createSessionsHandler } = await import('../../functions/sessions/handler.js');
  const { createFhirProxyHandler } = await import('../../functions/fhir-proxy/handler.js');
  handlers = { launch: createLaunchHandler(w.getDeps), sessions: createSessionsHandler(w.getDeps), fhir: createFhirProxyHandler(w.getDeps) };
  await expectHandlerLogs(handlers.launch, '/launch');
  await expectHandlerLogs(handlers.sessions, '/sessions/{id}');
  await expectHandlerLogs(handlers.fhir, '/sessions/{id}/fhir/{proxy+}');
});
afterAll(() => stopCapturingLogs());

const params = { numRuns: FUZZ_RUNS, seed: FUZZ_SEED, endOnFailure: true };

/** A session id: the live one, a well-formed unknown one, or anything. */
const sessionId = () => fc.oneof(fc.constant(w.sessionId), fc.constant('A'.repeat(43)), fc.stringMatching(/^[A-Za-z0-9_-]{43}$/), text);
/** A cookie header: the live binding, another browser's, garbage, duplicates, or none. */
const cookie = (options: { live: boolean }) =>
  fc.oneof(
    ...(options.live ? [fc.constant(`${BINDING_COOKIE}=${w.cookie}`)] : []),
    fc.constant(`${BINDING_COOKIE}=${'B'.repeat(43)}`),
    fc.constant(`${BINDING_COOKIE}=${w.cookie}; ${BINDING_COOKIE}=${'B'.repeat(43)}`),
    text.map((t) => `${BINDING_COOKIE}=${t}`),
    text,
    fc.constant(undefined),
  );

function withCookie(h: Record<string, string[]>, c: string | undefined): Record<string, string[]> {
  const out = Object.fromEntries(Object.entries(h).filter(([k]) => k.toLowerCase() !== 'cookie'));
  return c === undefined ? out : { ...out, cookie: [c] };
}

describe('fuzzing every route (invariant 9)', () => {
  it('GET /launch: any query and cookie gives a redirect or a 4xx page, never a 5xx', async () => {
    const tally = new Tally();
    const launchQuery = fc.oneof(
        query,
        query.map((q) => ({ ...q, iss: [w.deps.config.issuers[0]!.iss] })),
        fc.record({ iss: fc.array(fc.oneof(text, fc.constant(w.deps.config.issuers[0]!.iss)), { minLength: 1, maxLength: 2 }), launch: fc.array(text, { minLength: 1, maxLength: 2 }) }, { requiredKeys: [] }),
    );
    await fc.assert(
      fc.asyncProperty(launchQuery, cookie({ live: true }), headers, async (q, c, h) => {
        const before = storedSnapshot(w);
        const result = await call(handlers.launch, event({ resource: '/launch', path: '/launch', method: 'GET', query: q, headers: withCookie(h, c) }));
        const { status, code } = checkAnswer(result, 'html');
        tally.add(status, code);
        if (status !== 302) expect(storedSnapshot(w)).toBe(before);
        // A pending launch made here is of no further use: drop it so snapshots stay small.
        for (const pending of w.h.deps.store.transactions()) await w.h.deps.store.takeTransaction(pending.key, 0);
      }),
      params,
    );
    tally.report('GET /launch');
  });

  it('GET /callback: any state, code, error, iss and cookie is refused with a 4xx page and consumes nothing', async () => {
    const tally = new Tally();
    await fc.assert(
      fc.asyncProperty(query, fc.record({ state: fc.option(text), code: fc.option(text), error: fc.option(text), iss: fc.option(text) }), cookie({ live: true }), async (q, known, c) => {
        const merged: Record<string, string[]> = { ...q };
        for (const [name, value] of Object.entries(known)) if (value !== null) merged[name] = [value];
        const before = storedSnapshot(w);
        const result = await call(handlers.launch, event({ resource: '/callback', path: '/callback', method: 'GET', query: merged, headers: withCookie({}, c) }));
        const { status, code } = checkAnswer(result, 'html');
        tally.add(status, code);
        expect(status).toBeGreaterThanOrEqual(400);
        expect(storedSnapshot(w)).toBe(before);
      }),
      params,
    );
    tally.report('GET /callback');
  });

  it.each([
    ['GET', '/sessions/{id}', ''],
    ['POST', '/sessions/{id}/refresh', '/refresh'],
    ['POST', '/sessions/{id}/logout', '/logout'],
  ])('%s %s: any id, cookie, header and body without the live binding answers 400 or the one 401, and changes nothing', async (method, resource, suffix) => {
    const tally = new Tally();
    await fc.assert(
      fc.asyncProperty(sessionId(), cookie({ live: false }), headers, body, fc.constantFrom(method, 'PUT', 'DELETE', 'PATCH'), async (id, c, h, b, verb) => {
        const before = storedSnapshot(w);
        const result = await call(
          handlers.sessions,
          event({ resource, path: `/sessions/${id}${suffix}`, method: verb === 'PUT' ? verb : method, pathParameters: { id }, headers: withCookie(h, c), ...b }),
        );
        const { status, code } = checkAnswer(result, 'json');
        tally.add(status, code);
        expect([400, 401, 405]).toContain(status);
        if (status === 401) expect(code).toBe('SESSION_NOT_OPEN');
        if (status === 400) expect(code).toBe('SESSION_ID_MALFORMED');
        expect(storedSnapshot(w)).toBe(before);
      }),
      params,
    );
    tally.report(`${method} ${resource}`);
  });

  it('ANY /sessions/{id}/fhir/{proxy+}: any method, path, query, header and body on the live session is forwarded or refused with a 4xx OperationOutcome', async () => {
    const tally = new Tally();
    const fhirPath = fc.oneof(
      text,
      fc.array(fc.oneof(text, fc.constantFrom('Patient', 'Observation', '123', '_search', '_history', '$everything', 'metadata', 'Binary', '..', '%2e%2e', '')), { minLength: 1, maxLength: 4 }).map((s) => s.join('/')),
      fc.array(fc.constantFrom('Patient', 'Observation', '123', 'other', '_search', '_history', '$everything', 'metadata', 'Binary', 'b1'), { minLength: 1, maxLength: 3 }).map((s) => s.join('/')),
    );
    const method = fc.oneof({ weight: 4, arbitrary: fc.constantFrom('GET', 'GET', 'POST', 'PUT', 'PATCH', 'DELETE') }, fc.constantFrom('HEAD', 'OPTIONS', 'TRACE', 'CONNECT'), fc.string({ maxLength: 8 }));
    await fc.assert(
      // Mostly the live session with its own cookie, so most cases reach the proxy's own checks and the EHR.
      fc.asyncProperty(fc.oneof({ weight: 8, arbitrary: fc.constant(w.sessionId) }, sessionId()), fc.oneof({ weight: 8, arbitrary: fc.constant(`${BINDING_COOKIE}=${w.cookie}`) }, cookie({ live: true })), method, fhirPath, query, headers, body, async (id, c, verb, path, q, h, b) => {
        const before = storedSnapshot(w);
        const requests = w.h.ehr.requests.length;
        const result = await call(
          handlers.fhir,
          event({ resource: '/sessions/{id}/fhir/{proxy+}', path: `/sessions/${id}/fhir/${path}`, method: verb, pathParameters: { id, proxy: path }, query: q, headers: withCookie(h, c), ...b }),
        );
        const { status, code } = checkAnswer(result, 'fhir', { preflight: verb === 'OPTIONS' });
        tally.add(status, code ?? (verb === 'OPTIONS' ? 'preflight' : 'upstream'));
        const headersOut = Object.fromEntries(Object.entries(result.headers ?? {}).map(([k, v]) => [k.toLowerCase(), String(v)]));
        const forwarded = w.h.ehr.requests.slice(requests);
        if (code === undefined && forwarded.length > 0) {
          // Forwarded: the EHR's answer, neutralised (invariant 7: only ever to the session's FHIR base).
          expect(headersOut['content-security-policy']).toMatch(/^sandbox/);
          for (const request of forwarded) expect(request.url.startsWith(`${w.h.ehr.fhirBase}/`)).toBe(true);
        } else if (code === undefined) {
          // Not forwarded and not refused: only a CORS preflight answers so.
          expect(verb).toBe('OPTIONS');
          expect(status).toBeLessThan(300);
        } else {
          expect(status).toBeGreaterThanOrEqual(400);
        }
        // Nothing here is a write the fake EHR stores, and nothing refreshes: the store never changes.
        expect(storedSnapshot(w)).toBe(before);
      }),
      params,
    );
    tally.report('ANY /sessions/{id}/fhir/{proxy+}');
  });

  it('a resourceType of 3 MB is neither copied into the log nor into the OperationOutcome', async () => {
    const huge = 'X'.repeat(3 * 1024 * 1024);
    const result = await call(
      handlers.fhir,
      event({
        resource: '/sessions/{id}/fhir/{proxy+}',
        path: `/sessions/${w.sessionId}/fhir/Observation`,
        method: 'POST',
        pathParameters: { id: w.sessionId, proxy: 'Observation' },
        headers: { cookie: [`${BINDING_COOKIE}=${w.cookie}`], 'content-type': ['application/fhir+json'] },
        body: JSON.stringify({ resourceType: huge }),
      }),
    );
    const logs = drainLogs();
    expect(result.statusCode).toBe(400);
    expect((result.body ?? '').length).toBeLessThan(2048);
    expect(logs.length).toBeGreaterThan(0);
    expect(Math.max(...logs.map((l) => l.length))).toBeLessThan(2048);
    expect(JSON.parse(result.body ?? '{}')).toMatchObject({ issue: [{ details: { coding: [{ code: 'PROXY_REQUEST_INVALID' }] } }] });
  });
});
