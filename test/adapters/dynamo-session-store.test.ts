import 'aws-sdk-client-mock-vitest/extend';
import { randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ConditionalCheckFailedException,
  DeleteItemCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  ScanCommand,
  type AttributeValue,
} from '@aws-sdk/client-dynamodb';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { connectLocalDynamo, startLocalDynamo, type LocalDynamo } from '../../local/dynamo-local.js';
import { DynamoSessionStore } from '../../shared/adapters/dynamo-session-store.js';
import { LocalKeyRing } from '../../shared/adapters/local-key-ring.js';
import { cryptoRandom } from '../../shared/adapters/system.js';
import { seal } from '../../shared/core/crypto.js';
import type { TakeTransactionResult } from '../../shared/core/ports.js';
import type { SessionRecord, TransactionRecord } from '../../shared/core/records.js';
import { caught } from '../fakes/caught.js';

const TABLE_NAME = 'smart-launch-test';
const NOW = 1_800_000_000;

const ENDPOINTS = {
  authorizationEndpoint: 'https://ehr.example/auth/authorize',
  tokenEndpoint: 'https://ehr.example/auth/token',
  issuer: 'https://ehr.example/auth',
  issParameterSupported: true,
} as const;

/** The record a take handed out, or `undefined` when it handed out none. */
const recordOf = (result: TakeTransactionResult) => (result.outcome === 'taken' ? result.record : undefined);

function transaction(overrides: Partial<TransactionRecord> = {}): TransactionRecord {
  return {
    key: `txn#${randomUUID()}`,
    iss: 'https://ehr.example/fhir/r4',
    sessionKey: `ses#${randomUUID()}`,
    bindingHash: 'binding-hash-of-the-browser',
    endpoints: ENDPOINTS,
    wrappedKey: new Uint8Array([1, 2, 3, 4]),
    sealed: new Uint8Array([9, 8, 7, 6, 5]),
    createdAt: NOW,
    expiresAt: NOW + 600,
    ...overrides,
  };
}

function session(overrides: Partial<SessionRecord> = {}): SessionRecord {
  return {
    key: `ses#${randomUUID()}`,
    iss: 'https://ehr.example/fhir/r4',
    bindingHash: 'binding-hash-of-the-browser',
    endpoints: ENDPOINTS,
    wrappedKey: new Uint8Array([11, 12, 13]),
    sealed: new Uint8Array([21, 22, 23, 24]),
    createdAt: NOW,
    expiresAt: NOW + 3600,
    revision: 0,
    ...overrides,
  };
}

/** The item exactly as the store is expected to lay it out. */
function transactionItem(record: TransactionRecord): Record<string, AttributeValue> {
  return {
    pk: { S: record.key },
    kind: { S: 'txn' },
    formatVersion: { N: '1' },
    iss: { S: record.iss },
    bindingHash: { S: record.bindingHash },
    sessionKey: { S: record.sessionKey },
    endpoints: { S: JSON.stringify(record.endpoints) },
    wrappedKey: { B: record.wrappedKey },
    sealed: { B: record.sealed },
    createdAt: { N: String(record.createdAt) },
    ttl: { N: String(record.expiresAt) },
  };
}

function sessionItem(record: SessionRecord): Record<string, AttributeValue> {
  return {
    pk: { S: record.key },
    kind: { S: 'session' },
    formatVersion: { N: '1' },
    iss: { S: record.iss },
    bindingHash: { S: record.bindingHash },
    endpoints: { S: JSON.stringify(record.endpoints) },
    wrappedKey: { B: record.wrappedKey },
    sealed: { B: record.sealed },
    createdAt: { N: String(record.createdAt) },
    ttl: { N: String(record.expiresAt) },
    revision: { N: String(record.revision) },
  };
}

function conditionalCheckFailed(): ConditionalCheckFailedException {
  return new ConditionalCheckFailedException({ message: 'The conditional request failed', $metadata: {} });
}

describe('DynamoSessionStore (SDK calls, mocked)', () => {
  // Mock this one instance only: the dynalite suites below use real clients in the same file.
  const client = new DynamoDBClient({ region: 'us-east-1' });
  const ddb = mockClient(client);
  const store = new DynamoSessionStore({ client, tableName: TABLE_NAME });

  beforeEach(() => {
    ddb.reset();
  });

  describe('putTransaction', () => {
    it('writes one item with every attribute typed, only if the key is free', async () => {
      // Arrange
      ddb.on(PutItemCommand).resolves({});
      const record = transaction();

      // Act
      await store.putTransaction(record);

      // Assert
      expect(ddb).toHaveReceivedCommandTimes(PutItemCommand, 1);
      expect(ddb.calls()).toHaveLength(1);
      expect(ddb.commandCalls(PutItemCommand)[0]?.args[0].input).toStrictEqual({
        TableName: TABLE_NAME,
        Item: transactionItem(record),
        ConditionExpression: 'attribute_not_exists(#pk)',
        ExpressionAttributeNames: { '#pk': 'pk' },
      });
    });

    it('reports a key collision as INTERNAL instead of overwriting', async () => {
      // Arrange
      const cause = conditionalCheckFailed();
      ddb.on(PutItemCommand).rejects(cause);

      // Act
      const error = await caught(store.putTransaction(transaction()));

      // Assert
      expect(error.code).toBe('INTERNAL');
      expect(error.cause).toBe(cause);
      expect(ddb).toHaveReceivedCommandTimes(PutItemCommand, 1);
    });

    it('refuses a non-integer expiry before calling DynamoDB', async () => {
      // Act
      const error = await caught(store.putTransaction(transaction({ expiresAt: NOW + 0.5 })));

      // Assert
      expect(error.code).toBe('INTERNAL');
      expect(ddb.calls()).toHaveLength(0);
    });
  });

  describe('putSession', () => {
    it('writes one item with the revision and without a session key, only if the key is free', async () => {
      // Arrange
      ddb.on(PutItemCommand).resolves({});
      const record = session({ revision: 3 });

      // Act
      await store.putSession(record);

      // Assert
      expect(ddb).toHaveReceivedCommandTimes(PutItemCommand, 1);
      expect(ddb.calls()).toHaveLength(1);
      expect(ddb.commandCalls(PutItemCommand)[0]?.args[0].input).toStrictEqual({
        TableName: TABLE_NAME,
        Item: sessionItem(record),
        ConditionExpression: 'attribute_not_exists(#pk)',
        ExpressionAttributeNames: { '#pk': 'pk' },
      });
    });

    it('reports a key collision as INTERNAL instead of overwriting', async () => {
      // Arrange
      ddb.on(PutItemCommand).rejects(conditionalCheckFailed());

      // Act
      const error = await caught(store.putSession(session()));

      // Assert
      expect(error.code).toBe('INTERNAL');
    });
  });

  describe('takeTransaction', () => {
    it('consumes the record with one conditional delete that returns the old item', async () => {
      // Arrange
      const record = transaction();
      ddb.on(DeleteItemCommand).resolves({ Attributes: transactionItem(record) });

      // Act
      const taken = recordOf(await store.takeTransaction(record.key, NOW));

      // Assert
      expect(taken).toEqual(record);
      expect(taken?.wrappedKey).toBeInstanceOf(Uint8Array);
      expect(ddb).toHaveReceivedCommandTimes(DeleteItemCommand, 1);
      expect(ddb.calls()).toHaveLength(1);
      expect(ddb.commandCalls(DeleteItemCommand)[0]?.args[0].input).toStrictEqual({
        TableName: TABLE_NAME,
        Key: { pk: { S: record.key } },
        ConditionExpression: 'attribute_exists(#pk)',
        ExpressionAttributeNames: { '#pk': 'pk' },
        ReturnValues: 'ALL_OLD',
      });
    });

    it('answers absent when the record is absent or already taken, without reading it', async () => {
      // Arrange
      ddb.on(DeleteItemCommand).rejects(conditionalCheckFailed());

      // Act
      const taken = await store.takeTransaction('txn#gone', NOW);

      // Assert
      expect(taken).toEqual({ outcome: 'absent' });
      expect(ddb.calls()).toHaveLength(1);
    });

    it('answers absent for a record whose expiry has been reached', async () => {
      // Arrange
      const record = transaction({ expiresAt: NOW });
      ddb.on(DeleteItemCommand).resolves({ Attributes: transactionItem(record) });

      // Act
      const taken = await store.takeTransaction(record.key, NOW);

      // Assert
      expect(taken).toEqual({ outcome: 'absent' });
      expect(ddb).toHaveReceivedCommandTimes(DeleteItemCommand, 1);
    });

    it('with binding hashes, makes the same delete conditional on the binding too', async () => {
      // Arrange
      const record = transaction();
      ddb.on(DeleteItemCommand).resolves({ Attributes: transactionItem(record) });

      // Act
      const taken = await store.takeTransaction(record.key, NOW, [record.bindingHash, 'unbound']);

      // Assert
      expect(taken).toEqual({ outcome: 'taken', record });
      expect(ddb.calls()).toHaveLength(1);
      expect(ddb.commandCalls(DeleteItemCommand)[0]?.args[0].input).toStrictEqual({
        TableName: TABLE_NAME,
        Key: { pk: { S: record.key } },
        ConditionExpression: 'attribute_exists(#pk) AND #binding IN (:b0, :b1)',
        ExpressionAttributeNames: { '#pk': 'pk', '#binding': 'bindingHash' },
        ExpressionAttributeValues: { ':b0': { S: record.bindingHash }, ':b1': { S: 'unbound' } },
        ReturnValues: 'ALL_OLD',
      });
    });

    it('with binding hashes, reads a refused record once to tell another browser\'s launch from none', async () => {
      // Arrange
      const record = transaction();
      ddb.on(DeleteItemCommand).rejects(conditionalCheckFailed());
      ddb.on(GetItemCommand).resolves({ Item: transactionItem(record) });

      // Act
      const taken = await store.takeTransaction(record.key, NOW, ['b#another-browser']);

      // Assert
      expect(taken).toEqual({ outcome: 'not-bound', iss: record.iss });
      expect(ddb.commandCalls(GetItemCommand)[0]?.args[0].input).toStrictEqual({ TableName: TABLE_NAME, Key: { pk: { S: record.key } }, ConsistentRead: true });
      expect(ddb.calls()).toHaveLength(2);
    });

    it('refuses a session item stored under a transaction key as VAULT_INTEGRITY', async () => {
      // Arrange
      ddb.on(DeleteItemCommand).resolves({ Attributes: sessionItem(session()) });

      // Act
      const error = await caught(store.takeTransaction('txn#x', NOW));

      // Assert
      expect(error.code).toBe('VAULT_INTEGRITY');
    });
  });

  describe('getSession', () => {
    it('reads the record with one strongly consistent GetItem', async () => {
      // Arrange
      const record = session({ revision: 7 });
      ddb.on(GetItemCommand).resolves({ Item: sessionItem(record) });

      // Act
      const found = await store.getSession(record.key, NOW);

      // Assert
      expect(found).toEqual(record);
      expect(found?.sealed).toBeInstanceOf(Uint8Array);
      expect(ddb).toHaveReceivedCommandTimes(GetItemCommand, 1);
      expect(ddb.calls()).toHaveLength(1);
      expect(ddb.commandCalls(GetItemCommand)[0]?.args[0].input).toStrictEqual({
        TableName: TABLE_NAME,
        Key: { pk: { S: record.key } },
        ConsistentRead: true,
      });
    });

    it('returns undefined when there is no item', async () => {
      // Arrange
      ddb.on(GetItemCommand).resolves({});

      // Act
      const found = await store.getSession('ses#none', NOW);

      // Assert
      expect(found).toBeUndefined();
    });

    it('returns undefined for a session whose expiry has been reached, though TTL has not deleted it', async () => {
      // Arrange
      const record = session({ expiresAt: NOW });
      ddb.on(GetItemCommand).resolves({ Item: sessionItem(record) });

      // Act
      const found = await store.getSession(record.key, NOW);

      // Assert
      expect(found).toBeUndefined();
    });

    it('keeps optional endpoint fields that were stored', async () => {
      // Arrange
      const record = session({
        endpoints: {
          authorizationEndpoint: 'http://127.0.0.1:8080/authorize',
          tokenEndpoint: 'http://127.0.0.1:8080/token',
          jwksUri: 'http://127.0.0.1:8080/jwks',
          revocationEndpoint: 'http://127.0.0.1:8080/revoke',
        },
      });
      ddb.on(GetItemCommand).resolves({ Item: sessionItem(record) });

      // Act
      const found = await store.getSession(record.key, NOW);

      // Assert
      expect(found?.endpoints).toStrictEqual(record.endpoints);
    });
  });

  describe('deleteSession', () => {
    it('deletes the item by key with one unconditional DeleteItem', async () => {
      // Arrange
      ddb.on(DeleteItemCommand).resolves({});

      // Act
      await store.deleteSession('ses#abc');

      // Assert
      expect(ddb).toHaveReceivedCommandTimes(DeleteItemCommand, 1);
      expect(ddb.calls()).toHaveLength(1);
      expect(ddb.commandCalls(DeleteItemCommand)[0]?.args[0].input).toStrictEqual({
        TableName: TABLE_NAME,
        Key: { pk: { S: 'ses#abc' } },
      });
    });
  });

  describe('when DynamoDB fails', () => {
    const failures = [
      ['a throttled request', Object.assign(new Error('Rate of requests exceeds the allowed throughput'), { name: 'ProvisionedThroughputExceededException' })],
      ['a missing table', Object.assign(new Error('Requested resource not found'), { name: 'ResourceNotFoundException' })],
      ['a dropped connection', Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })],
    ] as const;

    const calls = [
      ['putTransaction', (s: DynamoSessionStore) => s.putTransaction(transaction())],
      ['takeTransaction', (s: DynamoSessionStore) => s.takeTransaction('txn#x', NOW)],
      ['putSession', (s: DynamoSessionStore) => s.putSession(session())],
      ['getSession', (s: DynamoSessionStore) => s.getSession('ses#x', NOW)],
      ['deleteSession', (s: DynamoSessionStore) => s.deleteSession('ses#x')],
    ] as const;

    for (const [what, cause] of failures) {
      it.each(calls)(`%s reports ${what} as STORE_UNAVAILABLE and keeps the SDK error as cause`, async (_name, call) => {
        // Arrange
        ddb.rejects(cause);

        // Act
        const error = await caught(call(store));

        // Assert
        expect(error.code).toBe('STORE_UNAVAILABLE');
        expect(error.status).toBe(503);
        expect(error.message).toBe('session storage did not answer');
        expect(error.cause).toBe(cause);
      });
    }
  });

  describe('when a stored item is malformed', () => {
    const base = transactionItem(transaction());
    const without = (name: string): Record<string, AttributeValue> =>
      Object.fromEntries(Object.entries(base).filter(([attribute]) => attribute !== name));

    const malformed: ReadonlyArray<readonly [string, Record<string, AttributeValue>]> = [
      ['the sealed data is missing', without('sealed')],
      ['the wrapped key is a string', { ...base, wrappedKey: { S: 'AQID' } }],
      ['the format version is unknown', { ...base, formatVersion: { N: '2' } }],
      ['the kind is not a transaction', { ...base, kind: { S: 'session' } }],
      ['the expiry is not a number', { ...base, ttl: { S: 'tomorrow' } }],
      ['the endpoints are not JSON', { ...base, endpoints: { S: '{not json' } }],
      ['an endpoint is not an http(s) URL', { ...base, endpoints: { S: JSON.stringify({ ...ENDPOINTS, tokenEndpoint: 'javascript:alert(1)' }) } }],
      ['the session key is missing', without('sessionKey')],
    ];

    it.each(malformed)('takeTransaction refuses it as VAULT_INTEGRITY when %s', async (_why, item) => {
      // Arrange
      ddb.on(DeleteItemCommand).resolves({ Attributes: item });

      // Act
      const error = await caught(store.takeTransaction('txn#x', NOW));

      // Assert
      expect(error.code).toBe('VAULT_INTEGRITY');
    });

    it('getSession refuses a transaction item as VAULT_INTEGRITY', async () => {
      // Arrange
      ddb.on(GetItemCommand).resolves({ Item: base });

      // Act
      const error = await caught(store.getSession('ses#x', NOW));

      // Assert
      expect(error.code).toBe('VAULT_INTEGRITY');
    });

    const good = sessionItem(session());
    const sessionWithout = (name: string): Record<string, AttributeValue> =>
      Object.fromEntries(Object.entries(good).filter(([attribute]) => attribute !== name));
    const malformedSessions: ReadonlyArray<readonly [string, Record<string, AttributeValue>, string]> = [
      ['the sealed data is missing', sessionWithout('sealed'), 'sealed'],
      ['the wrapped key is a string', { ...good, wrappedKey: { S: 'AQID' } }, 'wrappedKey'],
      ['the format version is unknown', { ...good, formatVersion: { N: '2' } }, 'formatVersion'],
      ['the revision is not an integer', { ...good, revision: { N: '1.5' } }, 'revision'],
      ['the lease holder is empty', { ...good, leaseId: { S: '' } }, 'leaseId'],
      ['the lease end is not a number', { ...good, leaseUntil: { S: 'soon' } }, 'leaseUntil'],
      ['the binding hash is empty', { ...good, bindingHash: { S: '' } }, 'bindingHash'],
      ['the endpoints are not JSON', { ...good, endpoints: { S: '{not json' } }, 'endpoints'],
      ['an endpoint is not an http(s) URL', { ...good, endpoints: { S: JSON.stringify({ ...ENDPOINTS, tokenEndpoint: 'javascript:alert(1)' }) } }, 'endpoints'],
    ];

    it.each(malformedSessions)('getSession refuses it as VAULT_INTEGRITY when %s, also right after reading the well-formed item', async (_why, item, field) => {
      // Arrange: the well-formed item is read first (its endpoints are then known to be valid).
      ddb.on(GetItemCommand).resolvesOnce({ Item: good }).resolvesOnce({ Item: item });
      expect((await store.getSession('ses#x', NOW))?.revision).toBe(session().revision);

      // Act
      const error = await caught(store.getSession('ses#x', NOW));

      // Assert
      expect(error.code).toBe('VAULT_INTEGRITY');
      expect(error.details).toEqual({ fields: field });
    });

    it('getSession refuses a session without a revision as VAULT_INTEGRITY, naming only the field', async () => {
      // Arrange
      const item = Object.fromEntries(Object.entries(sessionItem(session())).filter(([name]) => name !== 'revision'));
      ddb.on(GetItemCommand).resolves({ Item: item });

      // Act
      const error = await caught(store.getSession('ses#x', NOW));

      // Assert
      expect(error.code).toBe('VAULT_INTEGRITY');
      expect(error.details).toEqual({ fields: 'revision' });
      expect(error.message).not.toContain('binding-hash-of-the-browser');
    });
  });
});

describe('DynamoSessionStore (against dynalite)', () => {
  let dataDir: string;
  let dynamo: LocalDynamo;
  let store: DynamoSessionStore;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'smart-launch-store-'));
    dynamo = await startLocalDynamo({ dataDir });
    store = new DynamoSessionStore({ client: dynamo.client, tableName: dynamo.tableName });
  });

  afterAll(async () => {
    try {
      await dynamo.close();
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('returns the stored transaction, bytes included, when it is taken', async () => {
    // Arrange
    const record = transaction({ wrappedKey: cryptoRandom.bytes(184), sealed: cryptoRandom.bytes(300) });
    await store.putTransaction(record);

    // Act
    const taken = recordOf(await store.takeTransaction(record.key, NOW));

    // Assert
    expect(taken).toEqual(record);
    // dynalite answers B attributes as views into a pooled buffer; the store hands out plain copies.
    expect(taken?.sealed.constructor).toBe(Uint8Array);
    expect(taken?.sealed.byteLength).toBe(taken?.sealed.buffer.byteLength);
  });

  it('rememberOnce: true the first time, false while remembered, true again once its TTL has passed (back-channel logout jti)', async () => {
    const key = 'jti#remember-once-test';
    expect(await store.rememberOnce(key, NOW + 300, NOW)).toBe(true);
    expect(await store.rememberOnce(key, NOW + 300, NOW + 10)).toBe(false);
    // DynamoDB deletes expired items lazily: an expired one no longer counts as seen.
    expect(await store.rememberOnce(key, NOW + 900, NOW + 301)).toBe(true);
    expect(await store.rememberOnce(key, NOW + 900, NOW + 302)).toBe(false);
  });

  describe('takeTransaction with binding hashes', () => {
    it('takes a transaction without a wrapped key (a launch makes no KMS call) for its own browser, once', async () => {
      const record = transaction({ wrappedKey: new Uint8Array(0) });
      await store.putTransaction(record);

      const taken = await store.takeTransaction(record.key, NOW, [record.bindingHash, 'unbound']);
      const again = await store.takeTransaction(record.key, NOW, [record.bindingHash, 'unbound']);

      expect(taken).toEqual({ outcome: 'taken', record });
      expect(again).toEqual({ outcome: 'absent' });
    });

    it('leaves a transaction bound to another browser in place and says so', async () => {
      const record = transaction();
      await store.putTransaction(record);

      const foreign = await store.takeTransaction(record.key, NOW, ['b#another-browser', 'unbound']);
      const own = await store.takeTransaction(record.key, NOW, [record.bindingHash]);

      expect(foreign).toEqual({ outcome: 'not-bound', iss: record.iss });
      expect(own).toEqual({ outcome: 'taken', record });
    });

    it('answers absent for an unknown key and for an expired transaction', async () => {
      const expired = transaction({ expiresAt: NOW });
      await store.putTransaction(expired);

      expect(await store.takeTransaction('txn#never', NOW, ['unbound'])).toEqual({ outcome: 'absent' });
      expect(await store.takeTransaction(expired.key, NOW, ['b#another-browser'])).toEqual({ outcome: 'absent' });
      expect(await store.takeTransaction(expired.key, NOW, [expired.bindingHash])).toEqual({ outcome: 'absent' });
    });
  });

  it('returns undefined when a transaction is taken a second time', async () => {
    // Arrange
    const record = transaction();
    await store.putTransaction(record);
    recordOf(await store.takeTransaction(record.key, NOW));

    // Act
    const second = recordOf(await store.takeTransaction(record.key, NOW));

    // Assert
    expect(second).toBeUndefined();
  });

  it('reads an expired transaction as absent and consumes it anyway', async () => {
    // Arrange
    const record = transaction({ expiresAt: NOW + 60 });
    await store.putTransaction(record);

    // Act
    const taken = recordOf(await store.takeTransaction(record.key, NOW + 60));

    // Assert
    expect(taken).toBeUndefined();
    expect(await store.takeTransaction(record.key, NOW)).toEqual({ outcome: 'absent' });
  });

  it('reads an expired session as absent', async () => {
    // Arrange
    const record = session({ expiresAt: NOW + 60 });
    await store.putSession(record);

    // Act
    const beforeExpiry = await store.getSession(record.key, NOW + 59);
    const atExpiry = await store.getSession(record.key, NOW + 60);

    // Assert
    expect(beforeExpiry).toEqual(record);
    expect(atExpiry).toBeUndefined();
  });

  it('never overwrites an existing transaction', async () => {
    // Arrange
    const original = transaction();
    await store.putTransaction(original);

    // Act
    const error = await caught(store.putTransaction({ ...original, bindingHash: 'another-browser' }));

    // Assert
    expect(error.code).toBe('INTERNAL');
    expect(await store.takeTransaction(original.key, NOW)).toEqual({ outcome: 'taken', record: original });
  });

  it('never overwrites an existing session', async () => {
    // Arrange
    const original = session();
    await store.putSession(original);

    // Act
    const error = await caught(store.putSession({ ...original, revision: 1, bindingHash: 'another-browser' }));

    // Assert
    expect(error.code).toBe('INTERNAL');
    expect(await store.getSession(original.key, NOW)).toEqual(original);
  });

  it('forgets a deleted session', async () => {
    // Arrange
    const record = session();
    await store.putSession(record);

    // Act
    await store.deleteSession(record.key);

    // Assert
    expect(await store.getSession(record.key, NOW)).toBeUndefined();
    await expect(store.deleteSession(record.key)).resolves.toBeUndefined();
  });

  it('hands a transaction to exactly one of 20 concurrent takers', async () => {
    // Arrange
    const record = transaction();
    await store.putTransaction(record);

    // Act
    const results = await Promise.all(Array.from({ length: 20 }, async () => recordOf(await store.takeTransaction(record.key, NOW))));

    // Assert
    const winners = results.filter((result) => result !== undefined);
    expect(winners).toHaveLength(1);
    expect(winners[0]).toEqual(record);
  });

  it('stores no secret in clear in any attribute', async () => {
    // Arrange: a session sealed the way the core seals one, holding a recognisable secret.
    const secret = `access-token-${randomUUID()}`;
    const keyRing = await LocalKeyRing.open(join(dataDir, 'keys'), cryptoRandom);
    const record = session();
    const dataKey = await keyRing.generateDataKey({ record: record.key });
    const sealed = seal(dataKey.plaintext, new TextEncoder().encode(JSON.stringify({ accessToken: secret })), record.key, cryptoRandom);
    await store.putSession({ ...record, wrappedKey: dataKey.wrapped, sealed });

    // Act
    const scan = await dynamo.client.send(new ScanCommand({ TableName: dynamo.tableName }));

    // Assert
    const item = scan.Items?.find((candidate) => candidate['pk']?.S === record.key);
    expect(item).toBeDefined();
    const secretBytes = Buffer.from(secret, 'utf8');
    for (const value of Object.values(item ?? {})) {
      const bytes = value.B === undefined ? Buffer.from(JSON.stringify(value), 'utf8') : Buffer.from(value.B);
      expect(bytes.includes(secretBytes)).toBe(false);
      expect(bytes.includes(Buffer.from(dataKey.plaintext))).toBe(false);
    }
    expect(JSON.stringify(scan)).not.toContain(secret);
  });

  it('refuses to open a data folder whose store is already open', async () => {
    // Act
    const second = startLocalDynamo({ dataDir });

    // Assert
    await expect(second).rejects.toThrow(/already open in this process/);
  });
});

describe('startLocalDynamo', () => {
  it('keeps records across close and a new start on the same data folder', async () => {
    // Arrange
    const dataDir = await mkdtemp(join(tmpdir(), 'smart-launch-reopen-'));
    try {
      const record = session();
      const first = await startLocalDynamo({ dataDir });
      await new DynamoSessionStore({ client: first.client, tableName: first.tableName }).putSession(record);
      await first.close();

      // Act
      const second = await startLocalDynamo({ dataDir });
      let found: SessionRecord | undefined;
      try {
        found = await new DynamoSessionStore({ client: second.client, tableName: second.tableName }).getSession(record.key, NOW);
      } finally {
        await second.close();
      }

      // Assert
      expect(second.tableName).toBe('smart-launch-local');
      expect(second.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(found).toEqual(record);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('serves one store to its in-process client and to clients of its HTTP endpoint', async () => {
    // Arrange: the in-process client skips the loopback hop; an operator command next to the
    // running server (connectLocalDynamo) comes in over HTTP.
    const dataDir = await mkdtemp(join(tmpdir(), 'smart-launch-transports-'));
    try {
      const dynamo = await startLocalDynamo({ dataDir });
      const remote = await connectLocalDynamo(dataDir);
      try {
        const local = new DynamoSessionStore({ client: dynamo.client, tableName: dynamo.tableName });
        const overHttp = new DynamoSessionStore({ client: remote.client, tableName: remote.tableName });
        const written = session({ key: `ses#${'a'.repeat(43)}` });
        const writtenOverHttp = session({ key: `ses#${'b'.repeat(43)}` });

        // Act
        await local.putSession(written);
        await overHttp.putSession(writtenOverHttp);

        // Assert: each sees the other's write, and a refused condition is the SDK's typed error both ways.
        expect(remote.endpoint).toBe(dynamo.endpoint);
        expect(await overHttp.getSession(written.key, NOW)).toEqual(written);
        expect(await local.getSession(writtenOverHttp.key, NOW)).toEqual(writtenOverHttp);
        for (const client of [dynamo.client, remote.client]) {
          const refused = client.send(new PutItemCommand({ TableName: dynamo.tableName, Item: { pk: { S: written.key } }, ConditionExpression: 'attribute_not_exists(pk)' }));
          await expect(refused).rejects.toBeInstanceOf(ConditionalCheckFailedException);
        }
      } finally {
        await remote.close();
        await dynamo.close();
      }

      // Assert: a closed store refuses its in-process client, as its closed port would.
      await expect(dynamo.client.send(new GetItemCommand({ TableName: dynamo.tableName, Key: { pk: { S: 'ses#x' } } }))).rejects.toThrow(/closed|destroyed/);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('keeps an in-memory store out of the data folder, yet locks the folder and serves it to operator commands', async () => {
    // Arrange
    const dataDir = await mkdtemp(join(tmpdir(), 'smart-launch-memory-'));
    try {
      const record = session();
      const dynamo = await startLocalDynamo({ dataDir, inMemory: true });
      try {
        await new DynamoSessionStore({ client: dynamo.client, tableName: dynamo.tableName }).putSession(record);

        // Act
        const remote = await connectLocalDynamo(dataDir);
        const found = await new DynamoSessionStore({ client: remote.client, tableName: remote.tableName }).getSession(record.key, NOW);
        await remote.close();

        // Assert
        expect(found).toEqual(record);
        await expect(access(join(dataDir, 'dynamo'))).rejects.toThrow(/ENOENT/);
        await expect(startLocalDynamo({ dataDir })).rejects.toThrow(/already open in this process/);
      } finally {
        await dynamo.close();
      }
      await expect(access(join(dataDir, 'dynamo.lock'))).rejects.toThrow(/ENOENT/);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('takes over a lock left behind by a process that has exited', async () => {
    // Arrange
    const dataDir = await mkdtemp(join(tmpdir(), 'smart-launch-stale-'));
    try {
      const exited = spawnSync(process.execPath, ['-e', '']).pid;
      await writeFile(join(dataDir, 'dynamo.lock'), String(exited));

      // Act
      const dynamo = await startLocalDynamo({ dataDir });
      await dynamo.close();

      // Assert
      await expect(access(join(dataDir, 'dynamo.lock'))).rejects.toThrow(/ENOENT/);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('refuses a lock file it cannot read a process id from', async () => {
    // Arrange
    const dataDir = await mkdtemp(join(tmpdir(), 'smart-launch-garbled-'));
    try {
      await writeFile(join(dataDir, 'dynamo.lock'), 'not a pid');

      // Act
      const started = startLocalDynamo({ dataDir });

      // Assert
      await expect(started).rejects.toThrow(/already open in process \(unknown\)/);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
