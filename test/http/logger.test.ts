import { Logger } from '@aws-lambda-powertools/logger';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger, forceLogLevel, RequestLogger } from '../../shared/http/logger.js';

/**
 * The request logger writes its common INFO lines itself: they must be exactly the lines Powertools
 * writes for the same call (same keys, order and values), on the same stream.
 */

const ENV_KEYS = ['_X_AMZN_TRACE_ID', 'TZ', 'POWERTOOLS_DEV', 'AWS_LAMBDA_MAX_CONCURRENCY'] as const;
const savedEnv = Object.fromEntries(ENV_KEYS.map((key) => [key, process.env[key]]));

afterEach(() => {
  for (const key of ENV_KEYS) {
    if (savedEnv[key] === undefined) delete process.env[key];
    else process.env[key] = savedEnv[key];
  }
  vi.useRealTimers();
  vi.restoreAllMocks();
});

/** What `act` writes to stdout and stderr, line by line. */
function captured(act: () => void): string[] {
  const out: string[] = [];
  const stdout = process.stdout.write;
  const stderr = process.stderr.write;
  const capture = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    out.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    const callback = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
    callback?.();
    return true;
  }) as typeof process.stdout.write;
  process.stdout.write = capture;
  process.stderr.write = capture;
  try {
    act();
  } finally {
    process.stdout.write = stdout;
    process.stderr.write = stderr;
  }
  return out.join('').split('\n').filter((line) => line !== '');
}

type Call = (logger: Logger) => void;

/** The same calls on a Powertools Logger and on the request logger, at the same instant: the same output. */
function expectSameLines(calls: Call, options: { serviceName: string } = { serviceName: 'smart-launch-fhir-proxy' }): string[] {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(new Date('2026-03-01T10:20:30.456Z'));
  const theirs = captured(() => calls(new Logger({ ...options, logLevel: 'INFO' })));
  const ours = captured(() => calls(new RequestLogger({ ...options, logLevel: 'INFO' })));
  expect(ours).toEqual(theirs);
  expect(ours.length).toBeGreaterThan(0);
  return ours;
}

const requestKeys: Call = (logger) => {
  logger.resetKeys();
  logger.appendKeys({ correlation_id: '3c1f6b0e-8a5e-4d7a-9b7c-2f7e1d0c9a11', route: 'fhir', method: 'GET' });
};

/** The fields of the proxy's completion line ('fhir request forwarded'). */
const COMPLETION = { status: 200, upstreamStatus: 200, upstreamMs: 12.5, interaction: 'read', resourceType: 'Patient', attempts: 1, bytes: 1234 };

describe('request logger', () => {
  it('writes the completion line of a request exactly as Powertools does, without going through it', () => {
    const slow = vi.spyOn(Logger.prototype, 'info');
    const lines = expectSameLines((logger) => {
      requestKeys(logger);
      logger.info('fhir request forwarded', COMPLETION);
    });
    // Only the Powertools logger of the comparison went through Powertools' own `info`.
    expect(slow).toHaveBeenCalledTimes(1);
    expect(JSON.parse(lines[0]!)).toEqual({
      level: 'INFO',
      message: 'fhir request forwarded',
      timestamp: '2026-03-01T10:20:30.456Z',
      service: 'smart-launch-fhir-proxy',
      sampling_rate: 0,
      correlation_id: '3c1f6b0e-8a5e-4d7a-9b7c-2f7e1d0c9a11',
      route: 'fhir',
      method: 'GET',
      ...COMPLETION,
    });
  });

  it('leaves out empty values and escapes strings as Powertools does', () => {
    expectSameLines((logger) => {
      requestKeys(logger);
      logger.info('request completed', { status: 204, resourceType: undefined, empty: '', none: null, nan: Number.NaN, flag: false, zero: 0, text: 'quote " backslash \\ tab \t é \u2028 \u0001' });
      logger.info('');
      logger.info('no fields');
    });
  });

  it('writes lines without request keys, and after the keys are reset and appended again', () => {
    expectSameLines((logger) => {
      logger.info('before any request', { status: 200 });
      requestKeys(logger);
      logger.info('first', { status: 200 });
      logger.appendKeys({ route: 'sessions', extra: 7 });
      logger.info('keys replaced in place', { status: 201 });
      logger.resetKeys();
      logger.info('after reset', { status: 200 });
    });
  });

  it('carries the X-Ray trace id of the invocation as Powertools does', () => {
    process.env._X_AMZN_TRACE_ID = 'Root=1-5759e988-bd862e3fe1be46a994272793;Parent=557abcec3ee5a047;Sampled=1';
    expectSameLines((logger) => {
      requestKeys(logger);
      logger.info('traced', { status: 200 });
    });
    process.env._X_AMZN_TRACE_ID = '1-5759e988-bd862e3fe1be46a994272793';
    expectSameLines((logger) => logger.info('bare trace id', { status: 200 }));
  });

  it('leaves every other line to Powertools, with the same output', () => {
    const boom = new Error('boom');
    expectSameLines((logger) => {
      requestKeys(logger);
      logger.info('nested', { cause: { code: 'X', message: 'y' } });
      logger.info('two objects', { a: 1 }, { b: 2 });
      logger.info('a key Powertools places itself', { xray_trace_id: 'mine' });
      logger.info('a field also among the keys', { route: 'other' });
      logger.info('an error', boom);
      logger.info('a string', 'extra text');
      logger.info({ message: 'an object message', status: 200 });
      logger.warn('request refused', { code: 'SESSION_NOT_OPEN', status: 401 });
      logger.error('request failed', { code: 'INTERNAL', status: 500 });
      logger.debug('not written at INFO', { status: 200 });
      logger.appendKeys({ nested: { a: 1 } });
      logger.info('after a nested key', { status: 200 });
      logger.removeKeys(['nested']);
      logger.info('after removeKeys', { status: 200 });
      logger.appendPersistentKeys({ customer: 'acme' });
      logger.info('with a persistent key', { status: 200 });
    });
  });

  it('leaves lines to Powertools in a time zone other than UTC and in development mode', () => {
    process.env.TZ = 'Europe/Paris';
    expectSameLines((logger) => logger.info('paris time', { status: 200 }));
    delete process.env.TZ;
    process.env.POWERTOOLS_DEV = 'true';
    const slow = vi.spyOn(Logger.prototype, 'info');
    const out: string[] = [];
    vi.spyOn(console, 'info').mockImplementation((line: string) => void out.push(line));
    new RequestLogger({ serviceName: 'dev', logLevel: 'INFO' }).info('dev mode', { status: 200 });
    expect(slow).toHaveBeenCalledTimes(1);
    expect(out).toHaveLength(1);
  });
});

describe('forceLogLevel', () => {
  it('sets every logger createLogger made, and those made until undone, then puts each back to its own level', () => {
    const saved = process.env.LOG_LEVEL;
    try {
      process.env.LOG_LEVEL = 'ERROR';
      const before = createLogger('smart-launch-test-before');
      const restore = forceLogLevel('DEBUG');
      process.env.LOG_LEVEL = 'WARN';
      const during = createLogger('smart-launch-test-during');

      expect([before.getLevelName(), during.getLevelName()]).toEqual(['DEBUG', 'DEBUG']);
      restore();
      expect([before.getLevelName(), during.getLevelName()]).toEqual(['ERROR', 'WARN']);
      expect(createLogger('smart-launch-test-after').getLevelName()).toBe('WARN');
    } finally {
      if (saved === undefined) delete process.env.LOG_LEVEL;
      else process.env.LOG_LEVEL = saved;
    }
  });
});
