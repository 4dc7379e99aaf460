import { CloudWatchLogsClient, CreateLogStreamCommand, PutLogEventsCommand } from '@aws-sdk/client-cloudwatch-logs';
import { mockClient } from 'aws-sdk-client-mock';
import { Logger } from '@aws-lambda-powertools/logger';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createFhirProxyHandler, createStreamingFhirProxyHandler } from '../../functions/fhir-proxy/handler.js';
import { CloudWatchAuditSink } from '../../shared/adapters/cloudwatch-audit-sink.js';
import type { CoreDeps } from '../../shared/core/deps.js';
import { BINDING_COOKIE } from '../../shared/http/cookies.js';
import { apiEvent, lambdaContext } from '../fixtures/api-event.js';
import { json } from '../fakes/fake-ehr.js';
import { harness, signIn, type Harness } from '../fakes/launch-flow.js';
import { CollectingResponseStream } from '../fixtures/response-stream.js';

/**
 * The streaming FHIR proxy writes a proxied request's audit record (PutLogEvents) after the client
 * has the whole answer, before the invocation ends; a failing write is logged with the correlation id;
 * a request that also refreshed the session writes its records before answering (docs/operations.md).
 */

const logs = new CloudWatchLogsClient({ region: 'us-east-1' });
const logsMock = mockClient(logs);
/** What happened, in order: the stream ending, PutLogEvents sent, PutLogEvents done. */
let events: string[] = [];

beforeEach(() => {
  events = [];
  logsMock.reset();
  logsMock.on(CreateLogStreamCommand).resolves({});
});
afterEach(() => {
  vi.restoreAllMocks();
});

class RecordingStream extends CollectingResponseStream {
  constructor() {
    super();
    this.on('finish', () => events.push('response complete'));
  }
}

async function proxiedSession(h: Harness, tokenResponse: Record<string, unknown> = {}) {
  h.ehr.tokenResponse = tokenResponse;
  const deps: CoreDeps = { ...h.deps, audit: new CloudWatchAuditSink({ client: logs, logGroupName: '/smart-launch/acme/audit', logStreamName: 'c1' }) };
  const { callback, launch } = await signIn(h);
  const event = (requestId: string) => {
    const base = apiEvent({
      resource: '/sessions/{id}/fhir/{proxy+}',
      path: `/sessions/${callback.sessionId}/fhir/Patient/123`,
      pathParameters: { id: callback.sessionId, proxy: 'Patient/123' },
      cookies: { [BINDING_COOKIE]: launch.bindingSecret! },
    });
    return { ...base, requestContext: { ...base.requestContext, requestId } };
  };
  return { getDeps: () => Promise.resolve(deps), event };
}

function recordPutLogEvents(outcome: 'ok' | 'fail'): void {
  logsMock.on(PutLogEventsCommand).callsFake(async () => {
    events.push('PutLogEvents sent');
    await new Promise<void>((resolve) => setImmediate(resolve));
    events.push('PutLogEvents done');
    if (outcome === 'fail') throw Object.assign(new Error('throttled'), { name: 'ThrottlingException' });
    return {};
  });
}

describe('audit records of proxied requests in Lambda', () => {
  it('are written after the streamed answer is complete, and before the invocation ends', async () => {
    const h = await harness();
    const { getDeps, event } = await proxiedSession(h);
    recordPutLogEvents('ok');
    const stream = new RecordingStream();

    await createStreamingFhirProxyHandler(getDeps)(event('req-after-1'), stream, lambdaContext);

    expect(stream.status()).toBe(200);
    expect(events).toEqual(['response complete', 'PutLogEvents sent', 'PutLogEvents done']);
    const [call] = logsMock.commandCalls(PutLogEventsCommand);
    const records = call!.args[0].input.logEvents!.map((e) => JSON.parse(e.message!) as { action: string; correlationId: string; status: number });
    expect(records).toMatchObject([{ action: 'fhir', correlationId: 'req-after-1', status: 200 }]);
  });

  it('are never lost silently: a failing PutLogEvents is logged as an error with the correlation id, and the answer stands', async () => {
    const h = await harness();
    const { getDeps, event } = await proxiedSession(h);
    recordPutLogEvents('fail');
    // What the function's logger is asked to write as an error (whatever level the test run logs at).
    const errors = vi.spyOn(Logger.prototype, 'error');
    const stream = new RecordingStream();

    await createStreamingFhirProxyHandler(getDeps)(event('req-after-2'), stream, lambdaContext);

    expect(stream.status()).toBe(200);
    expect(events[0]).toBe('response complete');
    expect(errors.mock.calls).toMatchObject([
      ['audit records could not be written', { cause: 'ThrottlingException', correlationId: 'req-after-2', records: [{ action: 'fhir', status: 200 }] }],
    ]);
  });

  it('that also renewed the session\'s token are written before the answer (refresh records stay synchronous)', async () => {
    const h = await harness();
    const { getDeps, event } = await proxiedSession(h, { expires_in: 120 });
    recordPutLogEvents('ok');
    h.ehr.tokenAnswer = async (call) =>
      call.form.get('grant_type') === 'refresh_token'
        ? json({ access_token: 'at-renewed', token_type: 'Bearer', expires_in: 3600, refresh_token: 'rt-renewed' })
        : json({ error: 'unsupported_grant_type' }, 400);
    h.deps.clock.advance(115_000); // the 2-minute access token is due: this request refreshes first
    const stream = new RecordingStream();

    await createStreamingFhirProxyHandler(getDeps)(event('req-after-3'), stream, lambdaContext);

    expect(stream.status()).toBe(200);
    expect(events).toEqual(['PutLogEvents sent', 'PutLogEvents done', 'response complete']);
    const [call] = logsMock.commandCalls(PutLogEventsCommand);
    expect(call!.args[0].input.logEvents!.map((e) => (JSON.parse(e.message!) as { action: string }).action)).toEqual(['refresh', 'fhir']);
  });

  it('are written before the answer by the buffered handler, which has no time after its response', async () => {
    const h = await harness();
    const { getDeps, event } = await proxiedSession(h);
    recordPutLogEvents('ok');

    const result = await createFhirProxyHandler(getDeps)(event('req-after-4'), lambdaContext);
    events.push('response complete');

    expect(result.statusCode).toBe(200);
    expect(events).toEqual(['PutLogEvents sent', 'PutLogEvents done', 'response complete']);
  });
});
