import { createHash } from 'node:crypto';
import smart from 'fhirclient';
import type FhirClientClass from 'fhirclient/lib/FhirClient.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSandboxData } from '../../local/sandbox/data.js';
import { sampleConfig } from '../../local/stack.js';
import { BrowserClient } from './browser-client.js';
import { startEhrExtension, type EhrExtension } from './proxy-ehr.js';
import { outcomeCode, rawRequest } from './proxy-http.js';
import { ehrLaunch, sessionIdFrom, startFixture, type Fixture, type Observed } from './stack-fixture.js';

/*
 * The FHIR proxy under customer configs other than the sample one: narrower grants (SMART v1, v2,
 * granular scopes, which the sandbox grants exactly as the config asks), writes enabled, and tighter
 * limits. Each config is its own local stack against its own sandbox.
 */

const data = generateSandboxData();
const LAB = 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory';

interface Stack {
  readonly fixture: Fixture;
  readonly observed: Observed;
  readonly extension: EhrExtension;
}

async function stackWith(issuer: Record<string, unknown>): Promise<Stack> {
  const extension = await startEhrExtension();
  const observed: Observed = { secrets: new Set(), requests: [], tokenResponses: [] };
  const http = extension.http(observed);
  const fixture = await startFixture({
    http: (url, init) => (extension.sandboxFhirBase === '' ? fetch(url, init) : http(url, init)),
    configure: ({ apiUrl, sandbox }) => {
      const config = sampleConfig(apiUrl, sandbox!.fhirBaseUrl) as { issuers: Array<Record<string, unknown>> };
      return { ...config, issuers: [{ ...config.issuers[0], ...issuer }] };
    },
  });
  extension.sandboxFhirBase = fixture.stack.sandbox!.fhirBaseUrl;
  return { fixture, observed, extension };
}

async function closeStack(stack: Stack | undefined): Promise<void> {
  await stack?.fixture.close();
  await stack?.extension.close();
}

interface Signed {
  readonly browser: BrowserClient;
  readonly sessionId: string;
  readonly fhirBaseUrl: string;
  readonly cookie: string;
  readonly patient: string;
  readonly scope: string;
}

async function signIn(stack: Stack): Promise<Signed> {
  const browser = new BrowserClient();
  const patient = stack.fixture.stack.sandbox!.patients[0]!.id;
  const sessionId = sessionIdFrom(await ehrLaunch(stack.fixture, browser, patient));
  const context = (await browser.call(`${stack.fixture.stack.apiUrl}/sessions/${sessionId}`)).body as { fhirBaseUrl: string; scope: string };
  const cookie = `__Host-smart-launch=${browser.cookies('localhost').get('__Host-smart-launch')}`;
  return { browser, sessionId, fhirBaseUrl: context.fhirBaseUrl, cookie, patient, scope: context.scope };
}

const observationsOf = (patient: string) => data.observations.filter((o) => o.subject?.reference === `Patient/${patient}`);

describe('SMART v2 resource scopes: patient/Observation.rs only (SMART-SCOPE-01, SMART-SCOPE-07)', () => {
  let stack: Stack;
  let me: Signed;
  beforeAll(async () => {
    stack = await stackWith({ scope: 'launch openid fhirUser patient/Observation.rs offline_access' });
    me = await signIn(stack);
  });
  afterAll(() => closeStack(stack));

  it('the session holds the scope the EHR granted', () => {
    expect(me.scope.split(' ')).toContain('patient/Observation.rs');
    expect(me.scope).not.toContain('patient/*');
  });

  it('forwards the Observation search it permits', async () => {
    const { status, body } = await me.browser.call(`${me.fhirBaseUrl}/Observation?patient=${me.patient}&_count=1`);
    expect(status).toBe(200);
    expect((body as { total: number }).total).toBe(observationsOf(me.patient).length);
  });

  it.each([
    ['a Condition search', 'Condition?patient=PATIENT', 'patient/Condition.s'],
    ['a Patient read', 'Patient/PATIENT', 'patient/Patient.r'],
    ['an Encounter compartment search', 'Patient/PATIENT/Encounter', 'patient/Encounter.s'],
  ])('refuses %s with 403 SCOPE_INSUFFICIENT naming the missing scope; the EHR receives nothing', async (_what, path, missing) => {
    const before = stack.observed.requests.length;

    const { status, body } = await me.browser.call(`${me.fhirBaseUrl}/${path.replace('PATIENT', me.patient)}`);

    expect(status).toBe(403);
    expect(outcomeCode(body)).toBe('SCOPE_INSUFFICIENT');
    expect(JSON.stringify(body)).toContain(missing);
    expect(stack.observed.requests.slice(before)).toEqual([]);
  });
});

describe('SMART v1 scopes: patient/Observation.read patient/Patient.read (SMART-SCOPE-02)', () => {
  let stack: Stack;
  let me: Signed;
  beforeAll(async () => {
    stack = await stackWith({ scope: 'launch openid fhirUser patient/Observation.read patient/Patient.read offline_access' });
    me = await signIn(stack);
  });
  afterAll(() => closeStack(stack));

  it('reads and searches what .read grants', async () => {
    expect((await me.browser.call(`${me.fhirBaseUrl}/Patient/${me.patient}`)).status).toBe(200);
    expect((await me.browser.call(`${me.fhirBaseUrl}/Observation?patient=${me.patient}&_count=1`)).status).toBe(200);
  });

  it('refuses the rest, naming the missing scope in v1 syntax', async () => {
    const before = stack.observed.requests.length;
    const { status, body } = await me.browser.call(`${me.fhirBaseUrl}/Condition?patient=${me.patient}`);
    expect(status).toBe(403);
    expect(outcomeCode(body)).toBe('SCOPE_INSUFFICIENT');
    expect(JSON.stringify(body)).toContain('patient/Condition.read');
    expect(stack.observed.requests.slice(before)).toEqual([]);
  });
});

describe('granular scopes: patient/Observation.rs?category=…|laboratory (SMART-SCOPE-03, SMART-SCOPE-07)', () => {
  let stack: Stack;
  let me: Signed;
  beforeAll(async () => {
    stack = await stackWith({ scope: `launch openid fhirUser patient/Observation.rs?category=${LAB} patient/Patient.rs offline_access` });
    me = await signIn(stack);
  });
  afterAll(() => closeStack(stack));

  it('forwards a search that carries the scope’s category; the count is the laboratory observations', async () => {
    const { status, body } = await me.browser.call(`${me.fhirBaseUrl}/Observation?patient=${me.patient}&category=${encodeURIComponent(LAB)}&_count=1`);
    const labs = observationsOf(me.patient).filter((o) => o.category?.[0]?.coding?.[0]?.code === 'laboratory');
    expect(status).toBe(200);
    expect((body as { total: number }).total).toBe(labs.length);
  });

  it('refuses a search without it, saying what to add and which scope would do; the EHR receives nothing', async () => {
    const before = stack.observed.requests.length;
    const { status, body } = await me.browser.call(`${me.fhirBaseUrl}/Observation?patient=${me.patient}`);
    expect(status).toBe(403);
    expect(outcomeCode(body)).toBe('SCOPE_INSUFFICIENT');
    expect(JSON.stringify(body)).toContain(`category=${LAB}`);
    expect(JSON.stringify(body)).toContain('patient/Observation.s');
    expect(stack.observed.requests.slice(before)).toEqual([]);
  });

  it('leaves a read by id to the EHR, whose 403 for a vital sign passes through (the EHR stays the authority)', async () => {
    const vital = observationsOf(me.patient).find((o) => o.category?.[0]?.coding?.[0]?.code === 'vital-signs')!;
    const lab = observationsOf(me.patient).find((o) => o.category?.[0]?.coding?.[0]?.code === 'laboratory')!;

    const refused = await me.browser.call(`${me.fhirBaseUrl}/Observation/${vital.id}`);
    const allowed = await me.browser.call(`${me.fhirBaseUrl}/Observation/${lab.id}`);

    expect(refused.status).toBe(403);
    expect(outcomeCode(refused.body)).toBeUndefined(); // the sandbox's OperationOutcome, passed through
    expect(allowed.status).toBe(200);
  });
});

describe('writes enabled for the issuer, tighter limits (issue #4 points 1, 2, 3, 5)', () => {
  let stack: Stack;
  let me: Signed;
  beforeAll(async () => {
    stack = await stackWith({
      scope: 'launch openid fhirUser patient/*.cruds offline_access',
      writes: { enabled: true },
      proxy: { maxResponseMegabytes: 5, maxRequestKilobytes: 64, timeoutSeconds: 2 },
    });
    me = await signIn(stack);
  });
  afterAll(() => closeStack(stack));

  const api = () => stack.fixture.stack.apiUrl;
  const path = (p: string) => `/sessions/${me.sessionId}/fhir/${p}`;

  it('forwards a create to the EHR and passes its answer through: the read-only sandbox says 405', async () => {
    const before = stack.observed.requests.length;
    const answer = await rawRequest(api(), {
      method: 'POST',
      path: path('Observation'),
      headers: { cookie: me.cookie, 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${me.patient}` } }),
    });

    expect(answer.status).toBe(405);
    expect(answer.json).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ diagnostics: expect.stringContaining('read-only') }] });
    expect(outcomeCode(answer.json)).toBeUndefined();
    expect(stack.observed.requests.slice(before)).toEqual([`${stack.fixture.stack.sandbox!.fhirBaseUrl}/Observation`]);
  });

  it('create, update (If-Match), conditional update, patch and delete reach a writable EHR with their bodies byte for byte', async () => {
    const created = JSON.stringify({ resourceType: 'Basic', code: { text: 'Zoë ✓' }, subject: { reference: `Patient/${me.patient}` } });
    const sha = (text: string) => createHash('sha256').update(text).digest('hex');
    const echo = (json: unknown, url: string) => (json as { extension: Array<{ url: string; valueString: string }> }).extension.find((e) => e.url === url)?.valueString;

    const create = await rawRequest(api(), { method: 'POST', path: path('Basic'), headers: { cookie: me.cookie, 'content-type': 'application/fhir+json; charset=utf-8' }, body: created });
    const update = await rawRequest(api(), {
      method: 'PUT',
      path: path('Basic/echo-1'),
      headers: { cookie: me.cookie, 'content-type': 'application/fhir+json', 'if-match': 'W/"1"' },
      body: JSON.stringify({ resourceType: 'Basic', id: 'echo-1' }),
    });
    const conditional = await rawRequest(api(), {
      method: 'PUT',
      path: path('Basic?identifier=urn:x|1'),
      headers: { cookie: me.cookie, 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Basic' }),
    });
    const patch = await rawRequest(api(), {
      method: 'PATCH',
      path: path('Basic/echo-1'),
      headers: { cookie: me.cookie, 'content-type': 'application/json-patch+json' },
      body: '[{"op":"replace","path":"/code/text","value":"y"}]',
    });
    const remove = await rawRequest(api(), { method: 'DELETE', path: path('Basic/echo-1'), headers: { cookie: me.cookie } });

    expect(create.status).toBe(201);
    expect(create.headers.location).toBe(`${me.fhirBaseUrl}/Basic/echo-1/_history/2`);
    expect(echo(create.json, 'urn:test:sha256')).toBe(sha(created));
    expect(echo(create.json, 'urn:test:content-type')).toBe('application/fhir+json; charset=utf-8');
    expect(update.status).toBe(200);
    expect(echo(update.json, 'urn:test:if-match')).toBe('W/"1"');
    expect(echo(conditional.json, 'urn:test:query')).toBe('?identifier=urn:x|1');
    expect(echo(patch.json, 'urn:test:method')).toBe('PATCH');
    expect(remove.status).toBe(204);
  });

  it('fhirclient.js creates, updates and deletes through the proxy', async () => {
    const { FhirClient } = smart as unknown as { FhirClient: typeof FhirClientClass.default };
    const client = new FhirClient(me.fhirBaseUrl);
    client.getRequestDefaults = async () => ({ headers: { cookie: me.cookie } });

    const created = (await client.create({ resourceType: 'Basic', code: { text: 'a' } } as never)) as { id: string };
    const updated = (await client.update({ resourceType: 'Basic', id: 'echo-1', code: { text: 'b' } } as never)) as { id: string };
    await client.delete('Basic/echo-1');

    expect(created.id).toBe('echo-1');
    expect(updated.id).toBe('echo-1');
  });

  it('refuses a request body over proxy.maxRequestKilobytes with 413 REQUEST_TOO_LARGE; the EHR receives nothing', async () => {
    const before = stack.observed.requests.length;
    const answer = await rawRequest(api(), {
      method: 'POST',
      path: path('Basic'),
      headers: { cookie: me.cookie, 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Basic', text: { div: 'x'.repeat(70 * 1024) } }),
    });
    expect([answer.status, outcomeCode(answer.json)]).toEqual([413, 'REQUEST_TOO_LARGE']);
    expect(stack.observed.requests.slice(before)).toEqual([]);
  });

  it('answers an EHR answer over proxy.maxResponseMegabytes with a complete 502 RESPONSE_TOO_LARGE OperationOutcome, never a truncated body', async () => {
    const response = await me.browser.fetch(`${me.fhirBaseUrl}/Binary/big`);
    const text = await response.text();
    expect(response.status).toBe(502);
    expect(JSON.parse(text)).toMatchObject({ resourceType: 'OperationOutcome' });
    expect(outcomeCode(JSON.parse(text))).toBe('RESPONSE_TOO_LARGE');
  });

  it('answers 504 UPSTREAM_TIMEOUT after proxy.timeoutSeconds', async () => {
    const started = Date.now();
    const { status, body } = await me.browser.call(`${me.fhirBaseUrl}/Observation?patient=${me.patient}&_test=slow`);
    expect([status, outcomeCode(body)]).toEqual([504, 'UPSTREAM_TIMEOUT']);
    expect(Date.now() - started).toBeLessThan(2900);
  });

  it('answers 502 UPSTREAM_UNAVAILABLE when the EHR connection breaks', async () => {
    const { status, body } = await me.browser.call(`${me.fhirBaseUrl}/Observation?patient=${me.patient}&_test=drop`);
    expect([status, outcomeCode(body)]).toEqual([502, 'UPSTREAM_UNAVAILABLE']);
  });
});
