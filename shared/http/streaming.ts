import type { Context } from 'aws-lambda';
import type { ApiEvent } from './api-event.js';

/*
 * Lambda response streaming, as API Gateway REST (`responseTransferMode: STREAM`, integration URI
 * `…/2021-11-15/functions/{arn}/response-streaming-invocations`) expects it: the function writes a
 * JSON prelude `{ statusCode, headers, multiValueHeaders, cookies }`, then 8 NUL bytes, then the raw
 * body (no base64, no binary media types, no 6 MB limit; Lambda streams up to 200 MB). The prelude
 * must come within the first 16 KB of the stream.
 *
 * In Lambda the runtime provides the `awslambda` global (`streamifyResponse`, `HttpResponseStream`).
 * Elsewhere (the local runner, tests) the same contract is implemented here, byte for byte, so the
 * very same handler runs locally and the local runner reads the same prelude API Gateway reads.
 * What only the FHIR proxy function needs (the streaming cap) is in functions/fhir-proxy/streaming.ts.
 */

/** The symbol the Lambda runtime (and the local runner) recognise streaming handlers by. */
export const HANDLER_STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
export const STREAM_RESPONSE = 'response';
/** 8 NUL bytes separate the prelude from the body. */
export const PRELUDE_DELIMITER = new Uint8Array(8);
export const PRELUDE_CONTENT_TYPE = 'application/vnd.awslambda.http-integration-response';

/** What a streaming handler writes to: the runtime's stream (a Node Writable in all but name). */
export interface ResponseStream {
  write(chunk: Uint8Array | string, callback?: (error?: Error | null) => void): boolean;
  end(callback?: () => void): void;
  once(event: 'drain' | 'error' | 'close', listener: (...args: unknown[]) => void): unknown;
  removeListener(event: 'drain' | 'error' | 'close', listener: (...args: unknown[]) => void): unknown;
  setContentType(contentType: string): void;
  /** Set by `HttpResponseStream.from`; the runtime calls it before the first write. */
  _onBeforeFirstWrite?: ((write: (chunk: Uint8Array | string) => void) => void) | undefined;
}

export interface StreamPrelude {
  readonly statusCode: number;
  readonly headers?: Readonly<Record<string, string>>;
  readonly multiValueHeaders?: Readonly<Record<string, readonly string[]>>;
  readonly cookies?: readonly string[];
}

export type StreamingHandler = ((event: ApiEvent, responseStream: ResponseStream, context: Context) => Promise<void>) & {
  [HANDLER_STREAMING]?: string;
};

interface AwsLambdaGlobal {
  streamifyResponse<T>(handler: T): T;
  HttpResponseStream: { from(stream: ResponseStream, prelude: StreamPrelude): ResponseStream };
}

function runtimeGlobal(): AwsLambdaGlobal | undefined {
  const value = (globalThis as unknown as { awslambda?: Partial<AwsLambdaGlobal> }).awslambda;
  return typeof value?.streamifyResponse === 'function' && typeof value.HttpResponseStream?.from === 'function'
    ? (value as AwsLambdaGlobal)
    : undefined;
}

/** `awslambda.streamifyResponse` in Lambda; marks the handler the same way everywhere else. */
export function streamifyResponse(handler: StreamingHandler): StreamingHandler {
  const runtime = runtimeGlobal();
  if (runtime) return runtime.streamifyResponse(handler);
  handler[HANDLER_STREAMING] = STREAM_RESPONSE;
  return handler;
}

export function isStreamingHandler(handler: unknown): handler is StreamingHandler {
  return typeof handler === 'function' && (handler as StreamingHandler)[HANDLER_STREAMING] === STREAM_RESPONSE;
}

/**
 * `awslambda.HttpResponseStream.from` in Lambda. Elsewhere the same: sets the prelude content type
 * and writes `JSON(prelude)` + 8 NUL bytes before the first chunk. (A stream from the local runner
 * calls `_onBeforeFirstWrite` itself, as the runtime's stream does.)
 */
export function httpResponseStream(stream: ResponseStream, prelude: StreamPrelude): ResponseStream {
  const runtime = runtimeGlobal();
  if (runtime) return runtime.HttpResponseStream.from(stream, prelude);
  stream.setContentType(PRELUDE_CONTENT_TYPE);
  const metadata = JSON.stringify(prelude);
  stream._onBeforeFirstWrite = (write) => {
    write(metadata);
    write(PRELUDE_DELIMITER);
  };
  return stream;
}

const CHUNK_BYTES = 1024 * 1024;

/**
 * Writes a whole answer: prelude, then the body in 1 MB chunks with back-pressure, then ends. An empty
 * body is still one (empty) write, or the runtime would never send the prelude.
 */
export async function writeStreamedResponse(stream: ResponseStream, prelude: StreamPrelude, body: Uint8Array): Promise<void> {
  const out = httpResponseStream(stream, prelude);
  if (body.length === 0) out.write(new Uint8Array(0));
  let closed = false;
  out.once('close', () => {
    closed = true;
  });
  for (let offset = 0; offset < body.length && !closed; offset += CHUNK_BYTES) {
    if (!out.write(body.subarray(offset, offset + CHUNK_BYTES))) {
      // Wait for room, unless the client went away (then there is nobody left to write to).
      await new Promise<void>((resolve) => {
        const done = () => {
          out.removeListener('drain', done);
          out.removeListener('close', done);
          out.removeListener('error', done);
          resolve();
        };
        out.once('drain', done);
        out.once('close', done);
        out.once('error', done);
      });
    }
  }
  await new Promise<void>((resolve) => out.end(() => resolve()));
}
