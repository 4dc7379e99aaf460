import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import type { Logger } from '@aws-lambda-powertools/logger';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { functionBundleOptions, unmapDependencyChunks } from '../../infra/constructs/smart-function-defaults.js';
import { SmartError } from '../../shared/core/errors.js';
import type { ApiEvent, ApiResult } from '../../shared/http/api-event.js';
import { errorResponse } from '../../shared/http/error-response.js';
import { MAX_FRAMES, mappedFrames, projectPath } from '../../shared/runtime/stack-frames.js';

/*
 * The functions run without `--enable-source-maps` (Node would read and parse each bundle's map at
 * every cold start); an unexpected error's log line maps its own frames when it is written
 * (`shared/runtime/stack-frames.ts`). Here a bundle built exactly as the functions' are throws from a
 * known line of a known file, in a fresh Node process without the flag, through the functions' own
 * error mapping (`errorResponse`).
 */
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
// Inside the project, so the bundle's `@aws-sdk/*` imports resolve from node_modules as the runtime's do.
const scratch = mkdtempSync(join(root, 'node_modules', '.cold-start-frames-'));
const bundle = join(scratch, 'bundle');
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const SECRET = 'Zx9SessionLikeValue';
const FIXTURE = 'test/cold-start/fixtures/unexpected-error.ts';
const lineOf = (file: string, marker: string) => readFileSync(join(root, file), 'utf8').split('\n').findIndex((line) => line.includes(marker)) + 1;
const THROW_LINE = lineOf(FIXTURE, '// THROW_LINE');
const CALL_LINE = lineOf(FIXTURE, 'return checkShape(');

beforeAll(async () => {
  const { metafile } = await build({ ...functionBundleOptions(join(root, 'test/cold-start/fixtures/unexpected-error-entry.ts'), root, 'node20'), outdir: bundle, logLevel: 'error' });
  unmapDependencyChunks(metafile!, root);
}, 60_000);

/** Runs `expression` (on the bundle's module `m`) in a fresh Node process as Lambda runs the functions: no NODE_OPTIONS, no flag. */
async function inFreshProcess(dir: string, expression: string): Promise<{ stdout: string; logs: string }> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(AWS_|POWERTOOLS_|_X_AMZN|LAMBDA_|NODE_OPTIONS$|LOG_LEVEL$)/.test(name)));
  const script = `const m = await import(${JSON.stringify(pathToFileURL(join(dir, 'index.mjs')).href)}); const out = await (${expression}); process.stdout.write('\\nRESULT ' + JSON.stringify({ out, execArgv: process.execArgv.join(' '), sourceMaps: process.sourceMapsEnabled ?? null }) + '\\n');`;
  const { stdout, stderr } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
    cwd: dir,
    env: { ...clean, AWS_REGION: 'us-east-1', AWS_LAMBDA_FUNCTION_NAME: 'f', LOG_LEVEL: 'INFO' },
  });
  // The logger writes errors to stderr, the rest to stdout.
  return { stdout, logs: `${stdout}\n${stderr}` };
}

const resultOf = (stdout: string) => JSON.parse(stdout.slice(stdout.lastIndexOf('\nRESULT ') + '\nRESULT '.length)) as { out: unknown; execArgv: string; sourceMaps: boolean | null };

describe('an unexpected error in a bundle, logged without --enable-source-maps', () => {
  it("logs the error's frames in the TypeScript sources: the file and line that threw, and its caller; no message text, nothing in the answer", async () => {
    const { stdout, logs } = await inFreshProcess(bundle, `m.run(${JSON.stringify(SECRET)})`);
    const result = resultOf(stdout);
    expect(result.execArgv).not.toContain('source-maps');
    expect(result.sourceMaps).not.toBe(true);

    const line = logs.split('\n').find((text) => text.includes('"request failed"'));
    expect(line, logs).toBeDefined();
    const entry = JSON.parse(line!) as { code: string; cause: { name: string; message: string; frames: string[] } };
    expect(entry.code).toBe('INTERNAL');
    expect(entry.cause.name).toBe('TypeError');
    const frames = entry.cause.frames;
    expect(frames[0]).toMatch(new RegExp(`^\\S+ \\(${FIXTURE}:${THROW_LINE}:\\d+\\)$`));
    expect(frames[1]).toMatch(new RegExp(`^\\S+ \\(${FIXTURE}:${CALL_LINE}:\\d+\\)$`));
    expect(frames.some((frame) => frame.includes('test/cold-start/fixtures/unexpected-error-entry.ts:'))).toBe(true);
    // Only function names and positions: not the message, not the secret it carried.
    expect(frames.join('\n')).not.toContain(SECRET);
    expect(frames.join('\n')).not.toContain('stored record');
    expect(frames.every((frame) => !frame.startsWith('at ') && !frame.includes('TypeError'))).toBe(true);
    expect(frames.length).toBeLessThanOrEqual(MAX_FRAMES);

    // The answer is the fixed INTERNAL one: no stack, no frame, no file.
    const answer = result.out as ApiResult;
    expect(answer.statusCode).toBe(500);
    expect(answer.body).not.toMatch(/\.ts|\.mjs|frames|stack|TypeError/);
    expect(answer.body).not.toContain(SECRET);
  }, 60_000);

  it('leaves the frames generated (index.mjs:line:column) where the map is missing, and does not throw', async () => {
    const dir = join(scratch, 'no-map');
    cpSync(bundle, dir, { recursive: true });
    rmSync(join(dir, 'index.mjs.map'));
    const frames = resultOf((await inFreshProcess(dir, `m.framesOf(${JSON.stringify(SECRET)})`)).stdout).out as string[];
    expect(frames.length).toBeGreaterThan(1);
    expect(frames[0]).toMatch(/^\S+ \(index\.mjs:\d+:\d+\)$/);
    expect(frames.join('\n')).not.toContain('.ts:');
    expect(frames.join('\n')).not.toContain(SECRET);
  }, 60_000);

  it('leaves the frames generated where the map cannot be read', async () => {
    const dir = join(scratch, 'bad-map');
    cpSync(bundle, dir, { recursive: true });
    writeFileSync(join(dir, 'index.mjs.map'), '{"version":3,"sources":');
    const frames = resultOf((await inFreshProcess(dir, `m.framesOf(${JSON.stringify(SECRET)})`)).stdout).out as string[];
    expect(frames[0]).toMatch(/^\S+ \(index\.mjs:\d+:\d+\)$/);
  }, 60_000);
});

describe('mappedFrames', () => {
  const errorWithStack = (stack: string) => Object.assign(new Error('the message'), { stack });

  it('never includes the message, even when it spans lines that look like frames', () => {
    const error = new Error(`first line\n    at ${SECRET} (file:///var/task/index.mjs:1:2)`);
    const frames = mappedFrames(error);
    expect(frames.length).toBeGreaterThan(0);
    expect(frames.join('\n')).not.toContain(SECRET);
    expect(frames.join('\n')).not.toContain('first line');
  });

  it('keeps a frame in a file without a map, node: frames and other locations as they are', () => {
    const frames = mappedFrames(
      errorWithStack(
        [
          'Error: the message',
          `    at start (${join(root, 'shared', 'nothing-here.mjs')}:3:7)`,
          '    at async Promise.all (index 0)',
          '    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)',
          '    at file:///var/task/index.mjs:1:23456',
        ].join('\n'),
      ),
    );
    expect(frames).toEqual(['start (shared/nothing-here.mjs:3:7)', 'async Promise.all (index 0)', 'process.processTicksAndRejections (node:internal/process/task_queues:95:5)', '/var/task/index.mjs:1:23456']);
  });

  it('maps a frame through the map beside its file, reading that map once', () => {
    const dir = mkdtempSync(join(scratch, 'hand-made-'));
    mkdirSync(join(dir, 'out'));
    const file = join(dir, 'out', 'index.mjs');
    writeFileSync(file, 'x\n');
    // Line 1, column 0 of index.mjs is line 5, column 2 of ../../shared/core/launch.ts.
    writeFileSync(`${file}.map`, JSON.stringify({ version: 3, sources: ['../../shared/core/launch.ts'], names: [], mappings: 'AAIE' }));
    const stack = ['Error: the message', `    at Xe (${pathToFileURL(file).href}:1:1)`, `    at Ye (${pathToFileURL(file).href}:9:1)`].join('\n');

    expect(mappedFrames(errorWithStack(stack))).toEqual(['Xe (shared/core/launch.ts:5:3)', `Ye (${file}:9:1)`.replace(`${process.cwd()}/`, '')]);
    rmSync(`${file}.map`);
    // Read once per file: the map is cached.
    expect(mappedFrames(errorWithStack(stack))[0]).toBe('Xe (shared/core/launch.ts:5:3)');
  });

  it('keeps at most MAX_FRAMES frames, and answers [] for a stack it cannot read', () => {
    const many = ['Error: x', ...Array.from({ length: 40 }, (_, i) => `    at f${i} (node:internal/x:${i + 1}:1)`)].join('\n');
    expect(mappedFrames(errorWithStack(many))).toHaveLength(MAX_FRAMES);
    expect(mappedFrames(Object.assign(new Error('x'), { stack: undefined }))).toEqual([]);
    expect(mappedFrames(Object.assign(new Error('x'), { stack: 42 }))).toEqual([]);
  });

  it("names a map's source from the project (or from its package)", () => {
    expect(projectPath('../../shared/core/launch.ts')).toBe('shared/core/launch.ts');
    expect(projectPath('../../node_modules/zod/v4/mini/schemas.js')).toBe('node_modules/zod/v4/mini/schemas.js');
    expect(projectPath('./functions/launch/handler.ts')).toBe('functions/launch/handler.ts');
  });
});

describe('errorResponse logs frames for unexpected errors only', () => {
  async function logged(thrown: unknown): Promise<{ level: string; entry: Record<string, unknown>; response: ApiResult }> {
    const calls: Array<[string, Record<string, unknown>]> = [];
    const logger = { error: vi.fn((_m: string, e: Record<string, unknown>) => calls.push(['error', e])), warn: vi.fn((_m: string, e: Record<string, unknown>) => calls.push(['warn', e])) } as unknown as Logger;
    const request = { event: { requestContext: { requestId: 'c' } } as ApiEvent, error: thrown, response: undefined as ApiResult | undefined };
    await errorResponse('json', logger).onError!(request as never);
    return { level: calls[0]![0], entry: calls[0]![1], response: request.response! };
  }

  it('an unexpected Error: INTERNAL, its frames in the cause, none in the answer', async () => {
    const { level, entry, response } = await logged(new TypeError(`boom ${SECRET}`));
    expect(level).toBe('error');
    const cause = entry.cause as { name: string; frames: string[] };
    expect(cause.name).toBe('TypeError');
    expect(cause.frames.length).toBeGreaterThan(0);
    expect(cause.frames[0]).toContain('test/cold-start/stack-frames.test.ts:');
    expect(cause.frames.join('\n')).not.toContain(SECRET);
    expect(response.body).not.toMatch(/stack-frames|frames|\.ts:/);
  });

  it('a refusal (a known code) or a non-Error cause: no frames, no throw', async () => {
    const refused = await logged(new SmartError('STATE_UNKNOWN', 'no such state', { cause: new Error('inner') }));
    expect(refused.level).toBe('warn');
    expect(refused.entry.cause).toEqual({ name: 'Error', message: 'inner' });
    expect((await logged('a string was thrown')).entry.cause).toEqual({ type: 'string' });
    expect((await logged({ stack: 42 })).entry.cause).toEqual({ type: 'object' });
  });
});
