import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, watch, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inject } from 'vitest';

/**
 * The one real `cdk synth --quiet -c customer=example` of a test run (the CLI, cdk.json, esbuild
 * bundling, cdk-nag, the template checks and cfn-guard), shared by every test file that needs it:
 * test/infra/synth.test.ts reads its output and status, test/deploy/rehearsal.test.ts loads its
 * bundles. The first caller in the run takes a lock (an atomic mkdir in the run folder that the
 * global setup provides) and synthesizes; every other caller, in any worker, waits for its result.
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** The sample customer's template in the synth's output folder (`-c customer=example`). */
export const SAMPLE_TEMPLATE = 'SmartLaunch-example-health.template.json';
const WAIT_MS = 300_000;

export interface SynthResult {
  /** The cdk.out folder (inside the project, so bundles resolve the AWS SDK from node_modules). */
  readonly outdir: string;
  readonly status: number | null;
  /** stdout and stderr of the CLI. */
  readonly output: string;
  /** Wall time of the synth itself, in ms. */
  readonly ms: number;
}

/** The environment without AWS credentials, CDK or app settings: never wait on the metadata endpoint. */
export function offlineEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of Object.keys(env)) {
    if (name.startsWith('AWS_') || name.startsWith('CDK_') || name.startsWith('SMART_LAUNCH_')) delete env[name];
  }
  return { ...env, AWS_EC2_METADATA_DISABLED: 'true', ...extra };
}

function runSynth(run: string): Promise<SynthResult> {
  const outdir = join(run, 'cdk.out');
  const started = Date.now();
  return new Promise((done) => {
    // The project's own CLI (what `npx cdk` resolves to), started directly: npx's resolution costs a second of CPU.
    const cli = join(ROOT, 'node_modules', 'aws-cdk', 'bin', 'cdk');
    const child = spawn(process.execPath, [cli, 'synth', '--quiet', '-c', 'customer=example', '--output', outdir], { cwd: ROOT, env: offlineEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    child.stderr.on('data', (c: Buffer) => chunks.push(c));
    const timer = setTimeout(() => child.kill('SIGTERM'), WAIT_MS);
    child.on('close', (status) => {
      clearTimeout(timer);
      const result: SynthResult = { outdir, status, output: Buffer.concat(chunks).toString('utf8'), ms: Date.now() - started };
      writeFileSync(join(run, 'result.json.tmp'), JSON.stringify(result));
      renameSync(join(run, 'result.json.tmp'), join(run, 'result.json'));
      done(result);
    });
  });
}

/** Resolves when another worker's synth has written its result (watched, not polled). */
function resultOf(run: string): Promise<SynthResult> {
  const file = join(run, 'result.json');
  return new Promise((done, fail) => {
    const read = () => JSON.parse(readFileSync(file, 'utf8')) as SynthResult;
    const watcher = watch(run, () => {
      if (!existsSync(file)) return;
      finish();
      done(read());
    });
    const timer = setTimeout(() => {
      finish();
      fail(new Error(`the shared cdk synth wrote no result within ${WAIT_MS} ms (${run})`));
    }, WAIT_MS);
    const finish = () => {
      clearTimeout(timer);
      watcher.close();
    };
    if (existsSync(file)) {
      finish();
      done(read());
    }
  });
}

let pending: Promise<SynthResult> | undefined;

export function sharedSynth(): Promise<SynthResult> {
  if (pending) return pending;
  let run = inject('smartLaunchSynthRun') as string | undefined;
  if (!run) {
    // Without the global setup (a config that does not name it): this file synthesizes for itself.
    mkdirSync(join(ROOT, 'node_modules', '.cache'), { recursive: true });
    run = mkdtempSync(join(ROOT, 'node_modules', '.cache', 'smart-launch-synth-'));
  }
  try {
    mkdirSync(join(run, 'lock'));
    pending = runSynth(run);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    pending = resultOf(run);
  }
  return pending;
}
