import { createServer } from 'node:net';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditMain, sessionsMain } from '../../cli/ops.js';
import { LOCAL_CLIENT, LOCAL_PUBLIC_CLIENT, sampleConfig } from '../../local/stack.js';
import { startSandbox } from '../../local/sandbox/index.js';
import type { Sandbox } from '../../local/sandbox/types.js';
import { fhirR4Problems } from '../../cli/fhir-validate.js';
import { fromAuditEvent, type AuditEventResource } from '../../shared/audit/audit-event.js';
import { AuditRecordSchema } from '../../shared/audit/record.js';
import { fhirUserMatches } from '../../shared/ops/end-sessions.js';
import { BrowserClient } from '../integration/browser-client.js';
import { ehrLaunch, sessionIdFrom, standaloneLaunch, startFixture, type Fixture } from '../integration/stack-fixture.js';
import { sandboxSigningKey } from '../fixtures/keys.js';

/** An ephemeral loopback port, so the second EHR can register this API's redirect URI before it starts. */
async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await new Promise((done) => server.once('listening', done));
  const port = (server.address() as { port: number }).port;
  await new Promise((done) => server.close(done));
  return port;
}

let fixture: Fixture;
let other: Sandbox;
let configPath: string;

beforeAll(async () => {
  const port = await freePort();
  other = await startSandbox({ signingKey: await sandboxSigningKey(), port: 0, clients: [{ clientId: LOCAL_PUBLIC_CLIENT, clientAuth: 'none', redirectUris: [`http://localhost:${port}/callback`] }] });
  fixture = await startFixture({
    port,
    configure: ({ apiUrl, sandbox }) => {
      const config = sampleConfig(apiUrl, sandbox!.fhirBaseUrl) as { issuers: unknown[] };
      return {
        ...config,
        issuers: [...config.issuers, { iss: other.fhirBaseUrl, clientId: LOCAL_PUBLIC_CLIENT, clientAuth: 'none', scope: 'openid fhirUser patient/*.rs offline_access' }],
      };
    },
  });
  configPath = join(fixture.dataDir, 'config.json');
  await writeFile(configPath, JSON.stringify(fixture.stack.config));
});
afterAll(async () => {
  await fixture?.close();
  await other?.close();
});

function io() {
  const out = { stdout: '', stderr: '' };
  return { out, io: { stdout: (t: string) => void (out.stdout += t), stderr: (t: string) => void (out.stderr += t) } };
}

async function run(...args: string[]) {
  const { out, io: sink } = io();
  const code = await sessionsMain(['end', ...args, '--config', configPath, '--data', fixture.dataDir, '--json'], sink);
  return { code, report: code === 2 ? undefined : (JSON.parse(out.stdout) as Record<string, unknown>), stderr: out.stderr };
}

describe('smart-launch sessions end (operator control), locally', () => {
  it('ends exactly the sessions of a fhirUser, then of an issuer, then all; revokes at the EHR; audits each end', async () => {
    const a = fixture.stack.sandbox!;
    const api = fixture.stack.apiUrl;
    const open = async (browser: BrowserClient, sessionId: string) => (await browser.call(`${api}/sessions/${sessionId}`)).status;
    // Two clinician sessions (EHR launches, the sandbox's practitioner), a patient's standalone session
    // at the same EHR, and a patient's session at the second EHR.
    const clinician1 = new BrowserClient();
    const c1 = sessionIdFrom(await ehrLaunch(fixture, clinician1, a.patients[0]!.id));
    const clinician2 = new BrowserClient();
    const c2 = sessionIdFrom(await ehrLaunch(fixture, clinician2, a.patients[1]!.id));
    const patientA = new BrowserClient();
    const pa = sessionIdFrom(await standaloneLaunch(fixture, patientA, a.patients[2]!.id));
    const patientB = new BrowserClient();
    const pb = sessionIdFrom(await standaloneLaunch(fixture, patientB, other.patients[0]!.id, `/launch?iss=${encodeURIComponent(other.fhirBaseUrl)}`));
    for (const [browser, id] of [[clinician1, c1], [clinician2, c2], [patientA, pa], [patientB, pb]] as const) expect(await open(browser, id)).toBe(200);
    a.resetStats();
    other.resetStats();

    // A dry run changes nothing.
    const dry = await run('--fhir-user', `Practitioner/${a.practitioner.id}`, '--dry-run');
    expect(dry.report).toMatchObject({ dryRun: true, scanned: 4, matched: 2, ended: 0 });
    expect(await open(clinician1, c1)).toBe(200);

    const byUser = await run('--fhir-user', `Practitioner/${a.practitioner.id}`);
    expect(byUser.code).toBe(0);
    expect(byUser.report).toMatchObject({ scanned: 4, matched: 2, ended: 2, revocation: { revoked: 2, failed: 0, 'not-offered': 0 }, failed: {} });
    expect(a.stats.revocations).toBe(2);
    expect(await open(clinician1, c1)).not.toBe(200);
    expect(await open(clinician2, c2)).not.toBe(200);
    expect(await open(patientA, pa)).toBe(200);
    expect(await open(patientB, pb)).toBe(200);

    const byIssuer = await run('--issuer', other.fhirBaseUrl);
    expect(byIssuer.report).toMatchObject({ scanned: 1, matched: 1, ended: 1, revocation: { revoked: 1 } });
    expect(other.stats.revocations).toBe(1);
    expect(await open(patientB, pb)).not.toBe(200);
    expect(await open(patientA, pa)).toBe(200);

    const all = await run('--all');
    expect(all.report).toMatchObject({ scanned: 1, matched: 1, ended: 1 });
    expect(await open(patientA, pa)).not.toBe(200);
    expect((await run('--all')).report).toMatchObject({ scanned: 0, ended: 0 });

    // One session-end record per ended session, cause operator, with who and which patient.
    const records = (await readFile(join(fixture.dataDir, 'audit.ndjson'), 'utf8'))
      .trim()
      .split('\n')
      .map((line) => AuditRecordSchema.parse(JSON.parse(line)))
      .filter((record) => record.action === 'session-end');
    expect(records).toHaveLength(4);
    expect(records.every((r) => r.cause === 'operator' && r.outcome === 'success' && r.correlationId.startsWith('operator-'))).toBe(true);
    expect(records.map((r) => r.patient).sort()).toEqual([a.patients[0]!.id, a.patients[1]!.id, a.patients[2]!.id, other.patients[0]!.id].sort());
    expect(records.filter((r) => r.fhirUser === `${a.fhirBaseUrl}/Practitioner/${a.practitioner.id}`)).toHaveLength(2);
    expect(records.find((r) => r.iss === other.fhirBaseUrl)).toMatchObject({ clientId: LOCAL_PUBLIC_CLIENT, revocation: 'revoked', launchMode: 'standalone' });
    expect(records.find((r) => r.patient === a.patients[0]!.id)).toMatchObject({ clientId: LOCAL_CLIENT.clientId, launchMode: 'ehr' });

    // The export command writes them (and every other record of the range) as valid AuditEvents.
    const { out, io: sink } = io();
    const from = new Date(Date.now() - 60 * 60_000).toISOString();
    const to = new Date(Date.now() + 60_000).toISOString();
    expect(await auditMain(['export', '--from', from, '--to', to, '--data', fixture.dataDir], sink)).toBe(0);
    const events = out.stdout.trim().split('\n').map((line) => JSON.parse(line) as AuditEventResource);
    expect(events.filter((event) => fromAuditEvent(event).action === 'session-end')).toHaveLength(4);
    expect(events.filter((event) => fromAuditEvent(event).action === 'sign-in')).toHaveLength(4);
    for (const event of events) expect(fhirR4Problems(event)).toEqual([]);
    const { out: none, io: empty } = io();
    expect(await auditMain(['export', '--from', '2020-01-01', '--to', '2020-01-02', '--data', fixture.dataDir], empty)).toBe(0);
    expect(none.stdout).toBe('');
  });

  it('refuses an ambiguous or empty selection with a usage error, before touching anything', async () => {
    expect((await run()).code).toBe(2);
    expect((await run('--all', '--issuer', 'http://x')).code).toBe(2);
    const { out, io: sink } = io();
    expect(await auditMain(['export', '--from', 'yesterday', '--to', '2020-01-01'], sink)).toBe(2);
    expect(out.stderr).toContain('--from must be an ISO 8601');
  });

  it('matches fhirUser exactly, or a relative reference against the absolute one the EHR issued', () => {
    expect(fhirUserMatches('Practitioner/1', 'https://ehr/fhir/Practitioner/1')).toBe(true);
    expect(fhirUserMatches('Practitioner/1', 'https://ehr/fhir/Practitioner/11')).toBe(false);
    expect(fhirUserMatches('https://ehr/fhir/Practitioner/1', 'https://other/fhir/Practitioner/1')).toBe(false);
    expect(fhirUserMatches('Practitioner/1', undefined)).toBe(false);
  });
});
