import { createServer } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { doctorMain, USAGE } from '../../cli/doctor.js';
import { USAGE as BIN_USAGE } from '../../cli/main.js';
import { systemClock } from '../../shared/adapters/system.js';
import type { Clock } from '../../shared/core/ports.js';
import { startSandbox, type Sandbox } from '../../local/sandbox/index.js';
import { BrowserClient } from './browser-client.js';
import { sandboxSigningKey } from '../fixtures/keys.js';

/*
 * `smart-launch doctor --sign-in` against the sandbox EHR over real HTTP: doctor runs the product's
 * launch, callback, session and proxy handlers on a loopback listener; the "browser" doctor opens is
 * the test's redirect-following client, which signs in at the sandbox's login page as a patient.
 */

let dir: string;
let sandbox: Sandbox;
/** The loopback port registered at the sandbox for doctor's redirect URI (reserved once, then reused). */
let port: number;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const address = server.address();
  await new Promise<void>((done) => server.close(() => done()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'smart-launch-doctor-sign-in-'));
  port = await freePort();
  sandbox = await startSandbox({
    signingKey: await sandboxSigningKey(),
    port: 0,
    clients: [{ clientId: 'doctor-app', clientAuth: 'client_secret_basic', clientSecret: 'doctor-secret', redirectUris: [`http://localhost:${port}/callback`] }],
  });
});
afterAll(async () => {
  await sandbox?.close();
  await rm(dir, { recursive: true, force: true });
});
beforeEach(() => {
  sandbox.clearQuirks();
  sandbox.clearFaults();
});

async function configFile(): Promise<string> {
  const file = join(dir, `config-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(
    file,
    JSON.stringify({
      customer: 'doctor-test',
      // Deliberately elsewhere: doctor overrides publicUrl and app.url with its loopback listener.
      publicUrl: 'http://localhost:4999',
      app: { url: 'http://localhost:4999/app/' },
      issuers: [
        {
          iss: sandbox.fhirBaseUrl,
          clientId: 'doctor-app',
          clientAuth: 'client_secret_basic',
          clientSecret: 'doctor-secret',
          scope: 'launch/patient openid fhirUser patient/*.rs offline_access',
          default: true,
        },
      ],
    }),
  );
  return file;
}

interface Run {
  readonly code: number;
  readonly err: string;
  readonly findings: Array<{ check: string; status: string; summary: string; hint?: string; code?: string }>;
  readonly verdicts: Record<string, string>;
  readonly opened: string[];
}

/** Signs in as the sandbox's first patient at every URL doctor opens (unless `signIn` is false). */
async function signIn(args: string[], options: { signIn?: boolean; clock?: Clock } = {}): Promise<Run> {
  let out = '';
  let err = '';
  const opened: string[] = [];
  const code = await doctorMain(['--config', await configFile(), '--mode', 'local', '--sign-in', '--json', ...args], {
    stdout: (t) => (out += t),
    stderr: (t) => (err += t),
    clock: options.clock,
    openBrowser: async (url) => {
      opened.push(url);
      if (options.signIn === false) return;
      const browser = new BrowserClient();
      const login = await browser.navigate(url);
      const action = login.body.match(/<form method="post" action="([^"]+\/login)">/)?.[1];
      if (!action) throw new Error(`no login form at ${login.url}`);
      await browser.submitForm(new URL(action.replace(/&#(\d+);/g, (_, c: string) => String.fromCharCode(Number(c))), login.url).href, {
        account: `patient-${sandbox.patients[0]!.id}`,
      });
    },
  });
  const report = JSON.parse(out) as { issuers: Array<{ findings: Run['findings'] }> };
  const findings = report.issuers[0]!.findings;
  return { code, err, findings, verdicts: Object.fromEntries(findings.map((f) => [f.check, f.status])), opened };
}

const finding = (run: Run, check: string) => run.findings.find((f) => f.check === check);

describe('smart-launch doctor --sign-in against the sandbox EHR', () => {
  it('a clean sign-in: grant, context, refresh token, id_token and both proxied reads pass (SMART-CTX-01)', async () => {
    const run = await signIn(['--port', String(port)]);

    expect(run.code).toBe(0);
    expect(run.opened).toEqual([`http://localhost:${port}/launch?iss=${encodeURIComponent(sandbox.fhirBaseUrl)}`]);
    expect(run.err).toContain(`redirect URI: http://localhost:${port}/callback`);
    expect(run.err).toContain('must have this exact redirect URI registered');
    expect(run.verdicts).toMatchObject({
      'sign-in': 'pass',
      grant: 'pass',
      context: 'pass',
      'refresh-token': 'pass',
      'id-token': 'pass',
      'read-patient': 'pass',
      'read-fhir-user': 'pass',
    });
    const patient = sandbox.patients[0]!.id;
    expect(finding(run, 'context')?.summary).toBe(`patient ${patient}, encounter (none), fhirUser ${sandbox.fhirBaseUrl}/Patient/${patient}`);
    expect(finding(run, 'read-fhir-user')?.summary).toBe(`GET Patient/${patient} through the proxy answered HTTP 200`);
    expect(finding(run, 'refresh-token')?.summary).toContain('offline access');
    expect(finding(run, 'id-token')?.summary).toContain(`issuer ${sandbox.issuer}`);
    expect(finding(run, 'read-patient')?.summary).toBe(`GET Patient/${patient} through the proxy answered HTTP 200`);
  });

  it('a registered redirect URI given with --redirect-uri is used as is', async () => {
    const run = await signIn(['--redirect-uri', `http://localhost:${port}/callback`]);

    expect(run.code).toBe(0);
    expect(run.verdicts['sign-in']).toBe('pass');
  });

  it('narrowed consent: the missing scopes and what breaks without them, no refresh token (SMART-SCOPE-07)', async () => {
    Object.assign(sandbox.quirks, { narrowScopes: true });
    const run = await signIn(['--port', String(port)]);

    expect(run.code).toBe(0);
    expect(run.verdicts).toMatchObject({ grant: 'warn', 'refresh-token': 'warn', 'read-patient': 'pass' });
    const grant = finding(run, 'grant')!;
    expect(grant.summary).toContain('narrowed grant: missing ');
    expect(grant.summary).toContain('offline_access (no refresh token: the session ends when the access token expires)');
    expect(grant.summary).toContain('patient/*.rs (the proxy refuses requests outside the grant (403 SCOPE_INSUFFICIENT))');
    expect(grant.hint).toContain('granted less than asked');
  });

  it('no refresh token: a warning with the fix, the rest passes (SMART-REFRESH-01)', async () => {
    Object.assign(sandbox.quirks, { noRefreshToken: true });
    const run = await signIn(['--port', String(port)]);

    expect(run.code).toBe(0);
    expect(run.verdicts).toMatchObject({ 'refresh-token': 'warn', context: 'pass', 'read-patient': 'pass' });
    expect(finding(run, 'refresh-token')?.summary).toContain('no refresh token although the scope asks for offline_access');
  });

  it('a patient the token cannot read: the callback\'s read of the patient fails, with its code and fix, exit code 1 (SMART-CTX-01)', async () => {
    sandbox.faults.fhirAnswer = {
      status: 403,
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'forbidden' }] }),
      pathPrefix: 'Patient/',
    };
    const run = await signIn(['--port', String(port)]);

    expect(run.code).toBe(1);
    expect(run.verdicts['read-patient']).toBe('fail');
    expect(run.verdicts['sign-in']).toBeUndefined();
    const read = finding(run, 'read-patient')!;
    expect(read.summary).toBe('the callback failed: the FHIR server answered 403 when reading the launch\'s patient');
    expect(read.code).toBe('PATIENT_NOT_ACCESSIBLE');
    expect(read.hint).toContain('did not let this sign-in read the patient');
  });

  it('an id_token that fails verification: the id-token check fails with the callback\'s code (SMART-OIDC-02)', async () => {
    sandbox.faults.idToken = 'bad-signature';
    const run = await signIn(['--port', String(port)]);

    expect(run.code).toBe(1);
    expect(run.verdicts['id-token']).toBe('fail');
    expect(finding(run, 'id-token')).toMatchObject({ status: 'fail', code: 'ID_TOKEN_INVALID' });
    expect(finding(run, 'id-token')?.summary).toMatch(/^the callback failed: the id_token /);
  });

  it('no sign-in before the timeout (on the clock port): a clear failure naming the redirect URI', async () => {
    const expired = new AbortController();
    const clock: Clock = {
      now: () => systemClock.now(),
      sleep: (ms) => systemClock.sleep(ms),
      timeout: (ms) => (ms === 120_000 ? expired.signal : AbortSignal.timeout(ms)),
    };
    const run = await signIn(['--port', String(port), '--timeout', '120'], {
      signIn: false,
      clock: {
        ...clock,
        timeout: (ms) => {
          const signal = clock.timeout!(ms);
          // The operator walks away: the wait's deadline passes as soon as doctor starts waiting.
          if (ms === 120_000) queueMicrotask(() => expired.abort(new DOMException('timed out', 'TimeoutError')));
          return signal;
        },
      },
    });

    expect(run.code).toBe(1);
    expect(run.opened).toHaveLength(1);
    expect(finding(run, 'sign-in')).toMatchObject({ status: 'fail', summary: 'no callback within 120 s' });
    expect(finding(run, 'sign-in')?.hint).toContain(`register http://localhost:${port}/callback`);
  });

  it('--no-open only prints the sign-in URL; usage texts mention --sign-in', async () => {
    const expired = new AbortController();
    expired.abort();
    const run = await signIn(['--port', String(port), '--no-open'], { clock: { ...systemClock, timeout: () => expired.signal } });

    expect(run.opened).toEqual([]);
    expect(run.err).toContain(`http://localhost:${port}/launch?iss=`);
    expect(USAGE).toContain('--sign-in');
    expect(USAGE).toContain('--no-open');
    expect(BIN_USAGE).toContain('--sign-in');
  });
});
