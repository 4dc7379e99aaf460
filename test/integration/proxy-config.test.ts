import { createHash } from 'node:crypto';
import smart from 'fhirclient';
import type FhirClientClass from 'fhirclient/lib/FhirClient.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BIG_BINARY_ID, generateSandboxData } from '../../local/sandbox/data.js';
import type { Sandbox } from '../../local/sandbox/index.js';
import { sampleConfig } from '../../local/stack.js';
import type { Clock } from '../../shared/core/ports.js';
import { HeldClock } from '../fakes/clock.js';
import { BrowserClient } from './browser-client.js';
import { outcomeCode, rawRequest, recordingFetch, type Exchange } from './proxy-http.js';
import { ehrLaunch, sessionIdFrom, startFixture, type Fixture, type Observed } from './stack-fixture.js';

/*
 * The FHIR proxy under customer configs other than the sample one: narrower grants (SMART v1, v2,
 * granular scopes, which the sandbox grants exactly as the config asks), writes enabled, and tighter
 * limits. Each config is its own local stack against its own sandbox, which is the EHR for all of it
 * (writes, the 10 MB Binary, its slow and broken-connection switches); the API's HTTP client only
 * records what crosses the wire.
 */

const data = generateSandboxData();
const LAB = 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory';

interface Stack {
  readonly fixture: Fixture;
  readonly observed: Observed;
  /** What the API sent to the sandbox, with the heads of its answers. */
  readonly exchanges: Exchange[];
  readonly sandbox: Sandbox;
}

async function stackWith(issuer: Record<string, unknown>): Promise<Stack> {
  const observed: Observed = { secrets: new Set(), requests: [], tokenResponses: [] };
  const exchanges: Exchange[] = [];
  const fixture = await startFixture({
    http: recordingFetch(observed, exchanges),
    configure: ({ apiUrl, sandbox }) => {
      const config = sampleConfig(apiUrl, sandbox!.fhirBaseUrl) as { issuers: Array<Record<string, unknown>> };
      return { ...config, issuers: [{ ...config.issuers[0], ...issuer }] };
    },
  });
  return { fixture, observed, exchanges, sandbox: fixture.stack.sandbox! };
}

async function closeStack(stack: Stack | undefined): Promise<void> {
  await stack?.fixture.close();
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

describe('writes enabled for the issuer, tighter limits', () => {
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

  afterEach(() => stack.sandbox.clearFaults());

  const sha = (bytes: Buffer | string | undefined) => createHash('sha256').update(bytes ?? '').digest('hex');
  /** The request the API sent to the sandbox for the latest `method` since `before`. */
  const sent = (before: number, method: string) => stack.exchanges.slice(before).filter((e) => e.method === method).at(-1);

  it('forwards a create to the EHR, which stores it: 201 with its Location under the proxy base', async () => {
    const before = stack.observed.requests.length;
    const answer = await rawRequest(api(), {
      method: 'POST',
      path: path('Observation'),
      headers: { cookie: me.cookie, 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${me.patient}` } }),
    });

    expect(answer.status).toBe(201);
    const created = answer.json as { resourceType: string; id: string; meta: { versionId: string } };
    expect(created).toMatchObject({ resourceType: 'Observation', code: { text: 'x' }, meta: { versionId: '1' } });
    expect(answer.headers.location).toBe(`${me.fhirBaseUrl}/Observation/${created.id}/_history/1`);
    expect(answer.headers.etag).toBe('W/"1"');
    expect(outcomeCode(answer.json)).toBeUndefined();
    expect(stack.observed.requests.slice(before)).toEqual([`${stack.sandbox.fhirBaseUrl}/Observation`]);
    const read = await me.browser.call(`${me.fhirBaseUrl}/Observation/${created.id}`);
    expect(read).toMatchObject({ status: 200, body: { id: created.id, code: { text: 'x' } } });
  });

  it('passes the EHR’s refusal of a write through: the sandbox keeps Condition read-only (405)', async () => {
    const answer = await rawRequest(api(), {
      method: 'POST',
      path: path('Condition'),
      headers: { cookie: me.cookie, 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Condition', subject: { reference: `Patient/${me.patient}` } }),
    });

    expect(answer.status).toBe(405);
    expect(answer.json).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ diagnostics: expect.stringContaining('read-only') }] });
    expect(outcomeCode(answer.json)).toBeUndefined();
  });

  it('create, update (If-Match), conditional update, patch and delete reach the EHR with their bodies byte for byte', async () => {
    const created = JSON.stringify({ resourceType: 'Basic', code: { text: 'Zoë ✓' }, subject: { reference: `Patient/${me.patient}` } });
    const before = stack.exchanges.length;

    const create = await rawRequest(api(), { method: 'POST', path: path('Basic'), headers: { cookie: me.cookie, 'content-type': 'application/fhir+json; charset=utf-8' }, body: created });
    const id = (create.json as { id: string }).id;
    const updatedBody = JSON.stringify({ resourceType: 'Basic', id, code: { text: 'second' }, subject: { reference: `Patient/${me.patient}` } });
    const update = await rawRequest(api(), {
      method: 'PUT',
      path: path(`Basic/${id}`),
      headers: { cookie: me.cookie, 'content-type': 'application/fhir+json', 'if-match': 'W/"1"' },
      body: updatedBody,
    });
    const stale = await rawRequest(api(), {
      method: 'PUT',
      path: path(`Basic/${id}`),
      headers: { cookie: me.cookie, 'content-type': 'application/fhir+json', 'if-match': 'W/"1"' },
      body: updatedBody,
    });
    const conditionalBody = JSON.stringify({ resourceType: 'Basic', identifier: [{ system: 'urn:x', value: '1' }], code: { text: 'c' }, subject: { reference: `Patient/${me.patient}` } });
    const conditional = await rawRequest(api(), {
      method: 'PUT',
      path: path('Basic?identifier=urn:x|1'),
      headers: { cookie: me.cookie, 'content-type': 'application/fhir+json' },
      body: conditionalBody,
    });
    const conditionalAgain = await rawRequest(api(), {
      method: 'PUT',
      path: path('Basic?identifier=urn:x|1'),
      headers: { cookie: me.cookie, 'content-type': 'application/fhir+json' },
      body: conditionalBody,
    });
    const patchBody = '[{"op":"replace","path":"/code/text","value":"y"}]';
    const patch = await rawRequest(api(), {
      method: 'PATCH',
      path: path(`Basic/${id}`),
      headers: { cookie: me.cookie, 'content-type': 'application/json-patch+json', 'if-match': 'W/"2"' },
      body: patchBody,
    });
    const remove = await rawRequest(api(), { method: 'DELETE', path: path(`Basic/${id}`), headers: { cookie: me.cookie } });
    const gone = await rawRequest(api(), { path: path(`Basic/${id}`), headers: { cookie: me.cookie } });

    expect(create.status).toBe(201);
    expect(create.headers.location).toBe(`${me.fhirBaseUrl}/Basic/${id}/_history/1`);
    expect(create.json).toMatchObject({ code: { text: 'Zoë ✓' } });
    const posted = stack.exchanges.slice(before).find((e) => e.method === 'POST');
    expect(sha(posted?.body)).toBe(sha(created));
    expect(posted?.headers.get('content-type')).toBe('application/fhir+json; charset=utf-8');

    expect([update.status, update.headers.etag]).toEqual([200, 'W/"2"']);
    expect(stale.status).toBe(412); // the EHR's precondition failure, passed through
    const put = stack.exchanges.slice(before).find((e) => e.method === 'PUT');
    expect(put?.headers.get('if-match')).toBe('W/"1"');
    expect(sha(put?.body)).toBe(sha(updatedBody));

    expect(conditional.status).toBe(201);
    expect(sent(before, 'PUT')?.url).toBe(`${stack.sandbox.fhirBaseUrl}/Basic?identifier=urn:x|1`);
    expect([conditionalAgain.status, (conditionalAgain.json as { id: string }).id]).toEqual([200, (conditional.json as { id: string }).id]);

    expect(patch.status).toBe(200);
    expect(patch.json).toMatchObject({ code: { text: 'y' }, meta: { versionId: '3' } });
    expect(sent(before, 'PATCH')?.body?.toString()).toBe(patchBody);
    expect(remove.status).toBe(204);
    expect(gone.status).toBe(404);
  });

  it('fhirclient.js creates, updates and deletes through the proxy', async () => {
    const { FhirClient } = smart as unknown as { FhirClient: typeof FhirClientClass.default };
    const client = new FhirClient(me.fhirBaseUrl);
    client.getRequestDefaults = async () => ({ headers: { cookie: me.cookie } });
    const subject = { reference: `Patient/${me.patient}` };

    const created = (await client.create({ resourceType: 'Basic', code: { text: 'a' }, subject } as never)) as { id: string };
    const updated = (await client.update({ resourceType: 'Basic', id: created.id, code: { text: 'b' }, subject } as never)) as { id: string; code: { text: string } };
    await client.delete(`Basic/${created.id}`);

    expect(created.id).toMatch(/^[A-Za-z0-9.-]{1,64}$/);
    expect(updated.id).toBe(created.id);
    expect(updated.code.text).toBe('b');
    expect((await me.browser.call(`${me.fhirBaseUrl}/Basic/${created.id}`)).status).toBe(404);
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
    const response = await me.browser.fetch(`${me.fhirBaseUrl}/Binary/${BIG_BINARY_ID}`);
    const text = await response.text();
    expect(response.status).toBe(502);
    expect(JSON.parse(text)).toMatchObject({ resourceType: 'OperationOutcome' });
    expect(outcomeCode(JSON.parse(text))).toBe('RESPONSE_TOO_LARGE');
  });

  it('answers 504 UPSTREAM_TIMEOUT after proxy.timeoutSeconds', async () => {
    // The EHR never answers in time; the API's clock is held, so only the test moves its deadline.
    stack.sandbox.faults.fhirDelayMs = 600_000;
    const deps = stack.fixture.stack.deps as { clock: Clock };
    const previous = deps.clock;
    const held = new HeldClock();
    held.hold();
    deps.clock = held;
    try {
      const armed = held.nextTimeout(2_000);
      const answer = me.browser.call(`${me.fhirBaseUrl}/Observation?patient=${me.patient}`);
      // The proxy armed a deadline of proxy.timeoutSeconds for its call to the EHR: let that time pass.
      await armed;
      held.advance(2_000);
      const { status, body } = await answer;
      expect([status, outcomeCode(body)]).toEqual([504, 'UPSTREAM_TIMEOUT']);
    } finally {
      deps.clock = previous;
    }
  });

  it('answers 502 UPSTREAM_UNAVAILABLE when the EHR connection breaks', async () => {
    stack.sandbox.faults.fhirDropConnection = true;
    const before = stack.exchanges.length;
    const { status, body } = await me.browser.call(`${me.fhirBaseUrl}/Observation?patient=${me.patient}`);
    expect([status, outcomeCode(body)]).toEqual([502, 'UPSTREAM_UNAVAILABLE']);
    // The sandbox had begun its answer (status and headers arrived) when the connection broke.
    expect(stack.exchanges.slice(before).map((e) => e.response?.status)).toEqual([200]);
  });
});
