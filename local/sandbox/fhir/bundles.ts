import { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import type { FhirContext } from './context.js';
import { FHIR_JSON_TYPE, FhirError, isRecord, outcome, readJsonBody, sendFhir } from './exchange.js';
import type { Exchange } from './exchange.js';

/*
 * Batch and transaction Bundles (`POST [base]`): each entry runs as the single request it describes,
 * through the same routing and SMART access checks, with the outer request's token. A batch answers
 * every entry (errors as OperationOutcome entries); a transaction stops at the first failing entry
 * and answers its error. The sandbox does not roll back the entries a failed transaction already
 * applied, nor resolve `urn:uuid:` references between entries (see README "Batch and transaction").
 */

/** The most entries the sandbox takes in one Bundle. */
export const MAX_SANDBOX_BUNDLE_ENTRIES = 1000;

/** Routes one request below the FHIR base (the FHIR server's own `route`). */
export type Dispatch = (ex: Exchange, subPath: string, params: URLSearchParams) => Promise<void>;

/** A response that keeps what an entry's request answered instead of writing it to a socket. */
class CapturedResponse extends EventEmitter {
  statusCode = 0;
  headers: Record<string, string> = {};
  readonly chunks: Buffer[] = [];
  headersSent = false;
  destroyed = false;
  socket = undefined;

  writeHead(status: number, headers: Record<string, string | number> = {}): this {
    this.statusCode = status;
    for (const [name, value] of Object.entries(headers)) this.headers[name.toLowerCase()] = String(value);
    this.headersSent = true;
    return this;
  }

  flushHeaders(): void {}

  write(chunk: Buffer, callback?: () => void): boolean {
    this.chunks.push(Buffer.from(chunk));
    callback?.();
    return true;
  }

  end(chunk?: Buffer): this {
    if (chunk !== undefined) this.chunks.push(Buffer.from(chunk));
    this.emit('finish');
    return this;
  }
}

interface EntryAnswer {
  readonly status: number;
  readonly entry: Record<string, unknown>;
}

async function runEntry(ctx: FhirContext, outer: Exchange, entry: unknown, dispatch: Dispatch): Promise<EntryAnswer> {
  const request = isRecord(entry) ? entry.request : undefined;
  if (!isRecord(request) || typeof request.method !== 'string' || typeof request.url !== 'string') {
    throw new FhirError(400, 'invalid', 'each entry needs request.method and request.url');
  }
  const base = `${ctx.fhirBaseUrl.replace(/\/+$/, '')}/`;
  const url = request.url.startsWith(base) ? request.url.slice(base.length) : request.url;
  const [path = '', search = ''] = url.split(/\?(.*)/s, 2);
  if (path === '' || path.startsWith('/') || /^[a-z][a-z0-9+.-]*:/i.test(path)) {
    throw new FhirError(400, 'invalid', 'an entry URL must be relative to the FHIR base');
  }
  const resource = (entry as Record<string, unknown>).resource;
  const headers: Record<string, string> = { accept: 'application/fhir+json' };
  const authorization = outer.req.headers.authorization;
  if (authorization !== undefined) headers.authorization = authorization;
  if (resource !== undefined) headers['content-type'] = 'application/fhir+json';
  for (const [field, header] of [['ifMatch', 'if-match'], ['ifNoneExist', 'if-none-exist']] as const) {
    if (typeof request[field] === 'string') headers[header] = request[field] as string;
  }
  const body = resource === undefined ? [] : [Buffer.from(JSON.stringify(resource), 'utf8')];
  const req = Object.assign(Readable.from(body), { method: request.method.toUpperCase(), url: `/${url}`, headers }) as unknown as IncomingMessage;
  const res = new CapturedResponse();
  const ex: Exchange = { req, res: res as unknown as ServerResponse, wire: { format: 'json', explicit: true, gzip: false }, drop: false };
  try {
    await dispatch(ex, `/${path}`, new URLSearchParams(search));
  } catch (error) {
    if (!(error instanceof FhirError)) throw error;
    return { status: error.status, entry: { response: { status: String(error.status), outcome: outcome(error.issueCode, error.message) } } };
  }
  const text = Buffer.concat(res.chunks).toString('utf8');
  const answered = text === '' ? undefined : (JSON.parse(text) as Record<string, unknown>);
  const response: Record<string, unknown> = { status: String(res.statusCode) };
  if (res.headers.location !== undefined) response.location = res.headers.location;
  if (res.headers.etag !== undefined) response.etag = res.headers.etag;
  if (res.statusCode >= 400) {
    return { status: res.statusCode, entry: { response: { ...response, ...(answered ? { outcome: answered } : {}) } } };
  }
  const fullUrl = answered && typeof answered.resourceType === 'string' && typeof answered.id === 'string' ? `${base}${answered.resourceType}/${answered.id}` : undefined;
  return { status: res.statusCode, entry: { ...(fullUrl ? { fullUrl } : {}), ...(answered ? { resource: answered } : {}), response } };
}

/** `POST [base]` with a batch or transaction Bundle (FHIR JSON). */
export async function batchOrTransaction(ctx: FhirContext, ex: Exchange, dispatch: Dispatch): Promise<void> {
  const bundle = await readJsonBody(ex.req, FHIR_JSON_TYPE, 'send the Bundle as FHIR JSON (Content-Type: application/fhir+json)');
  if (!isRecord(bundle) || bundle.resourceType !== 'Bundle' || (bundle.type !== 'batch' && bundle.type !== 'transaction')) {
    throw new FhirError(400, 'invalid', 'POST [base] takes a Bundle of type batch or transaction');
  }
  const entries = Array.isArray(bundle.entry) ? bundle.entry : [];
  if (entries.length > MAX_SANDBOX_BUNDLE_ENTRIES) {
    throw new FhirError(413, 'too-costly', `at most ${MAX_SANDBOX_BUNDLE_ENTRIES} entries`);
  }
  const answers: Record<string, unknown>[] = [];
  for (const entry of entries) {
    const answer = await runEntry(ctx, ex, entry, dispatch);
    if (bundle.type === 'transaction' && answer.status >= 400) {
      const failed = (answer.entry.response as { outcome?: unknown }).outcome;
      await sendFhir(ex, answer.status, (failed as never) ?? outcome('processing', `transaction entry ${answers.length} failed`));
      return;
    }
    answers.push(answer.entry);
  }
  await sendFhir(ex, 200, { resourceType: 'Bundle', type: `${bundle.type}-response`, entry: answers } as never);
}
