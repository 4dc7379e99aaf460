import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BrowserClient } from './browser-client.js';
import { ehrLaunch, sessionIdFrom, startFixture, type Fixture } from './stack-fixture.js';

let dataDir: string;
let running: Fixture | undefined;

afterAll(async () => {
  await running?.close();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe('local state', () => {
  it('survives a restart: a session opens again with the same cookie, under the same master key file', async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'smart-launch-restart-'));
    const browser = new BrowserClient();
    running = await startFixture({}, dataDir);
    const patient = running.stack.sandbox!.patients[0]!;
    const sessionId = sessionIdFrom(await ehrLaunch(running, browser, patient.id));
    const keyFile = await stat(join(dataDir, 'master.key'));
    expect(keyFile.mode & 0o777).toBe(0o600);
    await running.close();

    running = await startFixture({}, dataDir);
    const after = await browser.call(`${running.stack.apiUrl}/sessions/${sessionId}`);

    expect(after.status).toBe(200);
    expect(after.body).toMatchObject({ patient: patient.id, fhirBaseUrl: `${running.stack.apiUrl}/sessions/${sessionId}/fhir` });
    expect((await stat(join(dataDir, 'master.key'))).mtimeMs).toBe(keyFile.mtimeMs);
  });
});
