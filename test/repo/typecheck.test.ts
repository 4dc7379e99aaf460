import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './import-graph.js';

/**
 * The type check of `npm test`, run as the suite's first file (the sequencer in vitest.config.ts) rather
 * than before the suite: TypeScript's compiler keeps about one core busy for 8-13 s, and run first it
 * shares the machine with the run's other early work instead of leaving the second core idle while
 * vitest waits for it. Incremental, with its build info in node_modules/.cache (a second run of an
 * unchanged tree checks almost nothing). `npm run typecheck` runs the same check alone.
 */
export const TYPECHECK_ARGS = ['-p', '.', '--incremental', '--tsBuildInfoFile', 'node_modules/.cache/tsc-npm-test.tsbuildinfo', '--pretty', 'false'];

describe('type check', () => {
  it('the whole repository compiles under tsconfig.json (strict), with no error', async () => {
    // Act
    const result = await new Promise<{ code: number | null; output: string }>((resolve) => {
      execFile(join(ROOT, 'node_modules', '.bin', 'tsc'), TYPECHECK_ARGS, { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, output: `${stdout}${stderr}`.trim() });
      });
    });

    // Assert: the compiler's own report, one error per line, when it finds any.
    expect(result.output, 'tsc -p . reported errors').toBe('');
    expect(result.code).toBe(0);
  }, 120_000);
});
