/**
 * The floor the bench measures the product against: the least a session-store token proxy in Node
 * must do per request, on the same local store the stack uses.
 *
 *   GET {floor}/{sessionId}/fhir/{path}   (cookie: the binding value)
 *     1. one strongly consistent GetItem on the stack's own table (dynalite here, the same client)
 *     2. the binding compared, one AES-256-GCM decrypt of the access token with a cached data key
 *     3. one keep-alive forward with the bearer token (Node's fetch, like the product's HTTP client)
 *     4. the upstream FHIR base replaced by the floor's own base in a JSON answer (one string replace)
 *
 * No logging, no audit, no metrics, no checks beyond the binding: not a product, a yardstick.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { GetItemCommand, PutItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { TABLE } from '../shared/adapters/table.js';

/**
 * How long both servers the bench client talks to (the floor and the local API) keep an idle client
 * connection. The bench sets the same figure on the local API's server: with Node's default there
 * (5 s, which the client reads as about 3 s) and 30 s here, the product's connections closed between
 * rounds and every round paid new connections (TCP connect, a `localhost` lookup) the floor did not.
 */
export const CLIENT_KEEP_ALIVE_MS = 30_000;

export interface FloorProxy {
  /** `{url}/{sessionId}/fhir` is the FHIR base of the one session the floor knows. */
  readonly url: string;
  /** Client connections the floor has accepted so far. */
  readonly connections: () => number;
  readonly sessionId: string;
  readonly cookie: string;
  close(): Promise<void>;
}

const sha256 = (value: string) => createHash('sha256').update(value).digest();

/** Starts the floor proxy in front of `upstreamBase`, with one session holding `accessToken`. */
export async function startFloorProxy(options: {
  readonly client: DynamoDBClient;
  readonly tableName: string;
  readonly upstreamBase: string;
  readonly accessToken: string;
}): Promise<FloorProxy> {
  const dataKey = randomBytes(32); // the cached data key (KMS-wrapped in a real deployment, opened once)
  const sessionId = randomBytes(32).toString('base64url');
  const binding = randomBytes(32).toString('base64url');
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', dataKey, iv);
  const sealed = Buffer.concat([cipher.update(options.accessToken, 'utf8'), cipher.final()]);
  const tag = cipher.getAuthTag();
  const key = `floor#${sha256(sessionId).toString('base64url')}`;
  await options.client.send(
    new PutItemCommand({
      TableName: options.tableName,
      Item: {
        [TABLE.partitionKey]: { S: key },
        binding: { B: sha256(binding) },
        iv: { B: iv },
        token: { B: sealed },
        tag: { B: tag },
        [TABLE.ttlAttribute]: { N: String(Math.floor(Date.now() / 1000) + 86_400) },
      },
    }),
  );

  const upstream = options.upstreamBase.replace(/\/+$/, '');
  let base = '';
  const server: Server = createServer((req, res) => {
    void (async () => {
      const match = /^\/([A-Za-z0-9_-]+)\/fhir\/(.*)$/.exec(req.url ?? '');
      const cookie = /(?:^|;\s*)floor=([A-Za-z0-9_-]+)/.exec(req.headers.cookie ?? '')?.[1];
      if (!match || !cookie) return end(res, 401, 'not open');
      const id = match[1]!;
      const output = await options.client.send(
        new GetItemCommand({ TableName: options.tableName, Key: { [TABLE.partitionKey]: { S: `floor#${sha256(id).toString('base64url')}` } }, ConsistentRead: true }),
      );
      const item = output.Item;
      if (!item?.binding?.B || !timingSafeEqual(Buffer.from(item.binding.B), sha256(cookie))) return end(res, 401, 'not open');
      const decipher = createDecipheriv('aes-256-gcm', dataKey, Buffer.from(item.iv!.B!));
      decipher.setAuthTag(Buffer.from(item.tag!.B!));
      const token = Buffer.concat([decipher.update(Buffer.from(item.token!.B!)), decipher.final()]).toString('utf8');
      const response = await fetch(`${upstream}/${match[2]}`, {
        headers: { authorization: `Bearer ${token}`, accept: req.headers.accept ?? 'application/fhir+json' },
        redirect: 'manual',
      });
      const type = response.headers.get('content-type') ?? 'application/octet-stream';
      let body: Buffer = Buffer.from(await response.arrayBuffer());
      if (/json/i.test(type) && body.includes(upstream)) body = Buffer.from(body.toString('utf8').replaceAll(`${upstream}/`, `${base}/${id}/fhir/`), 'utf8');
      res.writeHead(response.status, { 'content-type': type, 'content-length': body.length, 'cache-control': 'no-store' });
      res.end(body);
    })().catch((error: unknown) => end(res, 502, String(error)));
  });
  server.keepAliveTimeout = CLIENT_KEEP_ALIVE_MS;
  let connections = 0;
  server.on('connection', () => {
    connections++;
  });
  await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: base,
    sessionId,
    cookie: `floor=${binding}`,
    connections: () => connections,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((done) => server.close(() => done()));
    },
  };
}

function end(res: import('node:http').ServerResponse, status: number, message: string): void {
  if (res.headersSent) return void res.destroy();
  res.writeHead(status, { 'content-type': 'text/plain' });
  res.end(message);
}
