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

function forwardDynamo(): void {
  for (const Command of [GetItemCommand, PutItemCommand, DeleteItemCommand, UpdateItemCommand] as const) {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    dynamoMock.on(Command as any).callsFake((input: any) => table().client.send(new (Command as any)(input)));
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
