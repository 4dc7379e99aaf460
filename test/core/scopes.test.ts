import { describe, expect, it } from 'vitest';
import {
  decideScopes,
  otherPatientTarget,
  parseGrantedScopes,
  parseResourceScope,
  satisfiesConstraints,
  splitOrValues,
  type Permission,
} from '../../shared/core/scopes.js';

const BASE = 'https://ehr.example.org/fhir/r4';
const LAB = 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory';

const perms = (scope: string) => [...(parseResourceScope(scope)?.permissions ?? [])].sort().join('');

describe('parseResourceScope: SMART v1 (SMART-SCOPE-02)', () => {
  it.each([
    ['patient/Observation.read', 'rs'],
    ['patient/Observation.write', 'cdu'],
    ['patient/Observation.*', 'cdrsu'],
    ['user/*.read', 'rs'],
    ['system/Patient.*', 'cdrsu'],
  ])('reads %s as the v2 permissions %s', (scope, expected) => {
    expect(perms(scope)).toBe(expected);
    expect(parseResourceScope(scope)?.syntax).toBe('v1');
  });

  it('refuses a query on a v1 scope: granular constraints exist only in v2 (SMART-SCOPE-03)', () => {
    expect(parseResourceScope(`patient/Observation.read?category=${LAB}`)).toBeUndefined();
  });
});

describe('parseResourceScope: SMART v2 (SMART-SCOPE-01)', () => {
  it.each([
    ['patient/Observation.rs', 'rs'],
    ['user/Appointment.cruds', 'cdrsu'],
    ['patient/Observation.c', 'c'],
    ['patient/Observation.s', 's'],
    ['patient/Observation.cud', 'cdu'],
    ['patient/*.rs', 'rs'],
    ['system/*.cruds', 'cdrsu'],
  ])('reads %s as %s', (scope, expected) => {
    expect(perms(scope)).toBe(expected);
    expect(parseResourceScope(scope)?.syntax).toBe('v2');
  });

  it.each([
    ['permissions out of canonical order', 'patient/Observation.sr'],
    ['permissions out of canonical order (dus)', 'patient/Observation.dus'],
    ['a repeated permission', 'patient/Observation.rrs'],
    ['an unknown permission letter', 'patient/Observation.rx'],
    ['no permission', 'patient/Observation.'],
    ['no level', 'Observation.rs'],
    ['an unknown level', 'practitioner/Observation.rs'],
    ['a lower-case resource type', 'patient/observation.rs'],
    ['no dot', 'patient/Observation'],
    ['an empty granular query', 'patient/Observation.rs?'],
    ['a granular parameter without a value', 'patient/Observation.rs?category'],
    ['a granular parameter without a name', 'patient/Observation.rs?=x'],
    ['a broken percent-escape in a granular query', 'patient/Observation.rs?category=%E0%A4%A'],
  ])('is not a resource scope with %s', (_what, scope) => {
    expect(parseResourceScope(scope)).toBeUndefined();
  });

  it('reads a granular scope into its search parameters, percent-decoded, + kept (SMART-SCOPE-03)', () => {
    const scope = parseResourceScope(`patient/Observation.rs?category=${LAB}&code:in=http%3A%2F%2Fvs.example%2Fa+b`);
    expect(scope).toMatchObject({ level: 'patient', resourceType: 'Observation', syntax: 'v2' });
    expect(scope?.constraints).toEqual([
      ['category', LAB],
      ['code:in', 'http://vs.example/a+b'],
    ]);
  });

  it('reads the URI form of a scope (SMART-SCOPE-14)', () => {
    const scope = parseResourceScope('http://smarthealthit.org/fhir/scopes/patient/Observation.rs');
    expect(scope).toMatchObject({ level: 'patient', resourceType: 'Observation', raw: 'http://smarthealthit.org/fhir/scopes/patient/Observation.rs' });
  });
});

describe('parseGrantedScopes (SMART-SCOPE-04/05/06/13)', () => {
  it('sorts resource, context and unknown scopes apart', () => {
    const granted = parseGrantedScopes(
      'launch launch/patient launch/encounter openid fhirUser offline_access online_access ' +
        'patient/Observation.rs user/Practitioner.read __custom https://example.org/scopes/x patient/Condition.sr ' +
        'http://openid.net/specs/openid-connect-core-1_0#openid launch/imagingstudy?role=https://example.org/role',
    );
    expect(granted.resource.map((s) => s.raw)).toEqual(['patient/Observation.rs', 'user/Practitioner.read']);
    expect(granted.context).toEqual([
      'launch',
      'launch/patient',
      'launch/encounter',
      'openid',
      'fhirUser',
      'offline_access',
      'online_access',
      'http://openid.net/specs/openid-connect-core-1_0#openid',
      'launch/imagingstudy?role=https://example.org/role',
    ]);
    expect(granted.unrecognised).toEqual(['__custom', 'https://example.org/scopes/x', 'patient/Condition.sr']);
  });

  it('treats an empty or absent grant as no access (SMART-SCOPE-07)', () => {
    expect(parseGrantedScopes('').resource).toEqual([]);
    expect(parseGrantedScopes(undefined).resource).toEqual([]);
    expect(parseGrantedScopes('  openid   fhirUser ').context).toEqual(['openid', 'fhirUser']);
  });
});

describe('decideScopes: the granted scope decides (SMART-SCOPE-07)', () => {
  const decide = (scope: string, resourceType: string | undefined, permission: Permission, params: Array<[string, string]> = [], hasPatient = true) =>
    decideScopes(parseGrantedScopes(scope), { resourceType, permission, params }, hasPatient);

  it.each([
    ['patient/Observation.read', 'Observation', 'r', true],
    ['patient/Observation.read', 'Observation', 's', true],
    ['patient/Observation.read', 'Observation', 'c', false],
    ['patient/Observation.write', 'Observation', 'u', true],
    ['patient/Observation.write', 'Observation', 'r', false],
    ['patient/Observation.*', 'Observation', 'd', true],
    ['patient/Observation.rs', 'Condition', 'r', false],
    ['patient/*.rs', 'Condition', 's', true],
    ['patient/*.rs', 'Condition', 'c', false],
    ['user/*.cruds', 'Condition', 'd', true],
    ['patient/Observation.s', 'Observation', 'r', false],
    ['patient/Observation.r', 'Observation', 's', false],
    ['patient/Observation.rs patient/Observation.cud', 'Observation', 'c', true],
    ['', 'Observation', 'r', false],
    ['openid fhirUser launch', 'Patient', 'r', false],
  ] as const)('grant "%s": %s.%s allowed=%s (SMART-SCOPE-01/02)', (scope, type, permission, allowed) => {
    expect(decide(scope, type, permission).allowed).toBe(allowed);
  });

  it('names the missing scope in v2 syntax at the session level', () => {
    expect(decide('launch openid patient/Observation.rs', 'Condition', 's')).toMatchObject({ allowed: false, missing: 'patient/Condition.s' });
    expect(decide('user/Observation.rs', 'Condition', 'r')).toMatchObject({ allowed: false, missing: 'user/Condition.r' });
  });

  it('names the missing scope in v1 syntax when the EHR granted v1 scopes (SMART-SCOPE-02)', () => {
    expect(decide('patient/Observation.read', 'Condition', 's')).toMatchObject({ allowed: false, missing: 'patient/Condition.read' });
    expect(decide('patient/Observation.read', 'Observation', 'c')).toMatchObject({ allowed: false, missing: 'patient/Observation.write' });
  });

  it('needs a wildcard scope for system-level interactions', () => {
    expect(decide('patient/Observation.rs', undefined, 's')).toMatchObject({ allowed: false, missing: 'patient/*.s' });
    expect(decide('patient/*.rs', undefined, 's')).toMatchObject({ allowed: true });
  });

  it('reports whether only patient-level scopes permit the request', () => {
    expect(decide('patient/*.rs', 'Observation', 'r')).toMatchObject({ allowed: true, patientLevel: true });
    expect(decide('patient/*.rs user/Observation.rs', 'Observation', 'r')).toMatchObject({ allowed: true, patientLevel: false, scope: 'user/Observation.rs' });
    expect(decide('patient/*.rs user/Observation.rs', 'Condition', 'r')).toMatchObject({ allowed: true, patientLevel: true });
  });

  describe('granular scopes (SMART-SCOPE-03, SMART-SCOPE-07)', () => {
    const granular = `launch patient/Observation.rs?category=${LAB}`;

    it('permits a search that carries the qualifying parameter, value for value', () => {
      expect(decide(granular, 'Observation', 's', [['category', LAB], ['_count', '50']])).toMatchObject({ allowed: true, granularUnchecked: false });
    });

    it('permits a search that adds the qualifying parameter to others of the same name (AND narrows)', () => {
      expect(decide(granular, 'Observation', 's', [['category', 'vital-signs'], ['category', LAB]])).toMatchObject({ allowed: true });
    });

    it('refuses a search without it, naming the parameters to add and the scope that would do', () => {
      const decision = decide(granular, 'Observation', 's', [['patient', '123']]);
      expect(decision).toMatchObject({ allowed: false, missing: 'patient/Observation.s' });
      expect(decision.allowed === false && decision.reason).toContain(`"category=${LAB}"`);
    });

    it.each([
      ['another category', [['category', 'http://terminology.hl7.org/CodeSystem/observation-category|vital-signs']]],
      ['the code without its system', [['category', 'laboratory']]],
      ['an OR list that widens it', [['category', `${LAB},http://terminology.hl7.org/CodeSystem/observation-category|vital-signs`]]],
      ['a modifier on the parameter', [['category:not', LAB]]],
    ] as const)('refuses a search with %s', (_what, params) => {
      expect(decide(granular, 'Observation', 's', params.map(([n, v]) => [n, v]))).toMatchObject({ allowed: false });
    });

    it('leaves reads under granular scopes to the EHR (it alone can match the resource)', () => {
      expect(decide(granular, 'Observation', 'r')).toMatchObject({ allowed: true, granularUnchecked: true });
    });

    it('prefers a resource-level scope over granular ones', () => {
      expect(decide(`${granular} patient/Observation.s`, 'Observation', 's')).toMatchObject({ allowed: true, granularUnchecked: false, scope: 'patient/Observation.s' });
    });

    it('accepts any one of several granular scopes', () => {
      const two = `patient/Observation.rs?category=${LAB} patient/Observation.rs?code=http://loinc.org|8867-4`;
      expect(decide(two, 'Observation', 's', [['code', 'http://loinc.org|8867-4']])).toMatchObject({ allowed: true });
    });
  });

  it('checks every pair of a multi-parameter constraint', () => {
    const constraints = [['category', 'a'], ['status', 'final']] as const;
    expect(satisfiesConstraints(constraints, [['category', 'a'], ['status', 'final']])).toBe(true);
    expect(satisfiesConstraints(constraints, [['category', 'a']])).toBe(false);
  });
});

describe('splitOrValues', () => {
  it('splits on unescaped commas only', () => {
    expect(splitOrValues('a,b\\,c,d')).toEqual(['a', 'b\\,c', 'd']);
    expect(splitOrValues('')).toEqual(['']);
  });
});

describe('otherPatientTarget: patient-level sessions stay on their patient (BFF-16)', () => {
  const check = (pathType: string | undefined, pathId: string | undefined, params: Array<[string, string]> = []) =>
    otherPatientTarget({ pathType, pathId, params }, 'pat-1', BASE);

  it.each([
    ['its own Patient', 'Patient', 'pat-1', []],
    ['its own compartment', 'Patient', 'pat-1', [['code', 'x']]],
    ['another resource by id', 'Observation', 'obs-9', []],
    ['patient=pat-1', 'Observation', undefined, [['patient', 'pat-1']]],
    ['patient=Patient/pat-1', 'Observation', undefined, [['patient', 'Patient/pat-1']]],
    ['subject=absolute URL of its own patient', 'Observation', undefined, [['subject', `${BASE}/Patient/pat-1`]]],
    ['subject=Group/1 (not a patient)', 'Observation', undefined, [['subject', 'Group/1']]],
    ['a chained parameter', 'Observation', undefined, [['subject:Patient.name', 'other']]],
    ['patient:identifier (cannot be checked here)', 'Observation', undefined, [['patient:identifier', 'mrn|1']]],
    ['_id on another type', 'Observation', undefined, [['_id', 'other']]],
    ['a system search for _id of another type only', undefined, undefined, [['_type', 'Observation'], ['_id', 'other']]],
    ['a system search for its own patient by _id', undefined, undefined, [['_type', 'Patient'], ['_id', 'pat-1']]],
    ['a versioned reference to its own patient', 'Observation', undefined, [['patient', 'Patient/pat-1/_history/3']]],
  ] as const)('lets %s through', (_what, type, id, params) => {
    expect(check(type, id, params.map(([n, v]) => [n, v]))).toBeUndefined();
  });

  it.each([
    ['Patient/{other}', 'Patient', 'pat-2', []],
    ['a compartment search of another patient', 'Patient', 'pat-2', [['code', 'x']]],
    ['patient={other}', 'Observation', undefined, [['patient', 'pat-2']]],
    ['patient=Patient/{other}', 'Observation', undefined, [['patient', 'Patient/pat-2']]],
    ['patient:Patient={other}', 'Observation', undefined, [['patient:Patient', 'pat-2']]],
    ['subject=Patient/{other}', 'Observation', undefined, [['subject', 'Patient/pat-2']]],
    ['subject:Patient={other}', 'Observation', undefined, [['subject:Patient', 'pat-2']]],
    ['subject={other} (a bare id)', 'Observation', undefined, [['subject', 'pat-2']]],
    ['subject=absolute URL of another patient', 'Observation', undefined, [['subject', `${BASE}/Patient/pat-2`]]],
    ['subject=a Patient on another server', 'Observation', undefined, [['subject', 'https://other.example/fhir/Patient/pat-1']]],
    ['an OR list with another patient', 'Observation', undefined, [['patient', 'pat-1,pat-2']]],
    ['a repeated parameter naming another', 'Observation', undefined, [['patient', 'pat-1'], ['patient', 'pat-2']]],
    ['Patient?_id={other}', 'Patient', undefined, [['_id', 'pat-2']]],
    ['a system search _type=Patient&_id={other}', undefined, undefined, [['_type', 'Patient'], ['_id', 'pat-2']]],
    ['a system search _type=Observation,Patient&_id={other}', undefined, undefined, [['_type', 'Observation,Patient'], ['_id', 'pat-2']]],
    ['a system search _id={other} without _type (every type)', undefined, undefined, [['_id', 'pat-2']]],
  ] as const)('refuses %s', (_what, type, id, params) => {
    expect(check(type, id, params.map(([n, v]) => [n, v]))).toBeDefined();
  });
});
