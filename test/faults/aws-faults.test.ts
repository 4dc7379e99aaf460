import { randomBytes } from 'node:crypto';
import { DeleteItemCommand, DynamoDBClient, GetItemCommand, PutItemCommand, ScanCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { DecryptCommand, GenerateDataKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { createLaunchHandler } from '../../functions/launch/handler.js';
import { createSessionsHandler } from '../../functions/sessions/handler.js';
import { createFhirProxyHandler } from '../../functions/fhir-proxy/handler.js';
import { CachingKeyRing } from '../../shared/adapters/caching-key-ring.js';
import { DynamoSessionStore } from '../../shared/adapters/dynamo-session-store.js';
import { KmsKeyRing } from '../../shared/adapters/kms-key-ring.js';
import type { CoreDeps } from '../../shared/core/deps.js';
import { SecretsManagerClientSecrets } from '../../shared/adapters/secrets-manager-client-secrets.js';
import { BINDING_COOKIE } from '../../shared/http/cookies.js';
import { deps as testDeps } from '../fakes/deps.js';
import { EHR_CLIENT_SECRET, json } from '../fakes/fake-ehr.js';
import { ehrLaunchQuery, harness, type Harness } from '../fakes/launch-flow.js';
import { apiEvent, lambdaContext, setCookieValue } from '../fixtures/api-event.js';
import { localTablePerFile } from '../fixtures/local-table.js';

/*
 * AWS dependency faults (invariant 9): DynamoDB throttled or unreachable, KMS throttled or
 * unreachable, Secrets Manager down, and a Lambda that dies between the EHR's token answer and the
 * write. The SDK clients are stubbed with aws-sdk-client-mock: DynamoDB commands go to a real
 * (dynalite) table, KMS behaves like KMS, and a fault replaces the next call(s) of one command.
 * Each fault gets its documented 503 with a code, and every stored session stays as it was.
 */

const localTable = localTablePerFile('faults');
const dynamoClient = new DynamoDBClient({ region: 'us-east-1' });
const dynamoMock = mockClient(dynamoClient);
const kms = new KMSClient({ region: 'us-east-1' });
const kmsMock = mockClient(kms);
const secretsClient = new SecretsManagerClient({ region: 'us-east-1' });
const secretsMock = mockClient(secretsClient);

const awsError = (name: string, message = name) => Object.assign(new Error(message), { name, $metadata: { httpStatusCode: name.includes('Throttl') || name.includes('Exceeded') ? 400 : 503 } });

/** Faults by command name: the next `times` calls throw `error`. */
const faults = new Map<string, { error: Error; times: number; when?: (input: Record<string, unknown>) => boolean }>();
function inject(command: string, error: Error, times = Number.POSITIVE_INFINITY, when?: (input: Record<string, unknown>) => boolean): void {
  faults.set(command, { error, times, ...(when ? { when } : {}) });
}
function maybeFail(command: string, input: Record<string, unknown>): void {
  const fault = faults.get(command);
  if (!fault || (fault.when && !fault.when(input))) return;
  fault.times--;
  if (fault.times <= 0) faults.delete(command);
  throw fault.error;
}

beforeEach(() => {
  faults.clear();
  dynamoMock.reset();
  kmsMock.reset();
  secretsMock.reset();
  for (const [name, Command] of [['GetItem', GetItemCommand], ['PutItem', PutItemCommand], ['DeleteItem', DeleteItemCommand], ['UpdateItem', UpdateItemCommand]] as const) {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    dynamoMock.on(Command as any).callsFake((input: any) => {
      maybeFail(name, input);
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      return localTable().client.send(new (Command as any)(input));
    });
  }
  const issued = new Map<string, { plaintext: Uint8Array; context: string }>();
  kmsMock.on(GenerateDataKeyCommand).callsFake((input: { EncryptionContext?: Record<string, string> }) => {
    maybeFail('GenerateDataKey', input);
    const plaintext = new Uint8Array(randomBytes(32));
    const blob = new Uint8Array(randomBytes(64));
    issued.set(Buffer.from(blob).toString('base64'), { plaintext, context: JSON.stringify(input.EncryptionContext) });
    return { KeyId: 'key', Plaintext: plaintext, CiphertextBlob: blob };
  });
  kmsMock.on(DecryptCommand).callsFake((input: { CiphertextBlob: Uint8Array; EncryptionContext?: Record<string, string> }) => {
    maybeFail('Decrypt', input);
    const entry = issued.get(Buffer.from(input.CiphertextBlob).toString('base64'));
    if (!entry || entry.context !== JSON.stringify(input.EncryptionContext)) throw awsError('InvalidCiphertextException');
    return { KeyId: 'key', Plaintext: entry.plaintext };
  });
  secretsMock.on(GetSecretValueCommand).callsFake(async (input: Record<string, unknown>) => {
    maybeFail('GetSecretValue', input);
    return { SecretString: EHR_CLIENT_SECRET };
  });
});

/** A Lambda container: its own store client and (caching) key ring, secrets from Secrets Manager. */
function container(h: Harness): () => Promise<CoreDeps> {
  const base = testDeps({ http: h.ehr.http, clock: h.deps.clock });
  const deps: CoreDeps = {
    ...base,
    store: new DynamoSessionStore({ client: dynamoClient, tableName: localTable().tableName }),
    keyRing: new CachingKeyRing(new KmsKeyRing({ client: kms, keyId: 'key' }), h.deps.clock),
    clientSecrets: new SecretsManagerClientSecrets(secretsClient),
  };
  return () => Promise.resolve(deps);
}

async function table(): Promise<string> {
  const out = await localTable().client.send(new ScanCommand({ TableName: localTable().tableName }));
  return JSON.stringify((out.Items ?? []).sort((a, b) => String(a.pk?.S).localeCompare(String(b.pk?.S))));
}

/** `GET /launch` of an EHR launch from the fake EHR, in the given container. */
const launch = (h: Harness, getDeps: () => Promise<CoreDeps>) =>
  createLaunchHandler(getDeps)(apiEvent({ resource: '/launch', path: '/launch', query: ehrLaunchQuery(h.ehr) as Record<string, string[]> }), lambdaContext);

async function signIn(h: Harness, getDeps: () => Promise<CoreDeps>) {
  const launched = await launch(h, getDeps);
  const binding = setCookieValue(launched.multiValueHeaders?.['set-cookie'], BINDING_COOKIE)!;
  const authorization = h.ehr.authorize(String(launched.headers!.location));
  const callback = await createLaunchHandler(getDeps)(
    apiEvent({ resource: '/callback', path: '/callback', query: authorization.callbackQuery as Record<string, string[]>, cookies: { [BINDING_COOKIE]: binding } }),
    lambdaContext,
  );
  return { launched, callback, binding, sessionId: String(callback.headers?.location ?? '').split('#session=')[1] ?? '' };
}

/** A fake EHR, one warm container, and a session signed in through it. */
async function signedInContainer() {
  const h = await harness();
  const getDeps = container(h);
  return { h, getDeps, s: await signIn(h, getDeps) };
}

const view = (getDeps: () => Promise<CoreDeps>, sessionId: string, binding: string) =>
  createSessionsHandler(getDeps)(apiEvent({ resource: '/sessions/{id}', path: `/sessions/${sessionId}`, pathParameters: { id: sessionId }, cookies: { [BINDING_COOKIE]: binding } }), lambdaContext);
/** `POST /refresh` a second after whatever happened before (a forced refresh skips tokens obtained after it began). */
const refresh = (getDeps: () => Promise<CoreDeps>, sessionId: string, binding: string) =>
  advance(getDeps, 1000).then(() => createSessionsHandler(getDeps)(
    apiEvent({ resource: '/sessions/{id}/refresh', path: `/sessions/${sessionId}/refresh`, method: 'POST', pathParameters: { id: sessionId }, cookies: { [BINDING_COOKIE]: binding } }),
    lambdaContext,
  ));
async function advance(getDeps: () => Promise<CoreDeps>, ms: number): Promise<void> {
  ((await getDeps()).clock as unknown as { advance(ms: number): void }).advance(ms);
}
const code = (result: { body?: string }) => (JSON.parse(result.body ?? '{}') as { error?: { code?: string } }).error?.code;

describe('DynamoDB faults (invariant 9)', () => {
  it.each([
    ['throttled (ProvisionedThroughputExceededException)', awsError('ProvisionedThroughputExceededException')],
    ['throttled (ThrottlingException)', awsError('ThrottlingException')],
    ['unavailable (InternalServerError)', awsError('InternalServerError')],
    ['unreachable (a network error)', awsError('TimeoutError', 'socket hang up')],
  ])('a session read %s answers 503 STORE_UNAVAILABLE, and the session opens again once it clears', async (_what, error) => {
    const { getDeps, s } = await signedInContainer();
    const before = await table();

    inject('GetItem', error, 1);
    const failed = await view(getDeps, s.sessionId, s.binding);
    const after = await view(getDeps, s.sessionId, s.binding);

    expect([failed.statusCode, code(failed)]).toEqual([503, 'STORE_UNAVAILABLE']);
    expect(after.statusCode).toBe(200);
    expect(await table()).toBe(before);
  });

  it('a launch whose write fails answers a 503 page and stores nothing', async () => {
    const h = await harness();
    const getDeps = container(h);
    const before = await table();
    inject('PutItem', awsError('ThrottlingException'), 1);

    const launched = await launch(h, getDeps);

    expect(launched.statusCode).toBe(503);
    expect(launched.body).toContain('STORE_UNAVAILABLE');
    expect(await table()).toBe(before);
  });

  it('a refresh whose lease write is throttled answers 503 and leaves the session as it was; the next refresh succeeds', async () => {
    const { h, getDeps, s } = await signedInContainer();
    let grants = 0;
    h.ehr.tokenAnswer = () => json({ access_token: `at-${++grants}`, token_type: 'Bearer', expires_in: 3600, refresh_token: `rt-${grants}` });
    const before = await table();

    inject('UpdateItem', awsError('ProvisionedThroughputExceededException'), 1);
    const failed = await refresh(getDeps, s.sessionId, s.binding);

    expect([failed.statusCode, code(failed)]).toEqual([503, 'STORE_UNAVAILABLE']);
    expect(grants).toBe(0);
    expect(await table()).toBe(before);
    expect((await refresh(getDeps, s.sessionId, s.binding)).statusCode).toBe(200);
    expect(grants).toBe(1);
  });

  it('a Lambda that dies between the token answer and the write leaves the session intact: after the lease lapses the next request refreshes once more and works', async () => {
    const { h, getDeps, s } = await signedInContainer();
    let grants = 0;
    const presented: string[] = [];
    h.ehr.tokenAnswer = (call) => {
      presented.push(String(call.form.get('refresh_token')));
      return json({ access_token: `at-${++grants}`, token_type: 'Bearer', expires_in: 3600, refresh_token: `rt-${grants}` });
    };
    const stored = await table();

    // The write that would store the new tokens never happens (the invocation is gone).
    const crash = Object.assign(new Error('Runtime exited'), { name: 'Runtime.ExitError' });
    inject('UpdateItem', crash, 1, (input) => String(input.UpdateExpression ?? '').includes('sealed'));
    const crashed = await refresh(getDeps, s.sessionId, s.binding);
    expect(crashed.statusCode).toBe(503);
    expect(grants).toBe(1);
    // The stored tokens are the ones from before (only the lease marks the record), never half-written.
    const leased = await table();
    expect(JSON.parse(leased)[0].sealed).toEqual(JSON.parse(stored)[0].sealed);

    // Within the lease, another request waits and then reports the renewal as unavailable: no second grant.
    h.deps.clock.advance(16_000);
    const next = await refresh(getDeps, s.sessionId, s.binding);

    expect(next.statusCode).toBe(200);
    expect(grants).toBe(2);
    // The take-over presented the refresh token still stored: the one from sign-in.
    expect(presented[1]).toBe(presented[0]);
    expect((await view(getDeps, s.sessionId, s.binding)).statusCode).toBe(200);
  });
});

describe('KMS faults (invariant 9)', () => {
  it.each([
    ['throttled', awsError('ThrottlingException')],
    ['unavailable', awsError('KMSInternalException')],
    ['unreachable', awsError('TimeoutError')],
  ])('a Decrypt %s in a cold container answers 503 KEYRING_UNAVAILABLE, and the session opens once it clears', async (_what, error) => {
    const h = await harness();
    const s = await signIn(h, container(h));
    const cold = container(h);
    const before = await table();

    inject('Decrypt', error, 1);
    const failed = await view(cold, s.sessionId, s.binding);
    const after = await view(cold, s.sessionId, s.binding);

    expect([failed.statusCode, code(failed)]).toEqual([503, 'KEYRING_UNAVAILABLE']);
    expect(after.statusCode).toBe(200);
    expect(await table()).toBe(before);
  });

  it('an anonymous launch needs no KMS at all: it works while KMS is down', async () => {
    const h = await harness();
    inject('GenerateDataKey', awsError('KMSInternalException'));
    inject('Decrypt', awsError('KMSInternalException'));
    const launched = await launch(h, container(h));
    expect(launched.statusCode).toBe(302);
  });

  it('a GenerateDataKey that fails at the callback answers a 503 page, stores no session and leaves other sessions intact', async () => {
    const { h, getDeps, s: other } = await signedInContainer();
    const before = await table();

    inject('GenerateDataKey', awsError('ThrottlingException'), 1);
    const failed = await signIn(h, getDeps);

    expect(failed.launched.statusCode).toBe(302);
    expect(failed.callback.statusCode).toBe(503);
    expect(failed.callback.body).toContain('KEYRING_UNAVAILABLE');
    expect(await table()).toBe(before);
    expect((await view(getDeps, other.sessionId, other.binding)).statusCode).toBe(200);
  });
});

describe('Secrets Manager faults (invariant 9)', () => {
  it('a callback while the client secret cannot be read answers a 503 page; nothing stored; a retry of the launch works', async () => {
    const h = await harness();
    const getDeps = container(h);
    const before = await table();

    inject('GetSecretValue', awsError('InternalServiceError'), 1);
    const failed = await signIn(h, getDeps);
    expect(failed.callback.statusCode).toBe(503);
    expect(failed.callback.body).toContain('SECRETS_UNAVAILABLE');
    expect(await table()).toBe(before);

    const retried = await signIn(h, getDeps);
    expect(retried.callback.statusCode).toBe(302);
  });

  it('a refresh while Secrets Manager is down answers 503 SECRETS_UNAVAILABLE and leaves the session as it was', async () => {
    const h = await harness();
    const s = await signIn(h, container(h));
    const cold = container(h); // no secret cached yet
    let grants = 0;
    h.ehr.tokenAnswer = () => json({ access_token: `at-${++grants}`, token_type: 'Bearer', expires_in: 3600 });
    const before = await table();

    inject('GetSecretValue', awsError('InternalServiceError'));
    const failed = await refresh(cold, s.sessionId, s.binding);

    expect([failed.statusCode, code(failed)]).toEqual([503, 'SECRETS_UNAVAILABLE']);
    expect(grants).toBe(0);
    expect(await table()).toBe(before);
  });
});

describe('the proxy under store faults', () => {
  it('a proxied request whose session read is throttled answers a 503 OperationOutcome and the EHR is not contacted', async () => {
    const { h, getDeps, s } = await signedInContainer();
    const requests = h.ehr.requests.length;
    inject('GetItem', awsError('ThrottlingException'), 1);

    const result = await createFhirProxyHandler(getDeps)(
      apiEvent({ resource: '/sessions/{id}/fhir/{proxy+}', path: `/sessions/${s.sessionId}/fhir/Patient/123`, pathParameters: { id: s.sessionId, proxy: 'Patient/123' }, cookies: { [BINDING_COOKIE]: s.binding } }),
      lambdaContext,
    );

    expect(result.statusCode).toBe(503);
    expect(JSON.parse(result.body ?? '{}')).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ details: { coding: [{ code: 'STORE_UNAVAILABLE' }] } }] });
    expect(h.ehr.requests.length).toBe(requests);
  });
});
