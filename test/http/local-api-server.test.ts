import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createRequestListener } from '../../local/api-server.js';
import type { ApiEvent } from '../../shared/http/api-event.js';
import {
  PRELUDE_CONTENT_TYPE,
  PRELUDE_DELIMITER,
  streamifyResponse,
  writeStreamedResponse,
  type ResponseStream,
  type StreamingHandler,
} from '../../shared/http/streaming.js';

/**
 * The local stand-in for API Gateway's STREAM integration: the prelude a streaming handler writes
 * becomes the status line and headers, whichever way the handler writes it; a prelude API Gateway
 * would refuse is refused here too.
 */

let server: Server | undefined;
afterEach(async () => {
  vi.restoreAllMocks();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

async function serve(proxy: StreamingHandler): Promise<number> {
  const noop = async () => ({ statusCode: 200, body: '' });
  server = createServer(createRequestListener({ handlers: { 'fhir-proxy': proxy, launch: noop, sessions: noop, jwks: noop } }));
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', () => resolve()));
  return (server.address() as AddressInfo).port;
}

function get(port: number, path: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A handler that writes its prelude in pieces: the JSON in two writes (text, then bytes), the delimiter in two halves. */
function splitPrelude(prelude: string): StreamingHandler {
  return streamifyResponse(async (_event: ApiEvent, stream: ResponseStream) => {
    stream.setContentType(PRELUDE_CONTENT_TYPE);
    stream._onBeforeFirstWrite = (write) => {
      write(prelude.slice(0, 5));
      write(Buffer.from(prelude.slice(5)));
      write(PRELUDE_DELIMITER.subarray(0, 3));
      write(PRELUDE_DELIMITER.subarray(3));
    };
    stream.write(new Uint8Array(0));
    await new Promise<void>((resolve) => stream.end(resolve));
  });
}

describe('the local API stand-in, for a streaming handler', () => {
  it('answers with the prelude\'s status, headers and cookies and the body whole, with its length', async () => {
    const body = JSON.stringify({ resourceType: 'Patient', id: 'p1' });
    const port = await serve(
      streamifyResponse(async (event: ApiEvent, stream: ResponseStream) => {
        expect(event.queryStringParameters).toBeNull();
        expect(event.multiValueQueryStringParameters).toBeNull();
        await writeStreamedResponse(
          stream,
          { statusCode: 201, headers: { 'content-type': 'application/fhir+json', 'content-length': '1' }, multiValueHeaders: { vary: ['origin', 'cookie'] }, cookies: ['a=1', 'b=2'] },
          new Uint8Array(Buffer.from(body)),
        );
      }),
    );
    const answer = await get(port, '/sessions/s1/fhir/Patient/p1');
    expect(answer.status).toBe(201);
    expect(answer.body).toBe(body);
    expect(answer.headers['content-length']).toBe(String(Buffer.byteLength(body)));
    expect(answer.headers['content-type']).toBe('application/fhir+json');
    expect(answer.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    expect(answer.headers.vary).toBe('origin, cookie');
  });

  it('gives the handler the query of a search, as API Gateway does', async () => {
    let seen: ApiEvent | undefined;
    const port = await serve(
      streamifyResponse(async (event: ApiEvent, stream: ResponseStream) => {
        seen = event;
        await writeStreamedResponse(stream, { statusCode: 200 }, new Uint8Array(0));
      }),
    );
    expect((await get(port, '/sessions/s1/fhir/Observation?code=a&code=b%20c&_count=5')).status).toBe(200);
    expect(seen?.queryStringParameters).toEqual({ code: 'b c', _count: '5' });
    expect(seen?.multiValueQueryStringParameters).toEqual({ code: ['a', 'b c'], _count: ['5'] });
    expect(seen?.path).toBe('/sessions/s1/fhir/Observation');
  });

  it('reads a prelude written in pieces the same way', async () => {
    const port = await serve(splitPrelude(JSON.stringify({ statusCode: 204, headers: { 'x-a': '1' } })));
    const answer = await get(port, '/sessions/s1/fhir/Patient/p1');
    expect(answer.status).toBe(204);
    expect(answer.headers['x-a']).toBe('1');
  });

  it('refuses a prelude that is not JSON, or a stream without the prelude content type (the runner fails)', async () => {
    const failures = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const notJson = await serve(
      streamifyResponse(async (_event: ApiEvent, stream: ResponseStream) => {
        stream.setContentType(PRELUDE_CONTENT_TYPE);
        stream._onBeforeFirstWrite = (write) => {
          write('{"statusCode": 200');
          write(PRELUDE_DELIMITER);
        };
        stream.write('body');
        await new Promise<void>((resolve) => stream.end(resolve));
      }),
    );
    expect((await get(notJson, '/sessions/s1/fhir/Patient/p1')).status).toBe(500);
    await new Promise<void>((resolve) => server!.close(() => resolve()));
    const noType = await serve(
      streamifyResponse(async (_event: ApiEvent, stream: ResponseStream) => {
        stream._onBeforeFirstWrite = (write) => {
          write(JSON.stringify({ statusCode: 200 }));
          write(PRELUDE_DELIMITER);
        };
        stream.write('body');
        await new Promise<void>((resolve) => stream.end(resolve));
      }),
    );
    expect((await get(noType, '/sessions/s1/fhir/Patient/p1')).status).toBe(500);
    expect(failures.mock.calls.map(([line]) => String(line)).join('')).toContain('local runner failed');
  });
});
