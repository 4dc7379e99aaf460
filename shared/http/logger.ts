import { Logger } from '@aws-lambda-powertools/logger';
import type { LogLevel } from '@aws-lambda-powertools/logger/types';

/** Every logger `createLogger` made (one per handler module, kept for the life of the process), with the level it was made with. */
const made = new Map<Logger, LogLevel>();
let forcedLevel: LogLevel | undefined;

/**
 * Structured JSON logs (Powertools). Every line carries the correlation id of its request. What is
 * logged is chosen field by field at the call sites: codes, statuses, durations, hashed keys; never
 * tokens, codes, cookies, session ids, query strings, bodies or patient identifiers.
 */
export function createLogger(serviceName: string): Logger {
  const logger = new RequestLogger({ serviceName, logLevel: (process.env.LOG_LEVEL as 'INFO' | undefined) ?? 'INFO' });
  made.set(logger, logger.getLevelName());
  if (forcedLevel !== undefined) logger.setLogLevel(forcedLevel);
  return logger;
}

/** The levels a logger takes, most verbose first (Powertools' own names). */
export const LOG_LEVELS = ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'CRITICAL', 'SILENT'] as const;
export type LogLevelName = (typeof LOG_LEVELS)[number];

/**
 * Sets the level of every logger `createLogger` has made, and of those it makes until the returned
 * function is called; that function puts each back to the level it was made with (`LOG_LEVEL`).
 * Loggers read `LOG_LEVEL` when the handler modules load, so a level chosen later goes through here:
 * `npm start -- --log-level DEBUG` (local/cli.ts), and tests that read the lines of handlers which
 * may have loaded earlier in the same process. On Lambda the level is the function's `LOG_LEVEL`.
 */
export function forceLogLevel(level: LogLevel): () => void {
  forcedLevel = level;
  for (const logger of made.keys()) logger.setLogLevel(level);
  return () => {
    forcedLevel = undefined;
    for (const [logger, own] of made) logger.setLogLevel(own);
  };
}

/** Keys Powertools refuses in a log call (its `ReservedKeys`) or places itself (its base attributes). */
const OWN_KEYS = new Set([
  'level',
  'message',
  'sampling_rate',
  'service',
  'timestamp',
  'cold_start',
  'function_arn',
  'function_memory_size',
  'function_name',
  'function_request_id',
  'xray_trace_id',
  'tenant_id',
]);

/** Powertools' INFO threshold (`LogLevelThreshold.INFO`). */
const INFO = 12;

type Flat = Record<string, string | number | boolean | null | undefined>;

/** A plain object whose own values are all JSON primitives (what Powertools prints without its replacer doing anything). */
function isFlat(value: unknown): value is Flat {
  if (typeof value !== 'object' || value === null || Object.getPrototypeOf(value) !== Object.prototype) return false;
  for (const key in value) {
    if (OWN_KEYS.has(key)) return false;
    const field = (value as Record<string, unknown>)[key];
    const type = typeof field;
    if (field !== null && field !== undefined && type !== 'string' && type !== 'number' && type !== 'boolean') return false;
  }
  return true;
}

/** Powertools' `getXRayTraceIdFromEnv` (not exported by the package): the `Root` of the invocation's trace header. */
function xrayTraceId(): string | undefined {
  const header =
    (globalThis as { awslambda?: { InvokeStore?: { getXRayTraceId(): string | undefined } } }).awslambda?.InvokeStore?.getXRayTraceId() ??
    process.env._X_AMZN_TRACE_ID?.trim() ??
    '';
  if (header === '') return undefined;
  if (!header.includes('=')) return header;
  for (const field of header.split(';')) {
    const [key, value] = field.split('=');
    if (key === 'Root') return value;
  }
  return undefined;
}

/** What the Logger keeps privately and prints on every line (read, never changed). */
interface LoggerInternals {
  readonly console?: Console;
  readonly logIndentation?: number;
  readonly powertoolsLogData?: { readonly serviceName?: string; readonly sampleRateValue?: number };
}

/**
 * The Powertools Logger, with a direct path for the common line: an INFO line whose fields are flat
 * primitives, on a logger whose only attributes are the request's keys (`appendKeys`). Powertools
 * builds such a line through an attribute store, two trace-id lookups, a formatter, a deep merge, an
 * empty-key pass and a replacer (120-180 µs per line measured on a proxied read); this path writes the
 * very same JSON (same keys, same order, empty values left out, same console, same stream) from one
 * object. Anything else (warnings and errors, nested fields, Lambda context added, persistent keys,
 * development mode, a time zone other than UTC, concurrent invocations in one process) goes through
 * Powertools itself. `test/http/logger.test.ts` compares the two outputs line for line.
 */
export class RequestLogger extends Logger {
  /** The temporary keys appended since the last reset, as Powertools holds them; `undefined` once unknown. */
  #keys: Flat | undefined = {};
  /** Whether the direct path may be used at all (decided once: options and environment of the process). */
  #direct = false;

  constructor(options: ConstructorParameters<typeof Logger>[0]) {
    super(options);
    const internals = this as unknown as LoggerInternals;
    // Per-invocation attribute stores (several invocations at once) and development mode (global console, indentation) stay with Powertools.
    // The internals read below are checked, not assumed: a Powertools release that keeps them
    // elsewhere leaves every line to Powertools (and fails test/http/logger.test.ts).
    this.#direct =
      typeof internals.console?.info === 'function' &&
      typeof internals.powertoolsLogData === 'object' &&
      typeof internals.logIndentation === 'number' &&
      (process.env.AWS_LAMBDA_MAX_CONCURRENCY ?? '') === '' &&
      internals.logIndentation === 0 &&
      internals.console !== console &&
      Object.keys(this.getPersistentLogAttributes()).length === 0 &&
      options?.logFormatter === undefined &&
      options?.jsonReplacerFn === undefined &&
      options?.logRecordOrder === undefined &&
      options?.logBufferOptions === undefined;
  }

  /**
   * On the direct path the request's keys are kept here only, and handed to Powertools (reset, then
   * one append of the same keys: the same attribute store as the calls themselves leave) just before
   * anything of Powertools reads them: a line it writes, a child logger, a key removed, the
   * correlation id asked for. A request whose only line is the direct one never touches its
   * per-invocation attribute store (two store look-ups, a deep merge and a key map per call).
   */
  #unsynced = false;

  #sync(): void {
    if (!this.#unsynced) return;
    this.#unsynced = false;
    super.resetKeys();
    if (this.#keys !== undefined && Object.keys(this.#keys).length > 0) super.appendKeys(this.#keys);
  }

  override appendKeys(attributes: Parameters<Logger['appendKeys']>[0]): void {
    // Keys set to nothing are merged differently by Powertools (and never appended here): left to it.
    if (this.#keys === undefined || !isFlat(attributes) || Object.values(attributes).some((value) => value === undefined || value === null)) {
      this.#sync();
      super.appendKeys(attributes);
      this.#keys = undefined;
      return;
    }
    if (!this.#direct) {
      super.appendKeys(attributes);
      Object.assign(this.#keys, attributes);
      return;
    }
    Object.assign(this.#keys, attributes);
    this.#unsynced = true;
  }

  override resetKeys(): void {
    this.#keys = {};
    if (this.#direct) {
      this.#unsynced = true;
      return;
    }
    super.resetKeys();
  }

  override removeKeys(keys: string[]): void {
    this.#sync();
    super.removeKeys(keys);
    this.#keys = undefined;
  }

  override appendPersistentKeys(attributes: Parameters<Logger['appendPersistentKeys']>[0]): void {
    this.#sync();
    super.appendPersistentKeys(attributes);
    this.#direct = false;
  }

  override setPersistentLogAttributes(attributes: Parameters<Logger['setPersistentLogAttributes']>[0]): void {
    this.#sync();
    super.setPersistentLogAttributes(attributes);
    this.#direct = false;
  }

  override addContext(context: Parameters<Logger['addContext']>[0]): void {
    this.#sync();
    super.addContext(context);
    this.#direct = false;
  }

  override createChild(options?: Parameters<Logger['createChild']>[0]): Logger {
    this.#sync();
    return super.createChild(options);
  }

  override getCorrelationId(): unknown {
    this.#sync();
    return super.getCorrelationId();
  }

  /** Every line Powertools writes itself (any level) is built here: its attribute store is brought up to date first. */
  protected override createAndPopulateLogItem(...args: Parameters<Logger['createAndPopulateLogItem']>): ReturnType<Logger['createAndPopulateLogItem']> {
    // Also called by Powertools' own constructor (lines logged while it starts), before this class's fields exist.
    if (#unsynced in this) this.#sync();
    return super.createAndPopulateLogItem(...args);
  }

  override info(...[input, ...extraInput]: Parameters<Logger['info']>): void {
    const fields = extraInput.length === 0 ? {} : extraInput.length === 1 ? extraInput[0] : undefined;
    const keys = this.#keys;
    const zone = process.env.TZ;
    if (
      !this.#direct ||
      keys === undefined ||
      typeof input !== 'string' ||
      !isFlat(fields) ||
      Object.keys(fields).some((key) => key in keys) ||
      this.level > INFO ||
      (zone !== undefined && zone.trim() !== '' && !zone.includes('UTC'))
    ) {
      super.info(input, ...extraInput);
      return;
    }
    const internals = this as unknown as LoggerInternals;
    const data = internals.powertoolsLogData!;
    // Powertools' order (its base attributes, then the appended keys, then the call's fields), leaving
    // out every top-level value that is undefined, null or ''.
    const line: Record<string, unknown> = { level: 'INFO' };
    if (input !== '') line.message = input;
    line.timestamp = new Date().toISOString();
    if (data.serviceName) line.service = data.serviceName;
    if (data.sampleRateValue !== undefined && data.sampleRateValue !== null) line.sampling_rate = data.sampleRateValue;
    const traceId = xrayTraceId();
    if (traceId) line.xray_trace_id = traceId;
    for (const key in keys) {
      const value = keys[key];
      if (value !== undefined && value !== null && value !== '') line[key] = value;
    }
    for (const key in fields) {
      const value = fields[key];
      if (value !== undefined && value !== null && value !== '') line[key] = value;
    }
    internals.console!.info(JSON.stringify(line));
  }
}
