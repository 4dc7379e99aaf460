import { describe, expect, it } from 'vitest';
import { cryptoRandom } from '../../shared/adapters/system.js';
import { checkedSessionSecrets, SessionSecretsSchema } from '../../shared/core/records.js';
import { openJson, sealJson } from '../../shared/core/sealed-records.js';

const KEY = new Uint8Array(32).fill(7);
const AAD = 'ses#record';

/** A session's secrets as sign-in seals them, every member present. */
const full = {
  v: 1,
  accessToken: 'at',
  refreshToken: 'rt',
  idToken: 'it',
  accessTokenExpiresAt: 1_700_000_000_000,
  obtainedAt: 1_699_999_000_000,
  scope: 'launch openid fhirUser patient/*.rs',
  launchMode: 'ehr',
  context: {
    patient: 'p-1',
    encounter: 'e.1',
    fhirContext: ['Observation/1', { reference: 'Encounter/2', type: 'Encounter', role: 'launch' }, { canonical: 'http://x.example/Q|1' }],
    need_patient_banner: false,
    smart_style_url: 'https://ehr.example/smart-style.json',
    intent: 'reconcile',
    tenant: 't1',
    fhirUser: 'Practitioner/9',
    patientAccess: 'verified',
  },
};

const minimal = { v: 1, accessToken: '', accessTokenExpiresAt: 0, scope: '', launchMode: 'standalone', context: {} };

const withMember = (path: readonly string[], value: unknown): unknown => {
  const copy = structuredClone(full) as Record<string, unknown>;
  let at = copy;
  for (const step of path.slice(0, -1)) at = at[step] as Record<string, unknown>;
  at[path[path.length - 1]!] = value;
  return copy;
};
const without = (path: readonly string[]): unknown => {
  const copy = structuredClone(full) as Record<string, unknown>;
  let at = copy;
  for (const step of path.slice(0, -1)) at = at[step] as Record<string, unknown>;
  delete at[path[path.length - 1]!];
  return copy;
};

describe('the session secrets check that stands in for the schema on every request', () => {
  it.each([
    ['every member present', full],
    ['only the required members', minimal],
    ['unknown members, which are dropped', { ...full, extra: 1, context: { ...full.context, extra: 'x', fhirContext: [{ reference: 'A/1', extra: true }] } }],
    ['an empty fhirContext', withMember(['context', 'fhirContext'], [])],
  ])('gives exactly what the schema gives for %s', (_why, value) => {
    const checked = checkedSessionSecrets(value);

    expect(checked).toBeDefined();
    expect(checked).toStrictEqual(SessionSecretsSchema.parse(value));
    // Same members in the same order, so a re-sealed record is the same JSON.
    expect(JSON.stringify(checked)).toBe(JSON.stringify(SessionSecretsSchema.parse(value)));
  });

  it.each([
    ['not an object', 'secrets'],
    ['an array', [full]],
    ['null', null],
    ['another format version', withMember(['v'], 2)],
    ['no access token', without(['accessToken'])],
    ['a numeric access token', withMember(['accessToken'], 1)],
    ['a refresh token that is not a string', withMember(['refreshToken'], null)],
    ['an id token that is not a string', withMember(['idToken'], 3)],
    ['an expiry that is a string', withMember(['accessTokenExpiresAt'], '1')],
    ['no expiry', without(['accessTokenExpiresAt'])],
    ['an obtainedAt that is not a number', withMember(['obtainedAt'], true)],
    ['no scope', without(['scope'])],
    ['an unknown launch mode', withMember(['launchMode'], 'backend')],
    ['no context', without(['context'])],
    ['a context that is an array', withMember(['context'], [])],
    ['a patient id with a slash', withMember(['context', 'patient'], '../Patient/1')],
    ['a patient id of 65 characters', withMember(['context', 'patient'], 'a'.repeat(65))],
    ['an encounter id that is empty', withMember(['context', 'encounter'], '')],
    ['a fhirContext that is not an array', withMember(['context', 'fhirContext'], 'Observation/1')],
    ['a fhirContext item with no reference, canonical or identifier', withMember(['context', 'fhirContext'], [{ type: 'Encounter' }])],
    ['a fhirContext item with an empty role', withMember(['context', 'fhirContext'], [{ reference: 'A/1', role: '' }])],
    ['a fhirContext item that is a number', withMember(['context', 'fhirContext'], [1])],
    ['a banner flag that is a string', withMember(['context', 'need_patient_banner'], 'true')],
    ['a style URL that is not a URL', withMember(['context', 'smart_style_url'], 'not a url')],
    ['an intent that is not a string', withMember(['context', 'intent'], {})],
    ['a tenant that is not a string', withMember(['context', 'tenant'], 1)],
    ['a fhirUser that is not a string', withMember(['context', 'fhirUser'], ['Practitioner/9'])],
    ['an unknown patient access', withMember(['context', 'patientAccess'], 'maybe')],
  ])('leaves it to the schema, which refuses it, when %s', (_why, value) => {
    expect(checkedSessionSecrets(value)).toBeUndefined();
    expect(SessionSecretsSchema.safeParse(value).success).toBe(false);
  });

  it.each([
    ['a fhirContext item with an identifier', withMember(['context', 'fhirContext'], [{ identifier: { system: 's', value: 'v' } }])],
    ['a member present as undefined', withMember(['refreshToken'], undefined)],
  ])('leaves it to the schema, which accepts it, when %s', (_why, value) => {
    expect(checkedSessionSecrets(value)).toBeUndefined();
    expect(SessionSecretsSchema.safeParse(value).success).toBe(true);
  });

  it('refuses a malformed sealed record as VAULT_INTEGRITY, also right after opening the well-formed one', () => {
    expect(openJson(SessionSecretsSchema, KEY, sealJson(KEY, full, AAD, cryptoRandom), AAD)).toStrictEqual(SessionSecretsSchema.parse(full));

    for (const value of [withMember(['context', 'smart_style_url'], 'not a url'), withMember(['launchMode'], 'x'), without(['scope'])]) {
      expect(() => openJson(SessionSecretsSchema, KEY, sealJson(KEY, value, AAD, cryptoRandom), AAD)).toThrow(
        expect.objectContaining({ code: 'VAULT_INTEGRITY', status: 401, message: 'sealed data has an unexpected shape' }),
      );
    }
  });

  it('opens a record the check leaves to the schema with the schema value', () => {
    const value = withMember(['context', 'fhirContext'], [{ identifier: { system: 's', value: 'v' }, extra: 1 }]);

    expect(openJson(SessionSecretsSchema, KEY, sealJson(KEY, value, AAD, cryptoRandom), AAD)).toStrictEqual(SessionSecretsSchema.parse(value));
  });
});
