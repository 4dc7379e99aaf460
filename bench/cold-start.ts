/**
 * Cold start: each function bundled as the CDK app bundles it (esbuild, ESM, minified, source maps
 * but none for the chunks of dependencies only, code splitting, the AWS SDK left out as the Lambda
 * runtime provides it; infra/constructs/smart-function-defaults.ts `functionBundleOptions` and
 * `unmapDependencyChunks`), then
 * module load timed in fresh Node processes (without `--enable-source-maps`, as the functions run:
 * an error's frames are mapped when it is logged, `shared/runtime/stack-frames.ts`), against a
 * bare handler bundled the same way that imports the same AWS SDK clients as that function.
 * Alternating: in each of N rounds every bundle and bare handler is loaded once, the ratio to the
 * bare handler is taken within the round, and the median of the N ratios is reported.
 */
import { execFile } from 'node:child_process';
import { mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { functionBundleOptions, unmapDependencyChunks } from '../infra/constructs/smart-function-defaults.js';

/**
 * The AWS SDK clients each function imports at load: `shared/runtime/aws-deps.ts` (the three
 * functions that serve sessions) or `shared/runtime/aws-signer.ts` alone (jwks). Each function is
 * measured against a bare handler importing exactly its clients: jwks against one importing all four
 * would look cheaper than it is.
 */
const ALL_CLIENTS = ['DynamoDB', 'KMS', 'SecretsManager', 'CloudWatchLogs'] as const;
type Client = (typeof ALL_CLIENTS)[number];
const FUNCTION_CLIENTS = {
  launch: ALL_CLIENTS,
  sessions: ALL_CLIENTS,
  'fhir-proxy': ALL_CLIENTS,
  jwks: ['KMS'],
} as const satisfies Record<string, readonly Client[]>;
type FunctionName = keyof typeof FUNCTION_CLIENTS;
const FUNCTIONS = Object.keys(FUNCTION_CLIENTS) as FunctionName[];

const MODULES: Record<Client, string> = {
  DynamoDB: '@aws-sdk/client-dynamodb',
  KMS: '@aws-sdk/client-kms',
  SecretsManager: '@aws-sdk/client-secrets-manager',
  CloudWatchLogs: '@aws-sdk/client-cloudwatch-logs',
};

/** The bare handler of a set of clients: `bare` for all four, `bare-kms` for KMS alone. */
const bareName = (clients: readonly Client[]) => (clients.length === ALL_CLIENTS.length ? 'bare' : `bare-${clients.map((c) => c.toLowerCase()).join('-')}`);

function bareHandler(clients: readonly Client[]): string {
  return [
    ...clients.map((c) => `import { ${c}Client } from '${MODULES[c]}';`),
    `const clients = [${clients.map((c) => `${c}Client`).join(', ')}];`,
    'export const handler = async () => ({ statusCode: 200, body: String(clients.length) });',
    '',
  ].join('\n');
}

/** Bundles as the construct does into `outDir` (`index.mjs` and the chunks `import()` loads); the handler's size and the chunks' total. */
async function bundle(root: string, outDir: string, entry: string): Promise<{ index: number; chunks: number }> {
  await rm(outDir, { recursive: true, force: true });
  const { metafile } = await build({ ...functionBundleOptions(entry, root, 'node22'), outdir: outDir, logLevel: 'error' });
  unmapDependencyChunks(metafile!, root);
  let chunks = 0;
  for (const name of await readdir(outDir)) if (name.startsWith('chunk-') && name.endsWith('.mjs')) chunks += (await stat(join(outDir, name))).size;
  return { index: (await stat(join(outDir, 'index.mjs'))).size, chunks };
}

interface Load {
  readonly wallMs: number;
  /** Process CPU time (user + system) spent importing: what a third of a core at 512 MB pays, and steadier than wall time on a shared machine. */
  readonly cpuMs: number;
}

/** The AWS SDK clients of a bare handler, imported before the bundle when only the bundle's own load is measured. */
const sdkPreload = (clients: readonly Client[]) => clients.map((c) => `await import(${JSON.stringify(MODULES[c])});`).join(' ');

/**
 * Wall and CPU milliseconds to import the module in a fresh process (the process's own start
 * excluded); with `preload`, after those AWS SDK clients were imported, so only the bundle's own code
 * is timed (steadier on a loaded machine than the difference of two whole loads).
 */
async function load(file: string, env: Record<string, string>, preload?: readonly Client[]): Promise<Load> {
  const script = `${preload ? sdkPreload(preload) : ''} const c = process.cpuUsage(); const t = performance.now(); await import(${JSON.stringify(file)}); const w = performance.now() - t; const u = process.cpuUsage(c); process.stdout.write(JSON.stringify({ wallMs: w, cpuMs: (u.user + u.system) / 1000 }));`;
  // Run from the bundle's folder, so the SDK clients resolve as the bundle's own imports do.
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, ...env }, cwd: dirname(file) });
  return JSON.parse(stdout) as Load;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? NaN;

export async function coldStart(root: string, outDir: string, runs: number): Promise<Record<string, unknown>> {
  const dir = join(outDir, 'cold-start');
  await mkdir(dir, { recursive: true });
  /** Each bundle measured, with the clients of its bare handler. */
  const measured = new Map<string, { entry: string; clients: readonly Client[]; bare: string }>();
  for (const clients of new Set(Object.values(FUNCTION_CLIENTS))) {
    const name = bareName(clients);
    const entry = join(dir, `${name}-entry.mjs`);
    await writeFile(entry, bareHandler(clients));
    measured.set(name, { entry, clients, bare: name });
  }
  for (const f of FUNCTIONS) measured.set(f, { entry: join(root, 'functions', f, 'handler.ts'), clients: FUNCTION_CLIENTS[f], bare: bareName(FUNCTION_CLIENTS[f]) });
  const files: Record<string, string> = {};
  const sizes: Record<string, number> = {};
  const chunkSizes: Record<string, number> = {};
  for (const [name, { entry }] of measured) {
    files[name] = join(dir, name, 'index.mjs');
    const size = await bundle(root, join(dir, name), entry);
    sizes[name] = size.index;
    chunkSizes[name] = size.chunks;
  }
  // As in Lambda: a region, the function's settings, and the execution environment (tracing on unless
  // turned off). LAMBDA_TASK_ROOT: the X-Ray SDK sets up its Lambda mode at load (facade segment,
  // local sampling) only where the runtime sets it.
  const lambdaEnv = {
    AWS_REGION: 'us-east-1',
    AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs22.x',
    LAMBDA_TASK_ROOT: '/var/task',
    AWS_LAMBDA_FUNCTION_NAME: 'cold-start-bench',
    AWS_XRAY_CONTEXT_MISSING: 'IGNORE_ERROR',
    LOG_LEVEL: 'INFO',
  };
  const result: Record<string, unknown> = {};
  for (const [label, env] of [
    ['tracingOn', lambdaEnv],
    ['tracingOff', { ...lambdaEnv, POWERTOOLS_TRACE_ENABLED: 'false' }],
  ] as const) {
    const samples: Record<string, Load[]> = Object.fromEntries(Object.keys(files).map((k) => [k, []]));
    const own: Record<string, Load[]> = Object.fromEntries(Object.keys(files).map((k) => [k, []]));
    for (let i = 0; i < runs; i++) {
      for (const [name, file] of Object.entries(files)) {
        samples[name]!.push(await load(file, env));
        own[name]!.push(await load(file, env, measured.get(name)!.clients));
      }
    }
    const wall = (name: string) => median(samples[name]!.map((s) => s.wallMs));
    const cpu = (name: string) => median(samples[name]!.map((s) => s.cpuMs));
    // A ratio per round (the bundle and its bare handler loaded moments apart), then the median of
    // those: the machine's load drifts over a run, and a ratio of two medians taken from different
    // moments carries that drift (the bare handler's median moved by up to 40 ms between two
    // sections of one run), which pairing cancels.
    const bareOf = (name: string) => measured.get(name)!.bare;
    const ownCpu = (name: string) => median(own[name]!.map((s) => s.cpuMs));
    const paired = (name: string, of: (l: Load) => number) => {
      const bare = samples[bareOf(name)]!;
      return median(samples[name]!.map((s, i) => of(s) / of(bare[i]!)));
    };
    result[label] = Object.fromEntries(
      Object.keys(files).map((name) => [
        name,
        {
          loadMs: Math.round(wall(name) * 10) / 10,
          /** Median of the per-round ratios of wall time to the bare handler's (not the ratio of the medians). */
          ratioToBare: Math.round(paired(name, (l) => l.wallMs) * 100) / 100,
          cpuMs: Math.round(cpu(name) * 10) / 10,
          /** Median of the per-round ratios of CPU time to the bare handler's. */
          cpuRatioToBare: Math.round(paired(name, (l) => l.cpuMs) * 100) / 100,
          /** CPU of the bundle's own code: imported after the AWS SDK clients (the bare handler's is about 0). */
          ownCpuMs: Math.round(ownCpu(name) * 10) / 10,
          /**
           * The ratio read from the own CPU: (bare handler's load + this bundle's own - the bare
           * handler's own) / bare handler's load. The whole-load ratio of one run scatters by about
           * +-0.07 here (launch's code loaded three ways in one loop of 15 rounds read 425, 473 and
           * 449 ms, the reverse of their order by own CPU); the own CPU is measured with the SDK
           * clients already loaded, so it carries none of their scatter.
           */
          ownCpuRatioToBare: Math.round(((cpu(bareOf(name)) + ownCpu(name) - ownCpu(bareOf(name))) / cpu(bareOf(name))) * 100) / 100,
        },
      ]),
    );
  }
  return {
    bundleBytes: sizes,
    /** The chunks only `import()` loads (the Powertools Tracer and X-Ray SDK: read only with tracing on). */
    chunkBytes: chunkSizes,
    /** The bare handler each bundle is measured against (the same AWS SDK clients). */
    bareOf: Object.fromEntries([...measured].map(([name, m]) => [name, m.bare])),
    ...result,
    goal: 'module load <= 1.2x the bare handler',
    signInColdFunctions:
      'launch (/launch and /callback), sessions (GET /sessions/{id}), fhir-proxy (first data): three functions in a row after idle; serving GET /sessions/{id} from fhir-proxy would make it two (not done: README, Performance and cost)',
  };
}
