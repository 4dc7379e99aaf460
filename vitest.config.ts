import { defineConfig } from 'vitest/config';

/**
 * Two projects, one `npx vitest run`:
 * - `unit`: pure core, adapters (call shapes, in-process dynalite), handlers with stand-ins, HTTP
 *   helpers, fakes and repository checks. Fast, no servers: worker threads sharing one module
 *   registry (`isolate: false`), so modules load once per worker instead of once per file. Files
 *   here must not depend on module state left by another file.
 * - `integration`: everything else under test/ (integration, browser, infra, sandbox, and any new
 *   folder such as deploy, fuzz, faults, load, sdk or ops): real servers, child processes, CDK
 *   synth. Forked processes, each file isolated.
 */
export const UNIT_FOLDERS = ['core', 'adapters', 'http', 'fakes', 'functions', 'repo'] as const;
const unitGlobs = UNIT_FOLDERS.map((folder) => `test/${folder}/**/*.test.ts`);

export default defineConfig({
  test: {
    setupFiles: ['test/setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: unitGlobs,
          pool: 'threads',
          isolate: false,
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/**/*.test.ts'],
          exclude: unitGlobs,
          pool: 'forks',
        },
      },
    ],
  },
});
