import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { afterAll, describe, expect, it } from 'vitest';
import { functionBundleOptions } from '../../infra/constructs/smart-function-defaults.js';

/*
 * Cold start: a function's bundle is split, so what it loads only by `import()` (the Powertools
 * Tracer and the X-Ray SDK under it, `shared/ops/tracing.ts`) is a chunk of its own, compiled and
 * source-mapped only where tracing is on. In one file, it was compiled and its map parsed at every
 * cold start with tracing off too (bench/cold-start.ts measures it).
 */
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
// Inside the project, so the bundle's `@aws-sdk/*` imports resolve from node_modules as the runtime's do.
const scratch = mkdtempSync(join(root, 'node_modules', '.cold-start-split-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const TRACER = /node_modules\/(aws-xray-sdk-core|cls-hooked|@aws-lambda-powertools\/tracer)\//;

async function importInFreshProcess(file: string, env: Record<string, string>): Promise<string> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(AWS_|POWERTOOLS_|_X_AMZN|LAMBDA_)/.test(name)));
  const script = `const m = await import(${JSON.stringify(file)}); process.stdout.write(typeof m.handler);`;
  const { stdout } = await promisify(execFile)(process.execPath, ['--enable-source-maps', '--input-type=module', '-e', script], {
    cwd: dirname(file),
    env: { ...clean, AWS_REGION: 'us-east-1', AWS_LAMBDA_FUNCTION_NAME: 'f', AWS_XRAY_CONTEXT_MISSING: 'IGNORE_ERROR', ...env },
  });
  return stdout;
}

describe('a function bundle loads the tracer only where it traces', () => {
  it.each(['launch', 'sessions', 'fhir-proxy', 'jwks'])('%s: the X-Ray SDK and the Powertools Tracer are not in index.mjs', async (name) => {
    const result = await build({ ...functionBundleOptions(join(root, 'functions', name, 'handler.ts'), root, 'node22'), outdir: join(scratch, 'meta', name), write: false, metafile: true, logLevel: 'error' });
    const outputs = Object.entries(result.metafile.outputs);
    const index = outputs.find(([file]) => file.endsWith('/index.mjs'));
    expect(index).toBeDefined();
    expect(Object.keys(index![1].inputs).filter((input) => TRACER.test(input))).toEqual([]);
    // ...and they are bundled, in a chunk of their own.
    expect(outputs.some(([file, output]) => file.includes('/chunk-') && Object.keys(output.inputs).some((input) => TRACER.test(input)))).toBe(true);
  }, 30_000);

  it('loads without its dynamic chunks where tracing is off, and needs them where it is on', async () => {
    const dir = join(scratch, 'jwks');
    const result = await build({ ...functionBundleOptions(join(root, 'functions', 'jwks', 'handler.ts'), root, 'node22'), outdir: dir, metafile: true, logLevel: 'error' });
    // The chunks index.mjs imports statically (shared with the tracer's) stay; those only `import()` reaches go.
    const outputs = result.metafile.outputs;
    const staticFiles = new Set<string>();
    const visit = (file: string) => {
      if (staticFiles.has(file)) return;
      staticFiles.add(file);
      for (const imported of outputs[file]?.imports ?? []) if (imported.kind === 'import-statement' && outputs[imported.path]) visit(imported.path);
    };
    visit(Object.keys(outputs).find((file) => file.endsWith('/index.mjs'))!);
    const dynamicOnly = Object.keys(outputs).filter((file) => file.endsWith('.mjs') && !staticFiles.has(file));
    expect(dynamicOnly.length).toBeGreaterThan(0);

    expect(await importInFreshProcess(join(dir, 'index.mjs'), { AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs22.x' })).toBe('function');

    for (const file of dynamicOnly) rmSync(join(root, file));
    expect(await importInFreshProcess(join(dir, 'index.mjs'), { AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs22.x', POWERTOOLS_TRACE_ENABLED: 'false' })).toBe('function');
    await expect(importInFreshProcess(join(dir, 'index.mjs'), { AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs22.x' })).rejects.toThrow(/chunk-/);
  }, 60_000);
});
