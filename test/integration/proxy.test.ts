import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { Client as FhirKitClient } from 'fhir-kit-client';
import smart from 'fhirclient';
import type FhirClientClass from 'fhirclient/lib/FhirClient.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { bigBinary } from '../../local/sandbox/binaries.js';
import { BIG_BINARY_ID, generateSandboxData, summaryPdfId } from '../../local/sandbox/data.js';
import { toFhirXml } from '../../local/sandbox/fhir-xml.js';
import { BrowserClient } from './browser-client.js';
import { outcomeCode, rawRequest, recordingFetch, type Exchange } from './proxy-http.js';
import { ehrLaunch, sessionIdFrom, startFixture, type Fixture, type Observed } from './stack-fixture.js';

/*
 * The FHIR proxy over real HTTP: the local runner (the same handlers as Lambda, the
 * streaming one for the proxy) in front of the sandbox EHR, with real FHIR client libraries. The
 * sandbox is the EHR for everything here (10 MB Binary, PDF, XML, gzip, POST _search, compartment
 * search, $everything, its 401 switch); the API's HTTP client only records what crosses the wire.
 */

let fixture: Fixture;
let observed: Observed;
/** What the API sent to the sandbox, with the heads of its answers. */
const exchanges: Exchange[] = [];
let decoy: Server;
let decoyHits = 0;
let decoyOrigin = '';

const data = generateSandboxData();

beforeAll(async () => {
  observed = { secrets: new Set(), requests: [], tokenResponses: [] };
  fixture = await startFixture({ http: recordingFetch(observed, exchanges) });
  decoy = createServer((_req, res) => {
    decoyHits++;
    res.end('{}');
  });
  await new Promise<void>((done) => decoy.listen(0, '127.0.0.1', () => done()));
  const address = decoy.address();
  decoyOrigin = `127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
});
afterAll(async () => {
  await fixture?.close();
  await new Promise<void>((done) => (decoy ? decoy.close(() => done()) : done()));
});

const api = () => fixture.stack.apiUrl;
const sandbox = () => fixture.stack.sandbox!;

interface Signed {
  readonly browser: BrowserClient;
  readonly sessionId: string;
  readonly fhirBaseUrl: string;
  /** The binding cookie as a `Cookie` header, for the FHIR client libraries. */
  readonly cookie: string;
  readonly patient: string;
}

async function signIn(patientIndex = 0): Promise<Signed> {
  const browser = new BrowserClient();
  const patient = sandbox().patients[patientIndex]!.id;
  const sessionId = sessionIdFrom(await ehrLaunch(fixture, browser, patient));
  const context = (await browser.call(`${api()}/sessions/${sessionId}`)).body as { fhirBaseUrl: string };
  const cookie = `__Host-smart-launch=${browser.cookies('localhost').get('__Host-smart-launch')}`;
  return { browser, sessionId, fhirBaseUrl: context.fhirBaseUrl, cookie, patient };
}

let amy: Signed;
beforeAll(async () => {
  amy = await signIn(0);
});

const observationsOf = (patient: string) => data.observations.filter((o) => o.subject?.reference === `Patient/${patient}`);
const conditionsOf = (patient: string) => data.conditions.filter((c) => c.subject?.reference === `Patient/${patient}`);
/** `Patient/$everything` at the sandbox: the patient and its compartment (encounters, conditions, observations, documents). */
const everythingOf = (patient: string) =>
  1 + [data.encounters, data.conditions, data.observations, data.medicationRequests, data.documents].reduce((n, list) => n + list.filter((r) => r.subject?.reference === `Patient/${patient}`).length, 0);

/** Requests the API sent to the EHR since `before`. */
const sentSince = (before: number) => observed.requests.slice(before);

describe('real FHIR clients against fhirBaseUrl with the session cookie (SMART-FHIR-01/02)', () => {
  it('fhirclient.js (Node entry): reads the patient and pages through every observation with its own paging (pageLimit: 0)', async () => {
    const client = smart({} as never, {} as never).client({ serverUrl: amy.fhirBaseUrl, tokenResponse: { patient: amy.patient } });
    // The cookie on every request the library makes, paging included.
    client.getRequestDefaults = async () => ({ headers: { cookie: amy.cookie } });

    const patient = (await client.patient.read()) as { resourceType: string; id: string };
    const observations = (await client.request(`Observation?patient=${amy.patient}&_count=25`, { pageLimit: 0, flat: true })) as Array<{ id: string }>;

    expect(patient).toMatchObject({ resourceType: 'Patient', id: amy.patient });
    const expected = observationsOf(amy.patient);
    expect(expected.length).toBeGreaterThan(25);
    expect(observations).toHaveLength(expected.length);
    expect(new Set(observations.map((o) => o.id))).toEqual(new Set(expected.map((o) => o.id)));
  });

  it('fhirclient.js FhirClient: resources() follows the rewritten next links through the proxy', async () => {
    // The Node entry's basic client (`smart.FhirClient`; the package's own typings omit it).
    const { FhirClient } = smart as unknown as { FhirClient: typeof FhirClientClass.default };
    const client = new FhirClient(amy.fhirBaseUrl);
    const before = observed.requests.length;
    const ids: string[] = [];

    for await (const resource of client.resources(`Condition?patient=${amy.patient}&_count=1`, { headers: { cookie: amy.cookie } })) {
      ids.push((resource as { id: string }).id);
    }

    expect(ids.sort()).toEqual(conditionsOf(amy.patient).map((c) => c.id).sort());
    // One EHR request per page, each sent by the proxy to the sandbox's FHIR base.
    expect(sentSince(before)).toHaveLength(ids.length);
    expect(sentSince(before).every((u) => u.startsWith(`${sandbox().fhirBaseUrl}/Condition?`))).toBe(true);
  });

  it('fhir-kit-client: reads the patient and pages through every observation with nextPage', async () => {
    const client = new FhirKitClient({ baseUrl: amy.fhirBaseUrl, customHeaders: { cookie: amy.cookie } });

    const patient = (await client.read({ resourceType: 'Patient', id: amy.patient })) as unknown as { id: string };
    let page = (await client.search({ resourceType: 'Observation', searchParams: { patient: amy.patient, _count: 30 } })) as {
      total?: number;
      entry?: Array<{ fullUrl: string; resource: { id: string } }>;
      link?: Array<{ relation: string; url: string }>;
    };
    const ids: string[] = [];
    let pages = 0;
    for (;;) {
      pages++;
      ids.push(...(page.entry ?? []).map((e) => e.resource.id));
      for (const entry of page.entry ?? []) expect(entry.fullUrl.startsWith(`${amy.fhirBaseUrl}/Observation/`)).toBe(true);
      for (const link of page.link ?? []) expect(link.url.startsWith(`${amy.fhirBaseUrl}/`)).toBe(true);
      const next = client.nextPage({ bundle: page as never });
      if (next === undefined) break;
      page = (await next) as typeof page;
    }

    expect(patient.id).toBe(amy.patient);
    const expected = observationsOf(amy.patient);
    expect(pages).toBe(Math.ceil(expected.length / 30));
    expect(ids.sort()).toEqual(expected.map((o) => o.id).sort());
  });

  it('fhir-kit-client: searches with POST _search (form body) and in the patient compartment', async () => {
    const client = new FhirKitClient({ baseUrl: amy.fhirBaseUrl, customHeaders: { cookie: amy.cookie } });
    const before = exchanges.length;

    const posted = (await client.search({ resourceType: 'Condition', searchParams: { patient: amy.patient }, options: { postSearch: true } })) as unknown as { total: number };
    const compartment = (await client.search({ resourceType: 'Condition', compartment: { resourceType: 'Patient', id: amy.patient } })) as unknown as {
      total: number;
    };

    expect(posted.total).toBe(conditionsOf(amy.patient).length);
    const post = exchanges.slice(before).find((e) => e.method === 'POST');
    expect(post?.url).toBe(`${sandbox().fhirBaseUrl}/Condition/_search`);
    expect(post?.headers.get('content-type')).toMatch(/^application\/x-www-form-urlencoded/);
    expect(post?.body?.toString()).toBe(`patient=${amy.patient}`);
    expect(post?.response?.status).toBe(200);
    expect(compartment.total).toBe(conditionsOf(amy.patient).length);
    expect(exchanges.slice(before).some((e) => e.method === 'GET' && new URL(e.url).pathname === `/fhir/Patient/${amy.patient}/Condition`)).toBe(true);
  });
});

describe('interactions (SMART-FHIR-03)', () => {
  const get = (path: string, headers: Record<string, string> = {}) => amy.browser.call(`${amy.fhirBaseUrl}/${path}`, { headers });

  it('metadata: the CapabilityStatement', async () => {
    const { status, body } = await get('metadata');
    expect(status).toBe(200);
    expect(body).toMatchObject({ resourceType: 'CapabilityStatement' });
  });

  it('read with ETag and Last-Modified; Cache-Control kept from the EHR', async () => {
    const first = await get(`Patient/${amy.patient}`);
    expect(first.status).toBe(200);
    expect(first.response.headers.get('etag')).toBe('W/"1"');
    expect(first.response.headers.get('last-modified')).toBeTruthy();
    expect(first.response.headers.get('cache-control')).toBe('no-store');
  });

  it('vread and instance history', async () => {
    const vread = await get(`Patient/${amy.patient}/_history/1`);
    const history = await get(`Patient/${amy.patient}/_history`);
    expect(vread).toMatchObject({ status: 200, body: { resourceType: 'Patient', id: amy.patient } });
    expect(history).toMatchObject({ status: 200, body: { resourceType: 'Bundle', type: 'history' } });
  });

  it('search with repeated parameters, modifiers, commas and | forwarded verbatim', async () => {
    const lab = 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
    const before = observed.requests.length;
    const path = `Observation?patient=${amy.patient}&category=${encodeURIComponent(lab)}&code=http://loinc.org|2093-3,http://loinc.org|2085-9&_count=100&_sort=date`;

    const { status, body } = await get(path);

    expect(status).toBe(200);
    const expected = observationsOf(amy.patient).filter(
      (o) => o.category?.[0]?.coding?.[0]?.code === 'laboratory' && ['2093-3', '2085-9'].includes(o.code.coding?.[0]?.code ?? ''),
    );
    expect((body as { total: number }).total).toBe(expected.length);
    expect(sentSince(before)).toEqual([
      `${sandbox().fhirBaseUrl}/Observation?patient=${amy.patient}&category=${lab}&code=http://loinc.org|2093-3,http://loinc.org|2085-9&_count=100&_sort=date`,
    ]);
  });

  it('operations at instance level, GET and POST, with Bundle links rewritten', async () => {
    const viaGet = await get(`Patient/${amy.patient}/$everything?_count=5`);
    const viaPost = await amy.browser.call(`${amy.fhirBaseUrl}/Patient/${amy.patient}/$everything`, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Parameters', parameter: [] }),
    });

    for (const answer of [viaGet, viaPost]) {
      expect(answer.status).toBe(200);
      const bundle = answer.body as { total: number; link: Array<{ relation: string; url: string }>; entry: Array<{ fullUrl: string; resource: { resourceType: string } }> };
      expect(bundle.total).toBe(everythingOf(amy.patient));
      expect(bundle.entry[0]?.resource.resourceType).toBe('Patient');
      expect(bundle.entry.every((e) => e.fullUrl.startsWith(`${amy.fhirBaseUrl}/`))).toBe(true);
      expect(bundle.link.find((l) => l.relation === 'next')?.url.startsWith(`${amy.fhirBaseUrl}/Patient/${amy.patient}/$everything?`)).toBe(true);
    }
    // The rewritten next link pages on through the proxy.
    const next = (viaGet.body as { link: Array<{ relation: string; url: string }> }).link.find((l) => l.relation === 'next')!.url;
    const page2 = await amy.browser.call(next);
    expect(page2.status).toBe(200);
    expect((page2.body as { entry: unknown[] }).entry).toHaveLength(5);
  });

  it('passes the EHR’s 4xx bodies through (SMART-SCOPE-08)', async () => {
    const { status, body } = await get('Observation/does-not-exist');
    expect(status).toBe(404);
    expect(body).toMatchObject({ resourceType: 'OperationOutcome' });
    expect(outcomeCode(body)).toBeUndefined(); // the EHR's own outcome, not one of ours
  });
});

describe('bodies pass through byte for byte', () => {
  const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

  it('a 10 MB Binary arrives byte-exact, streamed by the local runner as Lambda streams it', async () => {
    const response = await amy.browser.fetch(`${amy.fhirBaseUrl}/Binary/${BIG_BINARY_ID}`);
    const bytes = Buffer.from(await response.arrayBuffer());

    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('application/octet-stream');
    expect(response.headers.get('x-correlation-id')).toMatch(/^[0-9a-f-]{36}$/);
    expect(response.headers.get('transfer-encoding')).toBe('chunked');
    expect(bytes.length).toBe(bigBinary().length);
    expect(sha256(bytes)).toBe(sha256(bigBinary()));
  });

  it('an answer written whole (up to 1 MB) arrives in one piece with its Content-Length, not chunked', async () => {
    const response = await amy.browser.fetch(`${amy.fhirBaseUrl}/Patient/${amy.patient}`);
    const bytes = Buffer.from(await response.arrayBuffer());

    expect(response.status).toBe(200);
    expect(response.headers.get('transfer-encoding')).toBeNull();
    expect(response.headers.get('content-length')).toBe(String(bytes.length));
    expect(JSON.parse(bytes.toString('utf8'))).toMatchObject({ resourceType: 'Patient', id: amy.patient });
  });

  it('a PDF arrives byte-exact; the EHR’s Set-Cookie and other headers are dropped', async () => {
    const before = exchanges.length;
    const response = await amy.browser.fetch(`${amy.fhirBaseUrl}/Binary/${summaryPdfId(amy.patient)}`);
    const bytes = Buffer.from(await response.arrayBuffer());

    expect(response.headers.get('content-type')).toBe('application/pdf');
    expect(Buffer.compare(bytes, data.binaryContent.get(summaryPdfId(amy.patient))!())).toBe(0);
    // The sandbox sent a cookie and a node header (as a content server behind a sticky load balancer)...
    const upstream = exchanges.slice(before).find((e) => e.url.endsWith(`/Binary/${summaryPdfId(amy.patient)}`))?.response?.headers;
    expect(upstream?.getSetCookie()).toHaveLength(1);
    expect(upstream?.get('x-content-node')).toBe('sandbox-1');
    // ...which the browser never sees.
    expect(response.headers.getSetCookie()).toEqual([]);
    expect(response.headers.get('x-content-node')).toBeNull();
  });

  it('FHIR XML arrives byte-exact with its content type', async () => {
    const document = data.documents.find((d) => d.subject?.reference === `Patient/${amy.patient}`)!;
    const response = await amy.browser.fetch(`${amy.fhirBaseUrl}/DocumentReference/${document.id}`, { headers: { accept: 'application/fhir+xml' } });
    expect(response.headers.get('content-type')).toBe('application/fhir+xml; charset=utf-8');
    expect(Buffer.compare(Buffer.from(await response.arrayBuffer()), Buffer.from(toFhirXml(document), 'utf8'))).toBe(0);
  });

  it('a gzip-compressed EHR answer arrives decoded, without a stale Content-Encoding, links rewritten', async () => {
    const before = exchanges.length;
    const response = await amy.browser.fetch(`${amy.fhirBaseUrl}/Observation?patient=${amy.patient}&_count=5`, { headers: { 'accept-encoding': 'gzip' } });
    const text = Buffer.from(await response.arrayBuffer()).toString('utf8');

    expect(response.status).toBe(200);
    // The sandbox compressed its answer; the proxy delivers it decoded.
    const upstream = exchanges.slice(before).find((e) => e.url.includes('/Observation?'));
    expect(upstream?.headers.get('accept-encoding')).toBe('gzip');
    expect(upstream?.response?.headers.get('content-encoding')).toBe('gzip');
    expect(response.headers.get('content-encoding')).toBeNull();
    const bundle = JSON.parse(text) as { total: number; link: Array<{ url: string }> };
    expect(bundle.total).toBe(observationsOf(amy.patient).length);
    expect(bundle.link.every((l) => l.url.startsWith(`${amy.fhirBaseUrl}/`))).toBe(true);
  });
});

describe('token renewal on an EHR 401 (SMART-FHIR-04)', () => {
  afterEach(() => sandbox().clearFaults());

  it('renews once and retries when the EHR answers 401', async () => {
    const me = await signIn(0);
    const refreshesBefore = sandbox().stats.tokenRequests.refresh_token ?? 0;
    const before = exchanges.length;
    sandbox().faults.fhir401 = 'once';

    const { status, body } = await me.browser.call(`${me.fhirBaseUrl}/Observation?patient=${me.patient}&_count=1`);

    expect(status).toBe(200);
    expect(body).toMatchObject({ resourceType: 'Bundle' });
    expect(sandbox().stats.tokenRequests.refresh_token ?? 0).toBe(refreshesBefore + 1);
    expect(sandbox().faults.fhir401).toBeUndefined(); // used up by the first attempt
    const attempts = exchanges.slice(before).filter((e) => e.url.includes('/Observation?'));
    expect(attempts.map((e) => e.response?.status)).toEqual([401, 200]);
    expect(attempts[0]?.headers.get('authorization')).not.toBe(attempts[1]?.headers.get('authorization'));
  });

  it('answers 401 UPSTREAM_UNAUTHORIZED with a relaunch hint when the renewed token is refused too', async () => {
    const me = await signIn(0);
    sandbox().faults.fhir401 = 'always';

    const { status, body } = await me.browser.call(`${me.fhirBaseUrl}/Observation?patient=${me.patient}`);

    expect(status).toBe(401);
    expect(outcomeCode(body)).toBe('UPSTREAM_UNAUTHORIZED');
    expect(JSON.stringify(body)).toMatch(/Open the app again from the EHR, or start a new sign-in/);
  });
});

describe('patient-level sessions stay on their patient (SMART-CTX-01, BFF-16)', () => {
  it.each([
    ['a read of another Patient', (other: string) => `Patient/${other}`],
    ['a compartment search of another patient', (other: string) => `Patient/${other}/Observation`],
    ['patient= another patient', (other: string) => `Observation?patient=${other}`],
    ['subject=Patient/another', (other: string) => `Condition?subject=Patient/${other}`],
    ['an OR list naming another patient', (other: string) => `Observation?patient=PATIENT,${other}`],
  ])('refuses %s with 403 PATIENT_MISMATCH; the EHR receives nothing', async (_what, pathOf) => {
    const other = sandbox().patients[1]!.id;
    const before = observed.requests.length;

    const { status, body } = await amy.browser.call(`${amy.fhirBaseUrl}/${pathOf(other).replace('PATIENT', amy.patient)}`);

    expect(status).toBe(403);
    expect(outcomeCode(body)).toBe('PATIENT_MISMATCH');
    expect(sentSince(before)).toEqual([]);
  });
});

describe('SSRF: nothing a browser sends moves the token off the session’s FHIR base (invariant 7, SMART-FHIR-03)', () => {
  const forms = () => [
    `http://${decoyOrigin}/fhir/Patient`,
    `https:%2F%2F${decoyOrigin}%2Ffhir`,
    `http:/${decoyOrigin}/x`,
    `//${decoyOrigin}/x`,
    `%2F%2F${decoyOrigin}/x`,
    `%252F%252F${decoyOrigin}/x`,
    `\\\\${decoyOrigin}\\x`,
    `%5C%5C${decoyOrigin}%5Cx`,
    '..',
    '../../oauth/token',
    'Patient/../../oauth/token',
    'Patient/%2e%2e/%2e%2e/oauth/token',
    '%2e%2e%2f%2e%2e%2foauth%2ftoken',
    '%2E%2E/oauth',
    '.%2e/oauth',
    '%2e./oauth',
    '%252e%252e/oauth',
    '%25252e%25252e/oauth',
    '%c0%ae%c0%ae/oauth',
    '%ef%bc%8e%ef%bc%8e/oauth',
    '..%5Coauth',
    'Patient\\..\\..\\oauth',
    'Patient/..;/oauth',
    'Patient/1%00',
    'Patient/1%09x',
    'Patient%3F_id=1',
    'Patient/1%23x',
    `Patient@${decoyOrigin}`,
    `@${decoyOrigin}/x`,
    'Patient//1',
    'Patient/',
  ];

  it('refuses every form with 400 PROXY_PATH_REJECTED before any network call; neither the EHR nor the target receives anything', async () => {
    for (const form of forms()) {
      const before = observed.requests.length;
      const result = await amy.browser.rawCall(api(), `/sessions/${amy.sessionId}/fhir/${form}`);
      expect(result.status, form).toBe(400);
      expect(outcomeCode(result.body), form).toBe('PROXY_PATH_REJECTED');
      expect(sentSince(before), form).toEqual([]);
    }
    expect(decoyHits).toBe(0);
  });

  it('sends query values that look like URLs to the session base only', async () => {
    const before = observed.requests.length;
    const { status } = await amy.browser.call(
      `${amy.fhirBaseUrl}/Observation?patient=${amy.patient}&_count=1&_url=${encodeURIComponent(`http://${decoyOrigin}/`)}&x=${encodeURIComponent(`@${decoyOrigin}`)}`,
    );
    expect([200, 400]).toContain(status);
    expect(sentSince(before).every((u) => u.startsWith(`${sandbox().fhirBaseUrl}/Observation?`))).toBe(true);
    expect(decoyHits).toBe(0);
  });

  it('refuses an absolute-form request target at the runner', async () => {
    const result = await amy.browser.rawCall(api(), `http://${decoyOrigin}/sessions/${amy.sessionId}/fhir/Patient/${amy.patient}`);
    expect(result.status).toBe(400);
    expect(decoyHits).toBe(0);
  });
});

describe('bad input gets a 4xx OperationOutcome with a code; nothing reaches the EHR (invariant 9)', () => {
  const path = (p: string) => `/sessions/${amy.sessionId}/fhir/${p}`;
  const cookie = () => amy.cookie;

  it.each([
    ['a lower-case type', { path: 'patient/x' }, 400, 'PROXY_REQUEST_INVALID'],
    ['a path with too many segments', { path: 'Patient/x/_history/1/y' }, 400, 'PROXY_REQUEST_INVALID'],
    ['a bad operation name', { path: 'Patient/$' }, 400, 'PROXY_REQUEST_INVALID'],
    ['HEAD', { path: 'Patient', method: 'HEAD' }, 405, undefined],
    ['OPTIONS (a CORS preflight: the API answers it itself)', { path: 'Patient', method: 'OPTIONS' }, 204, undefined],
    ['TRACE', { path: 'Patient', method: 'TRACE' }, 405, 'METHOD_NOT_ALLOWED'],
    ['POST on an instance', { path: 'Patient/x', method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: '{}' }, 405, 'METHOD_NOT_ALLOWED'],
    ['a create (writes are off by default)', { path: 'Observation', method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: '{"resourceType":"Observation"}' }, 405, 'WRITES_DISABLED'],
    ['an update (writes are off by default)', { path: 'Observation/x', method: 'PUT', headers: { 'content-type': 'application/fhir+json' }, body: '{"resourceType":"Observation"}' }, 405, 'WRITES_DISABLED'],
    ['a delete (writes are off by default)', { path: 'Observation/x', method: 'DELETE' }, 405, 'WRITES_DISABLED'],
    ['a GET with a body', { path: 'Observation', headers: { 'content-type': 'text/plain' }, body: 'x' }, 400, 'PROXY_REQUEST_INVALID'],
    ['a _search with a JSON body', { path: 'Observation/_search', method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }, 415, 'MEDIA_TYPE_UNSUPPORTED'],
    ['a _search body without Content-Type', { path: 'Observation/_search', method: 'POST', body: 'patient=x' }, 415, 'MEDIA_TYPE_UNSUPPORTED'],
    ['a repeated Content-Type', { path: 'Observation/_search', method: 'POST', headers: { 'content-type': ['application/x-www-form-urlencoded', 'text/plain'] }, body: 'a=b' }, 400, 'PROXY_REQUEST_INVALID'],
    ['a query with a NUL', { path: 'Observation?name=a%00b' }, 400, 'PROXY_REQUEST_INVALID'],
    ['a body over 4 MB', { path: 'Observation/_search', method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `a=${'x'.repeat(4 * 1024 * 1024 + 10)}` }, 413, 'REQUEST_TOO_LARGE'],
    ['a body over 10 MB (the API Gateway limit)', { path: 'Observation/_search', method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `a=${'x'.repeat(10 * 1024 * 1024 + 10)}` }, 413, 'REQUEST_TOO_LARGE'],
  ] as const)('%s', async (_what, request, status, code) => {
    const before = observed.requests.length;
    const headers = { cookie: cookie(), ...('headers' in request ? request.headers : {}) } as Record<string, string | string[]>;
    const answer = await rawRequest(api(), {
      method: 'method' in request ? request.method : 'GET',
      path: path(request.path),
      headers,
      ...('body' in request ? { body: request.body } : {}),
    });

    expect(answer.status).toBe(status);
    if (code !== undefined) {
      expect(answer.json).toMatchObject({ resourceType: 'OperationOutcome' });
      expect(outcomeCode(answer.json)).toBe(code);
    }
    expect(sentSince(before)).toEqual([]);
  });

  it('a malformed session id or a missing cookie never reaches the EHR either', async () => {
    const before = observed.requests.length;
    const malformed = await rawRequest(api(), { path: `/sessions/nope/fhir/Patient/${amy.patient}` });
    const unbound = await rawRequest(api(), { path: path(`Patient/${amy.patient}`) });
    expect([malformed.status, outcomeCode(malformed.json)]).toEqual([400, 'SESSION_ID_MALFORMED']);
    expect([unbound.status, outcomeCode(unbound.json)]).toEqual([401, 'SESSION_NOT_OPEN']);
    expect(sentSince(before)).toEqual([]);
  });
});
