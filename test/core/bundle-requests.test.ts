import { describe, expect, it } from 'vitest';
import { forwardBundleRequest, forwardFhirRequest, MAX_BUNDLE_ENTRIES, type ProxyRequest } from '../../shared/core/proxy/index.js';
import { openSession } from '../../shared/core/session.js';
import { PUBLIC_URL, sampleConfig, sampleIssuer } from '../fakes/deps.js';
import { json } from '../fakes/fake-ehr.js';
import { harness, signIn } from '../fakes/launch-flow.js';

/** The fake EHR's launch patient. */
const PATIENT = '123';

async function setup(options: { config?: unknown; scope?: string } = {}) {
  const h = await harness(options.config === undefined ? {} : { config: options.config });
  if (options.scope !== undefined) h.ehr.tokenResponse = { ...h.ehr.tokenResponse, scope: options.scope };
  const { callback, launch } = await signIn(h);
  const session = await openSession(callback.sessionId, launch.bindingSecret, h.deps);
  h.ehr.requests.length = 0;
  return { h, session, proxyBase: `${PUBLIC_URL}/sessions/${callback.sessionId}/fhir`, ehrBase: h.ehr.fhirBase.replace(/\/+$/, '') };
}

const writes = () => sampleConfig({ issuers: [sampleIssuer({ writes: { enabled: true } })] });

function post(bundle: unknown, rawPath: string | undefined = undefined, contentType = 'application/fhir+json'): ProxyRequest {
  return { method: 'POST', rawPath, query: {}, headers: { 'content-type': contentType }, body: new TextEncoder().encode(JSON.stringify(bundle)) };
}

const entry = (method: string, url: string, resource?: unknown) => ({ request: { method, url }, ...(resource === undefined ? {} : { resource }) });
const batch = (...entries: unknown[]) => ({ resourceType: 'Bundle', type: 'batch', entry: entries });
const transaction = (...entries: unknown[]) => ({ resourceType: 'Bundle', type: 'transaction', entry: entries });
const parse = (body: Uint8Array) => JSON.parse(Buffer.from(body).toString('utf8')) as { type: string; entry: Array<Record<string, any>> };

/** Answers a batch or transaction with one 200 entry per entry it received, in order. */
function echoingEhr(h: Awaited<ReturnType<typeof setup>>['h'], ehrBase: string) {
  h.ehr.fhirAnswer = (_url, request) => {
    const sent = JSON.parse(request.body ?? '{}') as { type: string; entry?: Array<{ request: { url: string } }> };
    return json(
      {
        resourceType: 'Bundle',
        type: `${sent.type}-response`,
        link: [{ relation: 'self', url: ehrBase }],
        entry: (sent.entry ?? []).map((e, i) => ({
          fullUrl: `${ehrBase}/${e.request.url.split('?')[0]}`,
          response: { status: '200 OK', location: `${ehrBase}/${e.request.url.split('?')[0]}/_history/${i + 1}` },
        })),
      },
      200,
      { 'content-type': 'application/fhir+json' },
    );
  };
}

describe('batch and transaction Bundles: per-entry checks before the EHR is contacted', () => {
  it('forwards a batch whose entries are all allowed to the EHR base with the session token (SMART-FHIR-01)', async () => {
    const { h, session, ehrBase } = await setup();
    echoingEhr(h, ehrBase);

    const response = await forwardBundleRequest(session, post(batch(entry('GET', `Patient/${PATIENT}`), entry('GET', `Observation?patient=${PATIENT}`))), h.deps);

    expect(response.status).toBe(200);
    expect(response.meta.interaction).toBe('batch');
    expect(h.ehr.requests).toHaveLength(1);
    const [sent] = h.ehr.requests;
    expect(sent).toMatchObject({ url: ehrBase, method: 'POST' });
    expect(sent?.headers.authorization).toMatch(/^Bearer /);
    expect(JSON.parse(sent?.body ?? '').entry.map((e: { request: { url: string } }) => e.request.url)).toEqual([`Patient/${PATIENT}`, `Observation?patient=${PATIENT}`]);
    expect(parse(response.body).entry.map((e) => e.response.status)).toEqual(['200 OK', '200 OK']);
  });

  it('batch: entries refused by scope and by patient confinement are not sent, and come back as 403 OperationOutcome entries at their positions (SMART-SCOPE-07)', async () => {
    const { h, session, ehrBase } = await setup({ scope: 'launch openid fhirUser patient/Patient.rs patient/Observation.rs' });
    echoingEhr(h, ehrBase);

    const response = await forwardBundleRequest(
      session,
      post(batch(entry('GET', 'Condition?patient=123'), entry('GET', `Patient/${PATIENT}`), entry('GET', 'Patient/999'), entry('GET', 'Observation?patient=123'))),
      h.deps,
    );

    const sent = JSON.parse(h.ehr.requests[0]?.body ?? '');
    expect(sent.entry.map((e: { request: { url: string } }) => e.request.url)).toEqual([`Patient/${PATIENT}`, 'Observation?patient=123']);
    expect(response.status).toBe(200);
    const answer = parse(response.body);
    expect(answer.type).toBe('batch-response');
    expect(answer.entry.map((e) => e.response.status)).toEqual(['403', '200 OK', '403', '200 OK']);
    expect(answer.entry[0]?.response.outcome.issue[0].details.coding[0].code).toBe('SCOPE_INSUFFICIENT');
    expect(answer.entry[2]?.response.outcome.issue[0].details.coding[0].code).toBe('PATIENT_MISMATCH');
    expect(answer.entry[1]?.fullUrl).toMatch(/^https:\/\/smart\.acme\.example\/sessions\/.+\/fhir\/Patient\/123$/);
  });

  it('batch: when every entry is refused, the EHR is not contacted at all', async () => {
    const { h, session } = await setup();

    const response = await forwardBundleRequest(session, post(batch(entry('GET', 'Patient/999'), entry('DELETE', 'Observation/1'))), h.deps);

    expect(h.ehr.requests).toEqual([]);
    expect(parse(response.body).entry.map((e) => e.response.outcome.issue[0].details.coding[0].code)).toEqual(['PATIENT_MISMATCH', 'WRITES_DISABLED']);
  });

  it('transaction: one refused entry refuses the whole transaction with its index, and nothing is sent', async () => {
    const { h, session } = await setup({ config: writes(), scope: 'launch openid fhirUser patient/Observation.cruds patient/Patient.rs' });

    const refused = forwardBundleRequest(
      session,
      post(transaction(entry('POST', 'Observation', { resourceType: 'Observation', status: 'final' }), entry('PUT', 'Condition/1', { resourceType: 'Condition', id: '1' }))),
      h.deps,
    );

    await expect(refused).rejects.toMatchObject({ code: 'SCOPE_INSUFFICIENT', status: 403, details: { entry: 1, missingScope: 'patient/Condition.u' } });
    await expect(refused).rejects.toThrow(/transaction entry 1/);
    expect(h.ehr.requests).toEqual([]);
  });

  it('transaction: refused for another patient named in an entry (PATIENT_MISMATCH, with the index)', async () => {
    const { h, session } = await setup({ config: writes(), scope: 'launch openid fhirUser patient/*.cruds' });

    await expect(forwardBundleRequest(session, post(transaction(entry('GET', `Patient/${PATIENT}`), entry('GET', 'Observation?subject=Patient/999'))), h.deps)).rejects.toMatchObject({
      code: 'PATIENT_MISMATCH',
      details: { entry: 1 },
    });
    expect(h.ehr.requests).toEqual([]);
  });

  it('sends each entry query re-encoded from the parameters it was checked on', async () => {
    const { h, session, ehrBase } = await setup();
    echoingEhr(h, ehrBase);

    await forwardBundleRequest(session, post(batch(entry('GET', 'Observation?patient=123&code=http://loinc.org|8480-6&date=ge2024-01-01T00:00:00+01:00'))), h.deps);

    // `+` in a URL query is a space to the checks (form semantics), and is sent as the EHR must read it.
    expect(JSON.parse(h.ehr.requests[0]?.body ?? '').entry[0].request.url).toBe('Observation?patient=123&code=http://loinc.org|8480-6&date=ge2024-01-01T00:00:00%2001:00');
  });

  it('translates entry URLs and references on the proxy base to the EHR base, and the answer back (SMART-FHIR-02)', async () => {
    const { h, session, proxyBase, ehrBase } = await setup({ config: writes(), scope: 'launch openid fhirUser patient/*.cruds' });
    echoingEhr(h, ehrBase);
    const observation = { resourceType: 'Observation', status: 'final', subject: { reference: `${proxyBase}/Patient/${PATIENT}` } };

    const response = await forwardBundleRequest(
      session,
      post(transaction({ fullUrl: `${proxyBase}/Observation/9`, request: { method: 'PUT', url: `${proxyBase}/Observation/9` }, resource: { ...observation, id: '9' } })),
      h.deps,
    );

    const sent = JSON.parse(h.ehr.requests[0]?.body ?? '');
    expect(sent.entry[0]).toEqual({
      fullUrl: `${ehrBase}/Observation/9`,
      request: { method: 'PUT', url: 'Observation/9' },
      resource: { ...observation, id: '9', subject: { reference: `${ehrBase}/Patient/${PATIENT}` } },
    });
    const answer = parse(response.body);
    expect(answer.type).toBe('transaction-response');
    expect(answer.entry[0]).toMatchObject({ fullUrl: `${proxyBase}/Observation/9`, response: { location: `${proxyBase}/Observation/9/_history/1` } });
    expect(JSON.stringify(answer)).not.toContain(ehrBase);
  });

  it.each([
    ['an entry URL on another server', entry('GET', 'https://evil.example/fhir/Patient/123'), 'PROXY_PATH_REJECTED'],
    ['an entry URL escaping the base', entry('GET', '../admin'), 'PROXY_PATH_REJECTED'],
    ['an entry without request', { resource: { resourceType: 'Patient' } }, 'PROXY_REQUEST_INVALID'],
    ['a create while writes are disabled', entry('POST', 'Observation', { resourceType: 'Observation' }), 'WRITES_DISABLED'],
    ['a GET entry carrying a resource', entry('GET', 'Patient/123', { resourceType: 'Patient' }), 'PROXY_REQUEST_INVALID'],
    ['a HEAD entry', entry('HEAD', 'Patient/123'), 'METHOD_NOT_ALLOWED'],
  ])('batch: refuses %s in its place', async (_what, bad, code) => {
    const { h, session, ehrBase } = await setup();
    echoingEhr(h, ehrBase);

    const response = await forwardBundleRequest(session, post(batch(entry('GET', `Patient/${PATIENT}`), bad)), h.deps);

    expect(JSON.parse(h.ehr.requests[0]?.body ?? '').entry).toHaveLength(1);
    expect(parse(response.body).entry[1]?.response.outcome.issue[0].details.coding[0].code).toBe(code);
  });
});

describe('batch and transaction Bundles: entry resources', () => {
  it.each([
    ['a resource of another type than its URL', entry('POST', 'Observation', { resourceType: 'Patient' })],
    ['an update whose resource id differs from its URL', entry('PUT', 'Observation/9', { resourceType: 'Observation', id: '8' })],
    ['a create without a resource', entry('POST', 'Observation')],
    ['a patch that is neither Parameters nor Binary', entry('PATCH', 'Observation/9', { resourceType: 'Observation' })],
  ])('transaction: refuses %s (PROXY_REQUEST_INVALID) when writes are enabled', async (_what, bad) => {
    const { h, session } = await setup({ config: writes(), scope: 'launch openid fhirUser patient/*.cruds' });
    await expect(forwardBundleRequest(session, post(transaction(bad)), h.deps)).rejects.toMatchObject({ code: 'PROXY_REQUEST_INVALID', status: 400, details: { entry: 0 } });
    expect(h.ehr.requests).toEqual([]);
  });
});

describe('batch and transaction Bundles: the request as a whole', () => {
  it(`refuses more than ${MAX_BUNDLE_ENTRIES} entries with BUNDLE_TOO_LARGE (413) and accepts exactly ${MAX_BUNDLE_ENTRIES}`, async () => {
    const { h, session, ehrBase } = await setup();
    echoingEhr(h, ehrBase);
    const entries = (n: number) => Array.from({ length: n }, () => entry('GET', `Patient/${PATIENT}`));

    await expect(forwardBundleRequest(session, post(batch(...entries(MAX_BUNDLE_ENTRIES + 1))), h.deps)).rejects.toMatchObject({
      code: 'BUNDLE_TOO_LARGE',
      status: 413,
      details: { entries: MAX_BUNDLE_ENTRIES + 1, limit: MAX_BUNDLE_ENTRIES },
    });
    expect(h.ehr.requests).toEqual([]);
    await expect(forwardBundleRequest(session, post(batch(...entries(MAX_BUNDLE_ENTRIES))), h.deps)).resolves.toMatchObject({ status: 200 });
  });

  it('refuses a body over proxy.maxRequestKilobytes with REQUEST_TOO_LARGE (413)', async () => {
    const { h, session } = await setup({ config: sampleConfig({ issuers: [sampleIssuer({ proxy: { maxRequestKilobytes: 1 } })] }) });

    await expect(forwardBundleRequest(session, post(batch(entry('GET', `Patient/${PATIENT}?_elements=${'x'.repeat(1100)}`))), h.deps)).rejects.toMatchObject({
      code: 'REQUEST_TOO_LARGE',
      status: 413,
    });
    expect(h.ehr.requests).toEqual([]);
  });

  it.each([
    ['a resource that is not a Bundle', { resourceType: 'Patient' }, 'PROXY_REQUEST_INVALID', 400],
    ['a searchset Bundle', { resourceType: 'Bundle', type: 'searchset' }, 'PROXY_REQUEST_INVALID', 400],
    ['entry not an array', { resourceType: 'Bundle', type: 'batch', entry: {} }, 'PROXY_REQUEST_INVALID', 400],
  ])('refuses %s with %s', async (_what, body, code, status) => {
    const { h, session } = await setup();
    await expect(forwardBundleRequest(session, post(body), h.deps)).rejects.toMatchObject({ code, status });
    expect(h.ehr.requests).toEqual([]);
  });

  it('refuses a non-JSON body (MEDIA_TYPE_UNSUPPORTED) and another method than POST on the base (METHOD_NOT_ALLOWED)', async () => {
    const { h, session } = await setup();
    await expect(forwardBundleRequest(session, post(batch(), '', 'application/fhir+xml'), h.deps)).rejects.toMatchObject({ code: 'MEDIA_TYPE_UNSUPPORTED', status: 415 });
    await expect(forwardBundleRequest(session, { method: 'GET', rawPath: undefined, query: {}, headers: {} }, h.deps)).rejects.toMatchObject({
      code: 'METHOD_NOT_ALLOWED',
      status: 405,
    });
  });
});

describe('batch and transaction Bundles: what an entry carries besides its URL', () => {
  const observation = { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${PATIENT}` } };
  const conditionalCreate = (ifNoneExist: string) => ({ request: { method: 'POST', url: 'Observation', ifNoneExist }, resource: observation });

  it('batch: a conditional create whose ifNoneExist searches another patient is refused in place and never sent (SMART-SCOPE-07)', async () => {
    const { h, session, ehrBase } = await setup({ config: writes(), scope: 'launch openid fhirUser patient/*.cruds' });
    echoingEhr(h, ehrBase);

    const response = await forwardBundleRequest(session, post(batch(conditionalCreate('patient=999&code=8480-6'), conditionalCreate(`patient=${PATIENT}&code=8480-6`))), h.deps);

    const answer = parse(response.body);
    expect(answer.entry[0]?.response.status).toBe('403');
    expect(answer.entry[0]?.response.outcome.issue[0].details.coding[0].code).toBe('PATIENT_MISMATCH');
    const sent = JSON.parse(h.ehr.requests[0]?.body ?? '').entry;
    expect(sent).toHaveLength(1);
    // The search the EHR runs is the one that was checked, re-encoded.
    expect(sent[0].request.ifNoneExist).toBe(`patient=${PATIENT}&code=8480-6`);
  });

  it('transaction: an ifNoneExist naming another patient (also as a reference, or after "Type?") refuses the whole transaction', async () => {
    const { h, session } = await setup({ config: writes(), scope: 'launch openid fhirUser patient/*.cruds' });
    for (const ifNoneExist of ['subject=Patient/999', 'Observation?patient=999', `patient=${PATIENT}&patient=999`]) {
      await expect(forwardBundleRequest(session, post(transaction(conditionalCreate(ifNoneExist))), h.deps)).rejects.toMatchObject({ code: 'PATIENT_MISMATCH', details: { entry: 0 } });
    }
    await expect(forwardBundleRequest(session, post(transaction({ ...conditionalCreate('x'), request: { method: 'POST', url: 'Observation', ifNoneExist: 42 } })), h.deps)).rejects.toMatchObject({
      code: 'PROXY_REQUEST_INVALID',
      details: { entry: 0 },
    });
    expect(h.ehr.requests).toEqual([]);
  });

  it('a single conditional create gets the same check: an If-None-Exist header searching another patient is refused, and the one sent is re-encoded (SMART-SCOPE-07)', async () => {
    const { h, session } = await setup({ config: writes(), scope: 'launch openid fhirUser patient/*.cruds' });
    h.ehr.fhirAnswer = () => json(observation, 201, { 'content-type': 'application/fhir+json' });
    const create = (ifNoneExist: string): ProxyRequest => ({
      method: 'POST',
      rawPath: 'Observation',
      query: {},
      headers: { 'content-type': 'application/fhir+json', 'if-none-exist': ifNoneExist },
      body: new TextEncoder().encode(JSON.stringify(observation)),
    });

    for (const refused of ['patient=999', 'Observation?subject=Patient/999']) {
      await expect(forwardFhirRequest(session, create(refused), h.deps)).rejects.toMatchObject({ code: 'PATIENT_MISMATCH', status: 403 });
    }
    expect(h.ehr.requests).toEqual([]);
    await expect(forwardFhirRequest(session, create(`patient=${PATIENT}&code=a b`), h.deps)).resolves.toMatchObject({ status: 201 });
    expect(h.ehr.requests[0]?.headers['if-none-exist']).toBe(`patient=${PATIENT}&code=a%20b`);
  });

  it('refuses a Bundle nested too deep with 400 PROXY_REQUEST_INVALID before the EHR is contacted, instead of failing with a 500', async () => {
    const { h, session, ehrBase } = await setup({ config: writes(), scope: 'launch openid fhirUser patient/*.cruds' });
    echoingEhr(h, ehrBase);
    const depth = 200_000;
    const body = `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"POST","url":"Observation"},"resource":{"resourceType":"Observation","x":${'['.repeat(depth)}${']'.repeat(depth)}}}]}`;
    const request: ProxyRequest = { method: 'POST', rawPath: undefined, query: {}, headers: { 'content-type': 'application/fhir+json' }, body: new TextEncoder().encode(body) };

    await expect(forwardBundleRequest(session, request, h.deps)).rejects.toMatchObject({ code: 'PROXY_REQUEST_INVALID', status: 400 });
    expect(h.ehr.requests).toEqual([]);
  });
});

describe('batch: entry URLs the single-request path refuses are refused in a Bundle too (invariant 7)', () => {
  it('refuses another session\'s proxy base, other hosts, escapes and encodings, and sends none of them', async () => {
    const { h, session, proxyBase, ehrBase } = await setup();
    echoingEhr(h, ehrBase);
    const otherSession = proxyBase.replace(/sessions\/[^/]+/, 'sessions/another-session-id');
    const urls = [
      `${otherSession}/Patient/${PATIENT}`,
      `https://evil.example/fhir/Patient/${PATIENT}`,
      `//evil.example/Patient/${PATIENT}`,
      `\\\\evil.example/Patient/${PATIENT}`,
      `${ehrBase.replace('https:', 'http:')}/Patient/${PATIENT}`,
      `${ehrBase}/../admin`,
      `Patient/../../admin`,
      `Patient%2F${PATIENT}`,
      `Patient/${PATIENT}%3F_format=xml`,
      `Patient/${PATIENT}#x`,
      `./Patient/${PATIENT}`,
      ``,
      `?_type=Patient`,
    ];

    const response = await forwardBundleRequest(session, post(batch(...urls.map((url) => entry('GET', url)), entry('GET', `Patient/${PATIENT}`))), h.deps);

    const statuses = parse(response.body).entry.map((e) => Number(e.response.status.slice(0, 3)));
    expect(statuses.slice(0, urls.length).every((status) => status >= 400 && status < 500)).toBe(true);
    expect(JSON.parse(h.ehr.requests[0]?.body ?? '').entry.map((e: { request: { url: string } }) => e.request.url)).toEqual([`Patient/${PATIENT}`]);
  });
});
