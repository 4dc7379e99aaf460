import fc from 'fast-check';
import { expect } from 'vitest';
import type { CoreDeps } from '../../shared/core/deps.js';
import { ERRORS } from '../../shared/core/errors.js';
import type { ApiEvent, ApiResult } from '../../shared/http/api-event.js';
import { BINDING_COOKIE } from '../../shared/http/cookies.js';
import { forceLogLevel } from '../../shared/http/logger.js';
import { lambdaContext } from '../fixtures/api-event.js';
import { sampleConfig, sampleIssuer } from '../fakes/deps.js';
import { harness, signIn, type Harness } from '../fakes/launch-flow.js';

/**
 * Property-based fuzzing of every route (what a browser or an attacker sends) and of what the EHR
 * answers. `npm test` runs a few cases per property; `npm run fuzz` sets FUZZ_RUNS (10,000 by
 * default there) and prints the counts.
 */
export const FUZZ_RUNS = Number(process.env.FUZZ_RUNS ?? 40);
/** Fixed unless FUZZ_SEED is set, so a failure in `npm test` reproduces. */
export const FUZZ_SEED = process.env.FUZZ_SEED === undefined ? 1_337 : Number(process.env.FUZZ_SEED);

/** The longest log line any request may cause (a 3 MB input must not become a 3 MB line). */
export const MAX_LOG_LINE = 8 * 1024;
/** The largest error answer we produce ourselves. */
export const MAX_ERROR_BODY = 8 * 1024;

// ---------------------------------------------------------------------------------------------
// Logs: captured from stdout/stderr (Powertools writes JSON lines there).

const captured: string[] = [];
let restore: (() => void) | undefined;

/**
 * Starts capturing log output and puts every handler logger at INFO, whenever its module loaded in
 * this process (a worker shared with other files may have loaded them at another level);
 * `stopCapturingLogs` puts both back. `expectHandlerLogs` proves the lines do arrive.
 */
export function captureLogs(): void {
  const restoreLevel = forceLogLevel('INFO');
  const out = process.stdout.write.bind(process.stdout);
  const err = process.stderr.write.bind(process.stderr);
  const hook = (chunk: string | Uint8Array) => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    // Only our JSON log lines are kept (and not echoed: 10,000 cases would flood the terminal).
    if (text.startsWith('{') && text.includes('"smart-launch')) {
      captured.push(text);
      return true;
    }
    return false;
  };
  process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => hook(chunk) || (out as (...a: unknown[]) => boolean)(chunk, ...rest)) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => hook(chunk) || (err as (...a: unknown[]) => boolean)(chunk, ...rest)) as typeof process.stderr.write;
  restore = () => {
    process.stdout.write = out;
    process.stderr.write = err;
    restoreLevel();
    captured.length = 0;
  };
}

export function stopCapturingLogs(): void {
  restore?.();
  restore = undefined;
}

/**
 * The log checks (no line grows with the input) hold only if the handlers' lines reach the capture:
 * one refused request through `handler` must leave its lines there.
 */
export async function expectHandlerLogs(handler: (event: ApiEvent, context: typeof lambdaContext) => Promise<ApiResult>, resource: string): Promise<void> {
  drainLogs();
  await handler(event({ resource, path: resource, method: 'GET', query: { iss: ['https://unknown.example/fhir'] } }), lambdaContext);
  expect(drainLogs().length, `no log line of ${resource} was captured`).toBeGreaterThan(0);
}

/** The log lines written since the last call (and forgets them). */
export function drainLogs(): string[] {
  const lines = captured.flatMap((chunk) => chunk.split('\n')).filter((line) => line !== '');
  captured.length = 0;
  return lines;
}

// ---------------------------------------------------------------------------------------------
// A signed-in world: fake EHR, memory store, one live session.

export interface World {
  readonly h: Harness;
  readonly deps: CoreDeps;
  readonly getDeps: () => Promise<CoreDeps>;
  readonly sessionId: string;
  readonly cookie: string;
}

export async function world(): Promise<World> {
  const h = await harness({
    config: sampleConfig({ issuers: [sampleIssuer({ scope: 'launch openid fhirUser patient/*.cruds offline_access', writes: { enabled: true } })] }),
  });
  const { callback, launch } = await signIn(h);
  return { h, deps: h.deps, getDeps: () => Promise.resolve(h.deps), sessionId: callback.sessionId, cookie: launch.bindingSecret! };
}

/** What is stored, as comparable text (records and their revisions, sealed bytes included). */
export function storedSnapshot(w: World): string {
  return JSON.stringify(w.h.deps.store.records(), (_key, value: unknown) => (value instanceof Uint8Array ? Buffer.from(value).toString('base64') : value));
}

// ---------------------------------------------------------------------------------------------
// Events

export interface EventInput {
  readonly resource: string;
  readonly path: string;
  readonly method: string;
  readonly pathParameters?: Record<string, string> | null;
  readonly query?: Record<string, string[]>;
  readonly headers?: Record<string, string[]>;
  readonly body?: string | null;
  readonly isBase64Encoded?: boolean;
}

let counter = 0;

export function event(input: EventInput): ApiEvent {
  const multiValueHeaders = input.headers ?? {};
  const headers = Object.fromEntries(Object.entries(multiValueHeaders).map(([k, v]) => [k, v.at(-1) ?? '']));
  const query = input.query ?? {};
  return {
    resource: input.resource,
    path: input.path,
    httpMethod: input.method,
    headers,
    multiValueHeaders,
    queryStringParameters: Object.keys(query).length ? Object.fromEntries(Object.entries(query).map(([k, v]) => [k, v.at(-1) ?? ''])) : null,
    multiValueQueryStringParameters: Object.keys(query).length ? query : null,
    pathParameters: input.pathParameters ?? null,
    stageVariables: null,
    body: input.body ?? null,
    isBase64Encoded: input.isBase64Encoded ?? false,
    requestContext: { requestId: `fuzz-${++counter}`, httpMethod: input.method, path: input.path, resourcePath: input.resource, stage: 'fuzz' } as ApiEvent['requestContext'],
  };
}

export async function call(handler: (event: ApiEvent, context: typeof lambdaContext) => Promise<ApiResult>, e: ApiEvent): Promise<ApiResult> {
  return handler(e, lambdaContext);
}

// ---------------------------------------------------------------------------------------------
// Arbitraries

/** Hostile text: anything, control characters, encodings, path tricks, and now and then megabytes. */
export const text: fc.Arbitrary<string> = fc.oneof(
  { weight: 30, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 15, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  {
    weight: 15,
    arbitrary: fc.constantFrom('..', '%2e%2e', '%2F', '\u0000', '\r\nSet-Cookie: x=1', '<script>alert(1)</script>', 'https://evil.example/', '//evil.example', '${jndi:x}', 'Patient', 'Patient/123', '_id', 'A'.repeat(43), '\uffff', '\ud800', ' ', ''),
  },
  { weight: 1, arbitrary: fc.constantFrom(16 * 1024, 256 * 1024, 1024 * 1024).map((n) => 'x'.repeat(n)) },
);

export const query: fc.Arbitrary<Record<string, string[]>> = fc.dictionary(text, fc.array(text, { minLength: 1, maxLength: 3 }), { maxKeys: 5 });

export const headers: fc.Arbitrary<Record<string, string[]>> = fc.dictionary(
  fc.oneof(fc.constantFrom('accept', 'content-type', 'prefer', 'if-match', 'if-none-match', 'authorization', 'cookie', 'origin', 'x-forwarded-for', 'content-encoding', 'range'), fc.string({ maxLength: 20 })),
  fc.array(text, { minLength: 1, maxLength: 2 }),
  { maxKeys: 5 },
);

/** A body: nothing, text, JSON with hostile members (a resourceType of megabytes among them), or base64 bytes. */
export const body: fc.Arbitrary<{ body: string | null; isBase64Encoded: boolean }> = fc.oneof(
  fc.constant({ body: null, isBase64Encoded: false }),
  text.map((b) => ({ body: b, isBase64Encoded: false })),
  fc.record({ resourceType: text, id: fc.option(text), extra: fc.anything({ maxDepth: 2 }) }).map((r) => ({ body: JSON.stringify(r), isBase64Encoded: false })),
  fc.uint8Array({ maxLength: 200 }).map((b) => ({ body: Buffer.from(b).toString('base64'), isBase64Encoded: true })),
);

// ---------------------------------------------------------------------------------------------
// Checks every answer must pass

export type Format = 'html' | 'json' | 'fhir';

/** Our own error code in an answer, if it is one of ours. */
export function ourCode(result: ApiResult, format: Format): string | undefined {
  if (format === 'html') return /Error code <code>([A-Z_]+)<\/code>/.exec(result.body ?? '')?.[1];
  try {
    const parsed = JSON.parse(result.isBase64Encoded ? Buffer.from(result.body ?? '', 'base64').toString('utf8') : (result.body ?? '')) as {
      error?: { code?: string };
      issue?: Array<{ details?: { coding?: Array<{ system?: string; code?: string }> } }>;
    };
    if (format === 'json') return parsed.error?.code;
    const coding = parsed.issue?.[0]?.details?.coding?.[0];
    return coding?.system === 'urn:smart-launch:error' ? coding.code : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Invariant 9 and the answer's form: a status in range and under 500 (input never causes a 5xx),
 * never cacheable, a correlation id, a known code on every error of ours in the route's format,
 * a bounded error body, and bounded log lines.
 */
export function checkAnswer(result: ApiResult, format: Format, options: { allow5xx?: readonly number[]; preflight?: boolean } = {}): { status: number; code: string | undefined } {
  const status = result.statusCode;
  expect(Number.isInteger(status) && status >= 200 && status <= 599).toBe(true);
  const headers = Object.fromEntries(Object.entries(result.headers ?? {}).map(([k, v]) => [k.toLowerCase(), String(v)]));
  if (options.preflight === true && status === 204) {
    // A CORS preflight answer: no body, nothing else to check.
    expect(result.body ?? '').toBe('');
    drainLogs();
    return { status, code: undefined };
  }
  expect(headers['cache-control']).toBe('no-store');
  expect(headers['x-correlation-id']).toMatch(/^fuzz-\d+$/);
  const code = ourCode(result, format);
  if (status >= 400 && code !== undefined) {
    expect(Object.keys(ERRORS)).toContain(code);
    expect((result.body ?? '').length).toBeLessThanOrEqual(MAX_ERROR_BODY);
  }
  if (format !== 'fhir' || code !== undefined) {
    if (status >= 400) expect(code).toBeDefined();
  }
  if (status >= 500) {
    expect(code).not.toBe('INTERNAL');
    expect(options.allow5xx ?? []).toContain(status);
  }
  if (status === 302 && format !== 'fhir') expect(headers.location).toBeDefined();
  for (const line of drainLogs()) {
    expect(line.length).toBeLessThanOrEqual(MAX_LOG_LINE);
    expect(() => JSON.parse(line)).not.toThrow();
  }
  return { status, code };
}

/** Counts of answers by status (and code), printed by `npm run fuzz`. */
export class Tally {
  readonly #counts = new Map<string, number>();
  cases = 0;

  add(status: number, code: string | undefined): void {
    this.cases++;
    const key = code === undefined ? String(status) : `${status} ${code}`;
    this.#counts.set(key, (this.#counts.get(key) ?? 0) + 1);
  }

  report(name: string): void {
    if (process.env.FUZZ_RUNS === undefined) return;
    const lines = [...this.#counts.entries()].sort((a, b) => b[1] - a[1]).map(([key, n]) => `    ${String(n).padStart(6)}  ${key}`);
    process.stdout.write(`fuzz ${name}: ${this.cases} cases\n${lines.join('\n')}\n`);
  }
}

export { BINDING_COOKIE, fc };
