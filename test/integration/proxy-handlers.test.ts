import { describe, expect, it } from 'vitest';
import { BUFFERED_RESPONSE_LIMIT_BYTES, createFhirProxyHandler, createStreamingFhirProxyHandler } from '../../functions/fhir-proxy/handler.js';
import { PRELUDE_CONTENT_TYPE } from '../../shared/http/streaming.js';
import { BINDING_COOKIE } from '../../shared/http/cookies.js';
import { json } from '../fakes/fake-ehr.js';
import { harness, signIn } from '../fakes/launch-flow.js';
import { apiEvent, lambdaContext } from '../fixtures/api-event.js';
import { CollectingResponseStream } from '../fixtures/response-stream.js';

/*
 * The two Lambda transports of the one proxy implementation, handler by handler:
 * the buffered payload v1 answer, and the response-streaming answer in the exact format API Gateway's
 * STREAM integration reads (JSON prelude, 8 NUL bytes, raw body). The fake EHR stands in for the FHIR
 * server; the integration tests run the same handlers over real HTTP.
 */


async function setup() {
  const h = await harness();
  const { callback, launch } = await signIn(h);
  h.ehr.requests.length = 0;
  const getDeps = () => Promise.resolve(h.deps);
  const event = (path: string, extra: Partial<Parameters<typeof apiEvent>[0]> = {}) =>
    apiEvent({
      resource: '/sessions/{id}/fhir/{proxy+}',
      path: `/sessions/${callback.sessionId}/fhir/${path}`,
      pathParameters: { id: callback.sessionId, proxy: path },
      cookies: { [BINDING_COOKIE]: launch.bindingSecret ?? '' },
      ...extra,
    });
  return { h, getDeps, event };
}

describe('streaming handler: the API Gateway STREAM contract', () => {
  it('writes a JSON prelude with status and headers, 8 NUL bytes, then the raw body', async () => {
    const { h, getDeps, event } = await setup();
    const bytes = Buffer.from([0x25, 0x50, 0x44, 0x46, 0x00, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a]);
    h.ehr.fhirAnswer = () => new Response(bytes, { headers: { 'content-type': 'application/pdf', etag: 'W/"4"' } });
    const stream = new CollectingResponseStream();

    await createStreamingFhirProxyHandler(getDeps)(event('Binary/1'), stream, lambdaContext);

    expect(stream.contentType).toBe(PRELUDE_CONTENT_TYPE);
    const { prelude, body } = stream.parsed();
    expect(prelude.statusCode).toBe(200);
    expect(prelude.headers).toMatchObject({ 'content-type': 'application/pdf', etag: 'W/"4"', 'x-content-type-options': 'nosniff' });
    expect(prelude.headers['x-correlation-id']).toMatch(/^test-request-/);
    expect(prelude.headers).not.toHaveProperty('content-length');
    expect(Buffer.compare(body, bytes)).toBe(0);
    expect(stream.writableFinished).toBe(true);
  });

  it('still sends the prelude for an empty body (a 304)', async () => {
    const { h, getDeps, event } = await setup();
    h.ehr.fhirAnswer = () => new Response(null, { status: 304, headers: { etag: 'W/"1"' } });
    const stream = new CollectingResponseStream();

    await createStreamingFhirProxyHandler(getDeps)(event('Patient/123', { headers: { 'If-None-Match': 'W/"1"' } }), stream, lambdaContext);

    const { prelude, body } = stream.parsed();
    expect(prelude.statusCode).toBe(304);
    expect(body.length).toBe(0);
  });

  it('streams an answer larger than a buffered Lambda response in 1 MB chunks', async () => {
    const { h, getDeps, event } = await setup();
    const big = Buffer.alloc(7 * 1024 * 1024, 0xab);
    h.ehr.fhirAnswer = () => new Response(big, { headers: { 'content-type': 'application/octet-stream' } });
    const stream = new CollectingResponseStream();

    await createStreamingFhirProxyHandler(getDeps)(event('Binary/big'), stream, lambdaContext);

    const { prelude, body } = stream.parsed();
    expect(prelude.statusCode).toBe(200);
    expect(body.equals(big)).toBe(true);
    expect(stream.chunks.length).toBeGreaterThanOrEqual(7);
  });

  it('answers a refusal as an OperationOutcome prelude and body', async () => {
    const { getDeps, event } = await setup();
    const stream = new CollectingResponseStream();

    await createStreamingFhirProxyHandler(getDeps)(event('..%2F..%2Fadmin'), stream, lambdaContext);

    const { prelude, body } = stream.parsed();
    expect(prelude.statusCode).toBe(400);
    expect(prelude.headers['content-type']).toMatch(/^application\/fhir\+json/);
    expect(JSON.parse(body.toString())).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ details: { coding: [{ code: 'PROXY_PATH_REJECTED' }] } }] });
  });
});

describe('buffered handler: payload v1', () => {
  it('returns text bodies as UTF-8 and binary ones base64-encoded', async () => {
    const { h, getDeps, event } = await setup();
    const handler = createFhirProxyHandler(getDeps);
    h.ehr.fhirAnswer = (url) =>
      url.pathname.endsWith('/Binary/1')
        ? new Response(Buffer.from([0, 1, 2, 255]), { headers: { 'content-type': 'image/png' } })
        : json({ resourceType: 'Patient', id: '123', name: [{ family: 'Zoë' }] }, 200, { 'content-type': 'application/fhir+json' });

    const text = await handler(event('Patient/123'), lambdaContext);
    const binary = await handler(event('Binary/1'), lambdaContext);

    expect(text).toMatchObject({ statusCode: 200, isBase64Encoded: false });
    expect(JSON.parse(text.body)).toMatchObject({ name: [{ family: 'Zoë' }] });
    expect(binary).toMatchObject({ statusCode: 200, isBase64Encoded: true, body: Buffer.from([0, 1, 2, 255]).toString('base64') });
  });

  it('answers RESPONSE_TOO_LARGE (502) above what a buffered Lambda response carries, instead of failing in Lambda', async () => {
    const { h, getDeps, event } = await setup();
    h.ehr.fhirAnswer = () => new Response(Buffer.alloc(BUFFERED_RESPONSE_LIMIT_BYTES + 1), { headers: { 'content-type': 'application/octet-stream' } });

    const result = await createFhirProxyHandler(getDeps)(event('Binary/big'), lambdaContext);

    expect(result.statusCode).toBe(502);
    expect(JSON.parse(result.body)).toMatchObject({ issue: [{ code: 'too-costly', details: { coding: [{ code: 'RESPONSE_TOO_LARGE' }] } }] });
  });

  it('decodes a base64 request body once and forwards it byte for byte', async () => {
    const { h, event } = await setup();
    let received: Buffer | undefined;
    const deps = { ...h.deps, http: async (url: string, init?: RequestInit) => ((received = init?.body ? Buffer.from(init.body as Uint8Array) : undefined), h.ehr.http(url, init)) };
    h.ehr.fhirAnswer = () => json({ resourceType: 'Bundle', type: 'searchset' });
    const form = 'patient=123&code=http%3A%2F%2Floinc.org%7C8867-4';

    const result = await createFhirProxyHandler(() => Promise.resolve(deps))(
      { ...event('Observation/_search', { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' } }), body: Buffer.from(form).toString('base64'), isBase64Encoded: true },
      lambdaContext,
    );

    expect(result.statusCode).toBe(200);
    expect(received?.toString()).toBe(form);
  });

  it('refuses a body over 4 MB with 413 before opening the session', async () => {
    const { h, event } = await setup();
    let reads = 0;
    const store = Object.assign(Object.create(h.deps.store) as typeof h.deps.store, {
      getSession: (...args: Parameters<typeof h.deps.store.getSession>) => ((reads += 1), h.deps.store.getSession(...args)),
    });
    const body = Buffer.alloc(4 * 1024 * 1024 + 1, 0x61).toString('base64');

    const result = await createFhirProxyHandler(() => Promise.resolve({ ...h.deps, store }))(
      { ...event('Observation/_search', { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' } }), body, isBase64Encoded: true },
      lambdaContext,
    );

    expect(result.statusCode).toBe(413);
    expect(JSON.parse(result.body)).toMatchObject({ issue: [{ details: { coding: [{ code: 'REQUEST_TOO_LARGE' }] } }] });
    expect(h.ehr.requests).toEqual([]);
    expect(reads).toBe(0);
  });
});
