import { EventEmitter } from 'node:events';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CreateTableCommand, DescribeTableCommand, DynamoDBClient, type DynamoDBClientConfig } from '@aws-sdk/client-dynamodb';
import dynalite from 'dynalite';
import { TABLE } from '../shared/adapters/table.js';

export const LOCAL_TABLE_NAME = 'smart-launch-local';

const TABLE_READY_TIMEOUT_MS = 5_000;

export interface LocalDynamo {
  /** `http://127.0.0.1:<port>`, for anything else that wants to talk to the same store. */
  readonly endpoint: string;
  /**
   * The store's client for this process: the SDK's own serializer, middleware and error parsing,
   * with requests handed to dynalite's request listener in-process instead of over loopback
   * (`endpoint` still serves everyone else). Destroyed by `close()`.
   */
  readonly client: DynamoDBClient;
  readonly tableName: string;
  /** Stops the server and closes the store; the data stays on disk for the next start (unless `inMemory`). */
  close(): Promise<void>;
}

export interface LocalDynamoOptions {
  /** The local run's data folder; the store lives in `${dataDir}/dynamo`. */
  readonly dataDir: string;
  /** Loopback port; an ephemeral one when absent. */
  readonly port?: number;
  /**
   * Keep the store in memory instead of LevelDB under the data folder: for runs that never reopen
   * the folder (most tests). The folder is still locked and its endpoint file written, so commands
   * run next to it (`connectLocalDynamo`) reach this store.
   */
  readonly inMemory?: boolean;
}

/**
 * Starts dynalite (DynamoDB on LevelDB) in this process, on loopback only, with the project's table.
 * It speaks the real DynamoDB protocol, so the production `DynamoSessionStore` runs unchanged
 * against it. Differences to keep in mind: no TTL deletion (readers check `expiresAt` anyway),
 * no transactions, no UpdateTimeToLive.
 */
export async function startLocalDynamo(options: LocalDynamoOptions): Promise<LocalDynamo> {
  const storeDir = join(options.dataDir, 'dynamo');
  await mkdir(options.inMemory === true ? options.dataDir : storeDir, { recursive: true, mode: 0o700 });
  const releaseLock = await acquireLock(`${storeDir}.lock`, storeDir);

  // createTableMs 0: the table is ACTIVE almost at once instead of after dynalite's default 500 ms.
  const timings = { createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 };
  const server = dynalite(options.inMemory === true ? timings : { path: storeDir, ...timings });
  // dynalite's httpHandler(store, req, res), the one listener it registers.
  const [listener] = server.listeners('request') as RequestListener[];
  if (listener === undefined) throw new Error('dynalite registered no request listener');
  let port: number;
  try {
    port = await listen(server, options.port ?? 0);
  } catch (error) {
    // dynalite has already opened LevelDB, and its close() refuses a server that never listened,
    // so the store stays open in this process: keep our lock too, so a retry here gets a clear
    // "in use" error instead of dynalite's uncaught "Database is closed".
    throw new Error(`local DynamoDB could not listen on 127.0.0.1:${options.port ?? 0}`, { cause: error });
  }

  const endpoint = `http://127.0.0.1:${port}`;
  // Where operator commands (`smart-launch sessions end`) find the running store: LevelDB has one opener.
  const endpointFile = `${storeDir}.endpoint`;
  await writeFile(endpointFile, endpoint, { mode: 0o600 });
  let closed: Promise<void> | undefined;
  const client = new DynamoDBClient({
    ...localClientConfig(endpoint),
    requestHandler: inProcessHandler(listener, () => closed !== undefined),
  });

  const close = (): Promise<void> => {
    closed ??= (async () => {
      client.destroy();
      await closeServer(server);
      await unlink(endpointFile).catch(() => undefined);
      await releaseLock();
    })();
    return closed;
  };

  try {
    await ensureTable(client, LOCAL_TABLE_NAME);
  } catch (error) {
    await close().catch(() => undefined);
    throw error;
  }
  return { endpoint, client, tableName: LOCAL_TABLE_NAME, close };
}

/** A local client's config: the endpoint, a region and credentials the SDK needs, and the presence signer. */
function localClientConfig(endpoint: string): DynamoDBClientConfig {
  return { endpoint, region: 'us-east-1', credentials: { accessKeyId: 'local', secretAccessKey: 'local' }, signer: presenceSigner };
}

type Signer = Extract<NonNullable<DynamoDBClientConfig['signer']>, { sign: unknown }>;
type SdkRequest = Parameters<Signer['sign']>[0];

/**
 * dynalite checks that an `AWS4-` Authorization header with Credential, SignedHeaders and Signature
 * and a date header are present, never what signed them (there is no secret to check against), so
 * the local clients send a fixed one instead of hashing every request for SigV4.
 */
const presenceSigner: Signer = {
  sign: async (request, options) => {
    const date = new Date(options?.signingDate ?? Date.now()).toISOString().replace(/[-:]|\.\d{3}/g, '');
    request.headers['x-amz-date'] = date;
    request.headers['authorization'] =
      `AWS4-HMAC-SHA256 Credential=local/${date.slice(0, 8)}/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date, Signature=local`;
    return request;
  },
};

type RequestListener = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * A request handler for the SDK client (the `requestHandler` option) that calls dynalite's request
 * listener directly: the request body is emitted on a bare `req`, and the answer collected from a bare
 * `res` with what the listener uses of them (headers, method, url; statusCode, setHeader, end). It
 * saves the loopback socket, the HTTP parsing on both sides and the client's connection pool, which
 * were most of a local call's cost; what the product's code sees (the SDK's serialized request, the
 * status, headers and body of the answer) is the same. After close it refuses, as the closed port did.
 */
function inProcessHandler(listener: RequestListener, isClosed: () => boolean) {
  return {
    handle(request: SdkRequest, options?: { abortSignal?: { aborted: boolean } }) {
      return new Promise<{ response: { statusCode: number; headers: Record<string, string>; body: Uint8Array } }>((resolve, reject) => {
        if (isClosed()) {
          reject(Object.assign(new Error('local DynamoDB is closed'), { code: 'ECONNREFUSED' }));
          return;
        }
        if (options?.abortSignal?.aborted) {
          reject(Object.assign(new Error('Request aborted'), { name: 'AbortError' }));
          return;
        }
        const body = request.body;
        if (body !== undefined && body !== null && typeof body !== 'string' && !(body instanceof Uint8Array)) {
          reject(new Error('the in-process DynamoDB handler takes string or byte bodies only'));
          return;
        }
        const headers: Record<string, string> = {};
        for (const [name, value] of Object.entries(request.headers)) headers[name.toLowerCase()] = value;
        const query = new URLSearchParams();
        for (const [name, value] of Object.entries(request.query ?? {})) {
          for (const item of Array.isArray(value) ? value : [value]) if (item !== null) query.append(name, item);
        }
        const search = query.toString();
        const req = Object.assign(new EventEmitter(), { method: request.method, url: search ? `${request.path}?${search}` : request.path, headers });
        const answer: Record<string, string> = {};
        const res = {
          statusCode: 200,
          setHeader(name: string, value: string | number) {
            answer[name.toLowerCase()] = String(value);
          },
          end(data?: string | Uint8Array) {
            resolve({ response: { statusCode: res.statusCode, headers: answer, body: typeof data === 'string' ? Buffer.from(data, 'utf8') : (data ?? new Uint8Array()) } });
          },
        };
        try {
          listener(req as unknown as IncomingMessage, res as unknown as ServerResponse);
          if (body !== undefined && body !== null && body.length > 0) {
            // A view, not Buffer.from(body): the SDK's byte bodies answer valueOf() with their text.
            req.emit('data', typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body.buffer, body.byteOffset, body.byteLength));
          }
          req.emit('end');
        } catch (error) {
          reject(error);
        }
      });
    },
    updateHttpClientConfig(): void {},
    httpHandlerConfigs(): Record<string, never> {
      return {};
    },
    destroy(): void {},
  };
}

async function ensureTable(client: DynamoDBClient, tableName: string): Promise<void> {
  try {
    // Same key schema as the CDK table (both read `TABLE`). No UpdateTimeToLive: dynalite answers
    // UnknownOperationException, and nothing expires locally anyway.
    await client.send(
      new CreateTableCommand({
        TableName: tableName,
        BillingMode: 'PAY_PER_REQUEST',
        AttributeDefinitions: [{ AttributeName: TABLE.partitionKey, AttributeType: 'S' }],
        KeySchema: [{ AttributeName: TABLE.partitionKey, KeyType: 'HASH' }],
      }),
    );
  } catch (error) {
    // Created on an earlier run: the data folder is reused on purpose.
    if (!(error instanceof Error && error.name === 'ResourceInUseException')) throw error;
  }

  const deadline = Date.now() + TABLE_READY_TIMEOUT_MS;
  for (;;) {
    const { Table: table } = await client.send(new DescribeTableCommand({ TableName: tableName }));
    const hashKey = table?.KeySchema?.find((key) => key.KeyType === 'HASH')?.AttributeName;
    if (hashKey !== TABLE.partitionKey || table?.KeySchema?.length !== 1) {
      throw new Error(
        `local table ${tableName} has another key schema than "${TABLE.partitionKey}" alone; delete the data folder's dynamo store to recreate it`,
      );
    }
    if (table.TableStatus === 'ACTIVE') return;
    if (Date.now() > deadline) throw new Error(`local table ${tableName} did not become ACTIVE`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * LevelDB allows one opener per folder, and when dynalite is the second one it does not fail at
 * start: it crashes the process with an uncaught "Database is closed" on the first request. A pid
 * lock file turns that into a clear error up front.
 */
async function acquireLock(lockPath: string, storeDir: string): Promise<() => Promise<void>> {
  for (let attempt = 0; attempt < 2; attempt += 1) {
    try {
      await writeFile(lockPath, String(process.pid), { flag: 'wx', mode: 0o600 });
      return () => unlink(lockPath).catch(() => undefined);
    } catch (error) {
      if (!isErrno(error, 'EEXIST')) throw error;
    }
    const holder = Number.parseInt(await readFile(lockPath, 'utf8').catch(() => ''), 10);
    if (!Number.isSafeInteger(holder) || holder <= 0 || isRunning(holder)) {
      const who = holder === process.pid ? 'this process' : `process ${Number.isNaN(holder) ? '(unknown)' : holder}`;
      throw new Error(
        `local DynamoDB store ${storeDir} is already open in ${who}; stop it first, or delete ${lockPath} if nothing is running`,
      );
    }
    // Left behind by a process that has exited: take it over.
    await unlink(lockPath).catch(() => undefined);
  }
  throw new Error(`could not lock local DynamoDB store ${storeDir}`);
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0); // signal 0 only checks that the process exists
    return true;
  } catch (error) {
    return !isErrno(error, 'ESRCH');
  }
}

function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      const address = server.address();
      if (address !== null && typeof address === 'object') resolve(address.port);
      else reject(new Error('local DynamoDB has no TCP address'));
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.close((error) => (error ? reject(error) : resolve()));
  });
}

function isErrno(error: unknown, code: string): boolean {
  return error instanceof Error && (error as NodeJS.ErrnoException).code === code;
}

/**
 * The local store of a data folder for a command run next to `npm start`: the running server's store
 * when one holds the folder (its endpoint is written next to the lock), else the store opened here.
 */
export async function connectLocalDynamo(dataDir: string): Promise<LocalDynamo> {
  const storeDir = join(dataDir, 'dynamo');
  const holder = Number.parseInt(await readFile(`${storeDir}.lock`, 'utf8').catch(() => ''), 10);
  const endpoint = await readFile(`${storeDir}.endpoint`, 'utf8').catch(() => undefined);
  if (endpoint !== undefined && Number.isSafeInteger(holder) && holder > 0 && isRunning(holder) && /^http:\/\/127\.0\.0\.1:\d+$/.test(endpoint)) {
    const client = new DynamoDBClient(localClientConfig(endpoint));
    return {
      endpoint,
      client,
      tableName: LOCAL_TABLE_NAME,
      close: async () => client.destroy(),
    };
  }
  return startLocalDynamo({ dataDir });
}
