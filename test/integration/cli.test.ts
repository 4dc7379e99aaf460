import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliMain } from '../../local/cli.js';
import { createLogger } from '../../shared/http/logger.js';
import { startSandbox, type Sandbox } from '../../local/sandbox/index.js';
import { sandboxSigningKey } from '../fixtures/keys.js';

let dir: string;
let sandbox: Sandbox;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'smart-launch-cli-'));
  sandbox = await startSandbox({ signingKey: await sandboxSigningKey(), port: 0, clients: [{ clientId: 'cli-app', clientAuth: 'none', redirectUris: ['http://localhost:1/callback'] }] });
});
afterAll(async () => {
  await sandbox?.close();
  await rm(dir, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `npm start -- ARGS` in this process, for the runs that end before anything listens. */
async function runCliInProcess(args: string[]): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const code = await cliMain(args, {
    stdout: (text) => (stdout += text),
    stderr: (text) => (stderr += text),
    stop: Promise.resolve(),
  });
  return { code, stdout, stderr };
}

/** Runs `npm start -- ARGS` the way npm does (tsx on local/cli.ts); stops it once `until` matches stdout. */
function runCli(args: string[], until?: RegExp, onReady?: (stdout: string) => Promise<void>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'local/cli.ts', ...args], { env: { ...process.env, LOG_LEVEL: 'SILENT' } });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (until && until.test(stdout)) {
        until = undefined;
        void (onReady ?? (async () => undefined))(stdout)
          .catch(reject)
          .finally(() => child.kill('SIGTERM'));
      }
    });
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('npm start', () => {
  it('refuses an invalid config file at start, listing every problem by JSON path, and starts nothing', async () => {
    const file = join(dir, 'bad.json');
    await writeFile(
      file,
      JSON.stringify({
        customer: 'Bad Customer',
        publicUrl: 'http://smart.example.com',
        app: { url: 'https://app.example.com/' },
        issuers: [
          { iss: 'https://ehr.example.org/fhir', clientId: 'a', clientAuth: 'client_secret_basic', scope: 'launch', default: true },
          { iss: 'https://ehr2.example.org/fhir', clientId: 'b', clientAuth: 'none', scope: 'launch', default: true, extra: 1 },
        ],
      }),
    );

    const run = await runCliInProcess(['--config', file, '--port', '0', '--data', join(dir, 'data')]);

    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`configuration ${file} is invalid`);
    expect(run.stderr).toContain('$.customer:');
    expect(run.stderr).toContain('$.publicUrl: publicUrl must use https (http is accepted only on loopback');
    expect(run.stderr).toContain('$.issuers[0].clientSecret: clientSecret is required');
    expect(run.stderr).toContain('$.issuers[1]: Unrecognized key: "extra"');
    expect(run.stderr).toContain('$.issuers: at most one issuer may be "default": true');
    expect(run.stderr).toContain('Nothing was started');
    expect(run.stdout).not.toContain('is running');
  });

  it('refuses a config file that is not JSON', async () => {
    const file = join(dir, 'broken.json');
    await writeFile(file, '{ "customer": ');
    const run = await runCliInProcess(['--config', file, '--port', '0', '--data', join(dir, 'data')]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/\$: not valid JSON/);
  });

  it('answers a bad port or an unknown option with exit code 2 and the usage, and starts nothing', async () => {
    const badPort = await runCliInProcess(['--port', '70000', '--data', join(dir, 'data')]);
    expect(badPort.code).toBe(2);
    expect(badPort.stderr).toContain('--port must be a port number (0-65535), got "70000"');
    expect(badPort.stdout).not.toContain('is running');

    const unknown = await runCliInProcess(['--colour']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('Usage: npm start');

    const badLevel = await runCliInProcess(['--log-level', 'loud']);
    expect(badLevel.code).toBe(2);
    expect(badLevel.stderr).toContain('--log-level must be one of TRACE, DEBUG, INFO, WARN, ERROR, CRITICAL, SILENT, got "loud"');

    // A start that fails after the level was set leaves the handlers' loggers as they were.
    const levelBefore = createLogger('smart-launch-cli-test').getLevelName();
    const failed = await runCliInProcess(['--log-level', 'debug', '--port', '70000']);
    expect(failed.code).toBe(2);
    expect(createLogger('smart-launch-cli-test').getLevelName()).toBe(levelBefore);
  });

  // The one run through the real entry point (a child process, as `npm start` runs it).
  it('serves the API for a given config file on the given port, against the EHR it names', async () => {
    const file = join(dir, 'good.json');
    await writeFile(
      file,
      JSON.stringify({
        customer: 'cli-test',
        publicUrl: 'http://localhost:1',
        app: { url: 'http://localhost:1/app/' },
        issuers: [{ iss: sandbox.fhirBaseUrl, clientId: 'cli-app', clientAuth: 'none', scope: 'launch/patient openid fhirUser patient/*.rs' }],
      }),
    );

    let location: string | null = null;
    // LOG_LEVEL is SILENT in the child's environment: --log-level turns the handlers' lines on.
    const run = await runCli(['--config', file, '--port', '0', '--data', join(dir, 'data'), '--log-level', 'info'], /API\s+http:\/\/localhost:\d+/, async (stdout) => {
      const api = stdout.match(/API\s+(http:\/\/localhost:\d+)/)![1]!;
      const response = await fetch(`${api}/launch`, { redirect: 'manual' });
      location = response.headers.get('location');
    });

    expect(run.stdout).toContain('customer    cli-test (1 issuer)');
    expect(run.stdout).not.toContain('sandbox EHR');
    expect(location).not.toBeNull();
    expect(new URL(location!).origin).toBe(sandbox.url);
    expect(new URL(location!).searchParams.get('aud')).toBe(sandbox.fhirBaseUrl);
    const launchLine = run.stdout.split('\n').find((line) => line.includes('"launch started"'));
    expect(launchLine, 'the launch handler logged at INFO').toBeDefined();
    expect(JSON.parse(launchLine!)).toMatchObject({ level: 'INFO', message: 'launch started', service: 'smart-launch-launch' });
  });
});
