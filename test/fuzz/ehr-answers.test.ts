import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isActiveContentType } from '../../shared/core/proxy/index.js';
import { startLaunch } from '../../shared/core/launch.js';
import { ehrLaunchQuery } from '../fakes/launch-flow.js';
import { BINDING_COOKIE, call, captureLogs, checkAnswer, event, expectHandlerLogs, fc, FUZZ_RUNS, FUZZ_SEED, stopCapturingLogs, storedSnapshot, Tally, text, world, type World } from './harness.js';

/*
 * What the EHR sends back, fuzzed: discovery documents, token responses (at sign-in and on refresh),
 * FHIR answers and their headers. However hostile, the answer is a clean 4xx/502/503/504 with a code
 * or the EHR's own answer made inert; never a 500, never a crash; nothing half-stored.
 */

type Handler = (e: import('../../shared/http/api-event.js').ApiEvent, c: typeof import('../fixtures/api-event.js').lambdaContext) => Promise<import('../../shared/http/api-event.js').ApiResult>;
let w: World;
let launch: Handler;
let fhir: Handler;

beforeAll(async () => {
  captureLogs();
  w = await world();
  launch = (await import('../../functions/launch/handler.js')).createLaunchHandler(w.getDeps);
  fhir = (await import('../../functions/fhir-proxy/handler.js')).createFhirProxyHandler(w.getDeps);
  await expectHandlerLogs(launch, '/launch');
  await expectHandlerLogs(fhir, '/sessions/{id}/fhir/{proxy+}');
});
afterAll(() => stopCapturingLogs());

const params = { numRuns: FUZZ_RUNS, seed: FUZZ_SEED, endOnFailure: true };

/** A JSON value that is sometimes right, sometimes of the wrong type, sometimes extreme. */
const value = (good: fc.Arbitrary<unknown>) =>
  fc.oneof(
    { weight: 3, arbitrary: good },
    { weight: 1, arbitrary: fc.anything({ maxDepth: 1 }) },
    { weight: 1, arbitrary: fc.constantFrom(2 ** 53 - 1, -1, 0, 1e308, '9'.repeat(400), null, '', 'x'.repeat(100_000), [], {}) },
  );

/** A response status the EHR may send, with a body only where HTTP allows one. */
const status = fc.oneof(fc.constantFrom(200, 200, 400, 401, 403, 404, 429, 500, 502, 503), fc.integer({ min: 200, max: 599 }));
const contentType = fc.oneof(fc.constantFrom('application/json', 'application/fhir+json', 'text/html', 'image/svg+xml', 'application/xml', 'text/plain', 'application/octet-stream', ''), text);

function response(statusCode: number, bodyText: string | Uint8Array, headers: Record<string, string>): Response {
  const safe = new Headers();
  for (const [name, v] of Object.entries(headers)) {
    try {
      safe.set(name, v);
    } catch {
      // A header the fetch API itself refuses never reaches us either.
    }
  }
  const nullBody = [204, 205, 304].includes(statusCode);
  return new Response(nullBody ? null : (bodyText as BodyInit), { status: statusCode, headers: safe });
}

const tokenBody = fc.oneof(
  fc
    .record(
      {
        access_token: value(fc.string({ minLength: 1, maxLength: 40 })),
        token_type: value(fc.constantFrom('Bearer', 'bearer', 'MAC')),
        expires_in: value(fc.integer({ min: 1, max: 7200 })),
        scope: value(fc.constantFrom('launch openid fhirUser patient/*.rs offline_access', 'patient/*.rs')),
        refresh_token: value(fc.string({ minLength: 1, maxLength: 40 })),
        id_token: value(fc.constantFrom('a.b.c', 'not-a-jwt')),
        patient: value(fc.constantFrom('123', '../x', 'other')),
        encounter: value(fc.string({ maxLength: 20 })),
        need_patient_banner: value(fc.boolean()),
        smart_style_url: value(fc.constantFrom('https://ehr.example/style.json', 'javascript:alert(1)')),
        fhirContext: value(fc.array(fc.record({ reference: fc.string({ maxLength: 30 }) }), { maxLength: 3 })),
        intent: value(fc.string({ maxLength: 20 })),
        tenant: value(fc.string({ maxLength: 20 })),
      },
      { requiredKeys: [] },
    )
    .map((body) => JSON.stringify(body)),
  fc.anything({ maxDepth: 2 }).map((v) => JSON.stringify(v) ?? 'null'),
  text,
);

describe('fuzzing what the EHR answers (invariant 9)', () => {
  it('token responses at sign-in: a session or a clean 4xx/502/503/504 page, never a 500, never a half-stored session', async () => {
    const tally = new Tally();
    await fc.assert(
      fc.asyncProperty(status, contentType, tokenBody, async (statusCode, type, bodyText) => {
        const started = await startLaunch(ehrLaunchQuery(w.h.ehr), w.cookie, w.deps);
        const authorization = w.h.ehr.authorize(started.authorizeUrl);
        w.h.ehr.tokenAnswer = () => response(statusCode, bodyText, { 'content-type': type, 'cache-control': 'no-store' });
        const sessionsBefore = w.h.deps.store.sessions().length;
        try {
          const result = await call(launch, event({ resource: '/callback', path: '/callback', method: 'GET', query: authorization.callbackQuery as Record<string, string[]>, headers: { cookie: [`${BINDING_COOKIE}=${w.cookie}`] } }));
          const answer = checkAnswer(result, 'html', { allow5xx: [502, 503, 504] });
          tally.add(answer.status, answer.code);
          expect([302, 400, 401, 403, 502, 503, 504]).toContain(answer.status);
          expect(w.h.deps.store.sessions().length).toBe(sessionsBefore + (answer.status === 302 ? 1 : 0));
        } finally {
          w.h.ehr.tokenAnswer = undefined;
        }
      }),
      params,
    );
    tally.report('EHR token response at /callback');
  });

  it('discovery documents: a redirect or a clean 4xx/502 page, and nothing stored unless it redirects', async () => {
    const tally = new Tally();
    const configuration = fc.oneof(
      fc
        .record(
          {
            authorization_endpoint: value(fc.constant(w.h.ehr.authorizationEndpoint)),
            token_endpoint: value(fc.constant(w.h.ehr.tokenEndpoint)),
            code_challenge_methods_supported: value(fc.constantFrom(['S256'], ['plain'], [])),
            capabilities: value(fc.constantFrom(['launch-ehr', 'launch-standalone', 'client-confidential-symmetric', 'permission-v2'], [])),
            token_endpoint_auth_methods_supported: value(fc.constantFrom(['client_secret_basic'], ['private_key_jwt'])),
            issuer: value(fc.constant(w.h.ehr.issuer)),
            jwks_uri: value(fc.constant(w.h.ehr.jwksUri)),
            scopes_supported: value(fc.array(fc.string({ maxLength: 10 }), { maxLength: 3 })),
          },
          { requiredKeys: [] },
        )
        .map((doc) => JSON.stringify(doc)),
      fc.anything({ maxDepth: 2 }).map((v) => JSON.stringify(v) ?? 'null'),
      text,
    );
    await fc.assert(
      fc.asyncProperty(status, contentType, configuration, async (statusCode, type, doc) => {
        w.h.ehr.discoveryAnswer = () => response(statusCode, doc, { 'content-type': type });
        const before = storedSnapshot(w);
        try {
          const result = await call(launch, event({ resource: '/launch', path: '/launch', method: 'GET', query: ehrLaunchQuery(w.h.ehr) as Record<string, string[]> }));
          const answer = checkAnswer(result, 'html', { allow5xx: [502, 503, 504] });
          tally.add(answer.status, answer.code);
          expect([200, 302, 400, 403, 502, 503, 504]).toContain(answer.status);
          if (answer.status !== 302 && answer.status !== 200) expect(storedSnapshot(w)).toBe(before);
        } finally {
          w.h.ehr.discoveryAnswer = undefined;
        }
      }),
      params,
    );
    tally.report('EHR discovery at /launch');
  });

  it('FHIR answers: passed through inert (sandbox, nosniff, no-store, attachment when active) or a clean 502/504, the session untouched', async () => {
    const tally = new Tally();
    const headerName = fc.oneof(fc.constantFrom('content-type', 'cache-control', 'set-cookie', 'location', 'content-location', 'etag', 'retry-after', 'content-security-policy', 'content-disposition', 'content-encoding', 'access-control-allow-origin', 'x-frame-options'), fc.string({ maxLength: 12 }));
    const fhirBody = fc.oneof(text, fc.uint8Array({ maxLength: 300 }), fc.anything({ maxDepth: 2 }).map((v) => JSON.stringify(v) ?? 'null'), fc.constant('<html><script>fetch("/")</script></html>'));
    await fc.assert(
      fc.asyncProperty(
        status.filter((s) => s !== 401),
        contentType,
        fc.dictionary(headerName, text, { maxKeys: 4 }),
        fhirBody,
        async (statusCode, type, extra, bodyText) => {
          w.h.ehr.fhirAnswer = () => response(statusCode, bodyText, { ...extra, 'content-type': type });
          const before = storedSnapshot(w);
          try {
            const result = await call(
              fhir,
              event({ resource: '/sessions/{id}/fhir/{proxy+}', path: `/sessions/${w.sessionId}/fhir/Binary/b1`, method: 'GET', pathParameters: { id: w.sessionId, proxy: 'Binary/b1' }, headers: { cookie: [`${BINDING_COOKIE}=${w.cookie}`] } }),
            );
            const answer = checkAnswer(result, 'fhir', { allow5xx: [500, 501, 502, 503, 504, 505, 506, 507, 508, 509, 510, 511, ...Array.from({ length: 88 }, (_, i) => 512 + i)] });
            tally.add(answer.status, answer.code ?? 'upstream');
            const headers = Object.fromEntries(Object.entries(result.headers ?? {}).map(([k, v]) => [k.toLowerCase(), String(v)]));
            if (answer.code === undefined) {
              expect(answer.status).toBe(statusCode);
              expect(headers['content-security-policy']).toMatch(/^sandbox; default-src 'none'/);
              expect(headers['x-content-type-options']).toBe('nosniff');
              expect(headers['set-cookie']).toBeUndefined();
              if (isActiveContentType(headers['content-type'])) expect(headers['content-disposition']).toBe('attachment');
              else expect(headers['content-disposition']).toBeUndefined();
            } else {
              expect([413, 415, 502, 504]).toContain(answer.status);
            }
            expect(storedSnapshot(w)).toBe(before);
          } finally {
            w.h.ehr.fhirAnswer = (url) => (url.pathname.endsWith('/Patient/123') ? response(200, JSON.stringify({ resourceType: 'Patient', id: '123' }), { 'content-type': 'application/fhir+json' }) : response(404, '{}', {}));
          }
        },
      ),
      params,
    );
    tally.report('EHR FHIR answer through the proxy');
  });

  it('refresh responses: new tokens or a clean answer; a refused refresh ends the session with the one 401, anything else leaves it as it was', async () => {
    const tally = new Tally();
    await fc.assert(
      fc.asyncProperty(status, contentType, tokenBody, async (statusCode, type, bodyText) => {
        const own = await world();
        const handler = (await import('../../functions/sessions/handler.js')).createSessionsHandler(own.getDeps);
        own.h.ehr.tokenAnswer = () => response(statusCode, bodyText, { 'content-type': type });
        const before = storedSnapshot(own);
        const result = await call(handler, event({ resource: '/sessions/{id}/refresh', path: `/sessions/${own.sessionId}/refresh`, method: 'POST', pathParameters: { id: own.sessionId }, headers: { cookie: [`${BINDING_COOKIE}=${own.cookie}`] } }));
        const answer = checkAnswer(result, 'json', { allow5xx: [502, 503, 504] });
        tally.add(answer.status, answer.code);
        expect([200, 401, 502, 503, 504]).toContain(answer.status);
        if (answer.status === 401) {
          expect(answer.code).toBe('SESSION_NOT_OPEN');
          expect(own.h.deps.store.sessions()).toEqual([]);
        } else if (answer.status !== 200) {
          expect(storedSnapshot(own)).toBe(before);
        }
        // Whatever happened, the session (if any) still opens or answers the one 401: never a 500.
        const view = await call(handler, event({ resource: '/sessions/{id}', path: `/sessions/${own.sessionId}`, method: 'GET', pathParameters: { id: own.sessionId }, headers: { cookie: [`${BINDING_COOKIE}=${own.cookie}`] } }));
        expect([200, 401]).toContain(checkAnswer(view, 'json').status);
      }),
      { ...params, numRuns: Math.max(1, Math.floor(FUZZ_RUNS / 4)) },
    );
    tally.report('EHR refresh response at POST /sessions/{id}/refresh');
  });
});
