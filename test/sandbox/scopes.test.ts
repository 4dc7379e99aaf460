import { describe, expect, it } from 'vitest';
import { narrowExpression, splitUnion } from '../../local/sandbox/fhir-definitions.js';
import { decideAccess, parseResourceScope, parseResourceScopes } from '../../local/sandbox/scopes.js';

describe('SMART resource scope parsing', () => {
  it('parses v2 scopes into level, type and permissions', () => {
    const scope = parseResourceScope('patient/Observation.rs');
    expect(scope?.level).toBe('patient');
    expect(scope?.resourceType).toBe('Observation');
    expect([...(scope?.permissions ?? [])]).toEqual(['r', 's']);
    expect(scope?.query).toBeUndefined();
    expect([...(parseResourceScope('user/*.cruds')?.permissions ?? [])]).toEqual(['c', 'r', 'u', 'd', 's']);
  });

  it('maps v1 read, write and * onto v2 permissions', () => {
    expect([...(parseResourceScope('patient/*.read')?.permissions ?? [])]).toEqual(['r', 's']);
    expect([...(parseResourceScope('user/Condition.write')?.permissions ?? [])]).toEqual(['c', 'u', 'd']);
    expect([...(parseResourceScope('system/*.*')?.permissions ?? [])]).toEqual(['c', 'r', 'u', 'd', 's']);
  });

  it('keeps the query of a granular v2 scope', () => {
    const scope = parseResourceScope('patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory');
    expect(scope?.query).toBe('category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory');
  });

  it('rejects non-resource scopes and out-of-order or empty permissions', () => {
    for (const scope of ['openid', 'launch/patient', 'patient/Observation.sr', 'patient/Observation.', 'doctor/*.rs', 'patient/*.read?x=1', 'patient/observation.rs']) {
      expect(parseResourceScope(scope), scope).toBeUndefined();
    }
    expect(parseResourceScopes('openid fhirUser patient/*.rs user/Patient.r').map((s) => s.raw)).toEqual(['patient/*.rs', 'user/Patient.r']);
  });
});

describe('access decisions', () => {
  const scopes = (s: string) => parseResourceScopes(s);

  it('confines patient-level scopes to the patient claim', () => {
    expect(decideAccess(scopes('patient/*.rs'), 'Observation', 's', 'p1')).toEqual({ allowed: true, patient: 'p1', constraints: [] });
    expect(decideAccess(scopes('patient/*.rs'), 'Observation', 's', undefined)).toMatchObject({ allowed: false });
  });

  it('prefers unconstrained user-level access over patient-level access', () => {
    expect(decideAccess(scopes('patient/*.rs user/Observation.rs'), 'Observation', 'r', 'p1')).toEqual({
      allowed: true,
      patient: undefined,
      constraints: [],
    });
    expect(decideAccess(scopes('patient/*.rs user/Observation.rs'), 'Condition', 'r', 'p1')).toEqual({
      allowed: true,
      patient: 'p1',
      constraints: [],
    });
  });

  it('refuses types and permissions that no scope grants', () => {
    expect(decideAccess(scopes('patient/Observation.r'), 'Observation', 's', 'p1')).toMatchObject({ allowed: false });
    expect(decideAccess(scopes('patient/Observation.rs'), 'Condition', 'r', 'p1')).toMatchObject({ allowed: false });
  });

  it('returns granular constraints when only granular scopes apply', () => {
    expect(decideAccess(scopes('patient/Observation.rs?category=laboratory'), 'Observation', 's', 'p1')).toEqual({
      allowed: true,
      patient: 'p1',
      constraints: ['category=laboratory'],
    });
  });
});

describe('search parameter narrowing', () => {
  it('splits a FHIRPath union only at the top level', () => {
    expect(splitUnion("A.x | (B.y as C) | D.z.where(code = 'a|b')")).toEqual(['A.x', '(B.y as C)', "D.z.where(code = 'a|b')"]);
  });

  it('keeps only the members of a shared expression that belong to the type', () => {
    const shared = 'AllergyIntolerance.patient | Observation.subject.where(resolve() is Patient) | (Observation.effective as dateTime)';
    expect(narrowExpression(shared, 'Observation')).toBe('Observation.subject.where(resolve() is Patient) | (Observation.effective as dateTime)');
    expect(narrowExpression(shared, 'Encounter')).toBe(shared);
    expect(narrowExpression('Resource.id', 'Observation')).toBe('Resource.id');
  });
});
