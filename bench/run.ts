/**
 * `npm run bench`: the FHIR proxy's overhead, measured as ratios in one run on one machine (docs/design.md §5).
 *
 * The local stack (the same handlers as Lambda, the streaming proxy handler included) runs in front of
 * the bundled sandbox EHR (in a child process: bench/sandbox-process.ts), next to a floor proxy (bench/floor.ts: one store read on the same table,
 * one AES-GCM decrypt with a cached key, one keep-alive forward, base URL replaced). The same HTTP
 * client (Node's fetch, keep-alive) calls the same FHIR server for the same data four ways,
 * alternating in rounds: directly with a sandbox access token, through the floor, through the
 * product with a session (`product`, as shipped: its proxy's session cache on, so a warm container
 * skips the store read on all but about one request per session and window), and through a second
 * local stack with the same config but `session.proxyCacheSeconds: 0` (`product-no-cache`: one store
 * read and one unseal per request, the floor's essential work), signed in the same way:
 *   - read:     GET Patient/{id}
 *   - search50: GET Observation?patient={id}&_count=50 (a 50-entry searchset, links rewritten by the proxy)
 * each at concurrency 1 and `--concurrency`. For each: p50 / p95 latency, throughput, and process CPU
 * per request (process.cpuUsage() of this process: client, proxies and the store; the direct mode's CPU,
 * the client's, is subtracted to get each proxy's own CPU), the EHR process's CPU per request reported
 * apart, and GC pause time per request of both processes. Printed as ratios to the floor and to direct, written to
 * bench/results/latest.json (gitignored), and compared with the previous run's file.
 * Goals: product p50 <= 1.15x the floor, own CPU per request <= 1.2x the floor, reported for both
 * product modes. A report, not a test. The scaling sections measure the product as shipped only.
 *
 * Token lifecycle: a 100-request storm on an expired access token (token endpoint calls, goal
 * exactly 1), and DynamoDB/KMS calls per sign-in, per 100 proxied requests and per refresh.
 * Every section's result lands under `sections.<name>` in the JSON.
 *
 * Options: --iterations N (requests per case and mode, default 200), --concurrency N (default 8),
 *          --cold-runs N (rounds of fresh processes per bundle for module load, default 15; with 3,
 *          one bundle's whole-load ratio read 1.26x where 15-round runs read 1.10-1.16x),
 *          --throughput-requests N (unused, kept for old command lines), --out FILE,
 *          --sections a,b (only these sections, e.g. `proxyOverhead` under `node --cpu-prof`; no cost model then),
 *          --modes a,b (proxyOverhead sends requests in these modes only: direct, floor, product,
 *          product-no-cache; e.g. `product-no-cache` for a profile of it alone).
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { createServer as createHttpServer, type Server } from 'node:http';
import type { LocalStack } from '../local/stack.js';
import type { SessionStore } from '../shared/core/ports.js';
import type { CoreDeps } from '../shared/core/deps.js';
import { CLIENT_KEEP_ALIVE_MS, startFloorProxy, type FloorProxy } from './floor.js';
import { gcPauseMeter, startSandboxProcess, type SandboxProcess } from './sandbox-process.js';
import { costModel, costTable, type CostModel } from './cost.js';
import { coldStart } from './cold-start.js';
import { recordApiRequests, recordWaits, stepsByRequest } from './sign-in-waits.js';
import { JwksCache } from '../shared/core/id-token.js';
import { BrowserClient } from '../test/integration/browser-client.js';
import {
  basicAuth,
  browserGet,
  buildAuthorizeUrl,
  CookieJar,
  createPkce,
  followRedirects,
  postForm,
  randomToken,
} from '../test/sandbox/smart-client.js';

// Logging as shipped (INFO, the deployed default), read by the handlers' loggers when their modules
// load. The log lines are real work the product does per request, so they are written, not
// silenced: to bench/results/logs.ndjson while the run lasts (see `divertLogs`), as Lambda writes
// them to its stdout pipe.
process.env.LOG_LEVEL ??= 'INFO';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const { LOCAL_CLIENT, LOCAL_PUBLIC_CLIENT, listenOnLoopback, sampleConfig, startLocalStack } = await import('../local/stack.js');

const BENCH_CLIENT = { clientId: 'bench-direct', clientSecret: 'bench-direct-secret', redirectUri: 'http://127.0.0.1:9/bench-callback' } as const;

interface Options {
  readonly iterations: number;
  readonly concurrency: number;
  readonly throughputRequests: number;
  readonly coldRuns: number;
  readonly out: string;
  /** Only these sections (and no cold start unless named `coldStart`); all when absent. */
  readonly sections: readonly string[] | undefined;
  /** Only these modes send requests (`--modes product` under `node --cpu-prof`: a profile of the product alone; ratios are then NaN). */
  readonly modes: readonly Mode[];
}

function parseOptions(argv: readonly string[]): Options {
  const value = (name: string, fallback: number): number => {
    const index = argv.indexOf(`--${name}`);
    if (index < 0) return fallback;
    const parsed = Number(argv[index + 1]);
    if (!Number.isInteger(parsed) || parsed <= 0) throw new Error(`--${name} needs a positive integer`);
    return parsed;
  };
  const outIndex = argv.indexOf('--out');
  const sectionsIndex = argv.indexOf('--sections');
  const modesIndex = argv.indexOf('--modes');
  const here = dirname(fileURLToPath(import.meta.url));
  return {
    iterations: value('iterations', 200),
    concurrency: value('concurrency', 8),
    throughputRequests: value('throughput-requests', 200),
    coldRuns: value('cold-runs', 15),
    out: outIndex >= 0 ? resolve(argv[outIndex + 1] ?? '') : join(here, 'results', sectionsIndex >= 0 ? 'partial.json' : 'latest.json'),
    sections: sectionsIndex >= 0 ? (argv[sectionsIndex + 1] ?? '').split(',').filter((name) => name !== '') : undefined,
    modes: modesIndex >= 0 ? (argv[modesIndex + 1] ?? '').split(',').filter((name): name is Mode => (MODES as readonly string[]).includes(name)) : MODES,
  };
}

/** One way to send a request: a URL and headers; the client is always the same `fetch`. */
interface Target {
  readonly url: string;
  readonly headers: Record<string, string>;
}

/** What every section gets: the running stack, a proxied session and a direct sandbox token. */
export interface BenchContext {
  readonly stack: LocalStack;
  /** The sandbox EHR, in its own process. */
  readonly sandbox: SandboxProcess;
  readonly patient: string;
  /** `{publicUrl}/sessions/{id}/fhir` and the binding cookie of that session. */
  readonly proxied: { readonly fhirBaseUrl: string; readonly cookie: string; readonly sessionId: string };
  /** The same for the second stack, its proxy's session cache off (`session.proxyCacheSeconds: 0`): the `product-no-cache` mode. */
  readonly proxiedNoCache: { readonly fhirBaseUrl: string; readonly cookie: string; readonly sessionId: string };
  /** The sandbox's FHIR base and an access token from a normal sign-in with the sandbox. */
  readonly direct: { readonly fhirBaseUrl: string; readonly accessToken: string };
  /** The reference proxy (bench/floor.ts) in front of the same sandbox, with the same token. */
  readonly floor: { readonly fhirBaseUrl: string; readonly cookie: string };
  /** Session-store calls the API made since the run started, by method, and `ms` spent in them (live counters). */
  readonly storeCalls: Readonly<Record<string, number>>;
  /** The same for the second stack's API (cache off). */
  readonly storeCallsNoCache: Readonly<Record<string, number>>;
  /** Client connections each proxy has accepted so far (live counters; the products': their FHIR requests' sockets). */
  readonly connections: { floor(): number; product(): number; 'product-no-cache'(): number };
  readonly options: Options;
}

/** A part of the report: the proxy cases, the token lifecycle (refresh storm, KMS/DynamoDB counts), scaling and the sign-in path. */
export interface BenchSection {
  readonly name: string;
  run(context: BenchContext): Promise<Record<string, unknown>>;
}

interface Stats {
  readonly n: number;
  readonly p50: number;
  readonly p95: number;
  readonly mean: number;
  readonly min: number;
  readonly max: number;
}

function stats(samples: number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? NaN;
  const round = (v: number) => Math.round(v * 1000) / 1000;
  return {
    n: sorted.length,
    p50: round(at(0.5)),
    p95: round(at(0.95)),
    mean: round(sorted.reduce((a, b) => a + b, 0) / sorted.length),
    min: round(sorted[0] ?? NaN),
    max: round(sorted.at(-1) ?? NaN),
  };
}

async function once(target: Target, check: (status: number, body: Buffer) => void): Promise<number> {
  const started = performance.now();
  const response = await fetch(target.url, { headers: target.headers });
  const body = Buffer.from(await response.arrayBuffer());
  const elapsed = performance.now() - started;
  check(response.status, body);
  return elapsed;
}

interface Scenario {
  readonly name: string;
  readonly path: string;
  check(status: number, body: Buffer): void;
}

/** A sandbox access token from a normal EHR launch with the sandbox, as any SMART app would get one. */
async function directToken(sandbox: SandboxProcess, patient: string): Promise<string> {
  const jar = new CookieJar();
  const launchPage = await browserGet(new URL(`/ehr/launch?patient=${encodeURIComponent(patient)}`, sandbox.url), jar);
  const launch = new URL(launchPage.headers.get('location') ?? '').searchParams.get('launch');
  if (!launch) throw new Error('the sandbox EHR page did not hand out a launch');
  const discovery = (await (await fetch(`${sandbox.fhirBaseUrl}/.well-known/smart-configuration`)).json()) as {
    authorization_endpoint: string;
    token_endpoint: string;
  };
  const pkce = createPkce();
  const url = buildAuthorizeUrl({
    authorizationEndpoint: discovery.authorization_endpoint,
    clientId: BENCH_CLIENT.clientId,
    redirectUri: BENCH_CLIENT.redirectUri,
    scope: 'launch patient/*.rs',
    aud: sandbox.fhirBaseUrl,
    state: randomToken(),
    launch,
    codeChallenge: pkce.challenge,
    codeChallengeMethod: 'S256',
  });
  const stop = await followRedirects(await browserGet(url, jar), url, sandbox.url, jar);
  if (stop.kind !== 'left-origin') throw new Error(`the sandbox sign-in stopped on a page (${stop.response.status})`);
  const code = stop.location.searchParams.get('code');
  if (!code) throw new Error(`no code in ${stop.location.href}`);
  const token = await postForm(
    discovery.token_endpoint,
    { grant_type: 'authorization_code', code, redirect_uri: BENCH_CLIENT.redirectUri, code_verifier: pkce.verifier },
    basicAuth(BENCH_CLIENT.clientId, BENCH_CLIENT.clientSecret),
  );
  if (token.status !== 200 || typeof token.body.access_token !== 'string') throw new Error(`the sandbox token endpoint answered ${token.status}`);
  return token.body.access_token;
}

/**
 * A session through the API, signed in from the sandbox EHR page like a clinician. The EHR page's
 * launch (`iss` and `launch`) is taken to `stack`'s `/launch`: the sandbox sends its launches to the
 * first stack's, and the cache-off stack is signed in the same way from its own.
 */
async function proxiedSession(stack: LocalStack, sandbox: SandboxProcess, patient: string): Promise<BenchContext['proxied']> {
  const ehrPage = `${sandbox.url}/ehr/launch?patient=${encodeURIComponent(patient)}`;
  const launching = await fetch(ehrPage, { redirect: 'manual' });
  await launching.arrayBuffer();
  const launchAt = new URL(launching.headers.get('location') ?? '', ehrPage);
  if (launching.status !== 302 && launching.status !== 303) throw new Error(`the sandbox EHR page answered ${launching.status}`);
  const browser = new BrowserClient();
  const nav = await browser.navigate(`${stack.apiUrl}${launchAt.pathname}${launchAt.search}`);
  const sessionId = nav.finalLocation ? /#session=([A-Za-z0-9_-]+)$/.exec(nav.finalLocation)?.[1] : undefined;
  if (!sessionId) throw new Error(`the launch did not reach the app: ${JSON.stringify(nav.hops.at(-1))}`);
  const binding = browser.cookies('localhost').get('__Host-smart-launch');
  if (!binding) throw new Error('no binding cookie');
  return { fhirBaseUrl: `${stack.apiUrl}/sessions/${sessionId}/fhir`, cookie: `__Host-smart-launch=${binding}`, sessionId };
}

/** Counts calls to the API's session store (DynamoDB in AWS, dynalite here), and the time spent in them (`ms`). */
function countStoreCalls(store: SessionStore): Record<string, number> {
  const counts: Record<string, number> = { ms: 0 };
  const target = store as unknown as Record<string, unknown>;
  let proto: object | null = Object.getPrototypeOf(store) as object | null;
  const names = new Set<string>();
  while (proto && proto !== Object.prototype) {
    for (const name of Object.getOwnPropertyNames(proto)) if (name !== 'constructor') names.add(name);
    proto = Object.getPrototypeOf(proto) as object | null;
  }
  for (const name of names) {
    const original = target[name];
    if (typeof original !== 'function') continue;
    target[name] = async (...args: unknown[]) => {
      counts[name] = (counts[name] ?? 0) + 1;
      const started = performance.now();
      try {
        return await (original as (...a: unknown[]) => Promise<unknown>).apply(store, args);
      } finally {
        counts.ms = (counts.ms ?? 0) + (performance.now() - started);
      }
    };
  }
  return counts;
}

const isOk = (what: string) => (status: number, body: Buffer) => {
  if (status !== 200) throw new Error(`${what} answered ${status}: ${body.subarray(0, 300).toString()}`);
};

/**
 * Gives the local API's server the floor's keep-alive time (bench/floor.ts, `CLIENT_KEEP_ALIVE_MS`), so
 * the client keeps its connections to both proxies alike, and counts the client connections its FHIR
 * requests came on (the floor counts its own). Answers that count.
 */
function sameKeepAlive(stack: LocalStack): () => number {
  const sockets = new WeakSet<object>();
  let connections = 0;
  const track = stack.requestsInFlight.track.bind(stack.requestsInFlight);
  stack.requestsInFlight.track = (req, res) => {
    const server = (req.socket as { server?: Server }).server;
    if (server && server.keepAliveTimeout !== CLIENT_KEEP_ALIVE_MS) server.keepAliveTimeout = CLIENT_KEEP_ALIVE_MS;
    if (req.url?.includes('/fhir/') && !sockets.has(req.socket)) {
      sockets.add(req.socket);
      connections++;
    }
    track(req, res);
  };
  return () => connections;
}

/**
 * The ways a request is sent: `product` is the local stack as shipped (the proxy's session cache on,
 * `session.proxyCacheSeconds` 5 s: a warm container reads the store about once per session and
 * window); `product-no-cache` is a second local stack with the same config but
 * `session.proxyCacheSeconds: 0`, one store read and one unseal per request, the floor's essential work.
 */
type Mode = 'direct' | 'floor' | 'product' | 'product-no-cache';
const MODES: readonly Mode[] = ['direct', 'floor', 'product', 'product-no-cache'];
/** The two product modes, each compared with the floor and with direct. */
const PRODUCT_MODES = ['product', 'product-no-cache'] as const satisfies readonly Mode[];
type ProductMode = (typeof PRODUCT_MODES)[number];
/** The modes of the scaling sections: the product as shipped only (the cache does not change how a body is handled). */
const SHIPPED_MODES: readonly Mode[] = ['direct', 'floor', 'product'];

interface ModeMeasure {
  readonly latencyMs: Stats;
  readonly throughputRps: number;
  /** This process's CPU (user + system) per request: bench client, dynalite, and the proxy of the mode. */
  readonly cpuMsPerRequest: number;
  /** CPU per request minus the direct mode's (the client's): the proxy's own work, its store read and upstream call included. */
  readonly ownCpuMsPerRequest: number;
  /** GC pause time per request in this process (included in its CPU). */
  readonly gcMsPerRequest: number;
  /** The sandbox EHR process's CPU per request (not in the figures above): the same work in every mode. */
  readonly ehrCpuMsPerRequest: number;
  /** GC pause time per request in the sandbox EHR process. */
  readonly ehrGcMsPerRequest: number;
  /** This process's CPU per request in each measured round (the spread within the run). */
  readonly cpuMsPerRequestByRound: readonly number[];
}

/** GC pause time of this process so far (ms). */
const gcMsSoFar = gcPauseMeter();

/**
 * One scenario at one concurrency, the modes alternating in rounds (the order rotating each
 * round, one warm-up round discarded): per-request latency, batch throughput, and process CPU time
 * per request. This process holds the client, the proxies and the store (the EHR runs in its own), so
 * the direct mode's CPU (the client's) is subtracted from the proxied modes' to get each proxy's own
 * CPU per request; the EHR's CPU is read from its process at the same points and reported apart.
 */
/** Requests per mode and round: enough to keep every in-flight slot busy. */
const batchOf = (concurrency: number) => Math.max(concurrency * 4, 16);
/** Measured rounds per mode (a warm-up round comes first and is not measured). */
const roundsOf = (iterations: number, batch: number) => Math.max(2, Math.ceil(iterations / batch));
/** Every request one mode makes in `measureModes`, the warm-up round included. */
const requestsPerMode = (iterations: number, concurrency: number) => (roundsOf(iterations, batchOf(concurrency)) + 1) * batchOf(concurrency);

async function measureModes(
  sandbox: SandboxProcess,
  scenario: Scenario,
  targets: Partial<Record<Mode, Target>>,
  concurrency: number,
  iterations: number,
  batchSize?: number,
  modes: readonly Mode[] = MODES,
): Promise<Record<Mode, ModeMeasure>> {
  for (const mode of modes) if (targets[mode] === undefined) throw new Error(`no ${mode} target for ${scenario.name}`);
  const batch = batchSize ?? batchOf(concurrency);
  const rounds = roundsOf(iterations, batch);
  const acc = Object.fromEntries(MODES.map((m) => [m, { samples: [] as number[], ms: 0, cpuUs: 0, gcMs: 0, ehrCpuUs: 0, ehrGcMs: 0, count: 0, byRound: [] as number[] }])) as Record<
    Mode,
    { samples: number[]; ms: number; cpuUs: number; gcMs: number; ehrCpuUs: number; ehrGcMs: number; count: number; byRound: number[] }
  >;
  for (let round = -1; round < rounds; round++) {
    const order = MODES.map((_, i) => MODES[(i + Math.max(0, round)) % MODES.length]!);
    for (const mode of order) {
      if (!modes.includes(mode)) continue;
      const samples: number[] = [];
      let remaining = batch;
      const ehr = await sandbox.usage();
      const gc = gcMsSoFar();
      const cpu = process.cpuUsage();
      const started = performance.now();
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (remaining > 0) {
            remaining--;
            samples.push(await once(targets[mode]!, scenario.check));
          }
        }),
      );
      const ms = performance.now() - started;
      const used = process.cpuUsage(cpu);
      const gcMs = gcMsSoFar() - gc;
      const ehrAfter = await sandbox.usage();
      if (round < 0) continue; // warm-up
      const a = acc[mode];
      a.samples.push(...samples);
      a.ms += ms;
      a.cpuUs += used.user + used.system;
      a.gcMs += gcMs;
      a.ehrCpuUs += ehrAfter.cpuUs - ehr.cpuUs;
      a.ehrGcMs += ehrAfter.gcMs - ehr.gcMs;
      a.count += batch;
      a.byRound.push(Math.round(((used.user + used.system) / 1000 / batch) * 1000) / 1000);
    }
  }
  const round3 = (v: number) => Math.round(v * 1000) / 1000;
  const cpuOf = (mode: Mode) => acc[mode].cpuUs / 1000 / acc[mode].count;
  return Object.fromEntries(
    MODES.map((mode) => [
      mode,
      {
        latencyMs: stats(acc[mode].samples),
        throughputRps: Math.round((acc[mode].count / acc[mode].ms) * 1000 * 10) / 10,
        cpuMsPerRequest: round3(cpuOf(mode)),
        ownCpuMsPerRequest: round3(cpuOf(mode) - cpuOf('direct')),
        gcMsPerRequest: round3(acc[mode].gcMs / acc[mode].count),
        ehrCpuMsPerRequest: round3(acc[mode].ehrCpuUs / 1000 / acc[mode].count),
        ehrGcMsPerRequest: round3(acc[mode].ehrGcMs / acc[mode].count),
        cpuMsPerRequestByRound: acc[mode].byRound,
      },
    ]),
  ) as unknown as Record<Mode, ModeMeasure>;
}

const ratio = (a: number, b: number) => (b > 0 ? Math.round((a / b) * 1000) / 1000 : NaN);

/** A product mode's own CPU / the floor's own CPU in each round, from the modes' CPU in that same round. */
function roundRatios(m: Record<Mode, ModeMeasure>, product: ProductMode): number[] {
  return m.direct.cpuMsPerRequestByRound.map((direct, i) => ratio((m[product].cpuMsPerRequestByRound[i] ?? NaN) - direct, (m.floor.cpuMsPerRequestByRound[i] ?? NaN) - direct)).filter(Number.isFinite);
}

/** Smallest, median and largest of `values` (the spread of a per-round figure within one run). */
function spread(values: number[]): { rounds: number; min: number; median: number; max: number } {
  const { n, min, p50, max } = stats(values);
  return { rounds: n, min, median: p50, max };
}

/** Ratios of a product mode to the floor and to direct (the goals: p50 <= 1.15x floor, own CPU <= 1.2x floor). */
function ratiosOf(m: Record<Mode, ModeMeasure>, product: ProductMode = 'product') {
  const p = m[product];
  const toFloor = {
    p50: ratio(p.latencyMs.p50, m.floor.latencyMs.p50),
    p95: ratio(p.latencyMs.p95, m.floor.latencyMs.p95),
    throughput: ratio(p.throughputRps, m.floor.throughputRps),
    ownCpu: ratio(p.ownCpuMsPerRequest, m.floor.ownCpuMsPerRequest),
    cpu: ratio(p.cpuMsPerRequest, m.floor.cpuMsPerRequest),
  };
  return {
    toFloor,
    toDirect: {
      p50: ratio(p.latencyMs.p50, m.direct.latencyMs.p50),
      p95: ratio(p.latencyMs.p95, m.direct.latencyMs.p95),
      throughput: ratio(p.throughputRps, m.direct.throughputRps),
      cpu: ratio(p.cpuMsPerRequest, m.direct.cpuMsPerRequest),
    },
    floorToDirect: { p50: ratio(m.floor.latencyMs.p50, m.direct.latencyMs.p50), cpu: ratio(m.floor.cpuMsPerRequest, m.direct.cpuMsPerRequest) },
    goals: { p50Within1_15xFloor: toFloor.p50 <= 1.15, ownCpuWithin1_2xFloor: toFloor.ownCpu <= 1.2 },
    ownCpuToFloorByRound: spread(roundRatios(m, product)),
  };
}

/**
 * The proxy against its floor and against direct calls: a read and a 50-entry search, at concurrency
 * 1 and `--concurrency`, the four modes alternating in one run. `ratios` are the product's as shipped
 * (session cache on), `ratiosCacheOff` the cache-off stack's (one store read per request, as the floor).
 */
const proxyOverhead: BenchSection = {
  name: 'proxyOverhead',
  async run(context) {
    const scenarios: Scenario[] = [
      { name: 'read', path: `Patient/${context.patient}`, check: isOk('read') },
      {
        name: 'search50',
        path: `Observation?patient=${context.patient}&_count=50`,
        check: (status, body) => {
          isOk('search50')(status, body);
          const entries = (JSON.parse(body.toString('utf8')) as { entry?: unknown[] }).entry?.length ?? 0;
          if (entries !== 50) throw new Error(`search50 answered ${entries} entries`);
        },
      },
    ];
    const results: Record<string, unknown> = {};
    for (const scenario of scenarios) {
      const targets: Record<Mode, Target> = {
        direct: { url: `${context.direct.fhirBaseUrl}/${scenario.path}`, headers: { authorization: `Bearer ${context.direct.accessToken}`, accept: 'application/fhir+json' } },
        floor: { url: `${context.floor.fhirBaseUrl}/${scenario.path}`, headers: { cookie: context.floor.cookie, accept: 'application/fhir+json' } },
        product: { url: `${context.proxied.fhirBaseUrl}/${scenario.path}`, headers: { cookie: context.proxied.cookie, accept: 'application/fhir+json' } },
        'product-no-cache': { url: `${context.proxiedNoCache.fhirBaseUrl}/${scenario.path}`, headers: { cookie: context.proxiedNoCache.cookie, accept: 'application/fhir+json' } },
      };
      for (const concurrency of [...new Set([1, context.options.concurrency])]) {
        const storeBefore = { product: { ...context.storeCalls }, 'product-no-cache': { ...context.storeCallsNoCache } };
        const connectionsBefore = { floor: context.connections.floor(), product: context.connections.product(), 'product-no-cache': context.connections['product-no-cache']() };
        const measured = await measureModes(context.sandbox, scenario, targets, concurrency, context.options.iterations, undefined, context.options.modes);
        const productRequests = requestsPerMode(context.options.iterations, concurrency);
        // Each product mode has its own stack and store counters: calls during the case per request of that mode.
        const storeDuring = (mode: ProductMode) => {
          const now = mode === 'product' ? context.storeCalls : context.storeCallsNoCache;
          return Object.fromEntries(Object.entries(now).map(([name, count]) => [name, Math.round(((count - (storeBefore[mode][name] ?? 0)) / productRequests) * 1000) / 1000]));
        };
        const store = { product: storeDuring('product'), 'product-no-cache': storeDuring('product-no-cache') };
        results[`${scenario.name}@c${concurrency}`] = {
          request: `GET {base}/${scenario.path.replace(context.patient, '{patient}')}`,
          concurrency,
          modes: measured,
          ratios: ratiosOf(measured, 'product'),
          ratiosCacheOff: ratiosOf(measured, 'product-no-cache'),
          // Where the overhead goes: the session-store reads of each product mode (dynalite here, DynamoDB in AWS),
          // about 0 per request with the cache (one per session and window), 1 without it.
          sessionStoreCallsPerProxiedRequest: Object.fromEntries(
            PRODUCT_MODES.map((mode) => [mode, Object.fromEntries(Object.entries(store[mode]).filter(([name, v]) => name !== 'ms' && v > 0))]),
          ) as Record<ProductMode, Record<string, number>>,
          sessionStoreMsPerProxiedRequest: Object.fromEntries(PRODUCT_MODES.map((mode) => [mode, store[mode].ms ?? 0])) as Record<ProductMode, number>,
          // New client connections each proxy accepted during the case (the same keep-alive on all: ideally `concurrency` or fewer).
          clientConnections: {
            floor: context.connections.floor() - connectionsBefore.floor,
            product: context.connections.product() - connectionsBefore.product,
            'product-no-cache': context.connections['product-no-cache']() - connectionsBefore['product-no-cache'],
          },
        };
      }
    }
    return results;
  },
};

/**
 * Key-ring calls that reach the master key (KMS in AWS, the local key file here): counted on the
 * key ring under the per-container data-key cache, so cache hits are not counted.
 */
const keyRingCalls: Record<string, number> = { generateDataKey: 0, decryptDataKey: 0 };
{
  const { LocalKeyRing } = await import('../shared/adapters/local-key-ring.js');
  const proto = LocalKeyRing.prototype as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  for (const name of ['generateDataKey', 'decryptDataKey'] as const) {
    const original = proto[name]!;
    proto[name] = function (this: unknown, ...args: unknown[]) {
      keyRingCalls[name] = (keyRingCalls[name] ?? 0) + 1;
      return original.apply(this, args);
    };
  }
}

/** Store method → the DynamoDB API call it makes (one each). */
const DYNAMODB_CALL: Record<string, string> = {
  putTransaction: 'PutItem',
  putSession: 'PutItem',
  takeTransaction: 'DeleteItem',
  deleteSession: 'DeleteItem',
  getSession: 'GetItem',
  acquireRefreshLease: 'UpdateItem',
  completeRefresh: 'UpdateItem',
  releaseRefreshLease: 'UpdateItem',
};

/** Counts the real store and key-ring calls `action` makes, as the DynamoDB and KMS calls they are in AWS. */
async function awsCalls(context: BenchContext, action: () => Promise<void>): Promise<Record<string, number>> {
  const store = { ...context.storeCalls };
  const keys = { ...keyRingCalls };
  await action();
  const calls: Record<string, number> = { GetItem: 0, PutItem: 0, DeleteItem: 0, UpdateItem: 0 };
  for (const [method, api] of Object.entries(DYNAMODB_CALL)) calls[api] = (calls[api] ?? 0) + ((context.storeCalls[method] ?? 0) - (store[method] ?? 0));
  calls.GenerateDataKey = (keyRingCalls.generateDataKey ?? 0) - (keys.generateDataKey ?? 0);
  calls.Decrypt = (keyRingCalls.decryptDataKey ?? 0) - (keys.decryptDataKey ?? 0);
  return calls;
}

/**
 * Token lifecycle (budgets in docs/design.md §5): a 100-request storm on an expired access token must
 * reach the token endpoint exactly once; AWS calls per sign-in, per 100 proxied requests and per
 * refresh, counted call by call (this process is one warm container).
 */
const tokenLifecycle: BenchSection = {
  name: 'tokenLifecycle',
  async run(context) {
    const sandbox = context.sandbox;
    const patient = context.patient;
    const read = (base: { fhirBaseUrl: string; cookie: string }) =>
      fetch(`${base.fhirBaseUrl}/Patient/${patient}`, { headers: { cookie: base.cookie, accept: 'application/fhir+json' } }).then(async (r) => {
        await r.arrayBuffer();
        if (r.status !== 200) throw new Error(`proxied read answered ${r.status}`);
      });

    // Sign-in with a 1-second access token, then let it expire.
    await sandbox.setFaults({ accessTokenTtlSeconds: 1 });
    let session!: BenchContext['proxied'];
    const signIn = await awsCalls(context, async () => {
      session = await proxiedSession(context.stack, sandbox, patient);
    });
    await sandbox.setFaults({ accessTokenTtlSeconds: null });
    await new Promise((done) => setTimeout(done, 1_200));

    const statsBefore = await sandbox.stats();
    const before = statsBefore.tokenRequests.refresh_token ?? 0;
    const reuseBefore = statsBefore.refreshReuseDetected;
    const storm = await awsCalls(context, async () => {
      await Promise.all(Array.from({ length: 100 }, () => read(session)));
    });
    const statsAfter = await sandbox.stats();
    const stormRefreshes = (statsAfter.tokenRequests.refresh_token ?? 0) - before;

    const proxied100 = await awsCalls(context, async () => {
      for (let i = 0; i < 100; i++) await read(session);
    });

    const refreshOnce = await awsCalls(context, async () => {
      const response = await fetch(`${context.stack.apiUrl}/sessions/${session.sessionId}/refresh`, { method: 'POST', headers: { cookie: session.cookie } });
      await response.arrayBuffer();
      if (response.status !== 200) throw new Error(`refresh answered ${response.status}`);
    });

    return {
      refreshStorm: {
        requests: 100,
        tokenEndpointRefreshCalls: stormRefreshes,
        refreshTokenReuseDetected: statsAfter.refreshReuseDetected - reuseBefore,
        goal: 'exactly 1',
        goalMet: stormRefreshes === 1,
        awsCalls: storm,
      },
      awsCallsPerSignIn: { ...signIn, note: 'launch and callback in one warm container: the callback reuses the data key it just generated' },
      awsCallsPer100ProxiedRequests: proxied100,
      awsCallsPerRefresh: refreshOnce,
    };
  },
};

/**
 * A sign-in, warm (this process is one warm container of each function): process CPU and wall time
 * per sign-in (upper bounds: the scripted browser and dynalite run in this process too; the sandbox
 * EHR's sign-in pages run in its own process, their CPU reported apart), the product's own calls to the EHR by kind, and the browser's requests from the
 * EHR's launch page to the app's first data, all sequential by nature (each needs the previous answer).
 */
const signInPath: BenchSection = {
  name: 'signIn',
  async run(context) {
    const deps = context.stack.deps as { http: CoreDeps['http'] };
    const original = deps.http;
    const ehrCalls: Record<string, number> = {};
    deps.http = (url, init) => {
      const path = new URL(url).pathname;
      const kind = path.endsWith('/.well-known/smart-configuration') ? 'discovery' : /jwks/i.test(path) ? 'jwks' : /token/i.test(path) ? 'token' : path;
      ehrCalls[kind] = (ehrCalls[kind] ?? 0) + 1;
      return original(url, init);
    };
    const runs = 3;
    const ehr = await context.sandbox.usage();
    const cpu = process.cpuUsage();
    const started = performance.now();
    let hops = 0;
    try {
      for (let i = 0; i < runs; i++) {
        hops = await signInToFirstData(context);
      }
    } finally {
      deps.http = original;
    }
    const used = process.cpuUsage(cpu);
    const wallMs = performance.now() - started;
    const ehrUsed = (await context.sandbox.usage()).cpuUs - ehr.cpuUs;
    const per = (v: number) => Math.round((v / runs) * 1000) / 1000;
    const sequentialWaits = { coldContainers: await signInWaits(context, true), warmContainers: await signInWaits(context, false) };
    return {
      runs,
      sequentialWaits,
      wallMsPerSignIn: per(wallMs),
      cpuMsPerSignInUpperBound: per((used.user + used.system) / 1000),
      ehrCpuMsPerSignIn: per(ehrUsed / 1000),
      productEhrCallsPerSignIn: Object.fromEntries(Object.entries(ehrCalls).map(([k, v]) => [k, per(v)])),
      browserRequestsLaunchToFirstData: hops,
      apiRequestsPerSignIn: 4,
      note: 'API requests: /launch, /callback, GET /sessions/{id}, the first proxied read; discovery and JWKS come from the per-container caches when warm',
    };
  },
};

/**
 * One sign-in from the sandbox EHR's launch page, then what the app does first: its session read and
 * one proxied read. Returns the browser's requests from the launch to the first data.
 */
async function signInToFirstData(context: BenchContext): Promise<number> {
  const browser = new BrowserClient();
  const nav = await browser.navigate(`${context.sandbox.url}/ehr/launch?patient=${encodeURIComponent(context.patient)}`);
  const sessionId = nav.finalLocation ? /#session=([A-Za-z0-9_-]+)$/.exec(nav.finalLocation)?.[1] : undefined;
  if (!sessionId) throw new Error('the launch did not reach the app');
  const cookie = `__Host-smart-launch=${browser.cookies('localhost').get('__Host-smart-launch')}`;
  for (const path of [`/sessions/${sessionId}`, `/sessions/${sessionId}/fhir/Patient/${context.patient}`]) {
    const response = await fetch(`${context.stack.apiUrl}${path}`, { headers: { cookie } });
    await response.arrayBuffer();
    if (response.status !== 200) throw new Error(`${path} answered ${response.status}`);
  }
  return nav.hops.length + 2;
}

/** Simulated network latency of every call in the sequential-waits pass (see bench/sign-in-waits.ts). */
const SIMULATED_LATENCY_MS = 20;

/**
 * One sign-in and its first data with every call of the API to the EHR, DynamoDB, KMS and Secrets
 * Manager recorded and delayed by the same simulated latency: the sequential round trips per API
 * request, from cold containers (discovery and JWKS caches empty) or warm ones.
 */
async function signInWaits(context: BenchContext, cold: boolean): Promise<ReturnType<typeof stepsByRequest>> {
  const deps = context.stack.deps as { -readonly [K in keyof CoreDeps]: CoreDeps[K] };
  if (cold) {
    deps.discovery?.clear();
    deps.jwks = new JwksCache();
  }
  const recorder = recordWaits(deps, SIMULATED_LATENCY_MS, { secretsCached: !cold });
  const api = recordApiRequests(context.stack.requestsInFlight, (path) =>
    path === '/launch' ? 'launch' : path === '/callback' ? 'callback' : /^\/sessions\/[^/]+$/.test(path) ? 'session read' : path.includes('/fhir/') ? 'first FHIR read' : path,
  );
  try {
    await signInToFirstData(context);
  } finally {
    recorder.restore();
    api.restore();
  }
  return stepsByRequest(api.requests, recorder.waits);
}

/**
 * Scaling with the Bundle's size: own CPU per request of the product and of the floor for searchsets
 * of 10, 50 and 200 entries (as many as the sandbox patient has, up to that), concurrency 1.
 */
const bundleScaling: BenchSection = {
  name: 'bundleScaling',
  async run(context) {
    const results: Record<string, unknown> = {};
    for (const count of [10, 50, 200]) {
      let entries = 0;
      let bytes = 0;
      const scenario: Scenario = {
        name: `search${count}`,
        path: `Observation?patient=${context.patient}&_count=${count}`,
        check: (status, body) => {
          isOk(`search${count}`)(status, body);
          entries = (JSON.parse(body.toString('utf8')) as { entry?: unknown[] }).entry?.length ?? 0;
          bytes = body.length;
        },
      };
      const targets: Partial<Record<Mode, Target>> = {
        direct: { url: `${context.direct.fhirBaseUrl}/${scenario.path}`, headers: { authorization: `Bearer ${context.direct.accessToken}`, accept: 'application/fhir+json' } },
        floor: { url: `${context.floor.fhirBaseUrl}/${scenario.path}`, headers: { cookie: context.floor.cookie, accept: 'application/fhir+json' } },
        product: { url: `${context.proxied.fhirBaseUrl}/${scenario.path}`, headers: { cookie: context.proxied.cookie, accept: 'application/fhir+json' } },
      };
      const measured = await measureModes(context.sandbox, scenario, targets, 1, Math.max(16, Math.floor(context.options.iterations / 3)), undefined, SHIPPED_MODES);
      results[`_count=${count}`] = {
        entries,
        bytes,
        productOwnCpuMs: measured.product.ownCpuMsPerRequest,
        floorOwnCpuMs: measured.floor.ownCpuMsPerRequest,
        productOwnCpuMsPerKb: Math.round((measured.product.ownCpuMsPerRequest / (bytes / 1024)) * 10000) / 10000,
        ownCpuToFloor: ratio(measured.product.ownCpuMsPerRequest, measured.floor.ownCpuMsPerRequest),
      };
    }
    return results;
  },
};

/** The answer sizes of `answerScaling`. */
const ANSWER_SIZES = [1024, 100 * 1024, 1024 * 1024, 10 * 1024 * 1024] as const;

/**
 * A FHIR answer of an exact size: `bin` raw bytes (a Binary read without a FHIR format, as the sandbox
 * serves its Binaries), `json` one large FHIR JSON resource (a Binary in FHIR JSON, its base64 `data`
 * making up the size). Deterministic, incompressible bytes; built once per size.
 */
const answers = new Map<string, { type: string; body: Buffer }>();
function answerOf(kind: 'bin' | 'json', bytes: number): { type: string; body: Buffer } {
  const name = `${kind}-${bytes}`;
  let found = answers.get(name);
  if (found) return found;
  if (kind === 'bin') {
    const body = Buffer.alloc(bytes);
    for (let i = 0; i < bytes; i++) body[i] = (i * 2654435761) >>> 24;
    found = { type: 'application/octet-stream', body };
  } else {
    const head = `{"resourceType":"Binary","id":"bench-json-${bytes}","contentType":"application/octet-stream","data":"`;
    const tail = '"}';
    const dataChars = Math.max(0, bytes - head.length - tail.length) & ~3;
    const data = answerOf('bin', (dataChars / 4) * 3).body.toString('base64');
    found = { type: 'application/fhir+json;charset=utf-8', body: Buffer.from(head + data + tail, 'utf8') };
  }
  answers.set(name, found);
  return found;
}

/**
 * CPU per request as the answer grows (1 KB to 10 MB, raw Binary and one large FHIR JSON resource),
 * concurrency 1. The answers come from a small local server standing in for the EHR's Binary
 * endpoint: every `fetch` of `{sandbox FHIR base}/Binary/bench-…` (direct, floor and product alike:
 * all three use the global `fetch`) is sent there, over a real keep-alive connection, so the three
 * modes move the same bytes and only the proxies' own work differs.
 */
const answerScaling: BenchSection = {
  name: 'answerScaling',
  async run(context) {
    const { createServer } = await import('node:http');
    const server = createServer((req, res) => {
      const match = /\/Binary\/bench-(bin|json)-(\d+)$/.exec(req.url ?? '');
      if (!match) {
        res.writeHead(404).end();
        return;
      }
      const answer = answerOf(match[1] as 'bin' | 'json', Number(match[2]));
      res.writeHead(200, { 'content-type': answer.type, 'content-length': answer.body.length });
      res.end(answer.body);
    });
    server.keepAliveTimeout = 30_000;
    await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
    const port = (server.address() as import('node:net').AddressInfo).port;
    const prefix = `${context.direct.fhirBaseUrl}/Binary/bench-`;
    const realFetch = globalThis.fetch;
    globalThis.fetch = ((input: string | URL | Request, init?: RequestInit) => {
      const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
      return realFetch(url.startsWith(prefix) ? `http://127.0.0.1:${port}/Binary/bench-${url.slice(prefix.length)}` : input, init);
    }) as typeof fetch;
    const results: Record<string, unknown> = {};
    try {
      for (const kind of ['bin', 'json'] as const) {
        for (const size of ANSWER_SIZES) {
          const path = `Binary/bench-${kind}-${size}`;
          let bytes = 0;
          const scenario: Scenario = {
            name: path,
            path,
            check: (status, body) => {
              isOk(path)(status, body);
              bytes = body.length;
            },
          };
          const accept = kind === 'json' ? 'application/fhir+json' : '*/*';
          const targets: Partial<Record<Mode, Target>> = {
            direct: { url: `${context.direct.fhirBaseUrl}/${path}`, headers: { authorization: `Bearer ${context.direct.accessToken}`, accept } },
            floor: { url: `${context.floor.fhirBaseUrl}/${path}`, headers: { cookie: context.floor.cookie, accept } },
            product: { url: `${context.proxied.fhirBaseUrl}/${path}`, headers: { cookie: context.proxied.cookie, accept } },
          };
          // Fewer requests for the large answers: their CPU per request is large against the noise.
          const batch = size >= 1024 * 1024 ? 4 : 16;
          const measured = await measureModes(context.sandbox, scenario, targets, 1, Math.max(batch * 2, Math.floor(context.options.iterations / (size >= 1024 * 1024 ? 8 : 3))), batch, SHIPPED_MODES);
          results[`${kind}@${size >= 1024 * 1024 ? `${size / (1024 * 1024)}MB` : `${size / 1024}KB`}`] = {
            kind: kind === 'bin' ? 'Binary (raw bytes)' : 'FHIR JSON resource',
            bytes,
            productOwnCpuMs: measured.product.ownCpuMsPerRequest,
            floorOwnCpuMs: measured.floor.ownCpuMsPerRequest,
            directCpuMs: measured.direct.cpuMsPerRequest,
            productOwnCpuMsPerMb: Math.round((measured.product.ownCpuMsPerRequest / (bytes / (1024 * 1024))) * 1000) / 1000,
            ownCpuToFloor: ratio(measured.product.ownCpuMsPerRequest, measured.floor.ownCpuMsPerRequest),
          };
        }
      }
    } finally {
      globalThis.fetch = realFetch;
      server.closeAllConnections();
      await new Promise<void>((done) => server.close(() => done()));
    }
    return results;
  },
};

/** Every part of the report, in order. */
export const SECTIONS: BenchSection[] = [proxyOverhead, bundleScaling, answerScaling, tokenLifecycle, signInPath];

/**
 * Sends what the handlers write to stdout (their JSON log lines) to a file until the returned function
 * is called. Each line is written synchronously, as Node writes its stdout when that is a file (and as
 * a pipe, Lambda's stdout, takes a short write at once): not through a file stream, whose every write
 * is a trip to the thread pool and back (35-90 µs of process CPU each here) that no deployment pays.
 */
const logBytes = { total: 0, lines: 0 };
function divertLogs(file: string): () => Promise<number> {
  const original = process.stdout.write.bind(process.stdout);
  const fd = openSync(file, 'w');
  let lines = 0;
  process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    lines++;
    logBytes.lines++;
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    logBytes.total += bytes.length;
    for (let offset = 0; offset < bytes.length; ) offset += writeSync(fd, bytes, offset, bytes.length - offset);
    const callback = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
    if (callback) process.nextTick(callback);
    return true;
  }) as typeof process.stdout.write;
  let ended: Promise<number> | undefined;
  return () => {
    process.stdout.write = original;
    ended ??= Promise.resolve().then(() => {
      closeSync(fd);
      return lines;
    });
    return ended;
  };
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  await mkdir(dirname(options.out), { recursive: true });
  const restoreLogs = divertLogs(join(dirname(options.out), 'logs.ndjson'));
  const started = performance.now();
  const dataDir = await mkdtemp(join(tmpdir(), 'smart-launch-bench-'));
  // The sandbox EHR runs in a child process (its CPU and GC are not the proxies'); it registers the
  // API's redirect URI before the API starts, so the API's port is chosen first.
  // A second API, the same config but its proxy's session cache off, signs in at the same EHR client.
  const apiPort = await freeLoopbackPort();
  const apiUrl = `http://localhost:${apiPort}`;
  const noCachePort = await freeLoopbackPort();
  const noCacheUrl = `http://localhost:${noCachePort}`;
  const sandbox = await startSandboxProcess({
    clients: [
      { clientId: LOCAL_CLIENT.clientId, clientAuth: 'client_secret_basic', clientSecret: LOCAL_CLIENT.clientSecret, redirectUris: [`${apiUrl}/callback`, `${noCacheUrl}/callback`] },
      { clientId: LOCAL_PUBLIC_CLIENT, clientAuth: 'none', redirectUris: [`${apiUrl}/callback`] },
      { clientId: BENCH_CLIENT.clientId, clientAuth: 'client_secret_basic', clientSecret: BENCH_CLIENT.clientSecret, redirectUris: [BENCH_CLIENT.redirectUri] },
    ],
    launchUrl: `${apiUrl}/launch`,
    appLaunchUrl: `${apiUrl}/app/`,
  });
  let stack: LocalStack | undefined;
  let noCacheStack: LocalStack | undefined;
  let floor: FloorProxy | undefined;
  try {
    stack = await startLocalStack({ port: apiPort, dataDir, sandbox: false, configure: (urls) => sampleConfig(urls.apiUrl, sandbox.fhirBaseUrl) });
    if (stack.apiUrl !== apiUrl) throw new Error(`the API listens at ${stack.apiUrl}, not ${apiUrl}`);
    // Its own data folder (dynalite, keys, audit file), as a second deployment would have.
    noCacheStack = await startLocalStack({
      port: noCachePort,
      dataDir: join(dataDir, 'no-cache'),
      sandbox: false,
      configure: (urls) => ({ ...(sampleConfig(urls.apiUrl, sandbox.fhirBaseUrl) as Record<string, unknown>), session: { proxyCacheSeconds: 0 } }),
    });
    if (noCacheStack.apiUrl !== noCacheUrl) throw new Error(`the cache-off API listens at ${noCacheStack.apiUrl}, not ${noCacheUrl}`);
    if (noCacheStack.config.session.proxyCacheSeconds !== 0 || stack.config.session.proxyCacheSeconds === 0) throw new Error('the two stacks do not differ in session.proxyCacheSeconds alone');
    const patient = sandbox.patients[0]!.id;
    const storeCalls = countStoreCalls(stack.deps.store);
    const storeCallsNoCache = countStoreCalls(noCacheStack.deps.store);
    const productConnections = sameKeepAlive(stack);
    const noCacheConnections = sameKeepAlive(noCacheStack);
    const accessToken = await directToken(sandbox, patient);
    floor = await startFloorProxy({ client: stack.dynamo.client, tableName: stack.dynamo.tableName, upstreamBase: sandbox.fhirBaseUrl, accessToken });
    const context: BenchContext = {
      stack,
      sandbox,
      patient,
      proxied: await proxiedSession(stack, sandbox, patient),
      proxiedNoCache: await proxiedSession(noCacheStack, sandbox, patient),
      direct: { fhirBaseUrl: sandbox.fhirBaseUrl, accessToken },
      floor: { fhirBaseUrl: `${floor.url}/${floor.sessionId}/fhir`, cookie: floor.cookie },
      storeCalls,
      storeCallsNoCache,
      connections: { floor: (floor as FloorProxy).connections, product: productConnections, 'product-no-cache': noCacheConnections },
      options,
    };
    const sections: Record<string, unknown> = {};
    const wanted = (name: string) => options.sections === undefined || options.sections.includes(name);
    for (const section of SECTIONS) if (wanted(section.name)) sections[section.name] = await section.run(context);
    if (options.sections !== undefined) {
      if (wanted('coldStart')) sections.coldStart = await coldStart(resolve(dirname(fileURLToPath(import.meta.url)), '..'), dirname(options.out), options.coldRuns);
      await restoreLogs();
      const previousPartial = await readPrevious(options.out);
      await writeFile(options.out, `${JSON.stringify({ generatedAt: new Date().toISOString(), partial: options.sections, modes: options.modes, machineLoad: machineLoad(), sections }, null, 2)}\n`);
      printSummary(sections, options.out, Math.round((performance.now() - started) / 100) / 10, previousPartial);
      return;
    }

    // Module load of the Lambda bundles, in fresh processes (no stack needed).
    sections.coldStart = await coldStart(resolve(dirname(fileURLToPath(import.meta.url)), '..'), dirname(options.out), options.coldRuns);
    const overheadCases = sections.proxyOverhead as Record<string, { modes: Record<Mode, ModeMeasure>; sessionStoreCallsPerProxiedRequest: Record<ProductMode, Record<string, number>> }>;
    const atC1 = (mode: ProductMode) => ['read@c1', 'search50@c1'].map((name) => overheadCases[name]?.modes[mode].ownCpuMsPerRequest ?? NaN);
    const c1 = atC1('product');
    const c1Off = atC1('product-no-cache');
    // The cache-off stack's store calls per request in the same cases, as the DynamoDB calls they are (KMS: none, the data key is cached).
    const offCalls: Record<string, number> = { GetItem: 0, PutItem: 0, DeleteItem: 0, UpdateItem: 0, GenerateDataKey: 0, Decrypt: 0 };
    for (const name of ['read@c1', 'search50@c1']) {
      for (const [method, perRequest] of Object.entries(overheadCases[name]?.sessionStoreCallsPerProxiedRequest['product-no-cache'] ?? {})) {
        const api = DYNAMODB_CALL[method];
        if (api !== undefined) offCalls[api] = (offCalls[api] ?? 0) + perRequest / 2;
      }
    }
    const lifecycle = sections.tokenLifecycle as { awsCallsPerSignIn: Record<string, number>; awsCallsPer100ProxiedRequests: Record<string, number> };
    const signIn = sections.signIn as { cpuMsPerSignInUpperBound: number; productEhrCallsPerSignIn: Record<string, number> };
    sections.costModel = costModel({
      proxyCpuMs: (c1[0]! + c1[1]!) / 2,
      cacheOff: { proxyCpuMs: (c1Off[0]! + c1Off[1]!) / 2, proxiedCalls: offCalls },
      signInCpuMs: signIn.cpuMsPerSignInUpperBound,
      signInCalls: lifecycle.awsCallsPerSignIn,
      proxiedCalls: Object.fromEntries(Object.entries(lifecycle.awsCallsPer100ProxiedRequests).map(([k, v]) => [k, v / 100])),
      signInEhrCalls: Object.values(signIn.productEhrCallsPerSignIn).reduce((a, b) => a + b, 0),
      // One operational line (fhir request forwarded, on completion) and one audit record per proxied request.
      logBytesPerRequest: logBytes.lines > 0 ? Math.round((2 * logBytes.total) / logBytes.lines) : 0,
    });
    const report = {
      generatedAt: new Date().toISOString(),
      environment: { node: process.version, platform: `${process.platform}/${process.arch}`, cpus: cpus().length, machineLoad: machineLoad() },
      setup:
        'local stack (same handlers as Lambda, streaming FHIR proxy) + a second local stack with the proxy session cache off (proxyCacheSeconds 0) + floor proxy (bench/floor.ts) + dynalite + client in the bench process, sandbox EHR in a child process; same fetch client, same server, same data; direct, floor, product (as shipped, cache on) and product-no-cache alternating; CPU = process.cpuUsage() of the bench process, own CPU = minus the direct mode; EHR CPU and GC of both processes reported apart',
      options: { iterations: options.iterations, concurrency: options.concurrency, throughputRequests: options.throughputRequests },
      goal: 'product p50 <= 1.15x the floor and own CPU per request <= 1.2x the floor, every case (reported for both product modes)',
      durationSeconds: Math.round((performance.now() - started) / 100) / 10,
      sections,
    };
    const logLines = await restoreLogs();
    (report as Record<string, unknown>).logLinesWritten = logLines;
    const previous = await readPrevious(options.out);
    await mkdir(dirname(options.out), { recursive: true });
    await writeFile(options.out, `${JSON.stringify(report, null, 2)}\n`);
    if (previous) await writeFile(options.out.replace(/\.json$/, '') + '.previous.json', `${JSON.stringify(previous, null, 2)}\n`);
    printSummary(report.sections, options.out, report.durationSeconds, previous);
  } finally {
    await restoreLogs();
    await floor?.close();
    await noCacheStack?.close();
    await stack?.close();
    await sandbox.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** The previous run's results at `file`, if any (a partial run compares with the previous partial run). */
function readPrevious(file: string): Promise<{ generatedAt?: string; sections?: Record<string, unknown> } | undefined> {
  return readFile(file, 'utf8').then(
    (text) => JSON.parse(text) as { generatedAt?: string; sections?: Record<string, unknown> },
    () => undefined,
  );
}

/** A free loopback port, for the API to listen on once the sandbox knows its URL. */
async function freeLoopbackPort(): Promise<number> {
  const server = createHttpServer();
  const port = await listenOnLoopback(server, 0);
  await new Promise<void>((done) => server.close(() => done()));
  return port;
}

/** The figures compared run to run: ratios and own CPU per request, per case. */
function keyFigures(sections: Record<string, unknown>): Record<string, number> {
  const out: Record<string, number> = {};
  // A run from before a mode existed has no figures for it: those lines are left out of the comparison.
  const overhead = (sections.proxyOverhead ?? {}) as Record<string, { modes?: Partial<Record<Mode, ModeMeasure>>; ratios?: ReturnType<typeof ratiosOf>; ratiosCacheOff?: ReturnType<typeof ratiosOf> }>;
  for (const [name, r] of Object.entries(overhead)) {
    if (!r.modes || !r.ratios) continue;
    out[`${name} p50/floor`] = r.ratios.toFloor.p50;
    out[`${name} ownCpu/floor`] = r.ratios.toFloor.ownCpu;
    out[`${name} p50/direct`] = r.ratios.toDirect.p50;
    if (r.ratiosCacheOff) {
      out[`${name} no-cache p50/floor`] = r.ratiosCacheOff.toFloor.p50;
      out[`${name} no-cache ownCpu/floor`] = r.ratiosCacheOff.toFloor.ownCpu;
    }
    if (r.modes.product) out[`${name} product ownCpu ms`] = r.modes.product.ownCpuMsPerRequest;
    if (r.modes['product-no-cache']) out[`${name} no-cache ownCpu ms`] = r.modes['product-no-cache'].ownCpuMsPerRequest;
    if (r.modes.floor) out[`${name} floor ownCpu ms`] = r.modes.floor.ownCpuMsPerRequest;
    if (r.modes.direct?.ehrCpuMsPerRequest !== undefined) out[`${name} ehr cpu ms`] = r.modes.direct.ehrCpuMsPerRequest;
  }
  const cold = sections.coldStart as ColdStart | undefined;
  for (const [tracing, loads] of [['tracing on', cold?.tracingOn], ['tracing off', cold?.tracingOff]] as const) {
    for (const [name, l] of Object.entries(loads ?? {})) {
      if (name.startsWith('bare')) continue;
      out[`cold ${name} ${tracing} cpu/bare`] = l.cpuRatioToBare;
      if (l.ownCpuMs !== undefined) out[`cold ${name} ${tracing} own cpu ms`] = l.ownCpuMs;
      if (l.ownCpuRatioToBare !== undefined) out[`cold ${name} ${tracing} own-based ratio`] = l.ownCpuRatioToBare;
    }
  }
  return out;
}

/** A bundle's module load in the cold-start section (bench/cold-start.ts). */
interface ColdLoad {
  loadMs: number;
  ratioToBare: number;
  cpuMs: number;
  cpuRatioToBare: number;
  ownCpuMs?: number;
  /** The ratio to the bare handler read from the own CPU (bench/cold-start.ts). */
  ownCpuRatioToBare?: number;
}

interface ColdStart {
  bundleBytes: Record<string, number>;
  /** Absent in runs from before each function had the bare handler of its own clients. */
  bareOf?: Record<string, string>;
  tracingOn: Record<string, ColdLoad>;
  tracingOff: Record<string, ColdLoad>;
}

/** Lines comparing this run's key figures with the previous run's JSON (same file, before it is overwritten). */
function deltas(previous: { generatedAt?: string; sections?: Record<string, unknown> } | undefined, sections: Record<string, unknown>): string[] {
  if (!previous?.sections) return ['(no previous run to compare with)'];
  const before = keyFigures(previous.sections);
  const now = keyFigures(sections);
  const lines = [`compared with the previous run (${previous.generatedAt ?? '?'}):`];
  for (const [name, value] of Object.entries(now)) {
    const old = before[name];
    if (old === undefined || !Number.isFinite(old)) continue;
    const change = old === 0 ? 0 : ((value - old) / Math.abs(old)) * 100;
    lines.push(`  ${name.padEnd(36)} ${old.toFixed(3).padStart(8)} -> ${value.toFixed(3).padStart(8)}  (${change >= 0 ? '+' : ''}${change.toFixed(1)}%)`);
  }
  return lines;
}

/** The machine's load averages (1, 5, 15 min) when the run started: other work on the machine moves every figure. */
const loadAtStart = loadavg();
const machineLoad = () => ({ cpus: cpus().length, loadAverageAtStart: loadAtStart.map((v) => Math.round(v * 100) / 100), loadAverageAtEnd: loadavg().map((v) => Math.round(v * 100) / 100) });

function printSummary(sections: Record<string, unknown>, out: string, seconds: number, previous?: { generatedAt?: string; sections?: Record<string, unknown> }): void {
  const overhead = sections.proxyOverhead as Record<
    string,
    {
      modes: Record<Mode, ModeMeasure>;
      ratios: ReturnType<typeof ratiosOf>;
      ratiosCacheOff: ReturnType<typeof ratiosOf>;
      sessionStoreCallsPerProxiedRequest: Record<ProductMode, Record<string, number>>;
      sessionStoreMsPerProxiedRequest: Record<ProductMode, number>;
      clientConnections: Record<'floor' | ProductMode, number>;
    }
  > | undefined;
  const overheadCases = overhead ?? {};
  const lines = [
    'FHIR proxy vs its floor (bench/floor.ts) vs direct: same run, same client, modes alternating',
    'product: as shipped, session cache on (proxyCacheSeconds 5); product-no-cache: proxyCacheSeconds 0, one store read per request like the floor',
    '',
  ];
  lines.push('case           mode               p50 ms   p95 ms    req/s   cpu ms/req  own cpu ms/req  gc ms/req  ehr cpu ms/req  ehr gc ms/req');
  for (const [name, r] of Object.entries(overheadCases)) {
    for (const mode of MODES) {
      const m = r.modes[mode];
      lines.push(
        `${name.padEnd(14)} ${mode.padEnd(16)} ${m.latencyMs.p50.toFixed(2).padStart(8)} ${m.latencyMs.p95.toFixed(2).padStart(8)} ${m.throughputRps.toFixed(1).padStart(8)} ${m.cpuMsPerRequest.toFixed(3).padStart(11)} ${(mode === 'direct' ? '' : m.ownCpuMsPerRequest.toFixed(3)).padStart(15)} ${m.gcMsPerRequest.toFixed(3).padStart(10)} ${m.ehrCpuMsPerRequest.toFixed(3).padStart(15)} ${m.ehrGcMsPerRequest.toFixed(3).padStart(14)}`,
      );
    }
    for (const product of PRODUCT_MODES) {
      const ratios = product === 'product' ? r.ratios : r.ratiosCacheOff;
      const f = ratios.toFloor;
      const d = ratios.toDirect;
      lines.push(
        `${''.padEnd(14)} ${product}/floor: p50 ${f.p50.toFixed(2)}x (goal <= 1.15: ${ratios.goals.p50Within1_15xFloor ? 'met' : 'NOT met'}), p95 ${f.p95.toFixed(2)}x, req/s ${f.throughput.toFixed(2)}x, own cpu ${f.ownCpu.toFixed(2)}x (goal <= 1.2: ${ratios.goals.ownCpuWithin1_2xFloor ? 'met' : 'NOT met'})`,
        `${''.padEnd(16)} own cpu ${product}/floor round by round (${ratios.ownCpuToFloorByRound.rounds} rounds): min ${ratios.ownCpuToFloorByRound.min.toFixed(2)}x, median ${ratios.ownCpuToFloorByRound.median.toFixed(2)}x, max ${ratios.ownCpuToFloorByRound.max.toFixed(2)}x`,
        `${''.padEnd(16)} ${product}/direct: p50 ${d.p50.toFixed(2)}x, p95 ${d.p95.toFixed(2)}x, req/s ${d.throughput.toFixed(2)}x`,
        `${''.padEnd(16)} per ${product} request: session-store calls ${JSON.stringify(r.sessionStoreCallsPerProxiedRequest[product])}, ${r.sessionStoreMsPerProxiedRequest[product].toFixed(2)} ms in the store`,
      );
    }
    lines.push(
      `${''.padEnd(14)} floor/direct p50 ${r.ratios.floorToDirect.p50.toFixed(2)}x; new client connections: floor ${r.clientConnections.floor}, product ${r.clientConnections.product}, product-no-cache ${r.clientConnections['product-no-cache']}`,
    );
  }
  lines.push('', ...deltas(previous, sections));
  const lifecycle = sections.tokenLifecycle as
    | {
        refreshStorm: { requests: number; tokenEndpointRefreshCalls: number; goalMet: boolean; awsCalls: Record<string, number> };
        awsCallsPerSignIn: Record<string, unknown>;
        awsCallsPer100ProxiedRequests: Record<string, number>;
        awsCallsPerRefresh: Record<string, number>;
      }
    | undefined;
  if (lifecycle) {
    const calls = (c: Record<string, unknown>) =>
      ['GetItem', 'PutItem', 'DeleteItem', 'UpdateItem', 'GenerateDataKey', 'Decrypt'].map((k) => `${k} ${String(c[k] ?? 0)}`).join(', ');
    lines.push(
      '',
      'Token lifecycle (real calls counted; this process is one warm container)',
      `  refresh storm: ${lifecycle.refreshStorm.requests} proxied requests on an expired token -> ${lifecycle.refreshStorm.tokenEndpointRefreshCalls} token endpoint refresh call(s) (goal exactly 1: ${lifecycle.refreshStorm.goalMet ? 'met' : 'NOT met'})`,
      `  per sign-in:              ${calls(lifecycle.awsCallsPerSignIn)}`,
      `  per 100 proxied requests: ${calls(lifecycle.awsCallsPer100ProxiedRequests)}`,
      `  per refresh:              ${calls(lifecycle.awsCallsPerRefresh)}`,
    );
  }
  const signIn = sections.signIn as
    | { wallMsPerSignIn: number; cpuMsPerSignInUpperBound: number; ehrCpuMsPerSignIn: number; productEhrCallsPerSignIn: Record<string, number>; browserRequestsLaunchToFirstData: number; sequentialWaits?: Record<'coldContainers' | 'warmContainers', ReturnType<typeof stepsByRequest>> }
    | undefined;
  if (signIn) {
    lines.push(
      '',
      'Sign-in, warm (EHR launch page to the first proxied read)',
      `  ${signIn.browserRequestsLaunchToFirstData} sequential browser requests; product calls to the EHR per sign-in: ${JSON.stringify(signIn.productEhrCallsPerSignIn)}`,
      ...(['coldContainers', 'warmContainers'] as const).flatMap((which) => {
        const waits = signIn.sequentialWaits?.[which];
        if (!waits) return [];
        return [
          `  sequential round trips of the API, ${which === 'coldContainers' ? 'cold caches' : 'warm'}: ${waits.total} (${Object.entries(waits.requests).map(([name, r]) => `${name} ${r.count}`).join(', ')})`,
          ...Object.entries(waits.requests).map(([name, r]) => `    ${name}: ${r.steps.join(' → ')}`),
        ];
      }),
      `  ${signIn.wallMsPerSignIn.toFixed(1)} ms wall, ${signIn.cpuMsPerSignInUpperBound.toFixed(1)} ms CPU per sign-in (upper bound: the scripted browser and dynalite run in the bench process); the sandbox EHR ${signIn.ehrCpuMsPerSignIn.toFixed(1)} ms in its own`,
    );
  }
  const scaling = sections.bundleScaling as Record<string, { entries: number; bytes: number; productOwnCpuMs: number; floorOwnCpuMs: number; productOwnCpuMsPerKb: number; ownCpuToFloor: number }> | undefined;
  if (scaling) {
    lines.push('', 'Own CPU per request vs Bundle size (concurrency 1)');
    for (const [name, r] of Object.entries(scaling)) {
      lines.push(`  ${name.padEnd(11)} ${String(r.entries).padStart(4)} entries ${(r.bytes / 1024).toFixed(1).padStart(7)} KB: product ${r.productOwnCpuMs.toFixed(3)} ms (${r.productOwnCpuMsPerKb.toFixed(4)} ms/KB), floor ${r.floorOwnCpuMs.toFixed(3)} ms, ${r.ownCpuToFloor.toFixed(2)}x`);
    }
  }
  const answerSizes = sections.answerScaling as Record<string, { kind: string; bytes: number; productOwnCpuMs: number; floorOwnCpuMs: number; productOwnCpuMsPerMb: number; ownCpuToFloor: number }> | undefined;
  if (answerSizes) {
    lines.push('', 'Own CPU per request vs answer size (concurrency 1; linear or better means ms/MB flat or falling)');
    for (const [name, r] of Object.entries(answerSizes)) {
      lines.push(`  ${name.padEnd(10)} ${(r.bytes / 1024).toFixed(0).padStart(6)} KB: product ${r.productOwnCpuMs.toFixed(3).padStart(8)} ms (${r.productOwnCpuMsPerMb.toFixed(3)} ms/MB), floor ${r.floorOwnCpuMs.toFixed(3).padStart(8)} ms, ${r.ownCpuToFloor.toFixed(2)}x`);
    }
  }
  const cold = sections.coldStart as ColdStart | undefined;
  if (cold) {
    lines.push('', 'Cold start: module load of each Lambda bundle vs a bare handler importing the same AWS SDK clients (median, fresh processes;');
    lines.push('  ratios: median of per-round ratios; own: CPU of the bundle after the SDK clients, and the ratio read from it)');
    for (const [name, bytes] of Object.entries(cold.bundleBytes)) {
      const on = cold.tracingOn[name]!;
      const off = cold.tracingOff[name]!;
      const both = (l: ColdLoad) =>
        `${l.loadMs.toFixed(0).padStart(5)} ms (${l.ratioToBare.toFixed(2)}x), cpu ${l.cpuMs.toFixed(0).padStart(5)} ms (${l.cpuRatioToBare.toFixed(2)}x)` +
        `${l.ownCpuMs === undefined ? '' : `, own ${l.ownCpuMs.toFixed(0).padStart(3)} ms`}${l.ownCpuRatioToBare === undefined ? '' : ` (${l.ownCpuRatioToBare.toFixed(2)}x)`}`;
      const against = cold.bareOf?.[name];
      const label = against === undefined || against === name ? name : `${name} (vs ${against})`;
      lines.push(`  ${label.padEnd(20)} ${(bytes / 1024).toFixed(0).padStart(5)} KB  tracing on ${both(on)}  tracing off ${both(off)}`);
    }
  }
  const cost = sections.costModel as CostModel | undefined;
  if (cost) lines.push('', `Cost model (prices as of ${cost.prices.asOf}; assumptions in the JSON)`, costTable(cost));
  const load = machineLoad();
  lines.push('', `machine load (1/5/15 min) at start ${load.loadAverageAtStart.join('/')}, at end ${load.loadAverageAtEnd.join('/')}, on ${load.cpus} cores`);
  lines.push('', `written to ${out} (${seconds} s)`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

await main();
