import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Sandbox } from '../../local/sandbox/index.js';
import { sampleConfig } from '../../local/stack.js';
import { BrowserClient } from './browser-client.js';
import { outcomeCode, rawRequest, recordingFetch, type Exchange } from './proxy-http.js';
import { ehrLaunch, sessionIdFrom, startFixture, type Fixture, type Observed } from './stack-fixture.js';

/*
 * Batch and transaction Bundles POSTed to the session's FHIR base, over real HTTP: the local stack's
 * routes and handler, the sandbox EHR answering them, no mocks. The API's HTTP client only records
 * what crosses the wire.
 */

let fixture: Fixture;
let sandbox: Sandbox;
const exchanges: Exchange[] = [];
let browser: BrowserClient;
let fhirBaseUrl: string;
let cookie: string;
let patient: string;
let other: string;

beforeAll(async () => {
  const observed: Observed = { secrets: new Set(), requests: [], tokenResponses: [] };
  fixture = await startFixture({
    http: recordingFetch(observed, exchanges),
    configure: ({ apiUrl, sandbox }) => {
      const config = sampleConfig(apiUrl, sandbox!.fhirBaseUrl) as { issuers: Array<Record<string, unknown>> };
      return { ...config, issuers: [{ ...config.issuers[0], scope: 'launch openid fhirUser patient/*.rs patient/Observation.c offline_access', writes: { enabled: true } }] };
    },
  });
  sandbox = fixture.stack.sandbox!;
  patient = sandbox.patients[0]!.id;
  other = sandbox.patients[1]!.id;
  browser = new BrowserClient();
  const sessionId = sessionIdFrom(await ehrLaunch(fixture, browser, patient));
  fhirBaseUrl = ((await browser.call(`${fixture.stack.apiUrl}/sessions/${sessionId}`)).body as { fhirBaseUrl: string }).fhirBaseUrl;
  cookie = `__Host-smart-launch=${browser.cookies('localhost').get('__Host-smart-launch')}`;
});
afterAll(async () => {
  await fixture?.close();
});

type Answer = { resourceType: string; type: string; link?: Array<{ url: string }>; entry: Array<{ fullUrl?: string; resource?: Record<string, unknown>; response: Record<string, any> }> };

async function post(bundle: unknown) {
  const before = exchanges.length;
  const path = new URL(fhirBaseUrl).pathname;
  const answer = await rawRequest(fixture.stack.apiUrl, { method: 'POST', path, headers: { cookie, 'content-type': 'application/fhir+json' }, body: JSON.stringify(bundle) });
  const sent = exchanges.slice(before).filter((e) => e.method === 'POST');
  return { ...answer, answer: answer.json as Answer, sent: sent.map((e) => ({ url: e.url, bundle: e.body === undefined ? undefined : JSON.parse(e.body.toString('utf8')) })) };
}

describe('batch and transaction through the proxy (POST /sessions/{id}/fhir)', () => {
  it('batch: allowed entries reach the EHR, the entry for another patient is refused in its place, links come back on the proxy base (SMART-FHIR-02)', async () => {
    const { status, answer, sent } = await post({
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'GET', url: `Patient/${patient}` } },
        { request: { method: 'GET', url: `Patient/${other}` } },
        { request: { method: 'GET', url: `${fhirBaseUrl}/MedicationRequest?patient=${patient}` } },
      ],
    });

    expect(status).toBe(200);
    expect(sent).toHaveLength(1);
    expect(sent[0]!.url).toBe(sandbox.fhirBaseUrl);
    expect(sent[0]!.bundle.entry.map((e: { request: { url: string } }) => e.request.url)).toEqual([`Patient/${patient}`, `MedicationRequest?patient=${patient}`]);
    expect(answer.type).toBe('batch-response');
    expect(answer.entry.map((e) => e.response.status)).toEqual(['200', '403', '200']);
    expect(outcomeCode(answer.entry[1]!.response.outcome)).toBe('PATIENT_MISMATCH');
    expect(answer.entry[0]).toMatchObject({ fullUrl: `${fhirBaseUrl}/Patient/${patient}`, resource: { resourceType: 'Patient', id: patient } });
    const medications = answer.entry[2]!.resource as { total: number; link: Array<{ url: string }>; entry: Array<{ fullUrl: string }> };
    expect(medications.total).toBe(2);
    expect(medications.link[0]!.url.startsWith(`${fhirBaseUrl}/MedicationRequest?`)).toBe(true);
    expect(medications.entry[0]!.fullUrl).toBe(`${fhirBaseUrl}/MedicationRequest/${patient}-medication-1`);
    expect(JSON.stringify(answer)).not.toContain(sandbox.fhirBaseUrl);
  });

  it('transaction: creates through the EHR, with the reference sent on the EHR base and the location rewritten to the proxy base', async () => {
    const observation = {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'from a transaction' },
      subject: { reference: `Patient/${patient}` },
      performer: [{ reference: `${fhirBaseUrl}/Practitioner/${sandbox.practitioner.id}` }],
    };

    const { status, answer, sent } = await post({ resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'POST', url: 'Observation' }, resource: observation }] });

    expect(status).toBe(200);
    expect(sent[0]!.bundle.entry[0].resource.performer[0].reference).toBe(`${sandbox.fhirBaseUrl}/Practitioner/${sandbox.practitioner.id}`);
    expect(answer.type).toBe('transaction-response');
    expect(answer.entry[0]!.response.status).toBe('201');
    const location = answer.entry[0]!.response.location as string;
    expect(location).toMatch(new RegExp(`^${fhirBaseUrl.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/Observation/[^/]+/_history/1$`));
    const read = await browser.call(location.replace(/\/_history\/1$/, ''));
    expect(read).toMatchObject({ status: 200, body: { code: { text: 'from a transaction' } } });
  });

  it('transaction: an entry the scopes do not permit refuses the whole transaction with its index, and nothing reaches the EHR (SMART-SCOPE-07)', async () => {
    const { status, json, sent } = await post({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { request: { method: 'POST', url: 'Observation' }, resource: { resourceType: 'Observation', status: 'final', code: { text: 'never stored' }, subject: { reference: `Patient/${patient}` } } },
        { request: { method: 'DELETE', url: 'Observation/x' } },
      ],
    });

    expect(status).toBe(403);
    expect(outcomeCode(json)).toBe('SCOPE_INSUFFICIENT');
    expect(JSON.stringify(json)).toContain('transaction entry 1');
    expect(sent).toEqual([]);
    const search = await browser.call(`${fhirBaseUrl}/Observation?patient=${patient}&code:text=never%20stored`);
    expect((search.body as { total: number }).total).toBe(0);
  });

  it('batch: a conditional create whose ifNoneExist searches another patient is refused in place, and the EHR is never asked (SMART-SCOPE-07)', async () => {
    const observation = { resourceType: 'Observation', status: 'final', code: { text: 'conditional' }, subject: { reference: `Patient/${patient}` } };

    const { status, answer, sent } = await post({
      resourceType: 'Bundle',
      type: 'batch',
      entry: [{ request: { method: 'POST', url: 'Observation', ifNoneExist: `patient=${other}` }, resource: observation }],
    });

    expect(status).toBe(200);
    expect(sent).toEqual([]);
    expect(answer.entry.map((e) => e.response.status)).toEqual(['403']);
    expect(outcomeCode(answer.entry[0]!.response.outcome)).toBe('PATIENT_MISMATCH');
    expect(JSON.stringify(answer)).not.toContain(other);
  });

  it('refuses a Bundle nested deeper than 100 levels with 400 PROXY_REQUEST_INVALID, not a 500', async () => {
    const depth = 100_000;
    const body = `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"POST","url":"Observation"},"resource":{"resourceType":"Observation","x":${'['.repeat(depth)}${']'.repeat(depth)}}}]}`;
    const before = exchanges.length;

    const answer = await rawRequest(fixture.stack.apiUrl, { method: 'POST', path: new URL(fhirBaseUrl).pathname, headers: { cookie, 'content-type': 'application/fhir+json' }, body });

    expect(answer.status).toBe(400);
    expect(outcomeCode(answer.json)).toBe('PROXY_REQUEST_INVALID');
    expect(exchanges.slice(before).filter((e) => e.method === 'POST')).toEqual([]);
  });

  it('answers a batch POSTed to the base with a trailing slash as API Gateway routes it (SMART-FHIR-02)', async () => {
    const path = `${new URL(fhirBaseUrl).pathname}/`;
    const bundle = { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: `Patient/${patient}` } }] };
    const answer = await rawRequest(fixture.stack.apiUrl, { method: 'POST', path, headers: { cookie, 'content-type': 'application/fhir+json' }, body: JSON.stringify(bundle) });

    expect(answer.status).toBe(200);
    expect((answer.json as Answer).entry.map((e) => e.response.status)).toEqual(['200']);
  });

  it(`refuses a Bundle of more than 200 entries with 413 BUNDLE_TOO_LARGE before contacting the EHR`, async () => {
    const entry = Array.from({ length: 201 }, () => ({ request: { method: 'GET', url: `Patient/${patient}` } }));

    const { status, json, sent } = await post({ resourceType: 'Bundle', type: 'batch', entry });

    expect(status).toBe(413);
    expect(outcomeCode(json)).toBe('BUNDLE_TOO_LARGE');
    expect(sent).toEqual([]);
  });
});
