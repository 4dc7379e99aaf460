import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * The X-Ray SDK (under the Powertools Tracer) installs a process-wide async hook when it loads, which
 * taxes every promise of the process and adds to every cold start: it is loaded only where it traces.
 * Checked in a fresh Node process each time, since module caches are process-wide.
 */
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * shared/ops/tracing.ts compiled once to JavaScript (the project's modules inlined, every package left
 * as the import it is), so each fresh process is plain Node: no TypeScript loader to start three times
 * (about 0.4 s of CPU each). Written under node_modules, where the packages' imports resolve.
 */
let compiled: string;
let outDir: string;
beforeAll(async () => {
  await mkdir(join(root, 'node_modules', '.cache'), { recursive: true });
  outDir = await mkdtemp(join(root, 'node_modules', '.cache', 'smart-launch-tracing-lazy-'));
  compiled = join(outDir, 'tracing.mjs');
  await build({ entryPoints: [join(root, 'shared/ops/tracing.ts')], bundle: true, packages: 'external', format: 'esm', platform: 'node', target: 'node20', outfile: compiled, logLevel: 'silent' });
});
afterAll(async () => {
  if (outDir) await rm(outDir, { recursive: true, force: true });
});

async function loadedAfterImport(env: Record<string, string>): Promise<{ xray: number; tracing: boolean; middlewares: number }> {
  const script = `
    const { createRequire } = await import('node:module');
    const ops = await import(${JSON.stringify(pathToFileURL(compiled).href)});
    const cache = Object.keys(createRequire(import.meta.url).cache);
    console.log(JSON.stringify({
      xray: cache.filter((path) => path.includes('aws-xray-sdk-core') || path.includes('cls-hooked')).length,
      tracing: ops.tracer.isTracingEnabled(),
      middlewares: ops.tracing().length,
    }));`;
  const clean = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(AWS_|POWERTOOLS_|_X_AMZN|LAMBDA_)/.test(name)));
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
    cwd: root,
    env: { ...clean, ...env },
  });
  return JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as { xray: number; tracing: boolean; middlewares: number };
}

describe('the tracer is loaded only where it traces', () => {
  it('outside Lambda (local runs, tests) the X-Ray SDK is never loaded and no tracing middleware runs', async () => {
    expect(await loadedAfterImport({})).toEqual({ xray: 0, tracing: false, middlewares: 0 });
  }, 30_000);

  it('with tracing turned off in Lambda (POWERTOOLS_TRACE_ENABLED=false) it is not loaded either', async () => {
    expect(await loadedAfterImport({ AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs22.x', POWERTOOLS_TRACE_ENABLED: 'false' })).toMatchObject({ xray: 0, tracing: false });
  }, 30_000);

  it('in Lambda it is loaded and the handler subsegment middleware is in place', async () => {
    const loaded = await loadedAfterImport({ AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs22.x', AWS_LAMBDA_FUNCTION_NAME: 'f', AWS_XRAY_CONTEXT_MISSING: 'IGNORE_ERROR' });
    expect(loaded.xray).toBeGreaterThan(0);
    expect(loaded.tracing).toBe(true);
    expect(loaded.middlewares).toBe(2);
  }, 30_000);
});
