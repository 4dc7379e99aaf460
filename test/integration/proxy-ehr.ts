import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { gzipSync } from 'node:zlib';
import type { HttpClient } from '../../shared/core/ports.js';
import { watchingFetch, type Observed } from './stack-fixture.js';

/*
 * The sandbox EHR's FHIR server is read-only JSON on a memory repository: no Binary of 10 MB, no XML,
 * no compression, no POST _search, no operations, no writes that succeed. These tests need an EHR
 * that has them, so this file adds them next to the sandbox, test-only, without touching it:
 *
 * A small HTTP server (the "extension") answers some requests under the sandbox's own FHIR base (the
 * API sends them to the sandbox's URL; the API's outbound HTTP client, which tests may replace,
 * delivers those few to the extension instead, over real HTTP). It accepts only access tokens the
 * sandbox accepts (it asks the sandbox), and everything else still goes to the sandbox unchanged.
 *
 * What the sandbox would need to make this unnecessary is listed in the test report (issue #4).
 */

export const BIG_BINARY_BYTES = 10 * 1024 * 1024;

/** 10 MB of deterministic, incompressible bytes (every value 0-255, NULs included). */
export function bigBinary(): Buffer {
  const out = Buffer.alloc(BIG_BINARY_BYTES);
  let block = createHash('sha256').update('smart-launch binary seed').digest();
  for (let offset = 0; offset < out.length; offset += block.length) {
    block.copy(out, offset);
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

export const XML_DOCUMENT = Buffer.from(
  '<?xml version="1.0" encoding="UTF-8"?>\n<Patient xmlns="http://hl7.org/fhir"><id value="x"/><name><family value="Zoë &amp; ✓"/></name></Patient>\n',
  'utf8',
);
export const PDF_BYTES = Buffer.concat([Buffer.from('%PDF-1.7\n%\u00e2\u00e3\u00cf\u00d3\n', 'latin1'), Buffer.from([0, 1, 2, 255, 254, 13, 10, 0])]);

export interface ExtensionHit {
  readonly method: string;
  readonly path: string;
  readonly search: string;
  readonly headers: IncomingMessage['headers'];
  readonly body: Buffer;
}

export interface EhrExtension {
  readonly url: string;
  readonly hits: ExtensionHit[];
  readonly binary: Buffer;
  /** Requests of the `_test=401-once` kind answered 401 so far. */
  unauthorizedOnce: number;
  /** The outbound HTTP client for the local stack: records like `watchingFetch`, routes extension requests. */
  http(observed: Observed): HttpClient;
  /** Where the sandbox's FHIR base is (set once the stack is up). */
  sandboxFhirBase: string;
  close(): Promise<void>;
}

/** Does this request (as the API sends it, to the sandbox's URL) belong to the extension? */
function routed(url: URL, method: string, fhirBasePath: string): boolean {
  const path = url.pathname.slice(fhirBasePath.length);
  if (url.searchParams.has('_test')) return true;
  if (path.startsWith('/Binary/') || path.startsWith('/DocumentReference/')) return true;
  if (/\/\$[A-Za-z-]+$/.test(path)) return true;
  if (/^\/Patient\/[^/]+\/[A-Z][A-Za-z]+$/.test(path) && method === 'GET') return true;
  if (path.endsWith('/_search') && method === 'POST') return true;
  if (path.startsWith('/Basic')) return true;
  return false;
}

async function readAll(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export async function startEhrExtension(): Promise<EhrExtension> {
  const binary = bigBinary();
  let server: Server | undefined;
  const extension: EhrExtension = {
    url: '',
    hits: [],
    binary,
    unauthorizedOnce: 0,
    sandboxFhirBase: '',
    http(observed) {
      const watching = watchingFetch(observed);
      return async (url, init) => {
        const target = new URL(url);
        const base = new URL(extension.sandboxFhirBase);
        if (target.origin === base.origin && target.pathname.startsWith(base.pathname) && routed(target, init?.method ?? 'GET', base.pathname)) {
          const rerouted = `${extension.url}${target.pathname}${target.search}`;
          observed.requests.push(url);
          return fetch(rerouted, init);
        }
        return watching(url, init);
      };
    },
    async close() {
      server?.closeAllConnections();
      await new Promise<void>((done) => (server ? server.close(() => done()) : done()));
    },
  };

  /** The sandbox decides whether a token is good: the extension is part of the same EHR. */
  async function tokenAccepted(authorization: string | undefined): Promise<boolean> {
    if (!authorization?.startsWith('Bearer ')) return false;
    const probe = await fetch(`${extension.sandboxFhirBase}/Practitioner?_count=1`, { headers: { authorization } });
    await probe.arrayBuffer();
    return probe.status === 200;
  }

  /** Forwards to the sandbox as it is (used to add features on top of its answers). */
  async function sandbox(path: string, search: URLSearchParams, authorization: string | undefined): Promise<Response> {
    const query = search.toString();
    return fetch(`${extension.sandboxFhirBase}${path}${query ? `?${query}` : ''}`, { headers: authorization ? { authorization, accept: 'application/fhir+json' } : {} });
  }

  server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://extension.invalid');
      const body = await readAll(req);
      const rawSearch = url.search;
      extension.hits.push({ method: req.method ?? 'GET', path: url.pathname, search: url.search, headers: req.headers, body });
      const fhirPath = new URL(extension.sandboxFhirBase).pathname;
      const path = url.pathname.slice(fhirPath.length);
      const outcome = (status: number, code: string, text: string) => {
        res.writeHead(status, { 'content-type': 'application/fhir+json' });
        res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics: text }] }));
      };
      const test = url.searchParams.get('_test');
      if (test === 'drop') {
        // The EHR's connection breaks before it answers.
        req.socket.destroy();
        return;
      }
      if (test === 'slow') {
        await new Promise((resolve) => setTimeout(resolve, 3000));
      }
      if (test === '401-always') return outcome(401, 'login', 'this EHR refuses every token here');
      if (test === '401-once' && extension.unauthorizedOnce === 0) {
        extension.unauthorizedOnce++;
        return outcome(401, 'expired', 'token expired');
      }
      if (!(await tokenAccepted(req.headers.authorization))) return outcome(401, 'login', 'invalid token');
      url.searchParams.delete('_test');

      if (req.method === 'GET' && path === '/Binary/big') {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(binary.length), etag: 'W/"1"' });
        res.end(binary);
        return;
      }
      if (req.method === 'GET' && path === '/Binary/pdf') {
        res.writeHead(200, { 'content-type': 'application/pdf', 'set-cookie': 'EHRSESSION=x; Path=/', 'x-ehr-node': '7' });
        res.end(PDF_BYTES);
        return;
      }
      if (req.method === 'GET' && path === '/DocumentReference/xml') {
        res.writeHead(200, { 'content-type': 'application/fhir+xml; charset=utf-8', 'last-modified': 'Wed, 01 Jan 2025 00:00:00 GMT' });
        res.end(XML_DOCUMENT);
        return;
      }
      if (req.method === 'GET' && test === 'gzip') {
        // The sandbox's answer, gzip-compressed as many EHRs send it.
        const upstream = await sandbox(path, url.searchParams, req.headers.authorization);
        const text = Buffer.from(await upstream.arrayBuffer());
        const zipped = gzipSync(text);
        res.writeHead(upstream.status, { 'content-type': upstream.headers.get('content-type') ?? 'application/fhir+json', 'content-encoding': 'gzip', 'content-length': String(zipped.length) });
        res.end(zipped);
        return;
      }
      if (req.method === 'POST' && path.endsWith('/_search')) {
        if (!/^application\/x-www-form-urlencoded/.test(req.headers['content-type'] ?? '')) return outcome(415, 'not-supported', 'form body expected');
        const params = new URLSearchParams(body.toString('utf8'));
        for (const [k, v] of url.searchParams) params.append(k, v);
        const upstream = await sandbox(path.slice(0, -'/_search'.length), params, req.headers.authorization);
        res.writeHead(upstream.status, { 'content-type': upstream.headers.get('content-type') ?? 'application/fhir+json' });
        res.end(Buffer.from(await upstream.arrayBuffer()));
        return;
      }
      const everything = /^\/Patient\/([^/]+)\/\$everything$/.exec(path);
      if (everything && (req.method === 'GET' || req.method === 'POST')) {
        // The patient and its observations, from the sandbox, as one searchset with a link to page on.
        const upstream = await sandbox('/Observation', new URLSearchParams({ patient: everything[1]!, _count: url.searchParams.get('_count') ?? '10' }), req.headers.authorization);
        const bundle = (await upstream.json()) as { link?: unknown };
        res.writeHead(upstream.status, { 'content-type': 'application/fhir+json' });
        res.end(JSON.stringify(bundle));
        return;
      }
      const compartment = /^\/Patient\/([^/]+)\/([A-Z][A-Za-z]+)$/.exec(path);
      if (compartment && req.method === 'GET') {
        // A patient compartment search, answered as the equivalent type search.
        const params = new URLSearchParams(url.searchParams);
        params.set('patient', compartment[1]!);
        const upstream = await sandbox(`/${compartment[2]!}`, params, req.headers.authorization);
        res.writeHead(upstream.status, { 'content-type': upstream.headers.get('content-type') ?? 'application/fhir+json' });
        res.end(Buffer.from(await upstream.arrayBuffer()));
        return;
      }
      if (path.startsWith('/Basic')) {
        // A writable type: echoes what it received, so tests can prove bodies and headers arrive as sent.
        const digest = createHash('sha256').update(body).digest('hex');
        const status = req.method === 'POST' ? 201 : req.method === 'DELETE' ? 204 : 200;
        const headers: Record<string, string> = { 'content-type': 'application/fhir+json', etag: 'W/"2"' };
        if (req.method === 'POST' || req.method === 'PUT') headers.location = `${extension.sandboxFhirBase}/Basic/echo-1/_history/2`;
        res.writeHead(status, headers);
        res.end(
          status === 204
            ? undefined
            : JSON.stringify({
                resourceType: 'Basic',
                id: 'echo-1',
                extension: [
                  { url: 'urn:test:method', valueString: req.method },
                  { url: 'urn:test:sha256', valueString: digest },
                  { url: 'urn:test:content-type', valueString: req.headers['content-type'] ?? '' },
                  { url: 'urn:test:if-match', valueString: req.headers['if-match'] ?? '' },
                  { url: 'urn:test:query', valueString: rawSearch },
                ],
              }),
        );
        return;
      }
      if (req.method === 'GET') {
        // Anything else (after a `_test` switch): the sandbox's own answer.
        const upstream = await sandbox(path, url.searchParams, req.headers.authorization);
        res.writeHead(upstream.status, { 'content-type': upstream.headers.get('content-type') ?? 'application/fhir+json' });
        res.end(Buffer.from(await upstream.arrayBuffer()));
        return;
      }
      outcome(404, 'not-found', `the extension has nothing at ${path}`);
    })().catch((error: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(error));
    });
  });
  await new Promise<void>((done) => server!.listen(0, '127.0.0.1', () => done()));
  const address = server.address();
  (extension as { url: string }).url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  return extension;
}
