import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Plugin, TransformResult } from 'vite';
import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * Four projects, one `npx vitest run` (`npm test` runs the typecheck first, then all of them):
 *
 * - `unit`: pure core, adapters (call shapes, in-process dynalite), handlers with stand-ins, HTTP
 *   helpers, fakes, repository checks and the fuzzing of the handlers (test/fuzz). No servers: worker
 *   threads sharing one module registry (`isolate: false`), so modules load once per worker instead
 *   of once per file.
 * - `stack`: the suites that boot the local stack or the sandbox EHR over real HTTP, or drive them
 *   from Chromium or in bulk (test/integration, test/sandbox, test/browser, test/sdk, test/faults,
 *   test/load, test/ops). Forked processes, again one module registry per worker: the sandbox,
 *   medplum, oidc-provider, playwright and aws-cdk-lib load once per worker, and each file still
 *   starts its own servers on port 0 with its own data folder.
 * - `infra`: CDK assertions, cdk-nag and the real synth (test/infra, the WITH_INFRA files of
 *   other folders that build the CDK app, and the WITH_SYNTH files that read the synth's bundles):
 *   forked workers sharing one module registry, so aws-cdk-lib loads once per worker; every test
 *   builds its own App.
 * - `integration`: everything else under test/ (cold-start and any folder added later), plus the
 *   files in ISOLATED: forked, each file in a fresh process. This is the default for a new folder.
 *
 * The projects share one pool of two workers (vitest runs projects of the same `sequence.groupOrder`
 * and `maxWorkers` as one group; its default on a 2-core machine is one worker, which runs the whole
 * suite file after file while stack files wait on sockets, Chromium or a child process). The queue
 * takes the projects in turn (infra, integration, stack, unit), and the run is CPU-bound: a third
 * worker made it slower, not faster.
 *
 * A file in a shared-registry project must not depend on module state at import time (environment
 * read by a module when it loads, patched globals left behind); such a file goes in ISOLATED. The
 * handlers' loggers read LOG_LEVEL when they load (SILENT in tests, see test/setup.ts), maybe in an
 * earlier file of the worker: a file that reads their lines (test/fuzz, test/integration/logs.test.ts)
 * sets their level with `forceLogLevel` (shared/http/logger.ts) and puts it back when it ends.
 */
export const UNIT_FOLDERS = ['core', 'adapters', 'http', 'fakes', 'functions', 'repo', 'fuzz'] as const;
export const STACK_FOLDERS = ['integration', 'sandbox', 'browser', 'sdk', 'faults', 'load', 'ops'] as const;
export const INFRA_FOLDERS = ['infra'] as const;
export const ISOLATED = [
  /**
   * Stubs the Lambda environment and resets the module registry so the tracer loads under it. The
   * X-Ray SDK the tracer loads stays in the process (outside the module registry) with its
   * process-wide async hook on every promise: a shared worker would carry it into every later file.
   */
  'test/ops/tracing.test.ts',
];
/**
 * Files outside test/infra that build the CDK app (or load its helpers): they run with the infra
 * project, whose workers have aws-cdk-lib loaded already (about 1.5 s of CPU per process that loads it).
 */
export const WITH_INFRA = ['test/ops/audit-infra.test.ts', 'test/ops/go-live.test.ts', 'test/ops/end-sessions-aws.test.ts'];
/**
 * Files outside test/infra that read the run's one real synth (test/infra/shared-synth.ts): they run
 * with the infra project too, in its shared-registry workers, instead of a fresh process each. Neither
 * depends on module state at import time: the cold-start checks import the bundles in child processes;
 * the rehearsal imports each bundle under its own URL after setting that function's environment, and
 * puts back the environment, `globalThis.awslambda` and stdout when it ends.
 */
export const WITH_SYNTH = ['test/cold-start/bundle-split.test.ts', 'test/deploy/rehearsal.test.ts'];
/** Workers per project, which is also the total: the projects share one pool (see above). */
const WORKERS = 2;

const globs = (folders: readonly string[]) => folders.map((folder) => `test/${folder}/**/*.test.ts`);

const ROOT = fileURLToPath(new URL('.', import.meta.url));

/** The test files under the given folders of test/ (paths as vitest matches them), minus ISOLATED. */
function testFilesIn(folders: readonly string[]): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.test.ts')) out.push(relative(ROOT, path));
    }
  };
  for (const folder of folders) if (existsSync(join(ROOT, 'test', folder))) walk(join(ROOT, 'test', folder));
  return out.filter((file) => !ISOLATED.includes(file)).sort();
}
const stackFiles = testFilesIn(STACK_FOLDERS).filter((file) => !WITH_INFRA.includes(file));
const infraFiles = [...testFilesIn(INFRA_FOLDERS), ...WITH_INFRA, ...WITH_SYNTH].sort();

/**
 * Each project has its own Vite server, and each server transformed every source file it served:
 * shared/, functions/ and the test helpers, which most projects import, went through the TypeScript
 * and SSR transforms once per project in the main process. This keeps one result per file for the
 * whole run and hands each server a copy, which it records in its own module graph as if it had done
 * the work itself. Every project runs the same plugins on the same sources, so the result is the
 * same; a file is only shared while its modification time is unchanged (watch mode).
 */
const TRANSFORMS = Symbol.for('smart-launch.vitest.transforms');
function transformOncePerRun(): Plugin {
  // On globalThis: vitest evaluates this file more than once (the root and the projects extending it).
  const store = globalThis as { [TRANSFORMS]?: Map<string, { mtimeMs: number; result: Promise<TransformResult | null> }> };
  const results = (store[TRANSFORMS] ??= new Map());
  const mtimeOf = (file: string) => {
    try {
      return statSync(file).mtimeMs;
    } catch {
      return undefined;
    }
  };
  return {
    name: 'smart-launch:transform-once-per-run',
    configureServer(server) {
      const environment = server.environments.ssr;
      const transform = environment.transformRequest.bind(environment);
      environment.transformRequest = async (url: string) => {
        const mod = await environment.moduleGraph.ensureEntryFromUrl(url);
        const { file, id } = mod;
        if (mod.transformResult || !file || !id || !file.startsWith(ROOT) || file.includes('/node_modules/') || !/\.[cm]?ts$/.test(file)) return transform(url);
        const mtimeMs = mtimeOf(file);
        if (mtimeMs === undefined) return transform(url);
        const known = results.get(id);
        if (known === undefined || known.mtimeMs !== mtimeMs) {
          const result = transform(url);
          results.set(id, { mtimeMs, result });
          result.catch(() => results.delete(id));
          return result;
        }
        const shared = await known.result.catch(() => null);
        if (shared === null || mod.transformResult) return transform(url);
        // A copy of the fields Vite records (vitest adds its own to the recorded object, per project).
        const { code, map, etag, deps, dynamicDeps } = shared;
        const copy: TransformResult = { code, map, etag, deps, dynamicDeps };
        environment.moduleGraph.updateModuleTransformResult(mod, copy);
        return copy;
      };
    },
  };
}

/** The file that starts the run's one synth (test/infra/shared-synth.ts) and waits for it. */
const SYNTH_TEST = 'test/infra/synth.test.ts';
/** The file that runs the type check (`tsc -p .`) in a child process and waits for it. */
const TYPECHECK_TEST = 'test/repo/typecheck.test.ts';

/**
 * Vitest's order (projects in turn; within one, files it has not timed first, then the longest first,
 * or the largest on a fresh clone), with the synth test first and the WITH_SYNTH readers moved after
 * the integration project's files. The synth is a child process on one core for about 10 s; whatever
 * worker picks up a reader sits waiting on it, so in vitest's own order both workers waited and a
 * core stood idle. Now one worker waits in the synth test while the other runs the infra and
 * integration files that need no synth, and the readers find it done (neither loads aws-cdk-lib, so
 * a fresh infra worker costs them little).
 */
class SynthFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const file = (spec: TestSpecification) => relative(ROOT, spec.moduleId);
    const isReader = (spec: TestSpecification) => spec.project.name === 'infra' && WITH_SYNTH.includes(file(spec));
    const synthTest = sorted.filter((spec) => spec.project.name === 'infra' && file(spec) === SYNTH_TEST);
    const readers = sorted.filter(isReader);
    const rest = sorted.filter((spec) => !isReader(spec) && !synthTest.includes(spec));
    const infraAt = rest.findIndex((spec) => spec.project.name === 'infra');
    const withSynthTest = infraAt < 0 ? [...synthTest, ...rest] : [...rest.slice(0, infraAt), ...synthTest, ...rest.slice(infraAt)];
    // After the last file of the infra or integration project (vitest's order puts them together).
    let after = -1;
    withSynthTest.forEach((spec, index) => {
      if (spec.project.name === 'infra' || spec.project.name === 'integration') after = index;
    });
    const ordered = [...withSynthTest.slice(0, after + 1), ...readers, ...withSynthTest.slice(after + 1)];
    // The type check first of all: its compiler and the synth's child keep both cores busy while the
    // two workers wait on them, instead of the check holding up the whole run before it starts.
    const typecheck = ordered.filter((spec) => file(spec) === TYPECHECK_TEST);
    return [...typecheck, ...ordered.filter((spec) => !typecheck.includes(spec))];
  }
}

export default defineConfig({
  plugins: [transformOncePerRun()],
  test: {
    setupFiles: ['test/setup.ts'],
    sequence: { sequencer: SynthFirstSequencer },
    testTimeout: 30_000,
    hookTimeout: 60_000,
    projects: [
      {
        extends: true,
        test: { name: 'unit', include: globs(UNIT_FOLDERS), pool: 'threads', isolate: false, maxWorkers: WORKERS },
      },
      {
        extends: true,
        test: { name: 'stack', include: stackFiles, pool: 'forks', isolate: false, maxWorkers: WORKERS },
      },
      {
        extends: true,
        test: { name: 'infra', include: infraFiles, pool: 'forks', isolate: false, maxWorkers: WORKERS, globalSetup: ['test/infra/synth-run.global.ts'] },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/**/*.test.ts'],
          exclude: [...globs(UNIT_FOLDERS), ...stackFiles, ...infraFiles],
          pool: 'forks',
          maxWorkers: WORKERS,
          globalSetup: ['test/infra/synth-run.global.ts'],
        },
      },
    ],
  },
});
