import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../shared/config/schema.js';
import { resolveIssuer } from '../../shared/core/issuers.js';
import { sampleConfig, sampleIssuer } from '../fakes/deps.js';

const BASE = 'https://ehr.example.org/fhir/r4';
const OTHER = 'https://other.example.org/FHIR/R4/';

const twoIssuers = (defaultIndex: 0 | 1 | undefined) =>
  parseConfig(
    sampleConfig({
      issuers: [
        sampleIssuer({ iss: BASE, clientId: 'first', default: defaultIndex === 0 ? true : undefined }),
        sampleIssuer({ iss: OTHER, clientId: 'second', default: defaultIndex === 1 ? true : undefined }),
      ],
    }),
    'local',
  );

describe('resolveIssuer', () => {
  it('returns the issuer whose iss matches exactly (SMART-LAUNCH-02)', () => {
    expect(resolveIssuer(twoIssuers(0), OTHER).clientId).toBe('second');
    expect(resolveIssuer(twoIssuers(0), BASE).clientId).toBe('first');
  });

  it.each([
    ['an added trailing slash', `${BASE}/`],
    ['a removed trailing slash', OTHER.slice(0, -1)],
    ['different case in the host', 'https://EHR.example.org/fhir/r4'],
    ['different case in the path', 'https://ehr.example.org/FHIR/R4'],
    ['http instead of https', 'http://ehr.example.org/fhir/r4'],
    ['an explicit default port', 'https://ehr.example.org:443/fhir/r4'],
    ['a query string', `${BASE}?x=1`],
    ['a prefix of the configured iss', 'https://ehr.example.org/fhir'],
    ['a longer path under the configured iss', `${BASE}/Patient`],
    ['surrounding whitespace', ` ${BASE}`],
  ])('refuses an iss with %s with ISSUER_NOT_ALLOWED (SMART-LAUNCH-02, invariant 3)', (_what, iss) => {
    expect(() => resolveIssuer(twoIssuers(0), iss)).toThrow(expect.objectContaining({ code: 'ISSUER_NOT_ALLOWED', status: 403 }));
  });

  it('uses the issuer marked default when the launch has no iss', () => {
    expect(resolveIssuer(twoIssuers(1), undefined).clientId).toBe('second');
  });

  it('uses the only issuer when none is marked default', () => {
    const config = parseConfig(sampleConfig({ issuers: [sampleIssuer({ default: undefined, clientId: 'only' })] }), 'local');

    expect(resolveIssuer(config, undefined).clientId).toBe('only');
  });

  it('refuses a launch without iss when several issuers exist and none is default, with NO_DEFAULT_ISSUER', () => {
    expect(() => resolveIssuer(twoIssuers(undefined), undefined)).toThrow(
      expect.objectContaining({ code: 'NO_DEFAULT_ISSUER', status: 400 }),
    );
  });

  it('never falls back to the default issuer when an unknown iss is given', () => {
    expect(() => resolveIssuer(twoIssuers(0), 'https://evil.example/fhir')).toThrow(expect.objectContaining({ code: 'ISSUER_NOT_ALLOWED', status: 403 }));
  });
});
