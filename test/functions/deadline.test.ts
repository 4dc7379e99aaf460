import type { Context } from 'aws-lambda';
import { describe, expect, it } from 'vitest';
import { createStreamingFhirProxyHandler } from '../../functions/fhir-proxy/handler.js';
import { streamingCapBytes } from '../../functions/fhir-proxy/streaming.js';
import { createSessionsHandler } from '../../functions/sessions/handler.js';
import type { HttpClient } from '../../shared/core/ports.js';
import { sessionKey } from '../../shared/core/sealed-records.js';
import { BINDING_COOKIE } from '../../shared/http/cookies.js';
import { DEADLINE_MARGIN_MS, deadlineScope, invocationDeadline, withDeadline } from '../../shared/runtime/deadline.js';
import { timeoutSignal } from '../../shared/core/clock.js';
import { systemClock } from '../../shared/adapters/system.js';
import type { CoreDeps } from '../../shared/core/deps.js';
import { apiEvent } from '../fixtures/api-event.js';
import { harness, signIn } from '../fakes/launch-flow.js';
import { CollectingResponseStream } from '../fixtures/response-stream.js';

/** A Lambda context whose remaining time is what the test says, counted down in real time. */
function contextWithRemaining(ms: number): Context {
  const end = Date.now() + ms;
  return { awsRequestId: 'deadline', functionName: 'deadline', getRemainingTimeInMillis: () => Math.max(0, end - Date.now()) } as unknown as Context;
}

/** An EHR endpoint that never answers: only an abort of the request ends the call. */
function hangingAt(prefix: string, inner: HttpClient): HttpClient {
  return (url, init) => {
    if (!url.startsWith(prefix)) return inner(url, init);
    return new Promise((_, reject) => {
      const signal = init?.signal;
      signal?.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
    });
  };
}


describe('invocation deadline (function timeouts vs upstream timeouts)', () => {
  it('plans against the earlier of Lambda\'s remaining time and API Gateway\'s integration timeout', () => {
    const now = 1_000_000;
    const request = apiEvent({ resource: '/sessions/{id}/refresh', path: '/sessions/s/refresh', method: 'POST', pathParameters: { id: 's' } });
    const event = { ...request, requestContext: { ...request.requestContext, requestTimeEpoch: now - 5_000 } };
    // API Gateway: 29 s from the request's arrival, 5 s ago; Lambda: 60 s left.
    expect(invocationDeadline(event, { getRemainingTimeInMillis: () => 60_000 }, now, 29_000)).toBe(now + 24_000 - DEADLINE_MARGIN_MS);
    // Lambda: 10 s left, sooner than API Gateway.
    expect(invocationDeadline(event, { getRemainingTimeInMillis: () => 10_000 }, now, 29_000)).toBe(now + 10_000 - DEADLINE_MARGIN_MS);
  });

  it('bounds the core\'s own EHR timeout by the deadline with one signal per call on the wall clock', async () => {
    // Arrange: the wall clock (no timeout of its own) and a deadline 300 ms away.
    const seen: Array<AbortSignal | null | undefined> = [];
    const inner: HttpClient = (_url, init) => {
      seen.push(init?.signal);
      return Promise.resolve(new Response('ok'));
    };
    const deps = withDeadline({ clock: systemClock, http: inner } as unknown as CoreDeps, Date.now() + 300);
    // Act: the core's 60-second exchange timeout, as the proxy makes it.
    const signal = timeoutSignal(deps.clock, 60_000);
    await deps.http('https://ehr.example/fhir/Patient/1', { signal });
    // Assert: the EHR call carries that very signal (no second timer, no AbortSignal.any), and it
    // fires at the invocation deadline, not after 60 s.
    expect(seen).toEqual([signal]);
    await new Promise<void>((aborted) => (signal.aborted ? aborted() : signal.addEventListener('abort', () => aborted(), { once: true })));
    expect((signal.reason as Error).name).toBe('TimeoutError');
  });

  it('bounds the EHR calls of a scope by the deadline until it is released, then leaves no timer armed', async () => {
    // Arrange: two scopes on the wall clock; the one to be released has the earlier deadline.
    const inner: HttpClient = () => Promise.resolve(new Response('ok'));
    const aborted = (signal: AbortSignal) =>
      new Promise<void>((done) => (signal.aborted ? done() : signal.addEventListener('abort', () => done(), { once: true })));
    const kept = deadlineScope({ clock: systemClock, http: inner } as unknown as CoreDeps, Date.now() + 80);
    const released = deadlineScope({ clock: systemClock, http: inner } as unknown as CoreDeps, Date.now() + 20);
    // Act: the core's 60-second exchange timeout in each; the second scope is released when its exchange is over.
    const firing = timeoutSignal(kept.deps.clock, 60_000);
    const quiet = timeoutSignal(released.deps.clock, 60_000);
    await released.deps.http('https://ehr.example/fhir/Patient/1', { signal: quiet });
    released.release();
    // Assert: the unreleased signal fires at its deadline, as AbortSignal.timeout would; the released
    // one, whose deadline came first, did not.
    await aborted(firing);
    expect((firing.reason as Error).name).toBe('TimeoutError');
    expect(quiet.aborted).toBe(false);
  });

  it('keeps the time of a clock whose methods live on its class (no timeout of its own)', async () => {
    // Arrange: a clock written as a class, as a local or test runner may pass one.
    class SteppedClock {
      #now = 5_000;
      now(): number {
        return this.#now;
      }
      sleep(ms: number): Promise<void> {
        this.#now += ms;
        return Promise.resolve();
      }
    }
    const deps = withDeadline({ clock: new SteppedClock(), http: () => Promise.resolve(new Response('ok')) } as unknown as CoreDeps, Date.now() + 60_000);
    // Act
    await deps.clock.sleep(250);
    // Assert: the bounded clock still reads and moves the original clock.
    expect(deps.clock.now()).toBe(5_250);
    expect(typeof deps.clock.timeout).toBe('function');
  });

  it('answers 503 REFRESH_UNAVAILABLE and releases the refresh lease when the token endpoint outlasts the invocation (invariant 8)', async () => {
    // Arrange: a signed-in session; the EHR's token endpoint then stops answering.
    const h = await harness();
    const { callback, launch } = await signIn(h);
    const tokenEndpoint = String(h.ehr.tokenEndpoint);
    const slow = { ...h.deps, http: hangingAt(tokenEndpoint, h.deps.http) };
    const handler = createSessionsHandler(() => Promise.resolve(slow));
    const event = apiEvent({
      resource: '/sessions/{id}/refresh',
      path: `/sessions/${callback.sessionId}/refresh`,
      method: 'POST',
      pathParameters: { id: callback.sessionId },
      cookies: { [BINDING_COOKIE]: launch.bindingSecret! },
    });
    // Act: 150 ms left in the function, 2 s of which are kept back: the call is cut at once.
    h.deps.clock.advance(1_000);
    const result = await handler(event, contextWithRemaining(DEADLINE_MARGIN_MS + 150));
    // Assert: a clear, retryable answer, and the lease is free for the next request.
    expect(result.statusCode).toBe(503);
    expect(JSON.parse(result.body).error.code).toBe('REFRESH_UNAVAILABLE');
    const record = await h.deps.store.getSession(sessionKey(callback.sessionId), Math.floor(h.deps.clock.now() / 1000));
    expect(record?.leaseUntil).toBeUndefined();
  });

  it('answers the FHIR proxy with 504 UPSTREAM_TIMEOUT before the invocation ends', async () => {
    const h = await harness();
    const { callback, launch } = await signIn(h);
    const slow = { ...h.deps, http: hangingAt(`${h.ehr.fhirBase}/Patient`, h.deps.http) };
    const handler = createStreamingFhirProxyHandler(() => Promise.resolve(slow));
    const stream = new CollectingResponseStream();
    const event = apiEvent({
      resource: '/sessions/{id}/fhir/{proxy+}',
      path: `/sessions/${callback.sessionId}/fhir/Patient/123`,
      pathParameters: { id: callback.sessionId, proxy: 'Patient/123' },
      cookies: { [BINDING_COOKIE]: launch.bindingSecret! },
    });
    await handler(event, stream, contextWithRemaining(DEADLINE_MARGIN_MS + 150));
    const { prelude, body } = stream.parsed();
    expect(prelude.statusCode, body.toString("utf8")).toBe(504);
    expect(JSON.parse(body.toString('utf8'))).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ code: 'timeout' }] });
  });

  it('never starts a 200 that cannot be streamed whole before the function times out', async () => {
    // Arrange: a 9 MB Binary, and 1 s of streaming left (6 MB + 2 MB/s x 1 s = 8 MB).
    const h = await harness();
    const { callback, launch } = await signIn(h);
    const big = new Uint8Array(9_000_000).fill(7);
    const binary: HttpClient = (url, init) =>
      url.startsWith(`${h.ehr.fhirBase}/Binary/`) ? Promise.resolve(new Response(big, { headers: { 'content-type': 'application/octet-stream' } })) : h.deps.http(url, init);
    const handler = createStreamingFhirProxyHandler(() => Promise.resolve({ ...h.deps, http: binary }));
    const event = apiEvent({
      resource: '/sessions/{id}/fhir/{proxy+}',
      path: `/sessions/${callback.sessionId}/fhir/Binary/b1`,
      pathParameters: { id: callback.sessionId, proxy: 'Binary/b1' },
      cookies: { [BINDING_COOKIE]: launch.bindingSecret! },
    });
    expect(streamingCapBytes(1)).toBeLessThan(big.length);
    // Act
    const short = new CollectingResponseStream();
    await handler(event, short, contextWithRemaining(DEADLINE_MARGIN_MS + 1_000));
    const roomy = new CollectingResponseStream();
    await handler(event, roomy, contextWithRemaining(DEADLINE_MARGIN_MS + 10_000));
    // Assert: refused whole with a FHIR error, and delivered whole when there is time.
    const refused = short.parsed();
    expect(refused.prelude.statusCode).toBe(502);
    expect(JSON.parse(refused.body.toString('utf8'))).toMatchObject({ resourceType: 'OperationOutcome' });
    const delivered = roomy.parsed();
    expect(delivered.prelude.statusCode).toBe(200);
    expect(delivered.body.length).toBe(big.length);
  });
});
