import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Duration } from 'aws-cdk-lib';
import type { BuildOptions, Metafile } from 'esbuild';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import type { FunctionName } from '../../shared/http/routes.js';

/**
 * Defaults of the functions, apart from the builder (as Solutions Constructs keeps
 * `*-defaults.ts`). A team embedding `SmartLaunch` overrides any of them through its props.
 */

/**
 * nodejs24.x: the newest Node runtime in aws-cdk-lib 2.276 (`Runtime.NODEJS_LATEST`), so synth has no
 * deprecation warning and cdk-nag L1 passes. The handlers also run on Node 20 locally, so they use
 * no Node 22+ API; esbuild's `target` follows the runtime.
 */
export const DEFAULT_RUNTIME = lambda.Runtime.NODEJS_24_X;

export interface FunctionSizing {
  readonly memorySize: number;
  readonly timeout: Duration;
}

/**
 * Every function may run at least as long as API Gateway waits for it (29 s, `DEFAULT_INTEGRATION_TIMEOUT_SECONDS`)
 * plus a second: the handlers plan their upstream calls against the earlier of the two deadlines
 * (`shared/runtime/deadline.ts`) and answer a clear 503/504 before either, so Lambda never cuts them off
 * (which would answer a bare 502 and leave a refresh lease held). The FHIR proxy also needs the time
 * to stream its largest answer after the first byte: see `streamingCapBytes`.
 */
export const DEFAULT_SIZING: Readonly<Record<FunctionName, FunctionSizing>> = {
  // Discovery, JWKS fetch, id_token verification and the token request: several EHR round trips.
  launch: { memorySize: 512, timeout: Duration.seconds(30) },
  // A refresh (token endpoint, bounded inside the refresh lease) or a revocation at logout.
  sessions: { memorySize: 256, timeout: Duration.seconds(30) },
  // Holds a whole FHIR answer (up to proxy.maxResponseMegabytes) before streaming it: memory is
  // also CPU. 90 s: 29 s to the first byte, then about 60 s at Lambda's ~2 MB/s streaming rate
  // past the first 6 MB, i.e. room for 64 MB answers (the default maxResponseMegabytes) twice over.
  'fhir-proxy': { memorySize: 1024, timeout: Duration.seconds(90) },
  // One KMS GetPublicKey per key per container, then answers from memory.
  jwks: { memorySize: 256, timeout: Duration.seconds(30) },
};

/**
 * Reserved concurrency of each function by default. Lambda's concurrency pool is per account and
 * region (1,000 by default) and shared by every customer stack there: without a cap, one customer's
 * slow EHR (each proxied call held up to 29 s) would grow that stack's functions to rate x duration
 * concurrent executions (100 rps x 29 s = 2,900) and throttle every other customer's `/launch`.
 * Reserving caps each function at its reservation (a slow EHR throttles only its own stack) and
 * guarantees it that much of the pool. 70 per stack: proxy 40 (about 200 reads per second at
 * 200 ms each), launch 20 (the sign-in routes' 20 rps), sessions 10. `jwks` calls only KMS, once
 * per container, and is not reserved.
 */
export const DEFAULT_RESERVED_CONCURRENCY: Readonly<Partial<Record<FunctionName, number>>> = {
  launch: 20,
  sessions: 10,
  'fhir-proxy': 40,
};

export const DEFAULT_LOG_RETENTION = logs.RetentionDays.ONE_YEAR;

/**
 * ESM output needs `require` for the few CommonJS dependencies esbuild leaves as `require()` calls.
 * Aliased import so it cannot collide with a bundled module's own `createRequire` binding.
 */
export const ESM_REQUIRE_BANNER =
  "import { createRequire as __smartLaunchCreateRequire } from 'node:module'; const require = __smartLaunchCreateRequire(import.meta.url);";

/** The AWS SDK v3 ships with the Node.js Lambda runtimes: leave it out of the bundle. */
export const EXTERNAL_MODULES = ['@aws-sdk/*'];

/**
 * Packages replaced in the bundles by a stand-in (esbuild `alias`; absolute paths, beside this file,
 * whatever the project root): only what the functions bundle and never run. `semver`: the X-Ray
 * SDK's AWS SDK v2 patcher imports it at load, for a version check the v3 clients never reach
 * (`unbundled-semver.ts`).
 */
export const BUNDLE_ALIASES: Readonly<Record<string, string>> = { semver: fileURLToPath(new URL('./unbundled-semver.ts', import.meta.url)) };

/** esbuild target matching a `nodejsNN.x` runtime (`node24`). */
export function esbuildTarget(runtime: lambda.Runtime): string {
  const match = /^nodejs(\d+)\.x$/.exec(runtime.name);
  if (!match) throw new Error(`runtime ${runtime.name} is not a Node.js runtime`);
  return `node${match[1]}`;
}

/**
 * esbuild options of a function's bundle (the construct's and the cold-start bench's): `index.mjs`
 * (ESM, minified, the handler) and its map, in `outdir`, with the AWS SDK left out.
 *
 * Code splitting: what a function loads only by `import()` is a chunk file of its own
 * (`chunk-<hash>.mjs` and its map), read, compiled and source-mapped only when that import runs.
 * That is the Powertools Tracer with the X-Ray SDK (about 90 KB with cls-hooked,
 * `shared/ops/tracing.ts`): with tracing off, it used to be compiled and its map parsed at every
 * cold start and never run (about 10-15 ms of a bundle's own 80-100 ms of load CPU).
 *
 * The metafile is asked for so that `unmapDependencyChunks` can find the chunks made of
 * dependencies only, whose maps it removes after the build.
 */
export function functionBundleOptions(entry: string, projectRoot: string, target: string): BuildOptions {
  return {
    entryPoints: { index: entry },
    absWorkingDir: projectRoot,
    bundle: true,
    splitting: true,
    chunkNames: 'chunk-[hash]',
    outExtension: { '.js': '.mjs' },
    platform: 'node',
    format: 'esm',
    target,
    mainFields: ['module', 'main'],
    banner: { js: ESM_REQUIRE_BANNER },
    minify: true,
    sourcemap: true,
    sourcesContent: false,
    external: [...EXTERNAL_MODULES],
    alias: { ...BUNDLE_ALIASES },
    metafile: true,
    logLevel: 'warning',
  };
}

const STAND_INS = new Set(Object.values(BUNDLE_ALIASES));

/**
 * Removes the source map of every chunk built from dependencies only (`node_modules`), and the
 * chunk's `sourceMappingURL` comment, after the build (esbuild maps every output file or none):
 * `index.mjs` and any chunk holding the project's own code keep theirs. With `--enable-source-maps`
 * (which the functions no longer run with), Node read and parsed a loaded file's map and scanned its
 * generated source's lines when it loaded it; for the tracer chunk (the Powertools Tracer and the
 * X-Ray SDK, loaded where tracing is on) that was about 2-4 ms of CPU at every such cold start. The
 * price: a logged frame inside those dependencies stays minified (file, line and column of the
 * chunk); the project's frames are still mapped (`shared/runtime/stack-frames.ts`). The stand-ins
 * of `BUNDLE_ALIASES` count as dependencies. Returns the chunks unmapped, as the metafile names them.
 */
export function unmapDependencyChunks(metafile: Metafile, projectRoot: string): string[] {
  const unmapped: string[] = [];
  for (const [file, output] of Object.entries(metafile.outputs)) {
    if (!/(^|\/)chunk-[^/]+\.mjs$/.test(file)) continue;
    const inputs = Object.keys(output.inputs);
    if (inputs.length === 0 || !inputs.every((input) => /(^|\/)node_modules\//.test(input) || STAND_INS.has(resolve(projectRoot, input)))) continue;
    const path = resolve(projectRoot, file);
    writeFileSync(path, readFileSync(path, 'utf8').replace(/\n\/\/# sourceMappingURL=[^\n]*\n?$/, '\n'));
    rmSync(`${path}.map`, { force: true });
    unmapped.push(file);
  }
  return unmapped;
}
