import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SAMPLE_TEMPLATE, sharedSynth } from '../infra/shared-synth.js';
import { importsOf, resolveSpecifier, ROOT } from '../repo/import-graph.js';

/*
 * Cold start: a function's bundle is split, so what it loads only by `import()` (the Powertools
 * Tracer and the X-Ray SDK under it, `shared/ops/tracing.ts`) is a chunk of its own, compiled and
 * source-mapped only where tracing is on. In one file, it was compiled and its map parsed at every
 * cold start with tracing off too (bench/cold-start.ts measures it). The chunks made of dependencies
 * only ship without a map (they hold no frame of the project's own code to map). The bundles are
 * loaded as Lambda runs them, without `--enable-source-maps`. Checked on the assets of the run's one real `cdk synth` (shared-synth.ts): the files a deployment
 * uploads.
 */
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
// Inside the project, so the bundle's `@aws-sdk/*` imports resolve from node_modules as the runtime's do.
const scratch = mkdtempSync(join(root, 'node_modules', '.cold-start-split-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** A tracer module in a source map's `sources` (relative to the map: the synth writes inside node_modules). */
const TRACER = /(^|\/)(aws-xray-sdk-core|cls-hooked|@aws-lambda-powertools\/tracer)\//;
/**
 * The tracer's modules in a chunk's code, which has no map (`unmapDependencyChunks`): the X-Ray SDK's
 * bundled package.json, cls-hooked's error text, the Powertools Tracer's user-agent feature name.
 */
const TRACER_CODE = ['"aws-xray-sdk-core"', 'cls-hooked', '@aws-lambda-powertools/tracer'];

/** Each function's asset folder of the synthesized template, by function name. */
let assets: Record<string, string>;
beforeAll(async () => {
  const { outdir, status, output } = await sharedSynth();
  expect(status, output).toBe(0);
  const template = JSON.parse(readFileSync(join(outdir, SAMPLE_TEMPLATE), 'utf8')) as {
    Resources: Record<string, { Type: string; Properties: { Description?: string }; Metadata?: Record<string, string> }>;
  };
  assets = {};
  for (const resource of Object.values(template.Resources)) {
    if (resource.Type !== 'AWS::Lambda::Function') continue;
    assets[resource.Properties.Description!.replace(/^smart-launch /, '')] = join(outdir, resource.Metadata!['aws:asset:path']!);
  }
}, 320_000);

/** The modules a bundle file was built from (its source map's `sources`). */
const sourcesOf = (file: string) => (JSON.parse(readFileSync(`${file}.map`, 'utf8')) as { sources: string[] }).sources;

/** The chunks `index.mjs` loads by `import` statements, directly or through other chunks. */
function staticallyLoaded(dir: string): Set<string> {
  const loaded = new Set<string>();
  const visit = (file: string) => {
    if (loaded.has(file)) return;
    loaded.add(file);
    const code = readFileSync(join(dir, file), 'utf8');
    for (const match of code.matchAll(/(?:from|import)\s*"\.\/(chunk-[\w-]+\.mjs)"/g)) visit(match[1]!);
  };
  visit('index.mjs');
  return loaded;
}

async function importInFreshProcess(file: string, env: Record<string, string>): Promise<string> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(AWS_|POWERTOOLS_|_X_AMZN|LAMBDA_)/.test(name)));
  const script = `const m = await import(${JSON.stringify(file)}); process.stdout.write(typeof m.handler);`;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
    cwd: dirname(file),
    env: { ...clean, AWS_REGION: 'us-east-1', AWS_LAMBDA_FUNCTION_NAME: 'f', AWS_XRAY_CONTEXT_MISSING: 'IGNORE_ERROR', ...env },
  });
  return stdout;
}

describe('a function bundle loads the tracer only where it traces', () => {
  it.each(['launch', 'sessions', 'fhir-proxy', 'jwks'])('%s: the X-Ray SDK and the Powertools Tracer are not in index.mjs', (name) => {
    const dir = assets[name]!;
    expect(sourcesOf(join(dir, 'index.mjs')).filter((source) => TRACER.test(source))).toEqual([]);
    // ...and they are bundled, in a chunk of their own.
    const chunks = readdirSync(dir).filter((file) => /^chunk-[\w-]+\.mjs$/.test(file));
    const tracerChunks = chunks.filter((chunk) => TRACER_CODE.every((marker) => readFileSync(join(dir, chunk), 'utf8').includes(marker)));
    expect(tracerChunks).toHaveLength(1);
  });

  it.each(['launch', 'sessions', 'fhir-proxy', 'jwks'])('%s: index.mjs is source-mapped; the chunks of dependencies only are not', (name) => {
    const dir = assets[name]!;
    expect(readFileSync(join(dir, 'index.mjs'), 'utf8')).toMatch(/\n\/\/# sourceMappingURL=index\.mjs\.map\n?$/);
    expect(sourcesOf(join(dir, 'index.mjs')).some((source) => /(^|\/)shared\//.test(source))).toBe(true);
    // The tracer's chunk among them: with `--enable-source-maps`, its map cost a parse at every cold start with tracing on.
    for (const chunk of readdirSync(dir).filter((file) => /^chunk-[\w-]+\.mjs$/.test(file))) {
      expect(existsSync(join(dir, `${chunk}.map`)), chunk).toBe(false);
      expect(readFileSync(join(dir, chunk), 'utf8'), chunk).not.toMatch(/\/\/# sourceMappingURL=/);
    }
  });

  it('loads without its dynamic chunks where tracing is off, and needs them where it is on', async () => {
    const dir = join(scratch, 'jwks');
    cpSync(assets.jwks!, dir, { recursive: true });
    // The chunks index.mjs imports statically (shared with the tracer's) stay; those only `import()` reaches go.
    const loaded = staticallyLoaded(dir);
    const dynamicOnly = readdirSync(dir).filter((file) => file.endsWith('.mjs') && !loaded.has(file));
    expect(dynamicOnly.length).toBeGreaterThan(0);

    expect(await importInFreshProcess(join(dir, 'index.mjs'), { AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs22.x' })).toBe('function');

    for (const file of dynamicOnly) rmSync(join(dir, file));
    expect(await importInFreshProcess(join(dir, 'index.mjs'), { AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs22.x', POWERTOOLS_TRACE_ENABLED: 'false' })).toBe('function');
    await expect(importInFreshProcess(join(dir, 'index.mjs'), { AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs22.x' })).rejects.toThrow(/chunk-/);
  }, 60_000);
});

/*
 * The Public Suffix List (tldts, about 126 KB of each index.mjs) is needed by one rule only, the
 * cookie-site rule (shared/config/cookie-site.ts), checked where a config is validated for deployment
 * (synth, doctor): a config that fails it never synthesizes. The functions parse their config without
 * it, and neither the list nor the rule's module may come back into a bundle.
 */
/** tldts's option names, kept by minification: in its code, not in ours. */
const TLDTS_CODE = ['extractHostname', 'mixedInputs'];

describe('a function bundle leaves the Public Suffix List to synth', () => {
  it.each(['launch', 'sessions', 'fhir-proxy', 'jwks'])('%s: neither tldts nor the cookie-site rule is in any file of the bundle', (name) => {
    const dir = assets[name]!;
    expect(sourcesOf(join(dir, 'index.mjs')).filter((source) => /(^|\/)(tldts(-core)?\/|shared\/config\/cookie-site\.ts$)/.test(source))).toEqual([]);
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.mjs'))) {
      const code = readFileSync(join(dir, file), 'utf8');
      expect(TLDTS_CODE.filter((marker) => code.includes(marker)), file).toEqual([]);
    }
  });

  it('the runtime wiring and the handlers do not import tldts or cookie-site.ts, directly or through other files', () => {
    const entries = ['shared/runtime/aws-deps.ts', ...['launch', 'sessions', 'fhir-proxy', 'jwks'].map((name) => `functions/${name}/handler.ts`)];
    const seen = new Set<string>();
    const pending = [...entries];
    while (pending.length > 0) {
      const file = pending.pop()!;
      if (seen.has(file) || !existsSync(join(ROOT, file))) continue;
      seen.add(file);
      pending.push(...importsOf(readFileSync(join(ROOT, file), 'utf8')).map((specifier) => resolveSpecifier(file, specifier)));
    }
    expect(seen.has('shared/runtime/aws-deps.ts')).toBe(true);
    expect(seen.has('shared/config/schema.ts')).toBe(true);
    expect([...seen].filter((file) => file === 'shared/config/cookie-site.ts')).toEqual([]);
    const tldts = [...seen].filter((file) => /(?:from|import)\s*\(?\s*['"]tldts(?:-core)?['"]/.test(readFileSync(join(ROOT, file), 'utf8')));
    expect(tldts).toEqual([]);
  });
});

/*
 * The functions' schemas use `zod/mini` (shared/config/zod.ts): the classic API attaches its
 * chainable methods to every schema it builds and is about 60 KB more of each index.mjs to compile
 * at every cold start. The CDK app, the local stack and the tools may keep it; nothing a function
 * loads may bring it back, nor a locale other than the English one the error messages are in.
 */
/** Constructor names of classic zod, kept by minification (mini's are `ZodMini…`, the core's `$Zod…`). */
const ZOD_CLASSIC_CODE = ['"ZodString"', '"ZodObject"', '"ZodType"'];

describe('a function bundle carries zod/mini, not classic zod', () => {
  it.each(['launch', 'sessions', 'fhir-proxy', 'jwks'])('%s: no classic zod and no locale but English in any file of the bundle', (name) => {
    const dir = assets[name]!;
    const zodSources = sourcesOf(join(dir, 'index.mjs')).filter((source) => /(^|\/)node_modules\/zod\//.test(source));
    expect(zodSources.filter((source) => /\/zod\/(v4\/classic\/|index\.js$|v4\/index\.js$)/.test(source))).toEqual([]);
    expect(zodSources.filter((source) => /\/zod\/v4\/locales\//.test(source) && !source.endsWith('/zod/v4/locales/en.js'))).toEqual([]);
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.mjs'))) {
      const code = readFileSync(join(dir, file), 'utf8');
      expect(ZOD_CLASSIC_CODE.filter((marker) => code.includes(marker)), file).toEqual([]);
    }
  });

  it('launch: its schemas are in index.mjs, built from zod/mini', () => {
    const sources = sourcesOf(join(assets.launch!, 'index.mjs'));
    expect(sources.some((source) => /\/zod\/v4\/mini\/schemas\.js$/.test(source))).toBe(true);
    expect(sources.some((source) => /\/zod\/v4\/locales\/en\.js$/.test(source))).toBe(true);
  });

  it('jwks: no zod at all (it parses no config: the signing algorithms come from a module without a schema)', () => {
    expect(sourcesOf(join(assets.jwks!, 'index.mjs')).filter((source) => /(^|\/)node_modules\/zod\/|shared\/config\/(schema|zod)\.ts$/.test(source))).toEqual([]);
  });
});
