import { describe, expect, it } from 'vitest';
import { effectiveScopeSyntax, rewriteScopes } from '../../shared/core/scope-syntax.js';

describe('rewriteScopes to SMART v1 (SMART-SCOPE-02)', () => {
  it.each([
    ['patient/Observation.rs', 'patient/Observation.read', false],
    ['user/*.rs', 'user/*.read', false],
    ['patient/Observation.cud', 'patient/Observation.write', false],
    ['patient/*.cruds', 'patient/*.*', false],
    ['system/Patient.cruds', 'system/Patient.*', false],
    // No exact v1 form: the smallest v1 scope that covers it, reported as broadened.
    ['patient/Observation.r', 'patient/Observation.read', true],
    ['patient/Observation.s', 'patient/Observation.read', true],
    ['patient/Observation.c', 'patient/Observation.write', true],
    ['patient/Observation.ud', 'patient/Observation.write', true],
    ['patient/Observation.crud', 'patient/Observation.*', true],
    ['patient/Observation.rds', 'patient/Observation.*', true],
    // Already v1, or not a resource scope: untouched.
    ['patient/Observation.read', 'patient/Observation.read', false],
    ['patient/*.*', 'patient/*.*', false],
    ['launch', 'launch', false],
    ['launch/patient', 'launch/patient', false],
    ['openid', 'openid', false],
    ['fhirUser', 'fhirUser', false],
    ['offline_access', 'offline_access', false],
    ['http://example.org/scope/x.rs', 'http://example.org/scope/x.rs', false],
    // Non-canonical v2 order is not a valid scope: left for the EHR to judge.
    ['patient/Observation.sr', 'patient/Observation.sr', false],
    // The URI form (SMART-SCOPE-14) keeps its prefix.
    ['http://smarthealthit.org/fhir/scopes/patient/Observation.rs', 'http://smarthealthit.org/fhir/scopes/patient/Observation.read', false],
  ])('%s → %s (broadened: %s)', (from, to, broadened) => {
    const result = rewriteScopes(from, 'v1');

    expect(result.scope).toBe(to);
    expect(result.broadened).toEqual(broadened ? [from] : []);
    expect(result.rewritten).toEqual(from === to ? [] : [{ from, to }]);
  });

  it('rewrites a whole scope string, keeping order and dropping duplicates that rewriting creates', () => {
    const result = rewriteScopes('launch openid fhirUser patient/Observation.rs patient/Observation.read patient/*.cruds offline_access', 'v1');

    expect(result.scope).toBe('launch openid fhirUser patient/Observation.read patient/*.* offline_access');
  });

  it.each(['patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory', 'user/Condition.s?clinical-status=active'])(
    'refuses the granular scope %s with SCOPE_NOT_EXPRESSIBLE naming it (SMART-SCOPE-03: v2 only)',
    (granular) => {
      expect(() => rewriteScopes(`launch ${granular}`, 'v1')).toThrow(
        expect.objectContaining({ code: 'SCOPE_NOT_EXPRESSIBLE', status: 502, message: expect.stringContaining(granular) }),
      );
    },
  );
});

describe('rewriteScopes to SMART v2 (SMART-SCOPE-01/02)', () => {
  it.each([
    ['patient/Observation.read', 'patient/Observation.rs'],
    ['user/*.write', 'user/*.cud'],
    ['patient/*.*', 'patient/*.cruds'],
    ['patient/Observation.rs', 'patient/Observation.rs'],
    ['patient/Observation.rs?category=laboratory', 'patient/Observation.rs?category=laboratory'],
    ['launch/patient', 'launch/patient'],
  ])('%s → %s', (from, to) => {
    const result = rewriteScopes(from, 'v2');

    expect(result.scope).toBe(to);
    expect(result.broadened).toEqual([]);
  });
});

describe('effectiveScopeSyntax (SMART-SCOPE-02, SMART-DISC-08)', () => {
  it.each([
    ['v1', [], 'v1'],
    ['v2', ['permission-v1'], 'v2'],
    ['auto', ['permission-v1'], 'v1'],
    ['auto', ['permission-v2'], 'v2'],
    ['auto', ['permission-v1', 'permission-v2'], undefined],
    ['auto', [], undefined],
    [undefined, ['permission-v1', 'launch-ehr'], 'v1'],
  ] as const)('setting %s with capabilities %j → %s', (setting, capabilities, expected) => {
    expect(effectiveScopeSyntax(setting, capabilities)).toBe(expected);
  });
});
