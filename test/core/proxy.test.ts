import { describe, expect, it } from 'vitest';
import { forwardFhirRequest, resolveProxyTarget, rewriteBundleUrls, type ProxyRequest } from '../../shared/core/proxy.js';
import { openSession } from '../../shared/core/session.js';
import { PUBLIC_URL } from '../fakes/deps.js';
import { json, query } from '../fakes/fake-ehr.js';
import { harness, signIn } from '../fakes/launch-flow.js';

const BASE = 'https://ehr.example.org/fhir/r4';

describe('resolveProxyTarget (invariant 7, SMART-FHIR-03)', () => {
  it.each([
    ['an absolute http URL', 'http://evil.example/x'],
    ['an absolute https URL', 'https://evil.example/fhir/Patient'],
    ['a scheme-relative-looking URL', 'https:/x'],
    ['a protocol-relative URL', '//evil.example/x'],
    ['a dot-dot segment', '../admin'],
    ['a dot-dot segment in the middle', 'Patient/../../admin'],
    ['a trailing dot-dot segment', 'Patient/..'],
    ['a dot segment', './Patient'],
    ['a lone dot', '.'],
    ['a double slash', 'Patient//123'],
    ['a leading slash', '/Patient/123'],
    ['a trailing slash', 'Patient/'],
    ['a backslash', 'Patient\\..\\admin'],
    ['a backslash prefix', '\\\\evil.example\\x'],
    ['percent-encoded dots', '%2e%2e/admin'],
    ['upper-case percent-encoded dots', '%2E%2E/admin'],
    ['an encoded slash', 'Patient%2F..%2Fadmin'],
    ['a double-encoded dot', '%252e%252e/admin'],
    ['an encoded backslash', '..%5Cadmin'],
    ['an encoded space', 'Patient%20x'],
    ['a query string in the path', 'Patient?_id=1'],
    ['a fragment', 'Patient#x'],
    ['a colon', 'javascript:alert(1)'],
    ['an at sign', 'user@evil.example'],
    ['a space', 'Patient 1'],
    ['a NUL byte', 'Patient\u0000'],
    ['a newline', 'Patient\n1'],
    ['a full-width dot-dot', '\uff0e\uff0e/admin'],
    ['non-ASCII letters', 'Pätient'],
  ])('refuses %s with PROXY_PATH_REJECTED (invariant 7)', (_what, path) => {
    expect(() => resolveProxyTarget(BASE, path, {})).toThrow(expect.objectContaining({ code: 'PROXY_PATH_REJECTED', status: 400 }));
  });

  it.each([['absent', undefined], ['empty', '']])('refuses an %s path with PROXY_PATH_REJECTED (invariant 7)', (_what, path) => {
    expect(() => resolveProxyTarget(BASE, path, {})).toThrow(expect.objectContaining({ code: 'PROXY_PATH_REJECTED', status: 400 }));
  });

  it('refuses a path over 2048 characters with PROXY_PATH_REJECTED and accepts one of exactly 2048 (invariant 7)', () => {
    expect(() => resolveProxyTarget(BASE, 'a'.repeat(2049), {})).toThrow(expect.objectContaining({ code: 'PROXY_PATH_REJECTED', status: 400 }));
    expect(resolveProxyTarget(BASE, 'a'.repeat(2048), {}).href).toBe(`${BASE}/${'a'.repeat(2048)}`);
  });

  it.each([
    ['Patient/123', `${BASE}/Patient/123`],
    ['Observation', `${BASE}/Observation`],
    ['Patient/1/_history/2', `${BASE}/Patient/1/_history/2`],
    ['Patient/$everything', `${BASE}/Patient/$everything`],
    ['Patient/a-b.c/$everything', `${BASE}/Patient/a-b.c/$everything`],
    ['metadata', `${BASE}/metadata`],
  ])('accepts %s under the session base', (path, expected) => {
    expect(resolveProxyTarget(BASE, path, {}).href).toBe(expected);
  });

  it('resolves under a base with a trailing slash without doubling it', () => {
    expect(resolveProxyTarget(`${BASE}/`, 'Patient/123', {}).href).toBe(`${BASE}/Patient/123`);
  });

  it('keeps repeated query parameters in order', () => {
    const target = resolveProxyTarget(BASE, 'Observation', { code: ['http://loinc.org|8867-4', 'http://loinc.org|8480-6'], _count: ['10'], patient: ['123'] });

    expect([...target.searchParams]).toEqual([
      ['code', 'http://loinc.org|8867-4'],
      ['code', 'http://loinc.org|8480-6'],
      ['_count', '10'],
      ['patient', '123'],
    ]);
    expect(target.origin + target.pathname).toBe(`${BASE}/Observation`);
  });

  it('cannot be moved to another host by query values that look like URLs (invariant 7)', () => {
    const target = resolveProxyTarget(BASE, 'Patient', { _url: ['https://evil.example/'], '@': ['evil.example'] });

    expect(target.origin).toBe('https://ehr.example.org');
    expect(target.pathname).toBe('/fhir/r4/Patient');
  });
});

describe('rewriteBundleUrls', () => {
  const proxyBase = `${PUBLIC_URL}/sessions/abc/fhir`;

  it('rewrites link[].url and entry[].fullUrl under the upstream base to the proxy base (SMART-FHIR-02)', () => {
    const bundle = {
      resourceType: 'Bundle' as const,
      link: [{ url: `${BASE}/Patient?_count=10&page=2` }, { url: `${BASE}/Patient?_count=10` }],
      entry: [{ fullUrl: `${BASE}/Patient/1` }],
    };

    rewriteBundleUrls(bundle, BASE, proxyBase);

    expect(bundle.link.map((l) => l.url)).toEqual([`${proxyBase}/Patient?_count=10&page=2`, `${proxyBase}/Patient?_count=10`]);
    expect(bundle.entry[0]?.fullUrl).toBe(`${proxyBase}/Patient/1`);
  });

  it('leaves URLs of other servers, sibling paths, URNs and non-strings as they are (SMART-FHIR-02)', () => {
    const others = [
      'https://other.example/fhir/r4/Patient/1',
      'https://ehr.example.org/fhir/r4-other/Patient/1',
      'https://ehr.example.org/fhir/Patient/1',
      'http://ehr.example.org/fhir/r4/Patient/1',
      'urn:uuid:5b4e8d2c-4b0f-4b0a-9f1a-6d6e1b0c6f10',
    ];
    const bundle = {
      resourceType: 'Bundle' as const,
      link: [...others.map((url) => ({ url })), { url: 42 }, {}] as Array<{ url?: unknown }>,
      entry: [...others.map((fullUrl) => ({ fullUrl })), {}] as Array<{ fullUrl?: unknown }>,
    };

    rewriteBundleUrls(bundle, BASE, proxyBase);

    expect(bundle.link.map((l) => l.url)).toEqual([...others, 42, undefined]);
    expect(bundle.entry.map((e) => e.fullUrl)).toEqual([...others, undefined]);
  });

  it('treats an upstream base with a trailing slash like one without', () => {
    const bundle = { resourceType: 'Bundle' as const, link: [{ url: `${BASE}/Patient?page=2` }] };

    rewriteBundleUrls(bundle, `${BASE}/`, proxyBase);

    expect(bundle.link[0]?.url).toBe(`${proxyBase}/Patient?page=2`);
  });
});

describe('forwardFhirRequest', () => {
  async function proxySetup() {
    const h = await harness();
    const { callback, launch } = await signIn(h);
    const session = await openSession(callback.sessionId, launch.bindingSecret, h.deps);
    h.ehr.requests.length = 0;
    const accessToken = h.ehr.issued.accessTokens[0] as string;
    return { h, session, accessToken, proxyBase: `${PUBLIC_URL}/sessions/${callback.sessionId}/fhir` };
  }

  const get = (rawPath: string, headers: Record<string, string | undefined> = {}, q = {}): ProxyRequest => ({ method: 'GET', rawPath, query: q, headers });

  it('sends Authorization: Bearer with the session token to the session base only (SMART-FHIR-01, invariant 7)', async () => {
    const { h, session, accessToken } = await proxySetup();
    h.ehr.fhirAnswer = () => json({ resourceType: 'Patient', id: '123' }, 200, { 'content-type': 'application/fhir+json' });

    const response = await forwardFhirRequest(session, get('Patient/123', {}, query(['_elements', 'name'])), h.deps);

    expect(response.status).toBe(200);
    expect(h.ehr.requests).toHaveLength(1);
    const [request] = h.ehr.requests;
    expect(request?.url).toBe(`${h.ehr.fhirBase}/Patient/123?_elements=name`);
    expect(request?.method).toBe('GET');
    expect(request?.headers.authorization).toBe(`Bearer ${accessToken}`);
    expect(JSON.parse(Buffer.from(response.body).toString('utf8'))).toEqual({ resourceType: 'Patient', id: '123' });
  });

  it('never forwards the browser’s cookie, authorization or other headers, but passes accept, prefer and conditional headers (SMART-FHIR-03)', async () => {
    const { h, session, accessToken } = await proxySetup();
    h.ehr.fhirAnswer = () => json({ resourceType: 'Bundle', type: 'searchset' });

    await forwardFhirRequest(
      session,
      get('Observation', {
        cookie: '__Host-smart-binding=secret-cookie',
        authorization: 'Bearer browser-supplied-token',
        'x-forwarded-for': '10.0.0.1',
        host: 'evil.example',
        origin: 'https://app.acme.example',
        accept: 'application/fhir+json;fhirVersion=4.0',
        prefer: 'handling=strict',
        'if-none-match': 'W/"3"',
        'if-modified-since': 'Wed, 21 Oct 2015 07:28:00 GMT',
      }),
      h.deps,
    );

    const headers = h.ehr.requests[0]?.headers ?? {};
    expect(headers.authorization).toBe(`Bearer ${accessToken}`);
    expect(headers).not.toHaveProperty('cookie');
    expect(headers).not.toHaveProperty('x-forwarded-for');
    expect(headers).not.toHaveProperty('origin');
    expect(JSON.stringify(headers)).not.toContain('browser-supplied-token');
    expect(JSON.stringify(headers)).not.toContain('secret-cookie');
    expect(headers).toMatchObject({
      accept: 'application/fhir+json;fhirVersion=4.0',
      prefer: 'handling=strict',
      'if-none-match': 'W/"3"',
      'if-modified-since': 'Wed, 21 Oct 2015 07:28:00 GMT',
    });
  });

  it('drops upstream set-cookie and unknown headers, passing content-type, etag, last-modified and cache-control back', async () => {
    const { h, session } = await proxySetup();
    h.ehr.fhirAnswer = () =>
      new Response(JSON.stringify({ resourceType: 'Patient', id: '1' }), {
        status: 200,
        headers: {
          'content-type': 'application/fhir+json',
          etag: 'W/"2"',
          'last-modified': 'Wed, 21 Oct 2015 07:28:00 GMT',
          'cache-control': 'no-store',
          'set-cookie': 'EHRSESSION=abc; Path=/; HttpOnly',
          'x-internal-node': 'ehr-7',
        },
      });

    const response = await forwardFhirRequest(session, get('Patient/1'), h.deps);

    expect(response.headers).toEqual({
      'content-type': 'application/fhir+json',
      etag: 'W/"2"',
      'last-modified': 'Wed, 21 Oct 2015 07:28:00 GMT',
      'cache-control': 'no-store',
    });
  });

  it('rewrites Bundle paging links under the session base to the proxy base', async () => {
    const { h, session, proxyBase } = await proxySetup();
    h.ehr.fhirAnswer = () =>
      json(
        {
          resourceType: 'Bundle',
          type: 'searchset',
          link: [
            { relation: 'next', url: `${h.ehr.fhirBase}/Observation?patient=123&page=2` },
            { relation: 'related', url: 'https://other.example/fhir/Observation' },
          ],
          entry: [{ fullUrl: `${h.ehr.fhirBase}/Observation/1`, resource: { resourceType: 'Observation', id: '1' } }],
        },
        200,
        { 'content-type': 'application/fhir+json; charset=utf-8' },
      );

    const response = await forwardFhirRequest(session, get('Observation', {}, query(['patient', '123'])), h.deps);

    const bundle = JSON.parse(Buffer.from(response.body).toString('utf8')) as { link: Array<{ url: string }>; entry: Array<{ fullUrl: string }> };
    expect(bundle.link.map((l) => l.url)).toEqual([`${proxyBase}/Observation?patient=123&page=2`, 'https://other.example/fhir/Observation']);
    expect(bundle.entry[0]?.fullUrl).toBe(`${proxyBase}/Observation/1`);
  });

  it('passes error statuses and non-JSON bodies through unchanged', async () => {
    const { h, session } = await proxySetup();
    const pdf = Buffer.from('%PDF-1.7 binary\u0000data');
    h.ehr.fhirAnswer = () => new Response(pdf, { status: 403, headers: { 'content-type': 'application/pdf' } });

    const response = await forwardFhirRequest(session, get('Binary/1'), h.deps);

    expect(response.status).toBe(403);
    expect(Buffer.from(response.body).equals(pdf)).toBe(true);
  });

  it('passes a body labelled JSON that is not JSON through untouched', async () => {
    const { h, session } = await proxySetup();
    h.ehr.fhirAnswer = () => new Response('{not json', { status: 200, headers: { 'content-type': 'application/fhir+json' } });

    const response = await forwardFhirRequest(session, get('Patient/1'), h.deps);

    expect(Buffer.from(response.body).toString('utf8')).toBe('{not json');
  });

  it('does not follow upstream redirects with the token', async () => {
    const { h, session } = await proxySetup();
    h.ehr.fhirAnswer = () => new Response(null, { status: 302, headers: { location: 'https://evil.example/steal' } });

    const response = await forwardFhirRequest(session, get('Patient/1'), h.deps);

    expect(response.status).toBe(302);
    expect(response.headers).not.toHaveProperty('location');
    expect(h.ehr.requests).toHaveLength(1);
  });

  it('refuses a path escaping the base with PROXY_PATH_REJECTED before any request (invariant 7)', async () => {
    const { h, session } = await proxySetup();

    await expect(forwardFhirRequest(session, get('../../oauth2/token'), h.deps)).rejects.toMatchObject({ code: 'PROXY_PATH_REJECTED', status: 400 });
    expect(h.ehr.requests).toEqual([]);
  });

  it.each(['POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'])('refuses %s with METHOD_NOT_ALLOWED before any request', async (method) => {
    const { h, session } = await proxySetup();

    await expect(forwardFhirRequest(session, { ...get('Patient'), method }, h.deps)).rejects.toMatchObject({
      code: 'METHOD_NOT_ALLOWED',
      status: 405,
    });
    expect(h.ehr.requests).toEqual([]);
  });

  it('maps a network error to UPSTREAM_UNAVAILABLE (502)', async () => {
    const { h, session } = await proxySetup();
    h.ehr.fhirAnswer = () => {
      throw new TypeError('fetch failed');
    };

    await expect(forwardFhirRequest(session, get('Patient/1'), h.deps)).rejects.toMatchObject({ code: 'UPSTREAM_UNAVAILABLE', status: 502 });
  });

  it.each(['TimeoutError', 'AbortError'])('maps a %s to UPSTREAM_TIMEOUT (504)', async (name) => {
    const { h, session } = await proxySetup();
    h.ehr.fhirAnswer = () => {
      throw new DOMException('The operation was aborted', name);
    };

    await expect(forwardFhirRequest(session, get('Patient/1'), h.deps)).rejects.toMatchObject({ code: 'UPSTREAM_TIMEOUT', status: 504 });
  });

  it('maps a connection that breaks while reading the body to UPSTREAM_UNAVAILABLE (502)', async () => {
    const { h, session } = await proxySetup();
    h.ehr.fhirAnswer = () =>
      new Response(
        new ReadableStream({
          start(controller) {
            controller.error(new Error('socket hang up'));
          },
        }),
        { status: 200, headers: { 'content-type': 'application/fhir+json' } },
      );

    await expect(forwardFhirRequest(session, get('Patient/1'), h.deps)).rejects.toMatchObject({ code: 'UPSTREAM_UNAVAILABLE', status: 502 });
  });

  it('passes an abort signal to the upstream call so a slow FHIR server cannot hold the Lambda', async () => {
    const { h, session } = await proxySetup();
    let signal: AbortSignal | null | undefined;
    const http = async (url: string, init?: RequestInit) => {
      signal = init?.signal;
      return h.ehr.http(url, init);
    };

    await forwardFhirRequest(session, get('Patient/1'), { ...h.deps, http });

    expect(signal).toBeInstanceOf(AbortSignal);
  });
});
