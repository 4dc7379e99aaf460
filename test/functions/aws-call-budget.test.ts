import {
  DeleteItemCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  UpdateItemCommand,
  type DynamoDBClientResolvedConfig,
  type ServiceInputTypes,
  type ServiceOutputTypes,
} from '@aws-sdk/client-dynamodb';
import { DecryptCommand, GenerateDataKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { mockClient, type AwsStub } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { createFhirProxyHandler, createStreamingFhirProxyHandler } from '../../functions/fhir-proxy/handler.js';
import { createLaunchHandler } from '../../functions/launch/handler.js';
import { createSessionsHandler } from '../../functions/sessions/handler.js';
import { CachingKeyRing } from '../../shared/adapters/caching-key-ring.js';
import { DynamoSessionStore } from '../../shared/adapters/dynamo-session-store.js';
import { KmsKeyRing } from '../../shared/adapters/kms-key-ring.js';
import { OpenSessionCache } from '../../shared/core/session-cache.js';
import type { CoreDeps } from '../../shared/core/deps.js';
import { BINDING_COOKIE } from '../../shared/http/cookies.js';
import { deps as testDeps } from '../fakes/deps.js';
import { json } from '../fakes/fake-ehr.js';
import { ehrLaunchQuery, harness, type Harness } from '../fakes/launch-flow.js';
import { behaveLikeKms, KMS_KEY_ID } from '../fakes/fake-kms.js';
import { apiEvent, lambdaContext, setCookieValue } from '../fixtures/api-event.js';
import { CollectingResponseStream } from '../fixtures/response-stream.js';
import { localTablePerFile } from '../fixtures/local-table.js';

/**
 * The budgets of docs/design.md §5, counted call by call with aws-sdk-client-mock: the DynamoDB stub forwards
 * every command to a real (dynalite) table, and the KMS stub behaves like KMS (a blob only opens
 * with the context it was made with), so the handlers run for real and every call is counted.
 */

const table = localTablePerFile('budget');
const dynamoClient = new DynamoDBClient({ region: 'us-east-1' });
const dynamoMock: AwsStub<ServiceInputTypes, ServiceOutputTypes, DynamoDBClientResolvedConfig> = mockClient(dynamoClient);
const kms = new KMSClient({ region: 'us-east-1' });
const kmsMock = mockClient(kms);

/** DynamoDB commands sent to the table and not yet answered. */
let dynamoInFlight = 0;

function forwardDynamo(): void {
  for (const Command of [GetItemCommand, PutItemCommand, DeleteItemCommand, UpdateItemCommand] as const) {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    dynamoMock.on(Command as any).callsFake(async (input: any) => {
      dynamoInFlight += 1;
      try {
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        return await table().client.send(new (Command as any)(input));
      } finally {
        dynamoInFlight -= 1;
      }
    });
  }
}


beforeEach(() => {
  dynamoMock.reset();
  kmsMock.reset();
  forwardDynamo();
  behaveLikeKms(kmsMock);
});

const counts = () => ({
  GenerateDataKey: kmsMock.commandCalls(GenerateDataKeyCommand).length,
  Decrypt: kmsMock.commandCalls(DecryptCommand).length,
  GetItem: dynamoMock.commandCalls(GetItemCommand).length,
  PutItem: dynamoMock.commandCalls(PutItemCommand).length,
  DeleteItem: dynamoMock.commandCalls(DeleteItemCommand).length,
  UpdateItem: dynamoMock.commandCalls(UpdateItemCommand).length,
});


/**
 * A warm Lambda container: one store, one caching key ring, built once and reused; with
 * `sessionCache`, the FHIR proxy's session cache as `awsDeps` builds it (`session.proxyCacheSeconds`).
 */
function container(h: Harness, options: { sessionCache?: boolean } = {}): { deps: CoreDeps; getDeps: () => Promise<CoreDeps> } {
  const base = testDeps({ http: h.ehr.http, clock: h.deps.clock });
  const deps: CoreDeps = {
    ...base,
    store: new DynamoSessionStore({ client: dynamoClient, tableName: table().tableName }),
    keyRing: new CachingKeyRing(new KmsKeyRing({ client: kms, keyId: KMS_KEY_ID }), h.deps.clock),
    ...(options.sessionCache ? { sessionCache: new OpenSessionCache() } : {}),
  };
  return { deps, getDeps: () => Promise.resolve(deps) };
}

async function signIn(h: Harness, getDeps: () => Promise<CoreDeps>, callbackDeps = getDeps) {
  const launched = await createLaunchHandler(getDeps)(apiEvent({ resource: '/launch', path: '/launch', query: ehrLaunchQuery(h.ehr) as Record<string, string[]> }), lambdaContext);
  const binding = setCookieValue(launched.multiValueHeaders?.['set-cookie'], BINDING_COOKIE)!;
  const authorization = h.ehr.authorize(String(launched.headers!.location));
  const callback = await createLaunchHandler(callbackDeps)(
    apiEvent({ resource: '/callback', path: '/callback', query: authorization.callbackQuery as Record<string, string[]>, cookies: { [BINDING_COOKIE]: binding } }),
    lambdaContext,
  );
  expect(callback.statusCode).toBe(302);
  return { sessionId: String(callback.headers!.location).split('#session=')[1]!, cookies: { [BINDING_COOKIE]: binding } };
}

describe('AWS calls per operation (docs/design.md §5)', () => {
  it('an anonymous launch costs one item write and no KMS call', async () => {
    const h = await harness();
    const { getDeps } = container(h);

    const launched = await createLaunchHandler(getDeps)(apiEvent({ resource: '/launch', path: '/launch', query: ehrLaunchQuery(h.ehr) as Record<string, string[]> }), lambdaContext);

    expect(launched.statusCode).toBe(302);
    expect(counts()).toEqual({ GenerateDataKey: 0, Decrypt: 0, GetItem: 0, PutItem: 1, DeleteItem: 0, UpdateItem: 0 });
  });

  it('a sign-in costs one GenerateDataKey (at the callback, in whichever container) and no Decrypt; two writes and one conditional delete', async () => {
    const h = await harness();
    const launchContainer = container(h);
    const callbackContainer = container(h);

    await signIn(h, launchContainer.getDeps, callbackContainer.getDeps);

    expect(counts()).toEqual({ GenerateDataKey: 1, Decrypt: 0, GetItem: 0, PutItem: 2, DeleteItem: 1, UpdateItem: 0 });
  });

  it('a sign-in handled by one warm container costs the same', async () => {
    const h = await harness();
    const { getDeps } = container(h);

    await signIn(h, getDeps);

    expect(counts()).toEqual({ GenerateDataKey: 1, Decrypt: 0, GetItem: 0, PutItem: 2, DeleteItem: 1, UpdateItem: 0 });
  });

  it('a callback from another browser costs one conditional delete that fails and one read, no KMS call, and consumes nothing', async () => {
    const h = await harness();
    const { getDeps } = container(h);
    const launched = await createLaunchHandler(getDeps)(apiEvent({ resource: '/launch', path: '/launch', query: ehrLaunchQuery(h.ehr) as Record<string, string[]> }), lambdaContext);
    const authorization = h.ehr.authorize(String(launched.headers!.location));
    dynamoMock.resetHistory();

    const foreign = await createLaunchHandler(getDeps)(
      apiEvent({ resource: '/callback', path: '/callback', query: authorization.callbackQuery as Record<string, string[]>, cookies: { [BINDING_COOKIE]: 'C'.repeat(43) } }),
      lambdaContext,
    );

    expect(foreign.statusCode).toBe(403);
    expect(counts()).toEqual({ GenerateDataKey: 0, Decrypt: 0, GetItem: 1, PutItem: 0, DeleteItem: 1, UpdateItem: 0 });
    const binding = setCookieValue(launched.multiValueHeaders?.['set-cookie'], BINDING_COOKIE)!;
    const own = await createLaunchHandler(getDeps)(
      apiEvent({ resource: '/callback', path: '/callback', query: authorization.callbackQuery as Record<string, string[]>, cookies: { [BINDING_COOKIE]: binding } }),
      lambdaContext,
    );
    expect(own.statusCode).toBe(302);
  });

  it('100 proxied requests in one warm container without the session cache: one read each, no write, at most one Decrypt', async () => {
    const h = await harness();
    const { sessionId, cookies } = await signIn(h, container(h).getDeps);
    const proxyContainer = container(h);
    const proxy = createFhirProxyHandler(proxyContainer.getDeps);
    dynamoMock.resetHistory();
    kmsMock.resetHistory();

    for (let i = 0; i < 100; i++) {
      const result = await proxy(
        apiEvent({
          resource: '/sessions/{id}/fhir/{proxy+}',
          path: `/sessions/${sessionId}/fhir/Patient/123`,
          pathParameters: { id: sessionId, proxy: 'Patient/123' },
          cookies,
        }),
        lambdaContext,
      );
      expect(result.statusCode).toBe(200);
    }

    expect(counts()).toEqual({ GenerateDataKey: 0, Decrypt: 1, GetItem: 100, PutItem: 0, DeleteItem: 0, UpdateItem: 0 });
  });

  it('a warm proxied request without the session cache, buffered or streaming, makes exactly one store read and no KMS call, request after request', async () => {
    const h = await harness();
    const { sessionId, cookies } = await signIn(h, container(h).getDeps);
    const warm = container(h);
    const handlers = { buffered: createFhirProxyHandler(warm.getDeps), streaming: createStreamingFhirProxyHandler(warm.getDeps) };
    const event = (proxyPath: string) =>
      apiEvent({
        resource: '/sessions/{id}/fhir/{proxy+}',
        path: `/sessions/${sessionId}/fhir/${proxyPath}`,
        pathParameters: { id: sessionId, proxy: proxyPath },
        cookies,
      });
    // The container warms up: its first request opens the data key (the one Decrypt it ever makes).
    expect((await handlers.buffered(event('Patient/123'), lambdaContext)).statusCode).toBe(200);

    for (let i = 0; i < 20; i++) {
      dynamoMock.resetHistory();
      kmsMock.resetHistory();
      if (i % 2 === 0) {
        expect((await handlers.buffered(event('Patient/123'), lambdaContext)).statusCode).toBe(200);
      } else {
        const stream = new CollectingResponseStream();
        await handlers.streaming(event('Patient/123'), stream, lambdaContext);
        expect(stream.text()).toContain('"statusCode":200');
      }
      expect(counts()).toEqual({ GenerateDataKey: 0, Decrypt: 0, GetItem: 1, PutItem: 0, DeleteItem: 0, UpdateItem: 0 });
    }
  });

  it('with the session cache (proxyCacheSeconds 5), a warm proxied request makes no store read and no KMS call within the window: one GetItem first, one again after it', async () => {
    const h = await harness();
    const { sessionId, cookies } = await signIn(h, container(h).getDeps);
    const warm = container(h, { sessionCache: true });
    expect((await warm.getDeps()).config.session.proxyCacheSeconds).toBe(5);
    const handlers = { buffered: createFhirProxyHandler(warm.getDeps), streaming: createStreamingFhirProxyHandler(warm.getDeps) };
    const event = () =>
      apiEvent({ resource: '/sessions/{id}/fhir/{proxy+}', path: `/sessions/${sessionId}/fhir/Patient/123`, pathParameters: { id: sessionId, proxy: 'Patient/123' }, cookies });
    dynamoMock.resetHistory();
    kmsMock.resetHistory();

    // The first request of the container reads the store (and opens the data key: its one Decrypt).
    expect((await handlers.buffered(event(), lambdaContext)).statusCode).toBe(200);
    expect(counts()).toEqual({ GenerateDataKey: 0, Decrypt: 1, GetItem: 1, PutItem: 0, DeleteItem: 0, UpdateItem: 0 });

    // A chart's burst within the window: nothing at all from DynamoDB or KMS.
    for (let i = 0; i < 20; i++) {
      dynamoMock.resetHistory();
      kmsMock.resetHistory();
      h.deps.clock.advance(200);
      if (i % 2 === 0) {
        expect((await handlers.buffered(event(), lambdaContext)).statusCode).toBe(200);
      } else {
        const stream = new CollectingResponseStream();
        await handlers.streaming(event(), stream, lambdaContext);
        expect(stream.text()).toContain('"statusCode":200');
      }
      expect(counts()).toEqual({ GenerateDataKey: 0, Decrypt: 0, GetItem: 0, PutItem: 0, DeleteItem: 0, UpdateItem: 0 });
    }

    // Past the window (5 s from the read): one store read again, still no KMS call (the key ring's cache).
    h.deps.clock.advance(1_000);
    dynamoMock.resetHistory();
    kmsMock.resetHistory();
    expect((await handlers.buffered(event(), lambdaContext)).statusCode).toBe(200);
    expect(counts()).toEqual({ GenerateDataKey: 0, Decrypt: 0, GetItem: 1, PutItem: 0, DeleteItem: 0, UpdateItem: 0 });
  });

  describe('a burst of concurrent first requests on a warm container that has not opened the session (a chart loading)', () => {
    /** KMS Decrypt held until the test answers it, so the burst's requests all meet it under way. */
    function heldKms() {
      const waiting: Array<{ resolve: () => void; reject: (error: unknown) => void }> = [];
      let holding = true;
      behaveLikeKms(kmsMock, {
        beforeDecrypt: () => (holding ? new Promise<void>((resolve, reject) => waiting.push({ resolve, reject })) : Promise.resolve()),
      });
      return {
        waiting,
        hold() {
          holding = true;
        },
        /** Answers every Decrypt under way (and those to come) as KMS would, or fails those under way with `error`. */
        release(error?: unknown) {
          holding = false;
          for (const call of waiting.splice(0)) {
            if (error === undefined) call.resolve();
            else call.reject(error);
          }
        },
      };
    }

    /** Waits (on the event loop, no timer) until `reads` reads were sent and answered and a Decrypt is held. */
    async function piledUp(kmsHeld: { waiting: unknown[] }, reads: number) {
      for (let turns = 0; !(dynamoMock.commandCalls(GetItemCommand).length >= reads && dynamoInFlight === 0 && kmsHeld.waiting.length > 0); turns++) {
        if (turns > 100_000) throw new Error('the burst never reached KMS');
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      for (let i = 0; i < 10; i++) await new Promise<void>((resolve) => setImmediate(resolve));
    }

    const withoutCorrelationId = (body: string | undefined) => body?.replace(/\(correlation id [^)]*\)/, '');

    async function burstSetup(options: { sessionCache: boolean; proxyCacheSeconds?: number }) {
      const h = await harness();
      const burstKms = heldKms();
      burstKms.release();
      const { sessionId, cookies } = await signIn(h, container(h).getDeps);
      const proxyContainer = container(h, { sessionCache: options.sessionCache });
      const deps = await proxyContainer.getDeps();
      const getDeps = () =>
        Promise.resolve<CoreDeps>(options.proxyCacheSeconds === undefined ? deps : { ...deps, config: { ...deps.config, session: { ...deps.config.session, proxyCacheSeconds: options.proxyCacheSeconds } } });
      burstKms.hold();
      const proxy = createFhirProxyHandler(getDeps);
      const request = (cookie: Record<string, string> = cookies) =>
        proxy(
          apiEvent({ resource: '/sessions/{id}/fhir/{proxy+}', path: `/sessions/${sessionId}/fhir/Patient/123`, pathParameters: { id: sessionId, proxy: 'Patient/123' }, cookies: cookie }),
          lambdaContext,
        );
      dynamoMock.resetHistory();
      kmsMock.resetHistory();
      return { h, kms: burstKms, request, cookies };
    }

    it('8 concurrent proxied requests with the session cache on: exactly one GetItem and one KMS Decrypt (docs/design.md §5 KMS and DynamoDB budgets)', async () => {
      const b = await burstSetup({ sessionCache: true });

      const burst = Array.from({ length: 8 }, () => b.request());
      await piledUp(b.kms, 1);
      b.kms.release();
      const results = await Promise.all(burst);

      for (const result of results) expect(result.statusCode).toBe(200);
      expect(counts()).toEqual({ GenerateDataKey: 0, Decrypt: 1, GetItem: 1, PutItem: 0, DeleteItem: 0, UpdateItem: 0 });
    });

    it('8 concurrent proxied requests with proxyCacheSeconds 0: one GetItem each (that mode\'s one read per request), still one KMS Decrypt (docs/design.md §5 KMS budget)', async () => {
      const b = await burstSetup({ sessionCache: true, proxyCacheSeconds: 0 });

      const burst = Array.from({ length: 8 }, () => b.request());
      await piledUp(b.kms, 8);
      b.kms.release();
      const results = await Promise.all(burst);

      for (const result of results) expect(result.statusCode).toBe(200);
      expect(counts()).toEqual({ GenerateDataKey: 0, Decrypt: 1, GetItem: 8, PutItem: 0, DeleteItem: 0, UpdateItem: 0 });
    });

    it('requests with a wrong or missing cookie in the burst get 401 SESSION_NOT_OPEN, the bound ones are served: one GetItem, one Decrypt (invariant 2)', async () => {
      const b = await burstSetup({ sessionCache: true });
      const foreign = { [BINDING_COOKIE]: 'C'.repeat(43) };
      const cookies: Array<Record<string, string>> = [b.cookies, foreign, b.cookies, {}, b.cookies, foreign, b.cookies, b.cookies];

      const burst = cookies.map((cookie) => b.request(cookie));
      await piledUp(b.kms, 1);
      b.kms.release();
      const results = await Promise.all(burst);

      results.forEach((result, i) => {
        if (cookies[i] === b.cookies) expect(result.statusCode).toBe(200);
        else {
          expect(result.statusCode).toBe(401);
          expect(result.body).toContain('SESSION_NOT_OPEN');
        }
      });
      expect(counts()).toEqual({ GenerateDataKey: 0, Decrypt: 1, GetItem: 1, PutItem: 0, DeleteItem: 0, UpdateItem: 0 });
    });

    it('a burst of wrong or missing cookies only: 401 SESSION_NOT_OPEN for each, one GetItem, no KMS Decrypt at all (invariant 2)', async () => {
      const b = await burstSetup({ sessionCache: true });

      const results = await Promise.all(([{ [BINDING_COOKIE]: 'C'.repeat(43) }, {}, { [BINDING_COOKIE]: 'D'.repeat(43) }, {}] as Array<Record<string, string>>).map((cookie) => b.request(cookie)));

      for (const result of results) {
        expect(result.statusCode).toBe(401);
        expect(result.body).toContain('SESSION_NOT_OPEN');
      }
      expect(counts()).toEqual({ GenerateDataKey: 0, Decrypt: 0, GetItem: 1, PutItem: 0, DeleteItem: 0, UpdateItem: 0 });
    });

    it.each([
      ['throttled', Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException', $metadata: { httpStatusCode: 400 } })],
      ['5xx', Object.assign(new Error('internal error'), { name: 'KMSInternalException', $metadata: { httpStatusCode: 500 } })],
    ])('a failing Decrypt (KMS %s) in a burst: every request gets the same 503 KEYRING_UNAVAILABLE, nothing is kept, the next request tries again (one more Decrypt)', async (_what, error) => {
      const b = await burstSetup({ sessionCache: true });

      const burst = Array.from({ length: 8 }, () => b.request());
      await piledUp(b.kms, 1);
      b.kms.release(error);
      const results = await Promise.all(burst);

      for (const result of results) {
        expect(result.statusCode).toBe(503);
        expect(result.body).toContain('KEYRING_UNAVAILABLE');
        // The same answer for each (only the request's own correlation id differs).
        expect(withoutCorrelationId(result.body)).toBe(withoutCorrelationId(results[0]!.body));
      }
      expect(counts()).toEqual({ GenerateDataKey: 0, Decrypt: 1, GetItem: 1, PutItem: 0, DeleteItem: 0, UpdateItem: 0 });

      dynamoMock.resetHistory();
      kmsMock.resetHistory();
      expect((await b.request()).statusCode).toBe(200);
      expect(counts()).toEqual({ GenerateDataKey: 0, Decrypt: 1, GetItem: 1, PutItem: 0, DeleteItem: 0, UpdateItem: 0 });
    });
  });

  it('a refresh costs one read and two conditional writes (lease, result), and no KMS call in a warm container', async () => {
    const h = await harness();
    const warm = container(h);
    const { sessionId, cookies } = await signIn(h, warm.getDeps);
    h.deps.clock.advance(60_000);
    h.ehr.tokenAnswer = () =>
      json({ access_token: 'renewed-access', token_type: 'Bearer', expires_in: 3600, refresh_token: 'renewed-refresh', scope: 'launch openid fhirUser patient/*.rs offline_access' });
    dynamoMock.resetHistory();
    kmsMock.resetHistory();

    const result = await createSessionsHandler(warm.getDeps)(
      apiEvent({ resource: '/sessions/{id}/refresh', path: `/sessions/${sessionId}/refresh`, method: 'POST', pathParameters: { id: sessionId }, cookies }),
      lambdaContext,
    );

    expect(result.statusCode).toBe(200);
    expect(counts()).toEqual({ GenerateDataKey: 0, Decrypt: 0, GetItem: 1, PutItem: 0, DeleteItem: 0, UpdateItem: 2 });
    const [lease, complete] = dynamoMock.commandCalls(UpdateItemCommand).map((c) => c.args[0].input);
    expect(lease!.ConditionExpression).toContain('#revision = :revision');
    expect(complete!.ConditionExpression).toBe('#revision = :revision AND #leaseId = :leaseId');
  });
});
