import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BIG_BINARY_BYTES, bigBinary, samplePdf } from '../../local/sandbox/binaries.js';
import { BIG_BINARY_ID, generateSandboxData, summaryPdfId } from '../../local/sandbox/data.js';
import { toFhirXml } from '../../local/sandbox/fhir-xml.js';
import { startSandbox } from '../../local/sandbox/index.js';
import type { Sandbox } from '../../local/sandbox/index.js';
import { applyJsonPatch, JsonPatchError } from '../../local/sandbox/json-patch.js';
import { ehrLaunchToken } from './smart-client.js';
import { sandboxSigningKey } from '../fixtures/keys.js';

/*
 * The sandbox FHIR server beyond JSON read and search: Binary content (raw and as FHIR), FHIR XML,
 * gzip, POST _search, compartment searches, Patient/$everything, writes for Observation and Basic,
 * and the FHIR test switches (fhir401, fhirDelayMs, fhirDropConnection). Over real HTTP.
 */

const CLIENT = { clientId: 'fhir-test', clientSecret: 'fhir-test-secret', redirectUri: 'http://localhost:3000/callback' };
const DATA = generateSandboxData();
const AMY = 'amy-sample';
const BEN = 'ben-testwell';
const LAB = 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory';

let sandbox: Sandbox;
/** patient/*.rs for Amy. */
let readToken: string;
/** patient/*.cruds for Amy. */
let writeToken: string;
/** user/*.rs (every patient). */
let userToken: string;

beforeAll(async () => {
  sandbox = await startSandbox({
    signingKey: await sandboxSigningKey(),
    clients: [{ clientId: CLIENT.clientId, clientAuth: 'client_secret_basic', clientSecret: CLIENT.clientSecret, redirectUris: [CLIENT.redirectUri] }],
    launchUrl: 'http://localhost:3000/launch',
  });
  const token = async (patient: string, scope: string) => String((await ehrLaunchToken(sandbox, CLIENT, patient, scope)).access_token);
  [readToken, writeToken, userToken] = await Promise.all([token(AMY, 'launch patient/*.rs'), token(AMY, 'launch patient/*.cruds'), token(BEN, 'launch user/*.rs')]);
});
afterAll(async () => {
  await sandbox?.close();
});
afterEach(() => {
  sandbox.clearFaults();
});

interface Raw {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  /** The body as it came over the wire (still compressed if it was). */
  readonly body: Buffer;
}

/** One request with node:http: nothing added (no Accept-Encoding), nothing decoded. */
function raw(path: string, options: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<Raw> {
  const url = new URL(`${sandbox.fhirBaseUrl}/${path}`);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    if (options.body !== undefined) headers['content-length'] = String(Buffer.byteLength(options.body));
    const req = httpRequest({ host: url.hostname, port: url.port, path: `${url.pathname}${url.search}`, method: options.method ?? 'GET', headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    if (options.body !== undefined) req.write(options.body);
    req.end();
  });
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const json = (answer: Raw): Record<string, unknown> => JSON.parse(answer.body.toString('utf8')) as Record<string, unknown>;
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

interface Bundle {
  resourceType: string;
  type?: string;
  total?: number;
  link?: Array<{ relation: string; url: string }>;
  entry?: Array<{ fullUrl?: string; resource: { resourceType: string; id: string; [key: string]: unknown } }>;
}

async function fhir<T = Record<string, unknown>>(path: string, token: string, init: RequestInit = {}): Promise<{ status: number; body: T; headers: Headers }> {
  const response = await fetch(`${sandbox.fhirBaseUrl}/${path}`, {
    ...init,
    headers: { accept: 'application/fhir+json', ...bearer(token), ...(init.headers as Record<string, string> | undefined) },
  });
  const text = await response.text();
  return { status: response.status, body: (text === '' ? {} : JSON.parse(text)) as T, headers: response.headers };
}

describe('seeded documents and their Binary content', () => {
  it('links a visit summary PDF for every patient and a 10 MB imaging export for Amy, each Binary pointing back at its DocumentReference', () => {
    expect(DATA.documents.map((d) => d.id)).toEqual(['amy-sample-document-1', 'amy-sample-document-2', 'ben-testwell-document-1', 'cara-demoson-document-1']);
    for (const document of DATA.documents) {
      const url = document.content[0]?.attachment.url ?? '';
      const binary = DATA.binaries.find((b) => `Binary/${b.id}` === url);
      expect(binary?.securityContext?.reference).toBe(`DocumentReference/${document.id}`);
      expect(binary?.contentType).toBe(document.content[0]?.attachment.contentType);
      expect(DATA.binaryContent.get(binary?.id ?? '')?.().length).toBe(document.content[0]?.attachment.size);
    }
    expect(DATA.binaries.find((b) => b.id === BIG_BINARY_ID)?.contentType).toBe('application/octet-stream');
  });

  it('bigBinary(): 10 MB, deterministic (golden digest) and incompressible', () => {
    const bytes = bigBinary();
    expect(bytes.length).toBe(BIG_BINARY_BYTES);
    expect(sha256(bytes)).toBe(sha256(bigBinary()));
    expect(sha256(bytes)).toBe('c74cd6313c3c08f70d309edb936a836b1893bab698d1a1148213104a99a7ac94');
    expect(gzipSync(bytes.subarray(0, 1024 * 1024), { level: 1 }).length).toBeGreaterThan(1024 * 1024);
    expect(new Set(bytes.subarray(0, 4096)).size).toBe(256);
  });

  it('samplePdf(): a well-formed PDF whose xref offsets point at its objects, with NULs and high bytes', () => {
    const pdf = samplePdf(['Hello (world) \\ ok']);
    const text = pdf.toString('latin1');
    expect(text.startsWith('%PDF-1.4\n%\u00e2\u00e3\u00cf\u00d3\n')).toBe(true);
    expect(text.endsWith('%%EOF\n')).toBe(true);
    expect(text).toContain('(Hello \\(world\\) \\\\ ok) Tj');
    const startxref = Number(/startxref\n(\d+)\n/.exec(text)?.[1]);
    expect(text.slice(startxref).startsWith('xref\n0 7\n')).toBe(true);
    const offsets = [...text.slice(startxref).matchAll(/^(\d{10}) 00000 n $/gm)].map((m) => Number(m[1]));
    expect(offsets).toHaveLength(6);
    offsets.forEach((offset, i) => expect(text.slice(offset, offset + 8)).toBe(`${i + 1} 0 obj\n`));
    expect(pdf.includes(Buffer.from([0, 1, 2]))).toBe(true);
    expect(samplePdf(['Hello (world) \\ ok']).equals(pdf)).toBe(true);
  });
});

describe('Binary reads', () => {
  it('serves the 10 MB Binary raw for Accept: application/octet-stream (and */*), byte for byte, with its content type and ETag', async () => {
    for (const accept of ['application/octet-stream', '*/*']) {
      const answer = await raw(`Binary/${BIG_BINARY_ID}`, { headers: { ...bearer(readToken), accept, 'accept-encoding': 'gzip' } });
      expect(answer.status, accept).toBe(200);
      expect(answer.headers['content-type']).toBe('application/octet-stream');
      expect(answer.headers['content-encoding']).toBeUndefined(); // raw content is never compressed
      expect(answer.headers['content-length']).toBe(String(BIG_BINARY_BYTES));
      expect(answer.headers.etag).toBe('W/"1"');
      expect(answer.body.equals(bigBinary())).toBe(true);
    }
  });

  it('serves it as a FHIR Binary (base64 data) when FHIR JSON is asked for', async () => {
    const answer = await raw(`Binary/${BIG_BINARY_ID}`, { headers: { ...bearer(readToken), accept: 'application/fhir+json' } });
    const binary = json(answer) as { resourceType: string; contentType: string; data: string; securityContext: { reference: string } };
    expect(answer.headers['content-type']).toBe('application/fhir+json; charset=utf-8');
    expect(binary).toMatchObject({ resourceType: 'Binary', contentType: 'application/octet-stream', securityContext: { reference: 'DocumentReference/amy-sample-document-2' } });
    expect(Buffer.from(binary.data, 'base64').equals(bigBinary())).toBe(true);
  });

  it('serves the PDF raw with the headers of a content server behind a sticky load balancer', async () => {
    const answer = await raw(`Binary/${summaryPdfId(AMY)}`, { headers: bearer(readToken) });
    expect(answer.status).toBe(200);
    expect(answer.headers['content-type']).toBe('application/pdf');
    expect(answer.body.equals(DATA.binaryContent.get(summaryPdfId(AMY))?.() ?? Buffer.alloc(0))).toBe(true);
    expect(answer.body.subarray(0, 8).toString('latin1')).toBe('%PDF-1.4');
    expect(answer.headers['set-cookie']).toEqual([expect.stringMatching(/^sandbox-content-node=1; Path=\/fhir\/Binary; HttpOnly/)]);
    expect(answer.headers['x-content-node']).toBe('sandbox-1');
  });

  it('applies the securityContext’s compartment: another patient’s Binary is 403, Binary search needs a user-level token', async () => {
    const other = await raw(`Binary/${summaryPdfId(BEN)}`, { headers: bearer(readToken) });
    expect(other.status).toBe(403);
    expect(json(other)).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ code: 'forbidden' }] });
    expect((await fhir('Binary', readToken)).status).toBe(403);

    const asUser = await raw(`Binary/${summaryPdfId(AMY)}`, { headers: bearer(userToken) });
    expect(asUser.status).toBe(200);
    const documents = await fhir<Bundle>(`DocumentReference?patient=${AMY}`, readToken);
    expect(documents.body.total).toBe(2);
  });
});

describe('FHIR XML', () => {
  it('renders a resource as FHIR XML for Accept: application/fhir+xml and for _format=xml, byte-stable', async () => {
    const document = DATA.documents[0]!;
    const expected = Buffer.from(toFhirXml(document), 'utf8');
    const byAccept = await raw(`DocumentReference/${document.id}`, { headers: { ...bearer(readToken), accept: 'application/fhir+xml' } });
    const byFormat = await raw(`DocumentReference/${document.id}?_format=xml`, { headers: bearer(readToken) });
    for (const answer of [byAccept, byFormat]) {
      expect(answer.status).toBe(200);
      expect(answer.headers['content-type']).toBe('application/fhir+xml; charset=utf-8');
      expect(answer.headers.etag).toBe('W/"1"');
      expect(answer.body.equals(expected)).toBe(true);
    }
    const text = expected.toString('utf8');
    expect(text).toContain('<description value="Visit summary – Amy Sample: plan &amp; follow-up in &lt; 8 weeks ✓"/>');
    expect(text).toContain('<attachment><contentType value="application/pdf"/><url value="Binary/amy-sample-document-1-pdf"/>');
  });

  it('answers errors and searches in XML too when XML is asked for', async () => {
    const missing = await raw('Observation/nope', { headers: { ...bearer(readToken), accept: 'application/fhir+xml' } });
    expect(missing.status).toBe(404);
    expect(missing.body.toString('utf8')).toMatch(/^<\?xml version="1.0" encoding="UTF-8"\?>\n<OperationOutcome xmlns="http:\/\/hl7.org\/fhir"><issue>/);
    const bundle = await raw(`Condition?patient=${AMY}&_format=application/fhir%2Bxml`, { headers: bearer(readToken) });
    expect(bundle.body.toString('utf8')).toContain('<entry><fullUrl value="');
    expect(bundle.body.toString('utf8')).toContain('<resource><Condition><id value="amy-sample-condition-1"/>');
  });

  it('toFhirXml: value attributes, element ids, extension urls, primitive extensions, nested resources and the narrative div', () => {
    const xml = toFhirXml({
      resourceType: 'Patient',
      id: 'p1',
      text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">Zoë</div>' },
      contained: [{ resourceType: 'Organization', id: 'o1', name: 'A "B" <C>' }],
      extension: [{ url: 'urn:x', valueBoolean: true }],
      active: true,
      name: [{ id: 'n1', family: 'Zoë & ✓', given: ['A', 'B'], _given: [null, { extension: [{ url: 'urn:y', valueCode: 'z' }] }] }],
      birthDate: '1990-01-01',
      _birthDate: { id: 'b1' },
      multipleBirthInteger: 2,
    } as never);
    expect(xml).toBe(
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
        '<Patient xmlns="http://hl7.org/fhir"><id value="p1"/>' +
        '<text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml">Zoë</div></text>' +
        '<contained><Organization><id value="o1"/><name value="A &quot;B&quot; &lt;C&gt;"/></Organization></contained>' +
        '<extension url="urn:x"><valueBoolean value="true"/></extension>' +
        '<active value="true"/>' +
        '<name id="n1"><family value="Zoë &amp; ✓"/><given value="A"/><given value="B"><extension url="urn:y"><valueCode value="z"/></extension></given></name>' +
        '<birthDate id="b1" value="1990-01-01"/>' +
        '<multipleBirthInteger value="2"/></Patient>\n',
    );
  });
});

describe('gzip', () => {
  it('compresses FHIR answers when Accept-Encoding allows gzip, not otherwise', async () => {
    const path = `Observation?patient=${AMY}&_count=5`;
    const zipped = await raw(path, { headers: { ...bearer(readToken), 'accept-encoding': 'gzip, deflate' } });
    const plain = await raw(path, { headers: bearer(readToken) });
    const refused = await raw(path, { headers: { ...bearer(readToken), 'accept-encoding': 'gzip;q=0, identity' } });

    expect(zipped.headers['content-encoding']).toBe('gzip');
    expect(zipped.headers['content-length']).toBe(String(zipped.body.length));
    expect(zipped.headers.vary).toBe('Accept, Accept-Encoding');
    const decoded = JSON.parse(gunzipSync(zipped.body).toString('utf8')) as Bundle;
    expect(decoded).toEqual(JSON.parse(plain.body.toString('utf8')));
    expect(decoded.total).toBe(120);
    expect(plain.headers['content-encoding']).toBeUndefined();
    expect(refused.headers['content-encoding']).toBeUndefined();
  });
});

describe('searches: POST _search and Patient compartment', () => {
  it('POST [type]/_search with a form body answers as GET does; other bodies are 415', async () => {
    const byGet = await fhir<Bundle>(`Observation?patient=${AMY}&category=${encodeURIComponent(LAB)}&_count=7`, readToken);
    const byPost = await fhir<Bundle>('Observation/_search?_count=7', readToken, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ patient: AMY, category: LAB }).toString(),
    });
    const wrongType = await fhir('Observation/_search', readToken, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });

    expect(byPost.status).toBe(200);
    expect(byPost.body.total).toBe(40);
    expect(byPost.body.entry?.map((e) => e.resource.id)).toEqual(byGet.body.entry?.map((e) => e.resource.id));
    expect(byPost.body.link?.find((l) => l.relation === 'next')?.url.startsWith(`${sandbox.fhirBaseUrl}/Observation?`)).toBe(true);
    expect(wrongType.status).toBe(415);
  });

  it('identifier token searches match (system|value, |value, system|, value), with links as asked', async () => {
    const mrn = 'urn:oid:2.16.840.1.113883.3.9999.1';
    const count = async (query: string) => (await fhir<Bundle>(`Patient?${query}`, userToken)).body.total;
    expect(await count(`identifier=${encodeURIComponent(`${mrn}|SBX-1002`)}`)).toBe(1);
    expect(await count('identifier=SBX-1002,SBX-1003')).toBe(2);
    expect(await count(`identifier=${encodeURIComponent(`${mrn}|`)}`)).toBe(3);
    expect(await count(`identifier=${encodeURIComponent('|SBX-1002')}`)).toBe(0);
    expect(await count('identifier=SBX-1002&identifier=SBX-1003')).toBe(0);
    const self = (await fhir<Bundle>('Patient?identifier=SBX-1002', userToken)).body.link?.find((l) => l.relation === 'self')?.url;
    expect(self).toContain('identifier=SBX-1002');
    expect(self).not.toContain('_id=');
  });

  it('Patient/[id]/[type] searches that patient’s compartment, pages under the compartment path, and stays confined', async () => {
    const page = await fhir<Bundle>(`Patient/${AMY}/Observation?_count=50`, readToken);
    expect(page.status).toBe(200);
    expect(page.body.total).toBe(120);
    const next = page.body.link?.find((l) => l.relation === 'next')?.url ?? '';
    expect(next.startsWith(`${sandbox.fhirBaseUrl}/Patient/${AMY}/Observation?`)).toBe(true);
    const second = await fetch(next, { headers: bearer(readToken) });
    expect(((await second.json()) as Bundle).entry).toHaveLength(50);

    expect((await fhir<Bundle>(`Patient/${BEN}/Condition`, userToken)).body.total).toBe(3);
    expect((await fhir(`Patient/${BEN}/Condition`, readToken)).status).toBe(403);
    expect((await fhir(`Patient/${AMY}/Practitioner`, readToken)).status).toBe(400);
  });
});

describe('Patient/$everything', () => {
  const everythingOf = (patient: string) =>
    1 + (['encounters', 'conditions', 'observations', 'medicationRequests', 'documents'] as const).reduce((n, key) => n + DATA[key].filter((r) => r.subject?.reference === `Patient/${patient}`).length, 0);

  it('GET: the patient first, then the compartment, paged with absolute links under the FHIR base', async () => {
    const { status, body } = await fhir<Bundle>(`Patient/${AMY}/$everything?_count=5`, readToken);
    expect(status).toBe(200);
    expect(body).toMatchObject({ resourceType: 'Bundle', type: 'searchset', total: everythingOf(AMY) });
    expect(body.total).toBe(137);
    expect(body.entry?.[0]?.resource).toMatchObject({ resourceType: 'Patient', id: AMY });
    expect(body.entry?.[1]?.fullUrl).toBe(`${sandbox.fhirBaseUrl}/Condition/amy-sample-condition-1`);
    const next = body.link?.find((l) => l.relation === 'next')?.url;
    expect(next).toBe(`${sandbox.fhirBaseUrl}/Patient/${AMY}/$everything?_count=5&_offset=5`);

    const ids = new Set<string>();
    let url: string | undefined = `${sandbox.fhirBaseUrl}/Patient/${AMY}/$everything?_count=100`;
    while (url !== undefined) {
      const bundle = (await (await fetch(url, { headers: bearer(readToken) })).json()) as Bundle;
      for (const entry of bundle.entry ?? []) ids.add(`${entry.resource.resourceType}/${entry.resource.id}`);
      url = bundle.link?.find((l) => l.relation === 'next')?.url;
    }
    expect(ids.size).toBe(137);
    expect([...ids].some((id) => id.startsWith('Binary/'))).toBe(false);
  });

  it('POST with a Parameters body (or none), _type, and the token’s reach', async () => {
    const posted = await fhir<Bundle>(`Patient/${AMY}/$everything`, readToken, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Parameters', parameter: [{ name: '_count', valueInteger: 3 }, { name: '_type', valueString: 'Patient,Condition' }] }),
    });
    expect(posted.status).toBe(200);
    expect(posted.body.total).toBe(3);
    expect(posted.body.entry?.map((e) => e.resource.resourceType)).toEqual(['Patient', 'Condition', 'Condition']);
    expect((await fhir<Bundle>(`Patient/${AMY}/$everything`, readToken, { method: 'POST' })).body.total).toBe(137);

    expect((await fhir(`Patient/${BEN}/$everything`, readToken)).status).toBe(403);
    expect((await fhir<Bundle>(`Patient/${BEN}/$everything?_count=1`, userToken)).body.total).toBe(everythingOf(BEN));
    const granular = String((await ehrLaunchToken(sandbox, CLIENT, AMY, `launch patient/Patient.rs patient/Observation.rs?category=${LAB}`)).access_token);
    expect((await fhir<Bundle>(`Patient/${AMY}/$everything?_count=1`, granular)).body.total).toBe(1 + 40);
  });
});

describe('writes (Observation and Basic)', () => {
  const observation = (patient: string, text: string) => ({
    resourceType: 'Observation',
    status: 'final',
    code: { text },
    subject: { reference: `Patient/${patient}` },
  });
  const send = (method: string, path: string, token: string, body?: unknown, headers: Record<string, string> = {}) =>
    fhir<Record<string, unknown> & { id?: string; meta?: { versionId?: string } }>(path, token, {
      method,
      headers: { 'content-type': 'application/fhir+json', ...headers },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });

  it('create (201, Location, ETag), update with If-Match (412 when stale), JSON Patch, history, vread, delete', async () => {
    const created = await send('POST', 'Observation', writeToken, { ...observation(AMY, 'Zoë ✓'), id: 'ignored' });
    expect(created.status).toBe(201);
    const id = created.body.id ?? '';
    expect(id).not.toBe('ignored');
    expect(created.headers.get('location')).toBe(`${sandbox.fhirBaseUrl}/Observation/${id}/_history/1`);
    expect(created.headers.get('etag')).toBe('W/"1"');
    expect(created.body).toMatchObject({ code: { text: 'Zoë ✓' }, meta: { versionId: '1' } });

    const updated = await send('PUT', `Observation/${id}`, writeToken, { ...observation(AMY, 'second'), id }, { 'if-match': 'W/"1"' });
    expect([updated.status, updated.headers.get('etag')]).toEqual([200, 'W/"2"']);
    const stale = await send('PUT', `Observation/${id}`, writeToken, { ...observation(AMY, 'third'), id }, { 'if-match': 'W/"1"' });
    expect(stale.status).toBe(412);

    const patched = await send('PATCH', `Observation/${id}`, writeToken, [{ op: 'replace', path: '/code/text', value: 'patched' }], {
      'content-type': 'application/json-patch+json',
      'if-match': 'W/"2"',
    });
    expect(patched.status).toBe(200);
    expect(patched.body).toMatchObject({ code: { text: 'patched' }, meta: { versionId: '3' } });
    const badPatch = await send('PATCH', `Observation/${id}`, writeToken, [{ op: 'remove', path: '/nope' }], { 'content-type': 'application/json-patch+json' });
    expect(badPatch.status).toBe(422);

    const history = await fhir<Bundle>(`Observation/${id}/_history`, readToken);
    expect(history.body.entry?.map((e) => (e.resource.meta as { versionId: string }).versionId)).toEqual(['3', '2', '1']);
    expect((await fhir(`Observation/${id}/_history/1`, readToken)).body).toMatchObject({ code: { text: 'Zoë ✓' } });
    expect((await fhir<Bundle>(`Observation?patient=${AMY}&_count=0`, readToken)).body.total).toBe(121);

    const deleted = await fhir(`Observation/${id}`, writeToken, { method: 'DELETE' });
    expect(deleted.status).toBe(204);
    expect((await fhir(`Observation/${id}`, readToken)).status).toBe(404);
    expect((await fhir<Bundle>(`Observation?patient=${AMY}&_count=0`, readToken)).body.total).toBe(120);
  });

  it('conditional update: creates when nothing matches, updates the one match after', async () => {
    const basic = { resourceType: 'Basic', identifier: [{ system: 'urn:x', value: '1' }], code: { text: 'a' }, subject: { reference: `Patient/${AMY}` } };
    const first = await send('PUT', 'Basic?identifier=urn:x|1', writeToken, basic);
    const second = await send('PUT', 'Basic?identifier=urn:x|1', writeToken, { ...basic, code: { text: 'b' } });
    expect(first.status).toBe(201);
    expect([second.status, second.body.id, second.body.meta?.versionId]).toEqual([200, first.body.id, '2']);
    expect(second.body).toMatchObject({ code: { text: 'b' } });
    expect((await fhir(`Basic/${first.body.id ?? ''}`, writeToken, { method: 'DELETE' })).status).toBe(204);
  });

  it('refuses writes without write scopes (403), outside the patient’s compartment (403), and for read-only types (405)', async () => {
    expect((await send('POST', 'Observation', readToken, observation(AMY, 'x'))).status).toBe(403);
    expect((await send('PUT', 'Observation/amy-sample-encounter-1-obs-01', readToken, { ...observation(AMY, 'x'), id: 'amy-sample-encounter-1-obs-01' })).status).toBe(403);
    expect((await fhir('Observation/amy-sample-encounter-1-obs-01', readToken, { method: 'DELETE' })).status).toBe(403);
    expect((await send('POST', 'Observation', writeToken, observation(BEN, 'x'))).status).toBe(403);
    expect((await send('POST', 'Basic', writeToken, { resourceType: 'Basic', code: { text: 'no subject' } })).status).toBe(403);
    const readOnly = await send('POST', 'Condition', writeToken, { resourceType: 'Condition', subject: { reference: `Patient/${AMY}` } });
    expect(readOnly.status).toBe(405);
    expect(readOnly.headers.get('allow')).toBe('GET');
    expect((await send('POST', 'Observation', writeToken, { resourceType: 'Patient' })).status).toBe(400);
    expect((await send('POST', 'Observation', writeToken, 'not json')).status).toBe(400);
    expect((await send('POST', 'Observation', writeToken, observation(AMY, 'x'), { 'content-type': 'application/fhir+xml' })).status).toBe(415);
  });

  it('accepts SMART v1 .write scopes', async () => {
    const v1 = String((await ehrLaunchToken(sandbox, CLIENT, AMY, 'launch patient/Observation.read patient/Observation.write')).access_token);
    const created = await send('POST', 'Observation', v1, observation(AMY, 'v1'), { prefer: 'return=minimal' });
    expect(created.status).toBe(201);
    const location = created.headers.get('location') ?? '';
    const id = /\/Observation\/([^/]+)\/_history\/1$/.exec(location)?.[1] ?? '';
    expect((await fhir(`Observation/${id}`, v1, { method: 'DELETE' })).status).toBe(204);
  });

  it('applyJsonPatch: add, remove, replace, move, copy, test; malformed and failing patches throw', () => {
    const doc = { a: [1, 2], b: { c: 'x' } };
    expect(
      applyJsonPatch(doc, [
        { op: 'add', path: '/a/-', value: 3 },
        { op: 'add', path: '/a/0', value: 0 },
        { op: 'remove', path: '/a/1' },
        { op: 'replace', path: '/b/c', value: 'y' },
        { op: 'copy', from: '/b', path: '/d' },
        { op: 'move', from: '/b/c', path: '/e' },
        { op: 'test', path: '/d', value: { c: 'y' } },
      ]),
    ).toEqual({ a: [0, 2, 3], b: {}, d: { c: 'y' }, e: 'y' });
    expect(doc).toEqual({ a: [1, 2], b: { c: 'x' } });
    expect(() => applyJsonPatch(doc, { op: 'add' })).toThrow(JsonPatchError);
    expect(() => applyJsonPatch(doc, [{ op: 'test', path: '/b/c', value: 'z' }])).toThrow(/test failed/);
    expect(() => applyJsonPatch(doc, [{ op: 'replace', path: '/nope', value: 1 }])).toThrow(/does not exist/);
  });
});

describe('FHIR test switches (faults)', () => {
  const patientPath = `Patient/${AMY}`;

  it('fhir401 once: the next request needing a token is refused, then the switch is off; metadata is untouched', async () => {
    sandbox.faults.fhir401 = 'once';
    expect((await fetch(`${sandbox.fhirBaseUrl}/metadata`)).status).toBe(200);
    const refused = await fhir(patientPath, readToken);
    expect(refused.status).toBe(401);
    expect(refused.headers.get('www-authenticate')).toContain('error="invalid_token"');
    expect(sandbox.faults.fhir401).toBeUndefined();
    expect((await fhir(patientPath, readToken)).status).toBe(200);
  });

  it('fhir401 always: every request until cleared', async () => {
    sandbox.faults.fhir401 = 'always';
    expect((await fhir(patientPath, readToken)).status).toBe(401);
    expect((await fhir(patientPath, readToken)).status).toBe(401);
    sandbox.faults.fhir401 = undefined;
    expect((await fhir(patientPath, readToken)).status).toBe(200);
  });

  it('fhirDelayMs: answers after the delay; a client that gives up gets nothing', async () => {
    sandbox.faults.fhirDelayMs = 300;
    const started = Date.now();
    expect((await fhir(patientPath, readToken)).status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    await expect(fetch(`${sandbox.fhirBaseUrl}/${patientPath}`, { headers: bearer(readToken), signal: AbortSignal.timeout(50) })).rejects.toThrow();
  });

  it('fhirDropConnection: the head and half the body arrive, then the connection breaks', async () => {
    sandbox.faults.fhirDropConnection = true;
    const response = await fetch(`${sandbox.fhirBaseUrl}/Observation?patient=${AMY}`, { headers: { ...bearer(readToken), 'accept-encoding': 'identity' } });
    expect(response.status).toBe(200);
    await expect(response.arrayBuffer()).rejects.toThrow();
    await expect(raw(`Binary/${BIG_BINARY_ID}`, { headers: bearer(readToken) })).rejects.toThrow();
    sandbox.faults.fhirDropConnection = undefined;
    expect((await fhir(patientPath, readToken)).status).toBe(200);
  });

  it('are set and cleared at POST /admin/faults, validated', async () => {
    const admin = (body: unknown) =>
      fetch(`${sandbox.url}/admin/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const set = await admin({ fhir401: 'once', fhirDelayMs: 5, fhirDropConnection: true });
    expect(set.status).toBe(200);
    expect(await set.json()).toEqual({ fhir401: 'once', fhirDelayMs: 5, fhirDropConnection: true });
    expect(sandbox.faults).toMatchObject({ fhir401: 'once', fhirDelayMs: 5, fhirDropConnection: true });
    expect((await admin({ fhir401: 'sometimes' })).status).toBe(400);
    expect((await admin({ fhirDelayMs: -1 })).status).toBe(400);
    expect(await (await admin({ fhir401: null, fhirDropConnection: null })).json()).toEqual({ fhirDelayMs: 5 });
    expect(await (await admin({})).json()).toEqual({});
  });
});

describe('CapabilityStatement', () => {
  it('advertises XML, JSON Patch, the writes and Patient/$everything', async () => {
    const statement = (await (await fetch(`${sandbox.fhirBaseUrl}/metadata`)).json()) as {
      format: string[];
      patchFormat: string[];
      rest: Array<{ resource: Array<{ type: string; interaction: Array<{ code: string }>; operation?: Array<{ name: string }> }> }>;
    };
    expect(statement.format).toContain('application/fhir+xml');
    expect(statement.patchFormat).toEqual(['application/json-patch+json']);
    const byType = new Map(statement.rest[0]?.resource.map((r) => [r.type, r]));
    expect(byType.get('Observation')?.interaction.map((i) => i.code)).toEqual(expect.arrayContaining(['create', 'update', 'patch', 'delete']));
    expect(byType.get('Condition')?.interaction.map((i) => i.code)).not.toContain('create');
    expect(byType.get('Patient')?.operation).toEqual([{ name: 'everything', definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything' }]);
  });
});

describe('batch and transaction (POST [base])', () => {
  type Answer = { resourceType: string; type: string; entry: Array<{ fullUrl?: string; resource?: { resourceType: string; id: string }; response: { status: string; location?: string } }> };
  const post = (token: string, bundle: unknown) =>
    fhir<Answer>('', token, { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(bundle) });
  const observation = { resourceType: 'Observation', status: 'final', code: { text: 'batch' }, subject: { reference: `Patient/${AMY}` } };

  it('batch: every entry runs as its own request with the token, each answered in its place', async () => {
    const { status, body } = await post(readToken, {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [{ request: { method: 'GET', url: `Patient/${AMY}` } }, { request: { method: 'GET', url: `Patient/${BEN}` } }, { request: { method: 'GET', url: `MedicationRequest?patient=${AMY}` } }],
    });

    expect(status).toBe(200);
    expect(body.type).toBe('batch-response');
    expect(body.entry.map((e) => e.response.status)).toEqual(['200', '403', '200']);
    expect(body.entry[0]?.resource).toMatchObject({ resourceType: 'Patient', id: AMY });
    expect(body.entry[2]?.resource).toMatchObject({ resourceType: 'Bundle', total: 2 });
  });

  it('transaction: creates answer 201 with their locations; a failing entry fails the transaction with its status', async () => {
    const created = await post(writeToken, { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'POST', url: 'Observation' }, resource: observation }] });
    expect(created.status).toBe(200);
    expect(created.body.type).toBe('transaction-response');
    expect(created.body.entry[0]?.response.status).toBe('201');
    expect(created.body.entry[0]?.response.location).toMatch(new RegExp(`^${sandbox.fhirBaseUrl}/Observation/[^/]+/_history/1$`));

    const refused = await post(readToken, { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'POST', url: 'Observation' }, resource: observation }] });
    expect(refused.status).toBe(403);
  });

  it('seeds one active MedicationRequest per condition', async () => {
    const { body } = await fhir<Bundle>(`MedicationRequest?patient=${AMY}`, readToken);
    expect(body.total).toBe(DATA.conditions.filter((c) => c.subject?.reference === `Patient/${AMY}`).length);
    expect(body.entry?.[0]?.resource).toMatchObject({ resourceType: 'MedicationRequest', status: 'active', intent: 'order' });
  });
});
