import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { doctorMain } from '../../cli/doctor.js';
import { cookieSiteProblem } from '../../shared/config/cookie-site.js';
import { binMain } from '../../cli/main.js';
import { startSandbox, type Sandbox, type SandboxQuirks } from '../../local/sandbox/index.js';
import { sandboxSigningKey } from '../fixtures/keys.js';

/*
 * `smart-launch doctor` against the sandbox EHR with each quirk switch: the verdict of each check and
 * the exit code. Doctor only talks to the EHR (no API runs): the redirect URI is registered for
 * PUBLIC_URL, which never needs to answer.
 */

const PUBLIC_URL = 'http://localhost:4999';
let dir: string;
let sandbox: Sandbox;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'smart-launch-doctor-'));
  sandbox = await startSandbox({
    signingKey: await sandboxSigningKey(),
    port: 0,
    clients: [{ clientId: 'doctor-app', clientAuth: 'client_secret_basic', clientSecret: 'doctor-secret', redirectUris: [`${PUBLIC_URL}/callback`] }],
  });
});
afterAll(async () => {
  await sandbox?.close();
  await rm(dir, { recursive: true, force: true });
});
beforeEach(() => {
  sandbox.clearQuirks();
});

async function configFile(issuer: Record<string, unknown> = {}): Promise<string> {
  const file = join(dir, `config-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(
    file,
    JSON.stringify({
      customer: 'doctor-test',
      publicUrl: PUBLIC_URL,
      app: { url: `${PUBLIC_URL}/app/` },
      issuers: [
        {
          iss: sandbox.fhirBaseUrl,
          clientId: 'doctor-app',
          clientAuth: 'client_secret_basic',
          clientSecret: 'doctor-secret',
          scope: 'launch openid fhirUser patient/*.rs offline_access',
          default: true,
          ...issuer,
        },
      ],
    }),
  );
  return file;
}

interface Run {
  readonly code: number;
  readonly out: string;
  readonly err: string;
  /** check → status, from the JSON report. */
  readonly verdicts: Record<string, string>;
  readonly codes: Record<string, string | undefined>;
}

async function doctor(args: string[], quirks: SandboxQuirks = {}): Promise<Run> {
  Object.assign(sandbox.quirks, quirks);
  let out = '';
  let err = '';
  const io = { stdout: (t: string) => (out += t), stderr: (t: string) => (err += t) };
  const code = await doctorMain(args, io);
  let json = '';
  const jsonCode = await doctorMain([...args, '--json'], { stdout: (t) => (json += t), stderr: () => undefined });
  expect(jsonCode).toBe(code);
  const report = JSON.parse(json) as { issuers: Array<{ findings: Array<{ check: string; status: string; code?: string }> }> };
  const findings = report.issuers[0]!.findings;
  return {
    code,
    out,
    err,
    verdicts: Object.fromEntries(findings.map((f) => [f.check, f.status])),
    codes: Object.fromEntries(findings.map((f) => [f.check, f.code])),
  };
}

const local = (file: string, ...more: string[]) => ['--config', file, '--mode', 'local', '--launch', ...more];

describe('smart-launch doctor against the sandbox EHR', () => {
  it('passes a healthy EHR with exit code 0, every check in the table', async () => {
    const run = await doctor(local(await configFile()));

    expect(run.code).toBe(0);
    expect(run.verdicts).toEqual({
      discovery: 'pass',
      tls: 'info',
      pkce: 'pass',
      'client-auth': 'pass',
      'launch-ehr': 'pass',
      'launch-standalone': 'pass',
      openid: 'pass',
      'scope-syntax': 'pass',
      scopes: 'pass',
      refresh: 'pass',
      revocation: 'pass',
      jwks: 'pass',
      'token-endpoint': 'pass',
      launch: 'pass',
    });
    expect(run.out).toContain(`${sandbox.fhirBaseUrl}  (client doctor-app, client_secret_basic)`);
    expect(run.out).toMatch(/Result: OK \(0 failures, 0 warnings, 1 issuer\)/);
  });

  it('no S256: fails PKCE with PKCE_UNSUPPORTED and its fix, exit code 1 (SMART-DISC-04)', async () => {
    const run = await doctor(local(await configFile()), { noS256: true });

    expect(run.code).toBe(1);
    expect(run.verdicts.pkce).toBe('fail');
    expect(run.codes.pkce).toBe('PKCE_UNSUPPORTED');
    expect(run.out).toContain('FAIL  pkce');
    expect(run.out).toContain('the SMART configuration does not list "S256" in code_challenge_methods_supported [PKCE_UNSUPPORTED]');
    expect(run.out).toContain('fix: The EHR does not advertise PKCE S256');
  });

  it('v1 only: auto syntax sends v1 scopes and passes; a forced v2 syntax fails the launch with invalid_scope (SMART-SCOPE-02)', async () => {
    const auto = await doctor(local(await configFile()), { v1Only: true });
    expect(auto.code).toBe(0);
    expect(auto.verdicts).toMatchObject({ 'scope-syntax': 'pass', scopes: 'pass', launch: 'pass' });
    expect(auto.out).toContain('v1 (patient/*.rs → patient/*.read)');

    const forced = await doctor(local(await configFile({ scopeSyntax: 'v2' })), { v1Only: true });
    expect(forced.code).toBe(1);
    expect(forced.verdicts).toMatchObject({ launch: 'fail', scopes: 'warn' });
    expect(forced.codes.launch).toBe('AUTHORIZATION_FAILED');
    expect(forced.out).toContain('the EHR answered the sign-in request with "invalid_scope"');
  });

  it('v1 only with a granular scope: fails scope-syntax with SCOPE_NOT_EXPRESSIBLE (SMART-SCOPE-03)', async () => {
    const run = await doctor(local(await configFile({ scope: 'launch openid fhirUser patient/Observation.rs?category=laboratory' })), { v1Only: true });

    expect(run.code).toBe(1);
    expect(run.codes['scope-syntax']).toBe('SCOPE_NOT_EXPRESSIBLE');
  });

  it('no revocation endpoint: a warning that logout cannot revoke, exit code 0 (SMART-REVOKE-02)', async () => {
    const run = await doctor(local(await configFile()), { noRevocation: true });

    expect(run.code).toBe(0);
    expect(run.verdicts.revocation).toBe('warn');
    expect(run.out).toContain('revocation: "not-offered"');
  });

  it('relative endpoints: resolved, every check passes, the launch answers (SMART-DISC-05)', async () => {
    const run = await doctor(local(await configFile()), { relativeEndpoints: true });

    expect(run.code).toBe(0);
    expect(run.verdicts).toMatchObject({ discovery: 'pass', jwks: 'pass', 'token-endpoint': 'pass', launch: 'pass' });
  });

  it('no well-known file: the v1 fallback is a warning; the OpenID issuer is found at the authorization server and doctor names it (SMART-DISC-07)', async () => {
    const run = await doctor(local(await configFile()), { noWellKnown: true });

    expect(run.code).toBe(0);
    expect(run.verdicts).toMatchObject({ discovery: 'warn', openid: 'pass', jwks: 'pass', launch: 'pass' });
    expect(run.out).toContain(`issuer ${sandbox.issuer} found at ${sandbox.issuer}/.well-known/openid-configuration`);
  });

  it('no well-known file and no OpenID configuration at the authorization server: openid fails without openidIssuer and passes with it (SMART-DISC-07)', async () => {
    const without = await doctor(local(await configFile()), { noWellKnown: true, noOpenidConfiguration: true });
    expect(without.code).toBe(1);
    expect(without.verdicts).toMatchObject({ discovery: 'warn', pkce: 'warn', 'client-auth': 'warn', openid: 'fail', launch: 'pass' });
    expect(without.codes.openid).toBe('OPENID_UNSUPPORTED');

    expect(without.out).toContain(`none was found at ${sandbox.issuer}/.well-known/openid-configuration`);

    sandbox.clearQuirks();
    const withIssuer = await doctor(local(await configFile({ openidIssuer: sandbox.issuer })), { noWellKnown: true });
    expect(withIssuer.code).toBe(0);
    expect(withIssuer.verdicts).toMatchObject({ discovery: 'warn', openid: 'pass', jwks: 'pass' });
  });

  it.each([['narrowScopes'], ['noRefreshToken'], ['noPatientContext'], ['emptyPatient']] as const)(
    '%s: invisible before a sign-in, so doctor passes (the integration tests cover what launches do with it)',
    async (quirk) => {
      const run = await doctor(local(await configFile()), { [quirk]: true });

      expect(run.code).toBe(0);
    },
  );

  it('several quirks at once: every failure is listed, not only the first', async () => {
    const run = await doctor(local(await configFile({ clientAuth: 'none', clientSecret: undefined })), { noS256: true, noRevocation: true, v1Only: true });

    expect(run.code).toBe(1);
    expect(run.verdicts).toMatchObject({ pkce: 'fail', revocation: 'warn', 'client-auth': 'pass' });
  });

  it('an unreachable EHR: discovery fails with the cause and the fix, exit code 1', async () => {
    const run = await doctor(['--config', await configFile({ iss: 'http://127.0.0.1:9/fhir' }), '--mode', 'local']);

    expect(run.code).toBe(1);
    expect(run.codes.discovery).toBe('DISCOVERY_UNAVAILABLE');
    expect(run.out).toMatch(/cause: fetch failed/);
  });

  it('refuses an invalid config like the deployment does, with exit code 2 and every problem by JSON path', async () => {
    const file = join(dir, 'bad.json');
    await writeFile(file, JSON.stringify({ customer: 'x', publicUrl: 'http://smart.example.com', app: { url: 'https://a.example/' }, issuers: [] }));
    let err = '';

    const code = await doctorMain(['--config', file], { stdout: () => undefined, stderr: (t) => (err += t) });

    expect(code).toBe(2);
    expect(err).toContain('$.publicUrl: publicUrl must use https in a deployed stack');
    expect(err).toContain('$.issuers: issuers must list at least one EHR');
  });

  it('refuses, in aws mode, an app on another site than publicUrl with the message synth gives (the cookie-site rule)', async () => {
    const file = join(dir, 'sites.json');
    const publicUrl = 'https://abc123.execute-api.us-east-1.amazonaws.com/prod';
    await writeFile(file, JSON.stringify({ customer: 'x', publicUrl, app: { url: 'https://app.acme.example/' }, issuers: [{ iss: 'https://ehr.acme.example/fhir', clientId: 'a', clientAuth: 'none', scope: 'launch' }] }));
    let err = '';

    const code = await doctorMain(['--config', file], { stdout: () => undefined, stderr: (t) => (err += t) });

    expect(code).toBe(2);
    expect(err).toContain(`  - $.app.url: ${cookieSiteProblem(publicUrl, 'https://app.acme.example/')}`);
  });

  it('answers usage errors with exit code 2', async () => {
    let err = '';
    expect(await doctorMain([], { stdout: () => undefined, stderr: (t) => (err += t) })).toBe(2);
    expect(err).toContain('--config FILE is required');
    expect(await doctorMain(['--config', 'x.json', '--mode', 'prod'], { stdout: () => undefined, stderr: () => undefined })).toBe(2);
  });
});

describe('npx smart-launch doctor (the package bin)', () => {
  /** The bin's dispatch (`cli/bin.js` hands it argv and the process streams), run in-process. */
  async function npx(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    let stdout = '';
    let stderr = '';
    const code = await binMain(args, { stdout: (text) => (stdout += text), stderr: (text) => (stderr += text) });
    return { code, stdout, stderr };
  }

  it('dispatches doctor: the table on stdout and exit code 1 when a check fails', async () => {
    sandbox.quirks.noS256 = true;

    const run = await npx(['doctor', '--config', await configFile(), '--mode', 'local']);

    expect(run.code).toBe(1);
    expect(run.stdout).toContain('smart-launch doctor: customer "doctor-test"');
    expect(run.stdout).toContain('FAIL  pkce');
  });

  it('exits 0 on a healthy EHR', async () => {
    const run = await npx(['doctor', '--config', await configFile(), '--mode', 'local']);

    expect(run.code).toBe(0);
    expect(run.stdout).toContain('Result: OK');
  });

  it('prints the commands for no command or help, and refuses an unknown one with exit code 2', async () => {
    const help = await npx([]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Usage: smart-launch <command>');
    expect((await npx(['help'])).stdout).toBe(help.stdout);

    const unknown = await npx(['doctr']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command "doctr"');
  });
});
