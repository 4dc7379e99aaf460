import 'aws-sdk-client-mock-vitest/extend';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ConditionalCheckFailedException,
  DeleteItemCommand,
  DynamoDBClient,
  GetItemCommand,
  InternalServerError,
  ProvisionedThroughputExceededException,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startLocalDynamo, type LocalDynamo } from '../../local/dynamo-local.js';
import { DynamoSessionStore } from '../../shared/adapters/dynamo-session-store.js';
import { cryptoRandom } from '../../shared/adapters/system.js';
import type { SessionRecord } from '../../shared/core/records.js';
import { caught } from '../fakes/caught.js';

const TABLE_NAME = 'smart-launch-test';
/** Epoch seconds and milliseconds of "now" in these tests. */
const NOW = 1_800_000_000;
const NOW_MS = NOW * 1000;
const LEASE_MS = 15_000;

const ACQUIRE = {
  UpdateExpression: 'SET #leaseId = :leaseId, #leaseUntil = :until',
  ConditionExpression: 'attribute_exists(#pk) AND #revision = :revision AND (attribute_not_exists(#leaseUntil) OR #leaseUntil < :now)',
  ExpressionAttributeNames: { '#pk': 'pk', '#revision': 'revision', '#leaseId': 'leaseId', '#leaseUntil': 'leaseUntil' },
} as const;

const COMPLETE = {
  UpdateExpression: 'SET #sealed = :sealed, #ttl = :ttl, #revision = :next REMOVE #leaseId, #leaseUntil',
  ConditionExpression: '#revision = :revision AND #leaseId = :leaseId',
  ExpressionAttributeNames: { '#sealed': 'sealed', '#ttl': 'ttl', '#revision': 'revision', '#leaseId': 'leaseId', '#leaseUntil': 'leaseUntil' },
} as const;

const RELEASE = {
  UpdateExpression: 'REMOVE #leaseId, #leaseUntil',
  ConditionExpression: '#leaseId = :leaseId',
  ExpressionAttributeNames: { '#leaseId': 'leaseId', '#leaseUntil': 'leaseUntil' },
} as const;

function session(overrides: Partial<SessionRecord> = {}): SessionRecord {
  return {
    key: `ses#${randomUUID()}`,
    iss: 'https://ehr.example/fhir/r4',
    bindingHash: 'binding-hash-of-the-browser',
    endpoints: { authorizationEndpoint: 'https://ehr.example/auth/authorize', tokenEndpoint: 'https://ehr.example/auth/token' },
    wrappedKey: cryptoRandom.bytes(184),
    sealed: cryptoRandom.bytes(200),
    createdAt: NOW,
    expiresAt: NOW + 3600,
    revision: 1,
    ...overrides,
  };
}

const conditionalCheckFailed = () => new ConditionalCheckFailedException({ message: 'The conditional request failed', $metadata: {} });

describe('DynamoSessionStore refresh lease (SDK calls, mocked; AWS-04)', () => {
  const client = new DynamoDBClient({ region: 'us-east-1' });
  const ddb = mockClient(client);
  const store = new DynamoSessionStore({ client, tableName: TABLE_NAME });
  const key = 'ses#hash-of-the-session-id';

  beforeEach(() => {
    ddb.reset();
  });

  const operations = {
    acquireRefreshLease: () => store.acquireRefreshLease(key, { revision: 3, leaseId: 'lease-1', nowMs: NOW_MS, untilMs: NOW_MS + LEASE_MS }),
    completeRefresh: () => store.completeRefresh(key, { revision: 3, leaseId: 'lease-1', sealed: new Uint8Array([7, 7, 7]), expiresAt: NOW + 7200 }),
    releaseRefreshLease: () => store.releaseRefreshLease(key, 'lease-1'),
  };

  it('takes the lease with one conditional UpdateItem: only at the revision read and when no live lease is held', async () => {
    // Arrange
    ddb.on(UpdateItemCommand).resolves({});

    // Act
    const acquired = await operations.acquireRefreshLease();

    // Assert
    expect(acquired).toBe(true);
    expect(ddb).toHaveReceivedCommandTimes(UpdateItemCommand, 1);
    expect(ddb.calls()).toHaveLength(1);
    expect(ddb.commandCalls(UpdateItemCommand)[0]?.args[0].input).toStrictEqual({
      TableName: TABLE_NAME,
      Key: { pk: { S: key } },
      ...ACQUIRE,
      ExpressionAttributeValues: {
        ':leaseId': { S: 'lease-1' },
        ':until': { N: String(NOW_MS + LEASE_MS) },
        ':revision': { N: '3' },
        ':now': { N: String(NOW_MS) },
      },
    });
  });

  it('stores the refreshed tokens with one conditional UpdateItem that bumps the revision, sets the TTL and removes the lease, only for the holder at its revision', async () => {
    // Arrange
    ddb.on(UpdateItemCommand).resolves({});

    // Act
    const completed = await operations.completeRefresh();

    // Assert
    expect(completed).toBe(true);
    expect(ddb).toHaveReceivedCommandTimes(UpdateItemCommand, 1);
    expect(ddb.calls()).toHaveLength(1);
    expect(ddb.commandCalls(UpdateItemCommand)[0]?.args[0].input).toStrictEqual({
      TableName: TABLE_NAME,
      Key: { pk: { S: key } },
      ...COMPLETE,
      ExpressionAttributeValues: {
        ':sealed': { B: new Uint8Array([7, 7, 7]) },
        ':ttl': { N: String(NOW + 7200) },
        ':next': { N: '4' },
        ':revision': { N: '3' },
        ':leaseId': { S: 'lease-1' },
      },
    });
  });

  it('gives the lease back with one conditional UpdateItem that only the holder can apply', async () => {
    // Arrange
    ddb.on(UpdateItemCommand).resolves({});

    // Act
    const released = await operations.releaseRefreshLease();

    // Assert
    expect(released).toBeUndefined();
    expect(ddb).toHaveReceivedCommandTimes(UpdateItemCommand, 1);
    expect(ddb.calls()).toHaveLength(1);
    expect(ddb.commandCalls(UpdateItemCommand)[0]?.args[0].input).toStrictEqual({
      TableName: TABLE_NAME,
      Key: { pk: { S: key } },
      ...RELEASE,
      ExpressionAttributeValues: { ':leaseId': { S: 'lease-1' } },
    });
  });

  it('ends the session for the lease holder only, with one conditional DeleteItem', async () => {
    // Arrange
    ddb.on(DeleteItemCommand).resolvesOnce({}).rejectsOnce(conditionalCheckFailed()).rejectsOnce(new InternalServerError({ message: 'internal', $metadata: {} }));

    // Act
    const ended = await store.endSessionHoldingLease(key, 'lease-1');
    const lost = await store.endSessionHoldingLease(key, 'lease-1');
    const failure = await caught(store.endSessionHoldingLease(key, 'lease-1'));

    // Assert
    expect(ended).toBe(true);
    expect(lost).toBe(false);
    expect(failure).toMatchObject({ code: 'STORE_UNAVAILABLE', status: 503, details: { operation: 'DeleteItem', awsError: 'InternalServerError' } });
    expect(ddb.calls()).toHaveLength(3);
    expect(ddb.commandCalls(DeleteItemCommand)[0]?.args[0].input).toStrictEqual({
      TableName: TABLE_NAME,
      Key: { pk: { S: key } },
      ConditionExpression: '#leaseId = :leaseId',
      ExpressionAttributeNames: { '#leaseId': 'leaseId' },
      ExpressionAttributeValues: { ':leaseId': { S: 'lease-1' } },
    });
  });

  it.each([
    ['acquireRefreshLease', false],
    ['completeRefresh', false],
    ['releaseRefreshLease', undefined],
  ] as const)('answers %s with %s when the condition does not hold (ConditionalCheckFailedException)', async (operation, expected) => {
    // Arrange
    ddb.on(UpdateItemCommand).rejects(conditionalCheckFailed());

    // Act
    const result = await operations[operation]();

    // Assert
    expect(result).toBe(expected);
    expect(ddb).toHaveReceivedCommandTimes(UpdateItemCommand, 1);
  });

  it.each([
    ['acquireRefreshLease', 'ProvisionedThroughputExceededException', () => new ProvisionedThroughputExceededException({ message: 'slow down', $metadata: {} })],
    ['completeRefresh', 'InternalServerError', () => new InternalServerError({ message: 'internal', $metadata: {} })],
    ['releaseRefreshLease', 'TimeoutError', () => Object.assign(new Error('socket timed out'), { name: 'TimeoutError' })],
    ['acquireRefreshLease', 'TypeError', () => new TypeError('fetch failed')],
    ['completeRefresh', 'ProvisionedThroughputExceededException', () => new ProvisionedThroughputExceededException({ message: 'slow down', $metadata: {} })],
    ['releaseRefreshLease', 'InternalServerError', () => new InternalServerError({ message: 'internal', $metadata: {} })],
  ] as const)('reports a failure of %s (%s) as STORE_UNAVAILABLE', async (operation, awsError, error) => {
    // Arrange
    ddb.on(UpdateItemCommand).rejects(error());

    // Act
    const failure = await caught(operations[operation]());

    // Assert
    expect(failure).toMatchObject({ code: 'STORE_UNAVAILABLE', status: 503, details: { operation: 'UpdateItem', awsError } });
    expect(ddb).toHaveReceivedCommandTimes(UpdateItemCommand, 1);
  });

  it.each([
    ['a fractional untilMs', () => store.acquireRefreshLease(key, { revision: 3, leaseId: 'lease-1', nowMs: NOW_MS, untilMs: NOW_MS + 0.5 })],
    ['a NaN revision', () => store.acquireRefreshLease(key, { revision: Number.NaN, leaseId: 'lease-1', nowMs: NOW_MS, untilMs: NOW_MS + LEASE_MS })],
    ['a fractional expiresAt', () => store.completeRefresh(key, { revision: 3, leaseId: 'lease-1', sealed: new Uint8Array([1]), expiresAt: NOW + 0.5 })],
  ])('refuses %s as INTERNAL without calling DynamoDB', async (_what, call) => {
    // Act
    const error = await caught(call());

    // Assert
    expect(error).toMatchObject({ code: 'INTERNAL', status: 500 });
    expect(ddb.calls()).toHaveLength(0);
  });
});

describe('DynamoSessionStore refresh lease (against dynalite; invariant 8, AWS-04)', () => {
  let dataDir: string;
  let dynamo: LocalDynamo;
  let store: DynamoSessionStore;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'smart-launch-lease-'));
    dynamo = await startLocalDynamo({ dataDir });
    store = new DynamoSessionStore({ client: dynamo.client, tableName: dynamo.tableName });
  });

  afterAll(async () => {
    try {
      await dynamo?.close();
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  async function stored(record: SessionRecord) {
    return store.getSession(record.key, NOW);
  }

  async function rawItem(key: string) {
    const output = await dynamo.client.send(new GetItemCommand({ TableName: dynamo.tableName, Key: { pk: { S: key } }, ConsistentRead: true }));
    return output.Item;
  }

  const lease = (revision: number, leaseId: string, nowMs = NOW_MS) => ({ revision, leaseId, nowMs, untilMs: nowMs + LEASE_MS });

  it('grants the lease once at the revision read, and shows it on the record', async () => {
    // Arrange
    const record = session();
    await store.putSession(record);

    // Act
    const first = await store.acquireRefreshLease(record.key, lease(1, 'holder-1'));
    const second = await store.acquireRefreshLease(record.key, lease(1, 'holder-2', NOW_MS + 1000));

    // Assert
    expect(first).toBe(true);
    expect(second).toBe(false);
    const after = await stored(record);
    expect(after?.leaseUntil).toBe(NOW_MS + LEASE_MS);
    expect(after?.revision).toBe(1);
    expect(after?.sealed).toEqual(record.sealed);
    expect((await rawItem(record.key))?.leaseId).toStrictEqual({ S: 'holder-1' });
  });

  it('refuses the lease at a revision other than the stored one', async () => {
    // Arrange
    const record = session({ revision: 5 });
    await store.putSession(record);

    // Act
    const stale = await store.acquireRefreshLease(record.key, lease(4, 'holder-1'));
    const ahead = await store.acquireRefreshLease(record.key, lease(6, 'holder-1'));

    // Assert
    expect(stale).toBe(false);
    expect(ahead).toBe(false);
    expect((await stored(record))?.leaseUntil).toBeUndefined();
  });

  it('lets another holder take a lease once its untilMs has passed, not before', async () => {
    // Arrange
    const record = session();
    await store.putSession(record);
    await store.acquireRefreshLease(record.key, lease(1, 'crashed'));

    // Act
    const atExpiry = await store.acquireRefreshLease(record.key, lease(1, 'next', NOW_MS + LEASE_MS));
    const afterExpiry = await store.acquireRefreshLease(record.key, lease(1, 'next', NOW_MS + LEASE_MS + 1));

    // Assert
    expect(atExpiry).toBe(false);
    expect(afterExpiry).toBe(true);
    expect((await rawItem(record.key))?.leaseId).toStrictEqual({ S: 'next' });
    expect((await stored(record))?.leaseUntil).toBe(NOW_MS + 2 * LEASE_MS + 1);
    // The crashed holder, back from the dead, can no longer store anything.
    expect(await store.completeRefresh(record.key, { revision: 1, leaseId: 'crashed', sealed: new Uint8Array([1]), expiresAt: NOW + 1 })).toBe(false);
  });

  it('stores the holder’s refresh: bumps the revision, replaces the sealed bytes and TTL, clears the lease', async () => {
    // Arrange
    const record = session();
    await store.putSession(record);
    await store.acquireRefreshLease(record.key, lease(1, 'holder'));
    const sealed = cryptoRandom.bytes(220);

    // Act
    const completed = await store.completeRefresh(record.key, { revision: 1, leaseId: 'holder', sealed, expiresAt: NOW + 7200 });

    // Assert
    expect(completed).toBe(true);
    expect(await stored(record)).toStrictEqual({ ...record, sealed, expiresAt: NOW + 7200, revision: 2, leaseUntil: undefined });
    const item = await rawItem(record.key);
    expect(item).not.toHaveProperty('leaseId');
    expect(item).not.toHaveProperty('leaseUntil');
    // The next refresh starts from the new revision.
    expect(await store.acquireRefreshLease(record.key, lease(1, 'late'))).toBe(false);
    expect(await store.acquireRefreshLease(record.key, lease(2, 'next'))).toBe(true);
  });

  it.each([
    ['a request that does not hold the lease', { revision: 1, leaseId: 'intruder' }],
    ['the holder at a stale revision', { revision: 0, leaseId: 'holder' }],
    ['the holder at a future revision', { revision: 2, leaseId: 'holder' }],
  ])('refuses to store a refresh from %s and changes nothing', async (_what, claim) => {
    // Arrange
    const record = session();
    await store.putSession(record);
    await store.acquireRefreshLease(record.key, lease(1, 'holder'));
    const before = await rawItem(record.key);

    // Act
    const completed = await store.completeRefresh(record.key, { ...claim, sealed: cryptoRandom.bytes(220), expiresAt: NOW + 7200 });

    // Assert
    expect(completed).toBe(false);
    expect(await rawItem(record.key)).toEqual(before);
  });

  it('refuses to store a refresh after the lease was released, and changes nothing', async () => {
    // Arrange
    const record = session();
    await store.putSession(record);
    await store.acquireRefreshLease(record.key, lease(1, 'holder'));
    await store.releaseRefreshLease(record.key, 'holder');
    const before = await rawItem(record.key);

    // Act
    const completed = await store.completeRefresh(record.key, { revision: 1, leaseId: 'holder', sealed: cryptoRandom.bytes(220), expiresAt: NOW + 7200 });

    // Assert
    expect(completed).toBe(false);
    expect(await rawItem(record.key)).toEqual(before);
  });

  it('ends the session for its lease holder only: not for another request, not after the lease was released', async () => {
    // Arrange
    const record = session();
    await store.putSession(record);
    await store.acquireRefreshLease(record.key, lease(1, 'holder'));
    const before = await rawItem(record.key);

    // Act
    const byIntruder = await store.endSessionHoldingLease(record.key, 'intruder');
    const afterIntruder = await rawItem(record.key);
    const byHolder = await store.endSessionHoldingLease(record.key, 'holder');
    const again = await store.endSessionHoldingLease(record.key, 'holder');

    // Assert
    expect(byIntruder).toBe(false);
    expect(afterIntruder).toEqual(before);
    expect(byHolder).toBe(true);
    expect(await rawItem(record.key)).toBeUndefined();
    expect(again).toBe(false);
    const other = session();
    await store.putSession(other);
    expect(await store.endSessionHoldingLease(other.key, 'holder')).toBe(false);
    expect(await stored(other)).toStrictEqual({ ...other, leaseUntil: undefined });
  });

  it('releases the lease for its holder only, leaving tokens and revision as they were', async () => {
    // Arrange
    const record = session();
    await store.putSession(record);
    await store.acquireRefreshLease(record.key, lease(1, 'holder'));

    // Act
    await store.releaseRefreshLease(record.key, 'intruder');
    const afterIntruder = await stored(record);
    await store.releaseRefreshLease(record.key, 'holder');

    // Assert
    expect(afterIntruder?.leaseUntil).toBe(NOW_MS + LEASE_MS);
    expect(await stored(record)).toStrictEqual({ ...record, leaseUntil: undefined });
    expect(await store.acquireRefreshLease(record.key, lease(1, 'next'))).toBe(true);
  });

  it('never creates a record for a session that does not exist (deleted under a refresh)', async () => {
    // Arrange
    const key = `ses#${randomUUID()}`;

    // Act
    const acquired = await store.acquireRefreshLease(key, lease(1, 'holder'));
    const completed = await store.completeRefresh(key, { revision: 1, leaseId: 'holder', sealed: new Uint8Array([1]), expiresAt: NOW + 60 });
    await store.releaseRefreshLease(key, 'holder');

    // Assert
    expect(acquired).toBe(false);
    expect(completed).toBe(false);
    expect(await rawItem(key)).toBeUndefined();
  });

  it('refuses to store a refresh for a session deleted while the lease was held, without re-creating it', async () => {
    // Arrange
    const record = session();
    await store.putSession(record);
    await store.acquireRefreshLease(record.key, lease(1, 'holder'));
    await store.deleteSession(record.key);

    // Act
    const completed = await store.completeRefresh(record.key, { revision: 1, leaseId: 'holder', sealed: new Uint8Array([1]), expiresAt: NOW + 60 });

    // Assert
    expect(completed).toBe(false);
    expect(await rawItem(record.key)).toBeUndefined();
  });

  it('grants exactly one of 20 concurrent acquires at one revision', async () => {
    // Arrange
    const record = session();
    await store.putSession(record);

    // Act
    const results = await Promise.all(Array.from({ length: 20 }, (_unused, i) => store.acquireRefreshLease(record.key, lease(1, `holder-${i}`))));

    // Assert
    expect(results.filter(Boolean)).toHaveLength(1);
    const winner = results.indexOf(true);
    expect((await rawItem(record.key))?.leaseId).toStrictEqual({ S: `holder-${winner}` });
  });

  it('stores exactly one of 20 concurrent completes by the holder at one revision', async () => {
    // Arrange
    const record = session();
    await store.putSession(record);
    await store.acquireRefreshLease(record.key, lease(1, 'holder'));

    // Act
    const results = await Promise.all(
      Array.from({ length: 20 }, () => store.completeRefresh(record.key, { revision: 1, leaseId: 'holder', sealed: cryptoRandom.bytes(64), expiresAt: NOW + 7200 })),
    );

    // Assert
    expect(results.filter(Boolean)).toHaveLength(1);
    expect((await stored(record))?.revision).toBe(2);
  });
});
