import { describe, expect, it } from 'vitest';
import { scanBundle } from '../../shared/core/proxy/bundle-scan.js';

/**
 * `scanBundle` reads off the bytes what `rewriteBody` would otherwise learn from `JSON.parse`: JSON
 * or not, a Bundle or not, and how many `link[].url` / `entry[].fullUrl` values start with the base.
 * Where it answers, it must agree with `JSON.parse` exactly; `undefined` (unsure) is always allowed.
 */
const BASE = 'https://ehr.example/fhir/r4/';
const prefix = new TextEncoder().encode(BASE);

/** What JSON.parse says of `text`: the reference. */
function reference(text: string): { bundle: boolean; targets: number } | 'invalid' {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return 'invalid';
  }
  const bundle = typeof parsed === 'object' && parsed !== null && (parsed as { resourceType?: unknown }).resourceType === 'Bundle';
  const b = parsed as { link?: unknown; entry?: unknown } | null;
  let targets = 0;
  const count = (list: unknown, key: string) => {
    for (const item of Array.isArray(list) ? list : []) {
      const value = item && typeof item === 'object' ? (item as Record<string, unknown>)[key] : undefined;
      if (typeof value === 'string' && value.startsWith(BASE)) targets++;
    }
  };
  if (typeof b === 'object' && b !== null && !Array.isArray(b)) {
    count(b.link, 'url');
    count(b.entry, 'fullUrl');
  }
  return { bundle, targets };
}

function agrees(text: string): void {
  const scanned = scanBundle(Buffer.from(text, 'utf8'), prefix);
  if (scanned === undefined) return;
  expect({ text, scanned }).toEqual({ text, scanned: reference(text) });
}

/** A small deterministic generator (no Math.random: the same cases every run). */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state ^ (state >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0;
    return state / 2 ** 32;
  };
}

const SAMPLES = [
  { resourceType: 'Bundle', type: 'searchset', total: 2, link: [{ relation: 'self', url: `${BASE}Observation?x=1` }, { url: 'https://other/' }, { url: 4 }, null], entry: [{ fullUrl: `${BASE}Observation/1`, resource: { resourceType: 'Observation', valueQuantity: { value: -1.5e3 }, flag: true, none: null, text: 'a "quoted" \\ \n\t line é ✓' } }, { fullUrl: `${BASE}x` }, [], 7] },
  { resourceType: 'Patient', link: [{ url: `${BASE}Patient/2` }] },
  { resourceType: 'Bundle', entry: { fullUrl: `${BASE}P/1` }, link: 'no' },
  { resourceType: ['Bundle'], entry: [{ fullUrl: `${BASE}P/1` }] },
  { resourceType: 'Bundle', entry: [{ fullUrl: `${BASE}P/1`, resource: { resourceType: 'Bundle', entry: [{ fullUrl: `${BASE}P/2` }] } }] },
  [{ resourceType: 'Bundle' }],
  'Bundle',
  0,
  { [BASE]: `${BASE}`, url: `${BASE}a`, fullUrl: `${BASE}b` },
];

describe('scanBundle agrees with JSON.parse', () => {
  it('on Bundles, resources and other JSON, in compact and pretty formatting', () => {
    for (const value of SAMPLES) {
      agrees(JSON.stringify(value));
      agrees(JSON.stringify(value, null, 2));
      agrees(` \r\n\t${JSON.stringify(value, null, '\t')}\n`);
    }
  });

  it('on hand-written edge cases: numbers, literals, escapes, duplicates, truncation', () => {
    const cases = [
      '', ' ', '{}', '[]', '{"a":}', '{"a" 1}', '{,}', '[1,]', '[,1]', '{"a":1,}', '01', '-0', '-', '1.', '.5', '1e', '1e+', '1E-7', '2.50e10', '-01',
      'tru', 'true', 'truex', 'nul', 'null', 'fals', 'false', '"\\x"', '"\\u12"', '"\\u12G4"', '"\\uABCD"', '"a\u0001"', '"a\u007f"', '"\\/"',
      '{"resourceType":"Bundle","resourceType":"Patient"}', '{"resourceType":"Bundle","entry":[{"fullUrl":"x","fullUrl":"' + BASE + 'y"}]}',
      '{"resourceType":"Bundle","entry":[],"entry":[{"fullUrl":"' + BASE + 'y"}]}',
      '{"resourceType":"Bundle"', '{"resourceType":"Bundle"}}', '{"resourceType":"Bundle"} x', '\ufeff{"resourceType":"Bundle"}',
      '{"resourceType":"Bund\\u006ce"}', '{"resourceType":"Bundle ","entry":[{"fullUrl":"' + BASE + '"}]}', '{"resource\\tType":"Bundle"}',
      '{"resourceType":"Bundle","link":[{"url":"' + BASE.slice(0, -1) + '"}]}',
      '[' .repeat(600) + ']'.repeat(600),
      '{"a":' .repeat(300) + '1' + '}'.repeat(300),
    ];
    for (const text of cases) agrees(text);
  });

  it('on thousands of damaged Bundles (a byte changed, dropped or repeated)', () => {
    const next = random(20_241_204);
    const pieces = ['{', '}', '[', ']', ',', ':', '"', '\\', ' ', 'e', '-', '.', '0', '9', 'u', 'n', 't', 'f', '\u0000', '\n', 'é'];
    for (const value of SAMPLES.slice(0, 5)) {
      const text = JSON.stringify(value);
      for (let round = 0; round < 1500; round++) {
        const at = Math.floor(next() * text.length);
        const kind = next();
        const piece = pieces[Math.floor(next() * pieces.length)]!;
        const damaged = kind < 0.4 ? text.slice(0, at) + piece + text.slice(at + 1) : kind < 0.7 ? text.slice(0, at) + text.slice(at + 1) : text.slice(0, at) + piece + text.slice(at);
        agrees(damaged);
      }
    }
  });

  it('answers for the usual searchset, so the splice needs no parse', () => {
    const text = JSON.stringify(SAMPLES[0]);
    expect(scanBundle(Buffer.from(text, 'utf8'), prefix)).toEqual({ bundle: true, targets: 3 });
  });
});
