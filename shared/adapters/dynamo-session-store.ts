import {
  DeleteItemCommand,
  GetItemCommand,
  PutItemCommand,
  ScanCommand,
  UpdateItemCommand,
  type AttributeValue,
  type DynamoDBClient,
} from '@aws-sdk/client-dynamodb';
import * as z from '../config/zod.js';
import { SmartError } from '../core/errors.js';
import type { RefreshLease, RefreshResult, SessionStore, TakeTransactionResult } from '../core/ports.js';
import type { SessionRecord, StoredRecord, TransactionRecord } from '../core/records.js';
import { TABLE } from './table.js';
import { builtOnFirstUse } from '../core/lazy.js';
import { boundedMemo } from '../core/memo.js';

/**
 * Bumped when the item layout changes. Readers refuse other versions instead of guessing, so an old
 * Lambda never misreads a record written by a newer one.
 */
const FORMAT_VERSION = 1;

const PK = TABLE.partitionKey;
const TTL = TABLE.ttlAttribute;

// Expression names, not the bare attribute names: `ttl` and friends are easy to collide with
// DynamoDB's reserved words, and one place builds every condition.
const PK_NAME = { '#pk': PK } as const;
const KEY_IS_FREE = 'attribute_not_exists(#pk)';
const KEY_IS_TAKEN = 'attribute_exists(#pk)';

type Item = Record<string, AttributeValue>;

export interface DynamoSessionStoreOptions {
  readonly client: DynamoDBClient;
  readonly tableName: string;
}

/**
 * `SessionStore` on one DynamoDB table (low-level client, so the item layout is explicit).
 * Secrets never reach an attribute in clear: they live in `sealed`, under `wrappedKey`.
 */
export class DynamoSessionStore implements SessionStore {
  readonly #client: DynamoDBClient;
  readonly #tableName: string;

  constructor(options: DynamoSessionStoreOptions) {
    this.#client = options.client;
    this.#tableName = options.tableName;
  }

  async putTransaction(record: TransactionRecord): Promise<void> {
    await this.#putNew({
      ...commonAttributes(record, 'txn'),
      sessionKey: { S: record.sessionKey },
    });
  }

  async takeTransaction(key: string, nowSeconds: number, bindingHashes?: readonly string[]): Promise<TakeTransactionResult> {
    const values = bindingHashes === undefined ? undefined : Object.fromEntries(bindingHashes.map((hash, i) => [`:b${i}`, { S: hash }]));
    let attributes: Item | undefined;
    try {
      // One conditional delete is the whole consumption: of any number of concurrent callbacks
      // presenting the same `state`, exactly one gets the old item back. The condition turns
      // "nothing to delete" into an error instead of a silent success with no attributes; with
      // binding hashes it also requires this browser's binding, so a callback from another browser
      // consumes nothing.
      const output = await this.#client.send(
        new DeleteItemCommand({
          TableName: this.#tableName,
          Key: { [PK]: { S: key } },
          ...(values === undefined
            ? { ConditionExpression: KEY_IS_TAKEN, ExpressionAttributeNames: PK_NAME }
            : {
                ConditionExpression: `${KEY_IS_TAKEN} AND #binding IN (${Object.keys(values).join(', ')})`,
                ExpressionAttributeNames: { ...PK_NAME, '#binding': 'bindingHash' },
                ExpressionAttributeValues: values,
              }),
          ReturnValues: 'ALL_OLD',
        }),
      );
      attributes = output.Attributes;
    } catch (error) {
      if (!isConditionalCheckFailure(error)) throw storeUnavailable('DeleteItem', error);
      if (values === undefined) return { outcome: 'absent' };
      // Absent, or bound to another browser: only this (rare) refusal costs a second read.
      const held = await this.#readItem(key);
      if (held === undefined) return { outcome: 'absent' };
      const record = parseTransaction(held);
      return record.expiresAt > nowSeconds ? { outcome: 'not-bound', iss: record.iss } : { outcome: 'absent' };
    }
    if (attributes === undefined) return { outcome: 'absent' };
    const record = parseTransaction(attributes);
    // TTL deletion is lazy (and absent locally): an expired transaction is gone for good here,
    // since the delete above already consumed it.
    return record.expiresAt > nowSeconds ? { outcome: 'taken', record } : { outcome: 'absent' };
  }

  async #readItem(key: string): Promise<Item | undefined> {
    try {
      const output = await this.#client.send(new GetItemCommand({ TableName: this.#tableName, Key: { [PK]: { S: key } }, ConsistentRead: true }));
      return output.Item;
    } catch (error) {
      throw storeUnavailable('GetItem', error);
    }
  }

  async putSession(record: SessionRecord): Promise<void> {
    await this.#putNew({
      ...commonAttributes(record, 'session'),
      revision: { N: integerString(record.revision, 'revision') },
    });
  }

  async getSession(key: string, nowSeconds: number): Promise<SessionRecord | undefined> {
    let item: Item | undefined;
    try {
      // Strongly consistent: a session written by the callback Lambda must be visible to the
      // very next request, which may land on another Lambda a few milliseconds later.
      const output = await this.#client.send(
        new GetItemCommand({
          TableName: this.#tableName,
          Key: { [PK]: { S: key } },
          ConsistentRead: true,
        }),
      );
      item = output.Item;
    } catch (error) {
      throw storeUnavailable('GetItem', error);
    }
    if (item === undefined) return undefined;
    const record = parseSession(item);
    return record.expiresAt > nowSeconds ? record : undefined;
  }

  async deleteSession(key: string): Promise<void> {
    try {
      // Unconditional: deleting an absent session is the outcome the caller wanted anyway.
      await this.#client.send(
        new DeleteItemCommand({
          TableName: this.#tableName,
          Key: { [PK]: { S: key } },
        }),
      );
    } catch (error) {
      throw storeUnavailable('DeleteItem', error);
    }
  }

  async endSessionHoldingLease(key: string, leaseId: string): Promise<boolean> {
    try {
      await this.#client.send(
        new DeleteItemCommand({
          TableName: this.#tableName,
          Key: { [PK]: { S: key } },
          ConditionExpression: '#leaseId = :leaseId',
          ExpressionAttributeNames: { '#leaseId': 'leaseId' },
          ExpressionAttributeValues: { ':leaseId': { S: leaseId } },
        }),
      );
      return true;
    } catch (error) {
      if (isConditionalCheckFailure(error)) return false;
      throw storeUnavailable('DeleteItem', error);
    }
  }

  async acquireRefreshLease(key: string, lease: RefreshLease): Promise<boolean> {
    return this.#conditionalUpdate({
      TableName: this.#tableName,
      Key: { [PK]: { S: key } },
      UpdateExpression: 'SET #leaseId = :leaseId, #leaseUntil = :until',
      // Only at the revision the caller read, and only when no live lease is held: of any number of
      // concurrent requests on an expired token, exactly one gets to call the token endpoint.
      ConditionExpression: 'attribute_exists(#pk) AND #revision = :revision AND (attribute_not_exists(#leaseUntil) OR #leaseUntil < :now)',
      ExpressionAttributeNames: { ...PK_NAME, '#revision': 'revision', '#leaseId': 'leaseId', '#leaseUntil': 'leaseUntil' },
      ExpressionAttributeValues: {
        ':leaseId': { S: lease.leaseId },
        ':until': { N: integerString(lease.untilMs, 'untilMs') },
        ':revision': { N: integerString(lease.revision, 'revision') },
        ':now': { N: integerString(lease.nowMs, 'nowMs') },
      },
    });
  }

  async completeRefresh(key: string, result: RefreshResult): Promise<boolean> {
    return this.#conditionalUpdate({
      TableName: this.#tableName,
      Key: { [PK]: { S: key } },
      UpdateExpression: 'SET #sealed = :sealed, #ttl = :ttl, #revision = :next REMOVE #leaseId, #leaseUntil',
      ConditionExpression: '#revision = :revision AND #leaseId = :leaseId',
      ExpressionAttributeNames: { '#sealed': 'sealed', '#ttl': TTL, '#revision': 'revision', '#leaseId': 'leaseId', '#leaseUntil': 'leaseUntil' },
      ExpressionAttributeValues: {
        ':sealed': { B: result.sealed },
        ':ttl': { N: integerString(result.expiresAt, 'expiresAt') },
        ':next': { N: integerString(result.revision + 1, 'revision') },
        ':revision': { N: integerString(result.revision, 'revision') },
        ':leaseId': { S: result.leaseId },
      },
    });
  }

  async releaseRefreshLease(key: string, leaseId: string): Promise<void> {
    await this.#conditionalUpdate({
      TableName: this.#tableName,
      Key: { [PK]: { S: key } },
      UpdateExpression: 'REMOVE #leaseId, #leaseUntil',
      ConditionExpression: '#leaseId = :leaseId',
      ExpressionAttributeNames: { '#leaseId': 'leaseId', '#leaseUntil': 'leaseUntil' },
      ExpressionAttributeValues: { ':leaseId': { S: leaseId } },
    });
  }

  /**
   * Every session record, optionally of one issuer only, page by page (a Scan: it reads the whole
   * table whatever the filter, so it is for operator commands, never for a request path). Expired
   * records that TTL has not deleted yet are skipped.
   */
  async *scanSessions(options: { readonly iss?: string | undefined; readonly nowSeconds: number }): AsyncGenerator<SessionRecord> {
    let startKey: Item | undefined;
    do {
      let page;
      try {
        page = await this.#client.send(
          new ScanCommand({
            TableName: this.#tableName,
            FilterExpression: options.iss === undefined ? '#kind = :session' : '#kind = :session AND #iss = :iss',
            ExpressionAttributeNames: { '#kind': 'kind', ...(options.iss === undefined ? {} : { '#iss': 'iss' }) },
            ExpressionAttributeValues: { ':session': { S: 'session' }, ...(options.iss === undefined ? {} : { ':iss': { S: options.iss } }) },
            ...(startKey ? { ExclusiveStartKey: startKey } : {}),
          }),
        );
      } catch (error) {
        throw storeUnavailable('Scan', error);
      }
      for (const item of page.Items ?? []) {
        const record = parseSession(item);
        if (record.expiresAt > options.nowSeconds) yield record;
      }
      startKey = page.LastEvaluatedKey;
    } while (startKey !== undefined);
  }

  /**
   * Remembers a key until `expiresAtSeconds` (TTL) with one conditional PutItem: `true` the first
   * time, `false` when it is already there and unexpired (a back-channel logout token's `jti` replayed).
   */
  async rememberOnce(key: string, expiresAtSeconds: number, nowSeconds: number): Promise<boolean> {
    try {
      await this.#client.send(
        new PutItemCommand({
          TableName: this.#tableName,
          Item: { [PK]: { S: key }, kind: { S: 'jti' }, [TTL]: { N: String(Math.floor(expiresAtSeconds)) } },
          // An item TTL has not deleted yet no longer counts.
          ConditionExpression: 'attribute_not_exists(#pk) OR #ttl <= :now',
          ExpressionAttributeNames: { ...PK_NAME, '#ttl': TTL },
          ExpressionAttributeValues: { ':now': { N: String(Math.floor(nowSeconds)) } },
        }),
      );
      return true;
    } catch (error) {
      if (isConditionalCheckFailure(error)) return false;
      throw storeUnavailable('PutItem', error);
    }
  }

  /** One conditional UpdateItem: `true` when it applied, `false` when its condition did not hold. */
  async #conditionalUpdate(input: ConstructorParameters<typeof UpdateItemCommand>[0]): Promise<boolean> {
    try {
      await this.#client.send(new UpdateItemCommand(input));
      return true;
    } catch (error) {
      if (isConditionalCheckFailure(error)) return false;
      throw storeUnavailable('UpdateItem', error);
    }
  }

  async #putNew(item: Item): Promise<void> {
    try {
      await this.#client.send(
        new PutItemCommand({
          TableName: this.#tableName,
          Item: item,
          ConditionExpression: KEY_IS_FREE,
          ExpressionAttributeNames: PK_NAME,
        }),
      );
    } catch (error) {
      // Keys are hashes of fresh 256-bit secrets: a collision means a bug (a reused id), and
      // overwriting would hand one browser's record to another.
      if (isConditionalCheckFailure(error)) {
        throw new SmartError('INTERNAL', 'a record with this key already exists', {
          cause: error,
        });
      }
      throw storeUnavailable('PutItem', error);
    }
  }
}

type Kind = 'txn' | 'session';

function commonAttributes(record: StoredRecord, kind: Kind): Item {
  return {
    [PK]: { S: record.key },
    kind: { S: kind },
    formatVersion: { N: String(FORMAT_VERSION) },
    iss: { S: record.iss },
    bindingHash: { S: record.bindingHash },
    endpoints: { S: JSON.stringify(record.endpoints) },
    wrappedKey: { B: record.wrappedKey },
    sealed: { B: record.sealed },
    createdAt: { N: integerString(record.createdAt, 'createdAt') },
    [TTL]: { N: integerString(record.expiresAt, 'expiresAt') },
  };
}

/**
 * DynamoDB only rejects a bad number once it is on the wire (as a ValidationException, which would
 * read as an outage); a non-integer epoch is our bug, so say so before sending.
 */
function integerString(value: number, field: string): string {
  if (!Number.isSafeInteger(value)) {
    throw new SmartError('INTERNAL', `"${field}" must be an integer to be stored`);
  }
  return String(value);
}

// ---------------------------------------------------------------------------------------------
// Reading back: the table is outside our trust boundary (a bad deploy, a hand edit, an older
// format), so every item is checked before it becomes a typed record.

const S = builtOnFirstUse(() =>
  z.object({ S: z.string() }),
);
const NonEmptyS = builtOnFirstUse(() =>
  z.object({ S: z.string().check(z.minLength(1)) }),
);
/** An integer as DynamoDB writes it (a number attribute's decimal text), at most 15 digits. */
const IntegerN = builtOnFirstUse(() =>
  z.pipe(z.object({ N: z.string().check(z.regex(INTEGER)) }), z.transform((v: { N: string }) => Number(v.N))),
);
// The SDK hands back views into a shared pooled buffer: copy, so callers own plain bytes.
const B = builtOnFirstUse(() =>
  z.pipe(z.object({ B: z.instanceof(Uint8Array) }), z.transform((v: { B: Uint8Array<ArrayBuffer> }) => new Uint8Array(v.B))),
);

const HttpUrl = builtOnFirstUse(() =>
  z.url({ protocol: /^https?$/ }),
);

const EndpointsSchema = builtOnFirstUse(() =>
  z.object({
    authorizationEndpoint: HttpUrl,
    tokenEndpoint: HttpUrl,
    issuer: z.optional(z.string().check(z.minLength(1))),
    jwksUri: z.optional(HttpUrl),
    revocationEndpoint: z.optional(HttpUrl),
    issParameterSupported: z.optional(z.boolean()),
  }),
);

const EndpointsJson = builtOnFirstUse(() =>
  z.pipe(
    z.pipe(
      S,
      z.transform((v: { S: string }, ctx): unknown => {
        try {
          return JSON.parse(v.S) as unknown;
        } catch {
          ctx.issues.push({ code: 'custom', message: 'endpoints is not JSON', input: v });
          return z.NEVER;
        }
      }),
    ),
    EndpointsSchema,
  ),
);

const CommonItemSchema = builtOnFirstUse(() =>
  z.object({
    [PK]: NonEmptyS,
    formatVersion: z.object({ N: z.literal(String(FORMAT_VERSION)) }),
    iss: NonEmptyS,
    bindingHash: NonEmptyS,
    endpoints: EndpointsJson,
    wrappedKey: B,
    sealed: B,
    createdAt: IntegerN,
    [TTL]: IntegerN,
  }),
);

const TransactionItemSchema = builtOnFirstUse(() =>
  z.extend(CommonItemSchema, {
    kind: z.object({ S: z.literal('txn') }),
    sessionKey: NonEmptyS,
  }),
);

const SessionItemSchema = builtOnFirstUse(() =>
  z.extend(CommonItemSchema, {
    kind: z.object({ S: z.literal('session') }),
    revision: IntegerN,
    leaseId: z.optional(NonEmptyS),
    leaseUntil: z.optional(IntegerN),
  }),
);

/** The attributes every record kind shares, from a validated item. */
function commonRecord(v: z.output<typeof CommonItemSchema>): StoredRecord {
  return {
    key: v[PK].S,
    iss: v.iss.S,
    bindingHash: v.bindingHash.S,
    endpoints: v.endpoints,
    wrappedKey: v.wrappedKey,
    sealed: v.sealed,
    createdAt: v.createdAt,
    expiresAt: v[TTL],
  };
}

function parseTransaction(item: Item): TransactionRecord {
  const parsed = TransactionItemSchema.safeParse(item);
  if (!parsed.success) throw malformed('transaction', parsed.error);
  return { ...commonRecord(parsed.data), sessionKey: parsed.data.sessionKey.S };
}

/** Endpoints attributes validated once per exact JSON text (they repeat for every session of an issuer). */
const checkedEndpoints = boundedMemo(256, (json): StoredRecord['endpoints'] | undefined => {
  const parsed = EndpointsJson.safeParse({ S: json });
  return parsed.success ? parsed.data : undefined;
});

function endpointsOf(json: string): StoredRecord['endpoints'] | undefined {
  const found = checkedEndpoints(json);
  return found === undefined ? undefined : { ...found };
}

const INTEGER = /^-?\d{1,15}$/;
const isAttr = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
const stringOf = (value: unknown): string | undefined => (isAttr(value) && typeof value.S === 'string' && value.S.length > 0 ? value.S : undefined);
const integerOf = (value: unknown): number | undefined => (isAttr(value) && typeof value.N === 'string' && INTEGER.test(value.N) ? Number(value.N) : undefined);
const bytesOf = (value: unknown): Uint8Array | undefined => (isAttr(value) && value.B instanceof Uint8Array ? new Uint8Array(value.B) : undefined);

/**
 * The session item checked attribute by attribute: exactly what `SessionItemSchema` accepts, and the
 * same record, without running the schema on every proxied request (the endpoints, the one costly
 * attribute, are checked once per distinct value). `undefined` for anything else: the schema then
 * names what is wrong.
 */
function checkedSession(item: Item): SessionRecord | undefined {
  const raw = item as Record<string, unknown>;
  if (!isAttr(raw.kind) || raw.kind.S !== 'session' || !isAttr(raw.formatVersion) || raw.formatVersion.N !== String(FORMAT_VERSION)) return undefined;
  const key = stringOf(raw[PK]);
  const iss = stringOf(raw.iss);
  const binding = stringOf(raw.bindingHash);
  const endpointsJson = isAttr(raw.endpoints) && typeof raw.endpoints.S === 'string' ? raw.endpoints.S : undefined;
  const createdAt = integerOf(raw.createdAt);
  const expiresAt = integerOf(raw[TTL]);
  const revision = integerOf(raw.revision);
  if (key === undefined || iss === undefined || binding === undefined || endpointsJson === undefined) return undefined;
  if (createdAt === undefined || expiresAt === undefined || revision === undefined) return undefined;
  if (raw.leaseId !== undefined && stringOf(raw.leaseId) === undefined) return undefined;
  const leaseUntil = raw.leaseUntil === undefined ? undefined : integerOf(raw.leaseUntil);
  if (raw.leaseUntil !== undefined && leaseUntil === undefined) return undefined;
  const wrappedKey = bytesOf(raw.wrappedKey);
  const sealed = bytesOf(raw.sealed);
  if (wrappedKey === undefined || sealed === undefined) return undefined;
  const endpoints = endpointsOf(endpointsJson);
  if (endpoints === undefined) return undefined;
  return { key, iss, bindingHash: binding, endpoints, wrappedKey, sealed, createdAt, expiresAt, revision, leaseUntil };
}

function parseSession(item: Item): SessionRecord {
  const checked = checkedSession(item);
  if (checked !== undefined) return checked;
  const parsed = SessionItemSchema.safeParse(item);
  if (!parsed.success) throw malformed('session', parsed.error);
  return { ...commonRecord(parsed.data), revision: parsed.data.revision, leaseUntil: parsed.data.leaseUntil };
}

function malformed(kind: string, error: z.core.$ZodError): SmartError {
  // Only the paths of the failing attributes are kept: zod's messages can quote stored values.
  const fields = [...new Set(error.issues.map((issue) => String(issue.path[0] ?? '(item)')))].join(',');
  return new SmartError('VAULT_INTEGRITY', `stored ${kind} record has an unexpected shape`, {
    details: { fields },
  });
}

function isConditionalCheckFailure(error: unknown): boolean {
  // By name rather than `instanceof`: a second copy of the SDK in a bundle would defeat the latter.
  return error instanceof Error && error.name === 'ConditionalCheckFailedException';
}

function storeUnavailable(operation: string, error: unknown): SmartError {
  return new SmartError('STORE_UNAVAILABLE', 'session storage did not answer', {
    cause: error,
    details: { operation, awsError: error instanceof Error ? error.name : 'unknown' },
  });
}
