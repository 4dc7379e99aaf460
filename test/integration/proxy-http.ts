import { request as httpRequest } from 'node:http';

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
