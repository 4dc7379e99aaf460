import { describe, expect, it } from 'vitest';
import { rewriteBody, rewriteBundleUrls } from '../../shared/core/proxy/responses.js';

/**
 * `rewriteBody` splices the proxy base into a Bundle's bytes where that is exactly the parsed rewrite,
 * and otherwise re-serialises the parsed Bundle: either way the JSON value is the one the parsed
 * rewrite gives (docs/design.md §2).
 */
const BASE = 'https://ehr.example/fhir/r4';
const PROXY = 'https://smart.example/sessions/S3ss10n/fhir';
const TYPE = 'application/fhir+json; charset=utf-8';

/** The reference: parse, rewrite the parsed Bundle, serialise. */
function reference(text: string): unknown {
  const parsed = JSON.parse(text) as Parameters<typeof rewriteBundleUrls>[0];
  if (parsed?.resourceType === 'Bundle') rewriteBundleUrls(parsed, BASE, PROXY);
  return parsed;
}

const run = (text: string) => Buffer.from(rewriteBody(new Uint8Array(Buffer.from(text, 'utf8')), TYPE, BASE, PROXY)).toString('utf8');

describe('rewriteBody: the splice is the parsed rewrite', () => {
  it('splices a searchset in the EHR\'s own formatting: only link urls and fullUrls change', () => {
    const text = `{\n  "resourceType": "Bundle",\n  "link": [ { "relation": "next", "url": "${BASE}/Observation?page=2" } ],\n  "entry": [\n    { "fullUrl": "${BASE}/Observation/1", "resource": { "resourceType": "Observation", "id": "1" } }\n  ]\n}\n`;
    const out = run(text);
    expect(out).toBe(text.replaceAll(`"${BASE}/`, `"${PROXY}/`));
    expect(JSON.parse(out)).toEqual(reference(text));
  });

  it('gives the parsed rewrite\'s value whatever else carries the base: references, narrative, keys, escapes, nested Bundles', () => {
    const cases = [
      // the base inside a resource (a reference, an extension url): left alone
      { resourceType: 'Bundle', link: [{ url: `${BASE}/P?page=2` }], entry: [{ fullUrl: `${BASE}/P/1`, resource: { resourceType: 'P', extension: [{ url: `${BASE}/ext` }], ref: { reference: `${BASE}/Q/2` } } }] },
      // the base quoted inside narrative (an escaped quote before it)
      { resourceType: 'Bundle', entry: [{ fullUrl: `${BASE}/P/1`, resource: { text: { div: `<a href="${BASE}/P/1">x</a>` } } }] },
      // the base as a key
      { resourceType: 'Bundle', entry: [{ fullUrl: `${BASE}/P/1`, resource: { [`${BASE}/k`]: 1 } }] },
      // a nested Bundle: its fullUrls are not the top-level ones
      { resourceType: 'Bundle', entry: [{ fullUrl: `${BASE}/Bundle/1`, resource: { resourceType: 'Bundle', entry: [{ fullUrl: `${BASE}/P/9` }] } }] },
      // urls elsewhere, and non-string members
      { resourceType: 'Bundle', link: [{ url: 'https://other.example/fhir/P' }, { url: 42 }, {}], entry: [null, 3, { fullUrl: `${BASE}x/P/1` }] },
      // a backslash before a quote that closes a string
      { resourceType: 'Bundle', entry: [{ fullUrl: `${BASE}/P/1`, resource: { note: 'ends with \\' } }, { fullUrl: `${BASE}/P/2` }] },
    ];
    for (const value of cases) {
      const text = JSON.stringify(value);
      expect(JSON.parse(run(text))).toEqual(reference(text));
    }
    // escapes that spell the base: \/ and \u
    const escaped = JSON.stringify(cases[0]).replaceAll('/', '\\/');
    expect(JSON.parse(run(escaped))).toEqual(reference(escaped));
    const unicode = JSON.stringify(cases[0]).replace(`"${BASE}/P/1"`, `"\\u0068${BASE.slice(1)}/P/1"`);
    expect(JSON.parse(run(unicode))).toEqual(reference(unicode));
    // duplicate keys: JSON.parse keeps the last one
    const duplicate = `{"resourceType":"Bundle","entry":[{"fullUrl":"${BASE}/P/1","fullUrl":"urn:uuid:1"}],"entry":[{"fullUrl":"${BASE}/P/2"}]}`;
    expect(JSON.parse(run(duplicate))).toEqual(reference(duplicate));
  });

  it('passes anything else byte for byte', () => {
    const resource = `{ "resourceType": "Patient", "id": "1", "link": [{ "url": "${BASE}/Patient/2" }] }`;
    expect(run(resource)).toBe(resource);
    expect(run('not json')).toBe('not json');
  });

  it('rewrites a Bundle whose resourceType is spelled with \\u escapes, and passes a resource that names "Bundle" elsewhere byte for byte', () => {
    const escaped = `{"resourceType":"\\u0042undle","link":[{"url":"${BASE}/P?page=2"}],"entry":[{"fullUrl":"${BASE}/P/1"}]}`;
    expect(JSON.parse(run(escaped))).toEqual(reference(escaped));
    expect(run(escaped)).toContain(`${PROXY}/P/1`);
    const resource = `{"resourceType":"List","code":{"text":"Bundle"},"entry":[{"item":{"reference":"${BASE}/Bundle/1"}}]}`;
    expect(run(resource)).toBe(resource);
  });
});
