import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Context } from 'aws-lambda';
import { Writable } from 'node:stream';
import { isStreamingHandler, PRELUDE_CONTENT_TYPE, PRELUDE_DELIMITER, type ResponseStream, type StreamingHandler, type StreamPrelude } from '../shared/http/streaming.js';
import { SmartError } from '../shared/core/errors.js';
import type { ApiEvent, ApiResult } from '../shared/http/api-event.js';
import { responseHeaders } from '../shared/http/headers.js';
import { renderError } from '../shared/http/error-response.js';
import { matchRoute, type FunctionName, type RouteMatch } from '../shared/http/routes.js';
import { BASE_HEADERS } from '../shared/http/responses.js';
import { sdkAsset } from './sdk-assets.js';

export type LambdaHandler = (event: ApiEvent, context: Context) => Promise<ApiResult>;

/** Largest request body the local runner accepts; API Gateway's own limit is 10 MB. */
const MAX_BODY_BYTES = 10 * 1024 * 1024;

const DEMO_APP_DIR = fileURLToPath(new URL('./demo-app/', import.meta.url));
const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

/** The context's functions, shared by every request (none of them depends on the request). */
const remainingTime = () => 30_000;
const nothing = () => undefined;

function lambdaContext(requestId: string, fn: FunctionName): Context {
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName: `smart-launch-${fn}`,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:local:000000000000:function:smart-launch-${fn}`,
    memoryLimitInMB: '512',
    awsRequestId: requestId,
    logGroupName: `/aws/lambda/smart-launch-${fn}`,
    logStreamName: 'local',
    getRemainingTimeInMillis: remainingTime,
    done: nothing,
    fail: nothing,
    succeed: nothing,
  };
}

const NO_BODY = Buffer.alloc(0);
/** The query of a request without one (read only: `toApiEvent` iterates it). */
const NO_QUERY = new URLSearchParams();

/**
 * No Content-Length and no Transfer-Encoding (or a zero length): HTTP/1.1 says there is no body, and
 * most requests (every GET) are such; nothing to read, and no promise to wait for it.
 */
function hasNoBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return (length === undefined || length === '0') && req.headers['transfer-encoding'] === undefined;
}

async function readBody(req: IncomingMessage): Promise<Buffer | 'too-large'> {
  if (hasNoBody(req)) return NO_BODY;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) return 'too-large';
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Builds the API Gateway REST (payload v1) event for a plain HTTP request, as API Gateway would. */
export function toApiEvent(
  req: IncomingMessage,
  rawPath: string,
  searchParams: URLSearchParams,
  body: Buffer,
  resource: string,
  pathParameters: Record<string, string>,
): ApiEvent {
  const headers: Record<string, string> = {};
  const multiValueHeaders: Record<string, string[]> = {};
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i] as string;
    const value = req.rawHeaders[i + 1] as string;
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
    (multiValueHeaders[name] ??= []).push(value);
  }
  const multiValueQuery: Record<string, string[]> = {};
  for (const [name, value] of searchParams) (multiValueQuery[name] ??= []).push(value);
  const query: Record<string, string> = {};
  for (const [name, values] of Object.entries(multiValueQuery)) query[name] = values[values.length - 1] as string;
  const requestId = randomUUID();
  return {
    resource,
    path: rawPath,
    httpMethod: req.method ?? 'GET',
    headers,
    multiValueHeaders,
    queryStringParameters: Object.keys(query).length > 0 ? query : null,
    multiValueQueryStringParameters: Object.keys(multiValueQuery).length > 0 ? multiValueQuery : null,
    pathParameters: Object.keys(pathParameters).length > 0 ? pathParameters : null,
    stageVariables: null,
    body: body.length > 0 ? body.toString('base64') : null,
    isBase64Encoded: body.length > 0,
    requestContext: {
      accountId: '000000000000',
      apiId: 'local',
      authorizer: undefined,
      protocol: `HTTP/${req.httpVersion}`,
      httpMethod: req.method ?? 'GET',
      identity: { sourceIp: req.socket.remoteAddress ?? '127.0.0.1' } as ApiEvent['requestContext']['identity'],
      path: rawPath,
      stage: 'local',
      requestId,
      requestTimeEpoch: Date.now(),
      resourceId: 'local',
      resourcePath: resource,
    },
  };
}

function writeResult(res: ServerResponse, result: ApiResult): void {
  const headers = responseHeaders(result.headers, result.multiValueHeaders);
  const body = Buffer.from(result.body ?? '', result.isBase64Encoded ? 'base64' : 'utf8');
  headers['content-length'] = String(body.length);
  res.writeHead(result.statusCode, headers);
  res.end(body);
}

/** API Gateway reads the streaming prelude from the first 16 KB of the stream. */
const MAX_PRELUDE_BYTES = 16 * 1024;

function isDelimiter(chunk: Uint8Array | string | undefined): boolean {
  if (chunk === undefined || typeof chunk === 'string' || chunk.length !== PRELUDE_DELIMITER.length) return false;
  for (let i = 0; i < chunk.length; i += 1) if (chunk[i] !== 0) return false;
  return true;
}

/** The answer's headers from the prelude, as API Gateway sends them (its own length, not the prelude's). */
function preludeHeaders(prelude: StreamPrelude): Record<string, string | string[]> {
  const headers = responseHeaders(prelude.headers, prelude.multiValueHeaders);
  if (prelude.cookies && prelude.cookies.length > 0) headers['set-cookie'] = [...prelude.cookies];
  delete headers['content-length'];
  return headers;
}

/**
 * The runtime's response stream, as API Gateway's STREAM integration consumes it: the handler's first
 * write is preceded by the prelude (`HttpResponseStream.from` sets `_onBeforeFirstWrite`, which the
 * runtime's stream calls, as this one does); the JSON prelude up to 8 NUL bytes becomes the status
 * line and headers, and every byte after it goes to the socket as it comes (chunked), with
 * back-pressure from the socket. The first body chunk waits for what follows it: when the stream ends
 * right after it (an answer written whole, as the FHIR proxy writes every answer up to 1 MB), status,
 * headers and body go out in one socket write with a Content-Length, not as a chunked body and its
 * terminator.
 */
class LocalResponseStream extends Writable implements ResponseStream {
  _onBeforeFirstWrite: ResponseStream['_onBeforeFirstWrite'];
  #contentType = 'application/octet-stream';
  #started = false;
  #prelude: Buffer | undefined = Buffer.alloc(0);
  /** Status and headers from the prelude, until the body's second chunk or its end sends them. */
  #head: { status: number; headers: Record<string, string | string[]> } | undefined;
  /** The first body chunk, held with `#head`. */
  #held: Buffer | undefined;
  readonly #res: ServerResponse;

  constructor(res: ServerResponse) {
    super();
    this.#res = res;
    res.on('close', () => {
      if (!res.writableFinished) this.destroy();
    });
  }

  setContentType(contentType: string): void {
    if (this.#started) throw new Error('Cannot set content-type, too late.');
    this.#contentType = contentType;
  }

  override write(chunk: Uint8Array | string, ...rest: unknown[]): boolean {
    const write = Writable.prototype.write as (this: Writable, chunk: unknown, ...args: unknown[]) => boolean;
    if (!this.#started) {
      this.#started = true;
      const before: Array<Uint8Array | string> = [];
      this._onBeforeFirstWrite?.((first) => {
        before.push(first);
      });
      if (!this.#takePrelude(before)) for (const first of before) write.call(this, first);
    }
    return write.call(this, chunk, ...rest);
  }

  /**
   * The prelude as `HttpResponseStream.from` writes it (the JSON text, then the 8 NUL bytes, before
   * the first chunk), read at once: no bytes to buffer, join and search. Anything else (another
   * shape, a prelude that is not JSON or is too long, a stream that was not given the prelude content
   * type) goes through `_write` as bytes, which answers it as before.
   */
  #takePrelude(before: ReadonlyArray<Uint8Array | string>): boolean {
    const [text, delimiter] = before;
    if (
      before.length !== 2 ||
      typeof text !== 'string' ||
      !isDelimiter(delimiter) ||
      this.#contentType !== PRELUDE_CONTENT_TYPE ||
      this.#prelude === undefined ||
      this.#prelude.length > 0 ||
      text.includes('\0') ||
      Buffer.byteLength(text, 'utf8') > MAX_PRELUDE_BYTES
    ) {
      return false;
    }
    let prelude: StreamPrelude;
    try {
      prelude = JSON.parse(text) as StreamPrelude;
    } catch {
      return false;
    }
    this.#prelude = undefined;
    this.#head = { status: prelude.statusCode, headers: preludeHeaders(prelude) };
    return true;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.#prelude === undefined) {
      if (this.#head !== undefined && this.#held === undefined) {
        // The body's first chunk: held until the next write or the end says how to send it.
        this.#held = chunk;
        callback();
        return;
      }
      this.#flushHead();
      if (this.#res.write(chunk)) callback();
      else this.#res.once('drain', () => callback());
      return;
    }
    if (this.#contentType !== PRELUDE_CONTENT_TYPE) {
      callback(new Error(`a streaming handler must send the HTTP prelude (content type ${PRELUDE_CONTENT_TYPE})`));
      return;
    }
    const buffered = this.#prelude.length === 0 ? chunk : Buffer.concat([this.#prelude, chunk]);
    const end = buffered.indexOf(PRELUDE_DELIMITER);
    if (end < 0) {
      if (buffered.length > MAX_PRELUDE_BYTES) callback(new Error('no prelude delimiter within the first 16 KB'));
      else {
        this.#prelude = buffered;
        callback();
      }
      return;
    }
    let prelude: StreamPrelude;
    try {
      prelude = JSON.parse(buffered.subarray(0, end).toString('utf8')) as StreamPrelude;
    } catch (error) {
      callback(error as Error);
      return;
    }
    this.#prelude = undefined;
    this.#head = { status: prelude.statusCode, headers: preludeHeaders(prelude) };
    const rest = buffered.subarray(end + PRELUDE_DELIMITER.length);
    if (rest.length > 0) this.#held = rest;
    callback();
  }

  /** The status line and headers, once, followed by the body chunk held with them (chunked from here on). */
  #flushHead(): void {
    const head = this.#head;
    if (head === undefined) return;
    this.#head = undefined;
    this.#res.writeHead(head.status, head.headers);
    const held = this.#held;
    this.#held = undefined;
    if (held !== undefined) this.#res.write(held);
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.#prelude !== undefined) {
      callback(new Error('the streaming handler ended without a prelude'));
      return;
    }
    const head = this.#head;
    if (head !== undefined && head.status >= 200 && head.status !== 204 && head.status !== 304) {
      // Nothing followed the first body chunk: the whole answer, with its length, in one write.
      this.#head = undefined;
      const body = this.#held ?? Buffer.alloc(0);
      this.#held = undefined;
      head.headers['content-length'] = String(body.length);
      this.#res.writeHead(head.status, head.headers);
      this.#res.end(body, () => callback());
      return;
    }
    this.#flushHead();
    this.#res.end(() => callback());
  }
}

/** Calls a streaming handler as Lambda's runtime would and relays its stream as API Gateway's STREAM mode does. */
async function runStreaming(handler: StreamingHandler, event: ApiEvent, context: Context, res: ServerResponse): Promise<void> {
  const stream = new LocalResponseStream(res);
  const finished = new Promise<void>((resolve, reject) => {
    stream.on('finish', () => resolve());
    stream.on('error', reject);
    stream.on('close', () => resolve());
  });
  finished.catch(() => undefined); // observed below; a handler that throws first must not leave it unhandled
  await handler(event, stream, context);
  await finished;
  if (!res.writableEnded) throw new Error('the streaming handler did not finish its response');
}

function writeJson(res: ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void {
  const text = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { ...BASE_HEADERS, 'content-type': 'application/json; charset=utf-8', 'content-length': String(text.length), ...extra });
  res.end(text);
}

async function serveDemoApp(res: ServerResponse, relative: string): Promise<boolean> {
  const file = normalize(join(DEMO_APP_DIR, relative === '' ? 'index.html' : relative));
  if (!file.startsWith(DEMO_APP_DIR) || file.includes(`${sep}..`)) return false;
  try {
    const content = (await sdkAsset(relative)) ?? (await readFile(file));
    res.writeHead(200, {
      'content-type': CONTENT_TYPES[extname(file)] ?? 'application/octet-stream',
      'cache-control': 'no-cache',
      'referrer-policy': 'no-referrer',
      'x-content-type-options': 'nosniff',
      // connect-src: the EHR's smart_style_url (SMART context-style) may live on the EHR's origin.
      'content-security-policy': "default-src 'self'; img-src 'self' data:; connect-src 'self' https: http://127.0.0.1:* http://localhost:*; base-uri 'none'; form-action 'none'",
    });
    res.end(content);
    return true;
  } catch {
    return false;
  }
}

export interface ApiServerOptions {
  /** Buffered handlers (payload v1 results) or, like the FHIR proxy, Lambda response-streaming handlers. */
  readonly handlers: Readonly<Record<FunctionName, LambdaHandler | StreamingHandler>>;
  /** Path prefix of the demo app when it is served from this origin (e.g. `/app/`). */
  readonly appPath?: string | undefined;
}

/**
 * The local stand-in for API Gateway: routes a plain HTTP request by the shared route table, builds
 * the same event API Gateway would, and calls the very same handler the Lambda runs.
 */
export function createRequestListener(options: ApiServerOptions) {
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    try {
      // The raw path, exactly as sent: WHATWG URL parsing would resolve `..` and `%2e%2e` and turn
      // backslashes into slashes, hiding from the handlers what an attacker really sent.
      const target = req.url ?? '/';
      const queryAt = target.indexOf('?');
      const rawPath = queryAt < 0 ? target : target.slice(0, queryAt);
      // WHATWG parsing of the query only when there is one (a read has none).
      const searchParams = queryAt < 0 ? NO_QUERY : new URL(`http://local.invalid${target.slice(queryAt)}`).searchParams;
      if (!rawPath.startsWith('/')) {
        writeJson(res, 400, { error: { code: 'INVALID_REQUEST', message: 'the request target must be an absolute path', hint: 'Send origin-form request targets.' } });
        return;
      }
      if (options.appPath && (req.method === 'GET' || req.method === 'HEAD') && rawPath.startsWith(options.appPath)) {
        if (await serveDemoApp(res, rawPath.slice(options.appPath.length))) return;
      }
      const matches = matchRoute(rawPath);
      if (matches.length === 0) {
        writeJson(res, 404, { error: { code: 'ROUTE_NOT_FOUND', message: 'no route matches this path', hint: 'See the routes table in the README.' } });
        return;
      }
      let match: RouteMatch | undefined;
      for (const candidate of matches) {
        if (candidate.route.method === 'ANY' || candidate.route.method === req.method) {
          match = candidate;
          break;
        }
      }
      if (!match) {
        const allow = [...new Set(matches.map((m) => m.route.method))].join(', ');
        writeJson(res, 405, { error: { code: 'METHOD_NOT_ALLOWED', message: `${req.method} is not supported on this route`, hint: `Use ${allow}.` } }, { allow });
        return;
      }
      const body = hasNoBody(req) ? NO_BODY : await readBody(req);
      if (body === 'too-large') {
        if (match.route.fn === 'fhir-proxy') {
          // FHIR clients get an OperationOutcome, as from the proxy's own size check.
          writeResult(res, renderError(new SmartError('REQUEST_TOO_LARGE', 'the request body is larger than 10 MB (the API Gateway limit)'), 'fhir', randomUUID()));
          return;
        }
        writeJson(res, 413, { error: { code: 'INVALID_REQUEST', message: 'the request body is larger than 10 MB', hint: 'Send a smaller request.' } });
        return;
      }
      const pathParameters: Record<string, string> = {};
      for (const name in match.pathParameters) {
        const value = match.pathParameters[name] as string;
        // API Gateway decodes path parameters; the raw path stays in `event.path`.
        try {
          pathParameters[name] = name === 'proxy' ? value : decodeURIComponent(value);
        } catch {
          pathParameters[name] = value;
        }
      }
      const event = toApiEvent(req, rawPath, searchParams, body, match.route.resource, pathParameters);
      const handler = options.handlers[match.route.fn];
      const context = lambdaContext(event.requestContext.requestId, match.route.fn);
      if (isStreamingHandler(handler)) {
        await runStreaming(handler, event, context, res);
        return;
      }
      writeResult(res, await (handler as LambdaHandler)(event, context));
    } catch (error) {
      // The handlers map their own errors; reaching this means the runner itself failed.
      process.stderr.write(`${JSON.stringify({ level: 'ERROR', message: 'local runner failed', error: (error as Error).message })}\n`);
      if (!res.headersSent) writeJson(res, 500, { error: { code: 'INTERNAL', message: 'the local runner failed', hint: 'See the server log.' } });
      else res.destroy();
    }
  };
}

/**
 * Requests the local API server is handling now (received, response not yet closed). Tests use it
 * to know that every request of a concurrent burst has arrived before they let a slow dependency
 * answer, instead of guessing with a timer.
 */
export class RequestsInFlight {
  #count = 0;
  #waiters: Array<{ readonly count: number; readonly resolve: () => void }> = [];

  get count(): number {
    return this.#count;
  }

  /** Counts `req` until its response closes (answered, or the client went away). */
  track(_req: IncomingMessage, res: ServerResponse): void {
    this.#count += 1;
    res.once('close', () => {
      this.#count -= 1;
    });
    this.#notify();
  }

  /** Resolves once at least `count` requests are in flight at the same time. */
  atLeast(count: number): Promise<void> {
    if (this.#count >= count) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ count, resolve }));
  }

  #notify(): void {
    const ready = this.#waiters.filter((waiter) => this.#count >= waiter.count);
    this.#waiters = this.#waiters.filter((waiter) => this.#count < waiter.count);
    for (const waiter of ready) waiter.resolve();
  }
}
