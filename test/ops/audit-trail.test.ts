import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fhirR4Problems } from '../../cli/fhir-validate.js';
import { LOCAL_CLIENT } from '../../local/stack.js';
import { fromAuditEvent, toAuditEvent } from '../../shared/audit/audit-event.js';
import { AuditRecordSchema, type AuditRecord } from '../../shared/audit/record.js';
import { HeldClock } from '../fakes/clock.js';
import { BrowserClient } from '../integration/browser-client.js';
import { ehrLaunch, sessionIdFrom, startFixture, type Fixture } from '../integration/stack-fixture.js';

let fixture: Fixture;
/** The API's clock: real time, moved past the proxy's session cache window after the logout. */
const apiClock = new HeldClock();
beforeAll(async () => {
  fixture = await startFixture({ clock: apiClock });
});
afterAll(async () => {
  await fixture?.close();
});

async function auditFile(): Promise<{ text: string; records: AuditRecord[] }> {
  const text = await readFile(join(fixture.dataDir, 'audit.ndjson'), 'utf8');
  return { text, records: text.trim().split('\n').map((line) => AuditRecordSchema.parse(JSON.parse(line))) };
}

describe('audit trail of a local run', () => {
  it('records sign-in, a read, a search, a refresh and a logout field by field, each one a valid FHIR R4 AuditEvent, with no secret in it', async () => {
    const sandbox = fixture.stack.sandbox!;
    const patient = sandbox.patients[0]!;
    const browser = new BrowserClient();
    const navigation = await ehrLaunch(fixture, browser, patient.id);
    const sessionId = sessionIdFrom(navigation);
    const base = `${fixture.stack.apiUrl}/sessions/${sessionId}`;
    const read = await browser.call(`${base}/fhir/Patient/${patient.id}`);
    expect(read.status).toBe(200);
    const search = await browser.call(`${base}/fhir/Observation?patient=${patient.id}&_count=2`);
    expect(search.status).toBe(200);
    const missing = await browser.call(`${base}/fhir/Observation/does-not-exist`);
    expect(missing.status).toBe(404);
    const refreshed = await browser.call(`${base}/refresh`, { method: 'POST' });
    expect(refreshed.status).toBe(200);
    const loggedOut = await browser.call(`${base}/logout`, { method: 'POST' });
    expect(loggedOut.status).toBe(200);
    // The proxy function serves a session it opened for `session.proxyCacheSeconds` (5 s) without a
    // store read; past that window the logout shows there too, with no other record on the way.
    apiClock.advance(5_000);
    const after = await browser.call(`${base}/fhir/Patient/${patient.id}`);
    // 401 or 404 by the error map of the day: the record must say whichever was answered.
    expect(after.status).toBe(401);

    const { text, records } = await auditFile();
    const who = {
      customer: 'local-sandbox',
      iss: sandbox.fhirBaseUrl,
      clientId: LOCAL_CLIENT.clientId,
      fhirUser: `${sandbox.fhirBaseUrl}/Practitioner/${sandbox.practitioner.id}`,
      patient: patient.id,
      launchMode: 'ehr',
    };
    expect(records.map((r) => [r.action, r.outcome, r.status, r.code])).toEqual([
      ['sign-in', 'success', 302, undefined],
      ['fhir', 'success', 200, undefined],
      ['fhir', 'success', 200, undefined],
      ['fhir', 'failure', 404, undefined],
      ['refresh', 'success', 200, undefined],
      ['logout', 'success', 200, undefined],
      ['fhir', 'failure', after.status, 'SESSION_NOT_OPEN'],
    ]);
    const [signIn, patientRead, obsSearch, obsMissing, refresh, logout, refused] = records as [AuditRecord, ...AuditRecord[]];
    expect(signIn).toEqual({ v: 1, time: signIn.time, action: 'sign-in', outcome: 'success', status: 302, correlationId: signIn.correlationId, ...who });
    expect(patientRead).toMatchObject({ ...who, interaction: 'read', resourceType: 'Patient', upstreamStatus: 200 });
    expect(obsSearch).toMatchObject({ ...who, interaction: 'search-type', resourceType: 'Observation', upstreamStatus: 200 });
    expect(obsMissing).toMatchObject({ ...who, interaction: 'read', resourceType: 'Observation', upstreamStatus: 404 });
    expect(refresh).toEqual({ v: 1, time: refresh!.time, action: 'refresh', outcome: 'success', status: 200, correlationId: refresh!.correlationId, ...who });
    expect(logout).toEqual({ ...who, v: 1, time: logout!.time, action: 'logout', outcome: 'success', status: 200, correlationId: logout!.correlationId, revocation: 'revoked' });
    // A request on an ended session knows no one: the record says only what was refused, and when.
    expect(refused).toEqual({ v: 1, time: refused!.time, action: 'fhir', outcome: 'failure', status: after.status, code: 'SESSION_NOT_OPEN', correlationId: refused!.correlationId, customer: 'local-sandbox' });
    // Correlation ids are the requests' own, one per request, in time order.
    expect(new Set(records.map((r) => r.correlationId)).size).toBe(records.length);
    expect(records.map((r) => r.time)).toEqual(records.map((r) => r.time).sort());

    // Every record is a valid FHIR R4 AuditEvent and converts back without loss.
    for (const record of records) {
      const event = toAuditEvent(record);
      expect(fhirR4Problems(event), JSON.stringify(event)).toEqual([]);
      expect(fromAuditEvent(event)).toEqual(record);
    }

    // Nothing the EHR issued and nothing the browser holds appears in the trail: tokens, code,
    // PKCE verifier, client secret, session id, binding cookie, query values.
    const cookie = [...browser.cookies('localhost').values()];
    const issued = [...fixture.observed.secrets, sessionId, ...cookie, LOCAL_CLIENT.clientSecret, '_count'];
    expect(issued.length).toBeGreaterThan(6);
    for (const secret of issued) expect(text.includes(secret), `audit holds ${secret.slice(0, 8)}…`).toBe(false);
    // Nor any body: the patient's name and birth date the reads returned are not in it.
    expect(JSON.stringify(read.body)).toContain(patient.birthDate);
    for (const bodyValue of [patient.name, patient.birthDate, ...patient.name.split(' ')]) expect(text).not.toContain(bodyValue);
    const exported = records.map((r) => JSON.stringify(toAuditEvent(r))).join('\n');
    for (const secret of issued) expect(exported.includes(secret)).toBe(false);
  });
});
