import { request as httpRequest } from 'node:http';
import type { HttpClient } from '../../shared/core/ports.js';
import { watchingFetch, type Observed } from './stack-fixture.js';

export interface RawAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
  /** The body as JSON, when it is JSON. */
  readonly json: unknown;
}

/**
 * One HTTP request with everything sent as given: the path byte for byte (no URL normalisation of
 * `..`, `%2e`, `\\`), any method, repeated headers, any body, as a hostile or broken client would.
 */
export function rawRequest(
  origin: string,
  options: { method?: string; path: string; headers?: Record<string, string | string[]>; body?: Buffer | string },
): Promise<RawAnswer> {
  const url = new URL(origin);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | string[]> = { ...(options.headers ?? {}) };
    // Framed explicitly: Node sends GET and DELETE bodies unframed otherwise.
    if (options.body !== undefined) headers['content-length'] = String(Buffer.byteLength(options.body));
    const req = httpRequest(
      { host: url.hostname, port: url.port, path: options.path, method: options.method ?? 'GET', headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          let json: unknown;
          try {
            json = JSON.parse(body.toString('utf8'));
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json });
        });
      },
    );
    req.on('error', reject);
    if (options.body !== undefined) req.write(options.body);
    req.end();
  });
}

/** The stable error code of a proxy OperationOutcome. */
export function outcomeCode(json: unknown): string | undefined {
  return (json as { issue?: Array<{ details?: { coding?: Array<{ code?: string }> } }> } | undefined)?.issue?.[0]?.details?.coding?.[0]?.code;
}

/** One request the API sent to the EHR, and the head of the EHR's answer (absent when it failed). */
export interface Exchange {
  readonly method: string;
  readonly url: string;
  readonly headers: Headers;
  /** The request body as sent, byte for byte. */
  readonly body: Buffer | undefined;
  response?: { readonly status: number; readonly headers: Headers };
}

function bodyBytes(body: RequestInit['body']): Buffer | undefined {
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body instanceof URLSearchParams) return Buffer.from(body.toString(), 'utf8');
  if (ArrayBuffer.isView(body)) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  throw new Error('recordingFetch: a body of another kind');
}

/**
 * The API's outbound HTTP client for tests that look at the wire between the API and the sandbox
 * EHR: `watchingFetch` (every URL, the secrets) plus each request's method, headers and body and the
 * answer's status and headers. It watches only: every request goes to its URL with the real fetch.
 */
export function recordingFetch(observed: Observed, exchanges: Exchange[]): HttpClient {
  const watching = watchingFetch(observed);
  return async (url, init) => {
    const exchange: Exchange = { method: init?.method ?? 'GET', url, headers: new Headers(init?.headers), body: bodyBytes(init?.body) };
    exchanges.push(exchange);
    const response = await watching(url, init);
    exchange.response = { status: response.status, headers: response.headers };
    return response;
  };
}
