/**
 * The sandbox EHR in a process of its own, for the bench (bench/run.ts starts it with `startSandboxProcess`).
 *
 * In the bench's process the EHR's work (its FHIR search, its JSON, its garbage collection) would be
 * charged to whichever mode is running when it happens: a search run's EHR collects far more than a
 * read run's, and the floor's own CPU would move with it. Here the bench process holds only the client,
 * the proxies and the store, and the EHR reports its own CPU and GC time when asked.
 *
 * Child side (this module run as a program): starts the sandbox with the options in argv[2] (JSON), sends
 * `{ type: 'ready', … }` over IPC, then answers requests `{ id, op }`:
 *   usage  -> { cpuUs, gcMs }       CPU (user + system, µs) and GC pause time (ms) of this process so far
 *   faults -> the faults in force   after applying `patch` (a `null` value removes that switch)
 *   stats  -> the sandbox's counters
 * It exits when the bench closes it or goes away.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { PerformanceObserver } from 'node:perf_hooks';
import type { SandboxClient, SandboxFaults, SandboxPatient, SandboxStats } from '../local/sandbox/index.js';

export interface SandboxProcessOptions {
  readonly clients: SandboxClient[];
  readonly launchUrl?: string;
  readonly appLaunchUrl?: string;
}

/** What the bench uses of the sandbox, over IPC. */
export interface SandboxProcess {
  readonly pid: number;
  readonly url: string;
  readonly fhirBaseUrl: string;
  readonly patients: readonly SandboxPatient[];
  /** CPU (µs, user + system) and GC pause time (ms) of the sandbox process so far. */
  usage(): Promise<{ cpuUs: number; gcMs: number }>;
  /** Sets fault switches (`null`: off) and answers those in force. */
  setFaults(patch: { [K in keyof SandboxFaults]?: SandboxFaults[K] | null }): Promise<SandboxFaults>;
  stats(): Promise<SandboxStats>;
  close(): Promise<void>;
}

interface Ready {
  readonly type: 'ready';
  readonly url: string;
  readonly fhirBaseUrl: string;
  readonly patients: SandboxPatient[];
}
interface Reply {
  readonly id: number;
  readonly result?: unknown;
  readonly error?: string;
}

/** Forks this module under tsx and waits until the sandbox listens. */
export async function startSandboxProcess(options: SandboxProcessOptions): Promise<SandboxProcess> {
  // The tsx loader only (not the bench's own flags such as --cpu-prof): the child is not profiled.
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), [JSON.stringify(options)], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, SMART_LAUNCH_BENCH_SANDBOX_CHILD: '1' },
  });
  const pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  let nextId = 0;
  const exited = once(child, 'exit');
  const ready = await new Promise<Ready>((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`the sandbox process exited (${code}) before it was ready`));
    child.once('exit', onExit);
    child.once('message', (message) => {
      child.off('exit', onExit);
      resolve(message as Ready);
    });
  });
  child.on('message', (message) => {
    const reply = message as Reply;
    const waiter = pending.get(reply.id);
    if (!waiter) return;
    pending.delete(reply.id);
    if (reply.error !== undefined) waiter.reject(new Error(reply.error));
    else waiter.resolve(reply.result);
  });
  child.on('exit', () => {
    for (const waiter of pending.values()) waiter.reject(new Error('the sandbox process exited'));
    pending.clear();
  });
  const ask = <T>(op: string, patch?: unknown): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      child.send({ id, op, patch });
    });
  return {
    pid: child.pid!,
    url: ready.url,
    fhirBaseUrl: ready.fhirBaseUrl,
    patients: ready.patients,
    usage: () => ask('usage'),
    setFaults: (patch) => ask('faults', patch),
    stats: () => ask('stats'),
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** Starts summing this process's GC pauses (the `gc` performance entries); the meter reads the total so far, in ms. */
export function gcPauseMeter(): () => number {
  let total = 0;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) total += entry.duration;
  }).observe({ entryTypes: ['gc'] });
  return () => total;
}

async function runChild(): Promise<void> {
  const options = JSON.parse(process.argv[2] ?? '{}') as SandboxProcessOptions;
  const gcMs = gcPauseMeter();
  const { startSandbox } = await import('../local/sandbox/index.js');
  const sandbox = await startSandbox({ port: 0, ...options });
  const send = (message: unknown) => process.send!(message);
  process.on('message', (message: { id: number; op: string; patch?: Record<string, unknown> }) => {
    try {
      if (message.op === 'usage') {
        const cpu = process.cpuUsage();
        send({ id: message.id, result: { cpuUs: cpu.user + cpu.system, gcMs: gcMs() } });
      } else if (message.op === 'faults') {
        const faults = sandbox.faults as Record<string, unknown>;
        for (const [name, value] of Object.entries(message.patch ?? {})) {
          if (value === null) delete faults[name];
          else faults[name] = value;
        }
        send({ id: message.id, result: sandbox.faults });
      } else if (message.op === 'stats') {
        send({ id: message.id, result: sandbox.stats });
      } else {
        send({ id: message.id, error: `unknown op ${message.op}` });
      }
    } catch (error) {
      send({ id: message.id, error: error instanceof Error ? error.message : String(error) });
    }
  });
  const stop = () => void sandbox.close().finally(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('disconnect', stop);
  send({ type: 'ready', url: sandbox.url, fhirBaseUrl: sandbox.fhirBaseUrl, patients: sandbox.patients } satisfies Ready);
}

if (process.env.SMART_LAUNCH_BENCH_SANDBOX_CHILD === '1' && process.argv[1] === fileURLToPath(import.meta.url)) await runChild();
