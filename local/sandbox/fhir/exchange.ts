import type { IncomingMessage, ServerResponse } from 'node:http';
import type { OperationOutcome, OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import { FHIR_CONTENT_TYPES, writeAnswer } from '../fhir-wire.js';
import type { Negotiated } from '../fhir-wire.js';
import { toFhirXml } from '../fhir-xml.js';
import { readBody } from '../http-util.js';

/*
 * One FHIR request and its answer: the typed error every module throws (FhirError, answered as an
 * OperationOutcome), the negotiated wire format (fhir-wire.ts), FHIR answers with the headers every
 * answer carries, and the small request helpers (query, headers, body).
 */

/** Search parameters as medplum takes them. */
export type Query = Record<string, string[]>;

/** Request bodies (resources, JSON Patches, `_search` forms, operation Parameters). */
export const MAX_REQUEST_BODY_BYTES = 8 * 1024 * 1024;

export const FORM_TYPE = /^application\/x-www-form-urlencoded\s*(;|$)/i;
export const FHIR_JSON_TYPE = /^application\/(fhir\+)?json\s*(;|$)/i;
export const JSON_PATCH_TYPE = /^application\/json-patch\+json\s*(;|$)/i;

/** Bearer tokens, no cookies: any origin may call the FHIR API from a browser. */
export const CORS_HEADERS: Readonly<Record<string, string>> = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Expose-Headers': 'ETag, Location, WWW-Authenticate',
};

export class FhirError extends Error {
  readonly status: number;
  readonly issueCode: OperationOutcomeIssue['code'];
  readonly headers: Readonly<Record<string, string>>;
  constructor(
    status: number,
    issueCode: OperationOutcomeIssue['code'],
    message: string,
    headers: Readonly<Record<string, string>> = {},
    errorOptions?: ErrorOptions,
  ) {
    super(message, errorOptions);
    this.name = 'FhirError';
    this.status = status;
    this.issueCode = issueCode;
    this.headers = headers;
  }
}

export function outcome(issueCode: OperationOutcomeIssue['code'], diagnostics: string): OperationOutcome {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: issueCode, diagnostics }] };
}

/** One request being answered: how (format, gzip) and whether the answer is to be cut off. */
export interface Exchange {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly wire: Negotiated;
  /** `faults.fhirDropConnection` was on when the request was taken. */
  drop: boolean;
}

/** A FHIR answer (JSON or XML as negotiated, gzip when accepted); no body for `undefined`. */
export async function sendFhir(ex: Exchange, status: number, body: Resource | undefined, headers: Readonly<Record<string, string>> = {}): Promise<void> {
  const common = {
    // Patient data: never cache.
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    Vary: 'Accept, Accept-Encoding',
    ...CORS_HEADERS,
  };
  if (body === undefined) {
    await writeAnswer(ex.res, status, { ...common, ...headers }, undefined, { drop: ex.drop });
    return;
  }
  const text = ex.wire.format === 'xml' ? toFhirXml(body) : JSON.stringify(body);
  await writeAnswer(ex.res, status, { 'Content-Type': FHIR_CONTENT_TYPES[ex.wire.format], ...common, ...headers }, Buffer.from(text, 'utf8'), {
    gzip: ex.wire.gzip,
    drop: ex.drop,
  });
}

/** RFC 6750 §3: no error attribute when the request carried no token at all. */
export function bearerChallenge(error?: { code: string; description: string }): string {
  const realm = 'Bearer realm="sandbox-fhir"';
  if (!error) {
    return realm;
  }
  return `${realm}, error="${error.code}", error_description="${error.description.replaceAll('"', "'")}"`;
}

/** Search parameters as medplum takes them; `_format` is for the answer, not the search. */
export function toQuery(params: URLSearchParams, into: Query = {}): Query {
  for (const [key, value] of params) {
    if (key !== '_format') {
      (into[key] ??= []).push(value);
    }
  }
  return into;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `W/"3"` or `"3"` → `3`. */
export function ifMatchVersion(req: IncomingMessage): string | undefined {
  const header = req.headers['if-match'];
  if (header === undefined) {
    return undefined;
  }
  const match = /^(?:W\/)?"([^"]*)"$/.exec(header.trim());
  if (!match) {
    throw new FhirError(400, 'invalid', 'If-Match must be an entity tag such as W/"1"');
  }
  return match[1];
}

/** A request header as one string ('' when absent; repeated ones joined). */
export function headerValue(req: IncomingMessage, name: string): string {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(', ') : (value ?? '');
}

export function versionHeaders(resource: Resource): Record<string, string> {
  const headers: Record<string, string> = {};
  if (resource.meta?.versionId) {
    headers.ETag = `W/"${resource.meta.versionId}"`;
  }
  if (resource.meta?.lastUpdated) {
    headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  }
  return headers;
}

/** The request body, at most MAX_REQUEST_BODY_BYTES (413 beyond). */
export async function readRequestBody(req: IncomingMessage): Promise<Buffer> {
  try {
    return await readBody(req, MAX_REQUEST_BODY_BYTES);
  } catch (error) {
    throw new FhirError(413, 'too-costly', `the request body is larger than ${MAX_REQUEST_BODY_BYTES} bytes`, {}, { cause: error });
  }
}

/**
 * The request body as JSON, sent with a Content-Type `type` matches: 415 with `sendAs` otherwise,
 * 400 when it does not parse, 413 when it is too large.
 */
export async function readJsonBody(req: IncomingMessage, type: RegExp, sendAs: string): Promise<unknown> {
  if (!type.test(req.headers['content-type'] ?? '')) {
    throw new FhirError(415, 'not-supported', sendAs);
  }
  const body = await readRequestBody(req);
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new FhirError(400, 'structure', 'the body is not JSON');
  }
}

export function methodNotAllowed(allow: string, what: string): FhirError {
  return new FhirError(405, 'not-supported', `${what} takes ${allow}`, { Allow: allow });
}
