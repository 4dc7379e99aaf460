import type { IncomingMessage, ServerResponse } from 'node:http';
import { promisify } from 'node:util';
import { gzip as gzipCallback } from 'node:zlib';

/*
 * How the sandbox's FHIR answers go on the wire: the format a request asks for (FHIR JSON or XML, by
 * `_format` or `Accept`), gzip when `Accept-Encoding` allows it, and the `fhirDropConnection` fault
 * (the socket is destroyed half-way through the body).
 */

const gzip = promisify(gzipCallback);

export type FhirFormat = 'json' | 'xml';

export interface Negotiated {
  readonly format: FhirFormat;
  /**
   * True when the request named a FHIR format (`_format`, or a FHIR JSON/XML type in `Accept`). A
   * Binary read without one gets the raw content in its own content type (FHIR R4 Binary, "Serving
   * Binary Resources using the RESTful API").
   */
  readonly explicit: boolean;
  /** Compress FHIR answers with gzip. */
  readonly gzip: boolean;
}

const JSON_TYPES = new Set(['application/fhir+json', 'application/json+fhir', 'application/json', 'json']);
const XML_TYPES = new Set(['application/fhir+xml', 'application/xml+fhir', 'application/xml', 'text/xml', 'xml']);

interface Weighted {
  readonly value: string;
  readonly q: number;
}

/** A comma-separated header with `;q=` weights, best first (stable for equal weights). */
function weighted(header: string | undefined): Weighted[] {
  const out: Weighted[] = [];
  for (const part of (header ?? '').split(',')) {
    const [value = '', ...parameters] = part.split(';').map((p) => p.trim().toLowerCase());
    if (value === '') {
      continue;
    }
    const qParameter = parameters.find((p) => p.startsWith('q='));
    const q = qParameter === undefined ? 1 : Number(qParameter.slice(2));
    out.push({ value, q: Number.isFinite(q) ? q : 0 });
  }
  return out.sort((a, b) => b.q - a.q);
}

function formatOf(type: string): FhirFormat | undefined {
  return JSON_TYPES.has(type) ? 'json' : XML_TYPES.has(type) ? 'xml' : undefined;
}

/** The answer format of a request: `_format` first, then `Accept`; FHIR JSON by default. */
export function negotiate(req: IncomingMessage, formatParam: string | null): Negotiated {
  const gzipWanted = acceptsGzip(req.headers['accept-encoding']);
  if (formatParam !== null) {
    const format = formatOf(formatParam.split(';')[0]?.trim().toLowerCase() ?? '');
    if (format !== undefined) {
      return { format, explicit: true, gzip: gzipWanted };
    }
  }
  for (const { value, q } of weighted(req.headers.accept)) {
    const format = q > 0 ? formatOf(value) : undefined;
    if (format !== undefined) {
      return { format, explicit: true, gzip: gzipWanted };
    }
  }
  return { format: 'json', explicit: false, gzip: gzipWanted };
}

/** `gzip` (or `x-gzip`, or `*`) with a non-zero weight, unless gzip itself is refused with `q=0`. */
export function acceptsGzip(header: string | undefined): boolean {
  const codings = weighted(header);
  const named = codings.find((c) => c.value === 'gzip' || c.value === 'x-gzip');
  if (named !== undefined) {
    return named.q > 0;
  }
  return codings.some((c) => c.value === '*' && c.q > 0);
}

export const FHIR_CONTENT_TYPES: Readonly<Record<FhirFormat, string>> = {
  json: 'application/fhir+json; charset=utf-8',
  xml: 'application/fhir+xml; charset=utf-8',
};

export interface WriteOptions {
  /** Compress the body with gzip (`Content-Encoding: gzip`). */
  readonly gzip?: boolean;
  /** `fhirDropConnection`: send the head and half the body, then destroy the socket. */
  readonly drop?: boolean;
}

/** Writes a whole answer; `Content-Length` is set from the (possibly compressed) body. */
export async function writeAnswer(
  res: ServerResponse,
  status: number,
  headers: Readonly<Record<string, string>>,
  body: Buffer | undefined,
  options: WriteOptions = {},
): Promise<void> {
  let bytes = body;
  const out: Record<string, string | number> = { ...headers };
  if (bytes !== undefined && options.gzip === true) {
    bytes = await gzip(bytes);
    out['Content-Encoding'] = 'gzip';
  }
  if (bytes !== undefined) {
    out['Content-Length'] = bytes.length;
  }
  if (res.destroyed) {
    return;
  }
  if (options.drop === true) {
    res.writeHead(status, out);
    res.flushHeaders();
    const half = bytes === undefined ? Buffer.alloc(0) : bytes.subarray(0, Math.floor(bytes.length / 2));
    // Once the first half has left, the connection breaks before the rest: a truncated answer.
    if (half.length === 0) {
      setImmediate(() => res.socket?.destroy());
    } else {
      res.write(half, () => res.socket?.destroy());
    }
    return;
  }
  res.writeHead(status, out);
  res.end(bytes);
}

/** Waits `ms`, or less when the client goes away first; true when the client is still there. */
export function waitUnlessGone(res: ServerResponse, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const gone = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      res.off('close', gone);
      resolve(!res.destroyed);
    }, ms);
    res.once('close', gone);
  });
}
