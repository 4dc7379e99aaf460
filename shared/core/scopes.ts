/**
 * SMART resource scopes as the proxy reads them: what the EHR **granted** (the token response's
 * `scope`, kept in the session), never what the app asked for (SMART-SCOPE-07). Pure: no I/O.
 *
 * Syntax (SMART App Launch 2.2, "Scopes and Launch Context"):
 * - v1: `patient/Observation.read`, `.write`, `.*`; `.read` = `rs`, `.write` = `cud`, `.*` = `cruds`
 *   (SMART-SCOPE-02).
 * - v2: `patient/Observation.rs`, a non-empty subset of `c r u d s` in that canonical order
 *   (SMART-SCOPE-01). Tokens in another order (`.sr`, `.dus`) are not valid scopes: they are listed as
 *   unrecognised and grant nothing here (the EHR stays the authority).
 * - wildcards: `*` as the resource type (`patient/*.rs`, `user/*.cruds`).
 * - granular (query-qualified, v2 only): `patient/Observation.rs?category=http://…|laboratory`
 *   (SMART-SCOPE-03).
 * - the URI form `http://smarthealthit.org/fhir/scopes/patient/Observation.rs` (SMART-SCOPE-14).
 * - context and identity scopes (`launch`, `launch/patient`, `openid`, `fhirUser`, `offline_access`,
 *   …) grant no resource access; extension scopes (full URIs, `__` prefix) are ignored (SMART-SCOPE-13).
 *
 * @see https://hl7.org/fhir/smart-app-launch/STU2.2/scopes-and-launch-context.html
 */

export type ScopeLevel = 'patient' | 'user' | 'system';
export type Permission = 'c' | 'r' | 'u' | 'd' | 's';

/** The canonical order of v2 permissions. */
export const PERMISSIONS: readonly Permission[] = ['c', 'r', 'u', 'd', 's'];

export interface ResourceScope {
  /** The token as granted. */
  readonly raw: string;
  readonly level: ScopeLevel;
  /** A FHIR resource type, or `*`. */
  readonly resourceType: string;
  readonly permissions: ReadonlySet<Permission>;
  readonly syntax: 'v1' | 'v2';
  /**
   * The search parameters of a granular scope (name and value, percent-decoded), in order;
   * `undefined` for a resource-level scope.
   */
  readonly constraints: ReadonlyArray<readonly [string, string]> | undefined;
}

export interface GrantedScopes {
  readonly resource: readonly ResourceScope[];
  /** `launch`, `launch/patient`, `openid`, `fhirUser`, `offline_access`, `online_access`, … */
  readonly context: readonly string[];
  /** Tokens that are neither: extension scopes, malformed or non-canonical resource scopes. */
  readonly unrecognised: readonly string[];
}

const URI_PREFIX = 'http://smarthealthit.org/fhir/scopes/';
const OPENID_URI_PREFIX = 'http://openid.net/specs/openid-connect-core-1_0#';

const RESOURCE_SCOPE = /^(patient|user|system)\/(\*|[A-Z][A-Za-z]{0,63})\.([A-Za-z*]+)(?:\?(.*))?$/;
const V2_PERMISSIONS = /^c?r?u?d?s?$/;
const V1_PERMISSIONS: Readonly<Record<string, readonly Permission[]>> = {
  read: ['r', 's'],
  write: ['c', 'u', 'd'],
  '*': ['c', 'r', 'u', 'd', 's'],
};
const CONTEXT_SCOPE = /^(launch(\/[a-z]+)?(\?role=\S+)?|openid|fhirUser|profile|offline_access|online_access)$/;

/** Splits a granular scope's query (`a=1&b=2`) without treating `+` as a space; undefined when malformed. */
function parseConstraints(query: string): Array<readonly [string, string]> | undefined {
  if (query === '') return undefined;
  const pairs: Array<readonly [string, string]> = [];
  for (const part of query.split('&')) {
    const eq = part.indexOf('=');
    if (eq <= 0) return undefined;
    try {
      pairs.push([decodeURIComponent(part.slice(0, eq)), decodeURIComponent(part.slice(eq + 1))]);
    } catch {
      return undefined;
    }
  }
  return pairs;
}

/** Parses one scope token; `undefined` when it is not a SMART resource scope. */
export function parseResourceScope(token: string): ResourceScope | undefined {
  const text = token.startsWith(URI_PREFIX) ? token.slice(URI_PREFIX.length) : token;
  const match = RESOURCE_SCOPE.exec(text);
  if (!match) return undefined;
  const [, level, resourceType, access, query] = match as unknown as [string, ScopeLevel, string, string, string | undefined];
  const v1 = V1_PERMISSIONS[access];
  let permissions: Permission[];
  let syntax: 'v1' | 'v2';
  if (v1) {
    // Granular constraints exist only in v2 syntax.
    if (query !== undefined) return undefined;
    permissions = [...v1];
    syntax = 'v1';
  } else {
    if (access === '' || !V2_PERMISSIONS.test(access)) return undefined;
    permissions = access.split('') as Permission[];
    syntax = 'v2';
  }
  let constraints: Array<readonly [string, string]> | undefined;
  if (query !== undefined) {
    constraints = parseConstraints(query);
    if (constraints === undefined) return undefined;
  }
  return { raw: token, level, resourceType, permissions: new Set(permissions), syntax, constraints };
}

/** Sorts a granted `scope` string into resource scopes, context scopes and the rest. */
export function parseGrantedScopes(scope: string | undefined): GrantedScopes {
  const resource: ResourceScope[] = [];
  const context: string[] = [];
  const unrecognised: string[] = [];
  for (const token of (scope ?? '').split(/\s+/)) {
    if (token === '') continue;
    const parsed = parseResourceScope(token);
    if (parsed) {
      resource.push(parsed);
      continue;
    }
    const bare = token.startsWith(OPENID_URI_PREFIX) ? token.slice(OPENID_URI_PREFIX.length) : token.startsWith(URI_PREFIX) ? token.slice(URI_PREFIX.length) : token;
    if (CONTEXT_SCOPE.test(bare)) context.push(token);
    else unrecognised.push(token);
  }
  return { resource, context, unrecognised };
}

/** A request as far as scopes are concerned. */
export interface ScopedRequest {
  /** The resource type the interaction acts on; `undefined` for system-level interactions (`_history`, `$op`). */
  readonly resourceType: string | undefined;
  readonly permission: Permission;
  /** Search parameters of the request (query string, and the form body of `_search`), decoded, in order. */
  readonly params: ReadonlyArray<readonly [string, string]>;
}

export type ScopeDecision =
  | {
      readonly allowed: true;
      /** Every scope that permits the request was granted at patient level. */
      readonly patientLevel: boolean;
      /**
       * The request is permitted only by granular scopes whose constraint the proxy cannot check
       * (a read, or a write): the EHR decides.
       */
      readonly granularUnchecked: boolean;
      /** The scope the decision rests on (for logs). */
      readonly scope: string;
    }
  | {
      readonly allowed: false;
      /** The scope the request needs, in the session's syntax (`patient/Condition.rs`, `patient/Condition.read`). */
      readonly missing: string;
      readonly reason: string;
    };

const V1_NAME: Readonly<Record<Permission, string>> = { c: 'write', r: 'read', u: 'write', d: 'write', s: 'read' };

/** The scope a request needs, spelled in the syntax the EHR used for this session. */
function neededScope(granted: GrantedScopes, level: ScopeLevel, resourceType: string, permission: Permission): string {
  const v1Only = granted.resource.length > 0 && granted.resource.every((s) => s.syntax === 'v1');
  return `${level}/${resourceType}.${v1Only ? V1_NAME[permission] : permission}`;
}

/** The level to name in a "missing scope" message: the one the session's grants use. */
function sessionLevel(granted: GrantedScopes, hasPatientContext: boolean): ScopeLevel {
  const levels = new Set(granted.resource.map((s) => s.level));
  if (levels.size === 1) return [...levels][0] as ScopeLevel;
  if (levels.has('user')) return 'user';
  return hasPatientContext ? 'patient' : 'user';
}

/** True when the request carries every `name=value` of the granular scope (AND semantics: a restriction). */
export function satisfiesConstraints(
  constraints: ReadonlyArray<readonly [string, string]>,
  params: ReadonlyArray<readonly [string, string]>,
): boolean {
  return constraints.every(([name, value]) => params.some(([n, v]) => n === name && v === value));
}

/**
 * Decides whether the granted scopes permit a request, before the EHR is contacted.
 *
 * - A resource-level scope for the type (or `*`) with the permission permits it.
 * - Granular scopes permit a **search** (`s`) only when the search carries every `name=value` pair
 *   of one of them, value for value (repeated parameters are ANDed in FHIR, so they can only narrow
 *   the result; a comma list is an OR and does not match). Anything else is refused, naming both the
 *   parameters to add and the resource-level scope that would also do.
 * - Granular scopes permit a read or a write without a check here (the proxy cannot know whether a
 *   resource matches before reading it): the EHR enforces them, and its 403 passes through.
 * - System-level interactions (no resource type) need a wildcard (`*`) scope.
 */
export function decideScopes(granted: GrantedScopes, request: ScopedRequest, hasPatientContext: boolean): ScopeDecision {
  const type = request.resourceType ?? '*';
  const applicable = granted.resource.filter(
    (s) => (s.resourceType === '*' || s.resourceType === type) && s.permissions.has(request.permission),
  );
  const level = sessionLevel(granted, hasPatientContext);
  const missing = neededScope(granted, level, type, request.permission);
  if (applicable.length === 0) {
    return {
      allowed: false,
      missing,
      reason:
        request.resourceType === undefined
          ? `system-level interactions need a wildcard scope such as ${missing}`
          : `no granted scope allows "${request.permission}" on ${type}`,
    };
  }
  const resourceLevel = applicable.filter((s) => s.constraints === undefined);
  if (resourceLevel.length > 0) {
    const broad = resourceLevel.find((s) => s.level !== 'patient');
    return { allowed: true, patientLevel: broad === undefined, granularUnchecked: false, scope: (broad ?? resourceLevel[0])!.raw };
  }
  // Only granular scopes apply.
  if (request.permission !== 's') {
    const broad = applicable.find((s) => s.level !== 'patient');
    return { allowed: true, patientLevel: broad === undefined, granularUnchecked: true, scope: (broad ?? applicable[0])!.raw };
  }
  const satisfied = applicable.filter((s) => satisfiesConstraints(s.constraints ?? [], request.params));
  if (satisfied.length > 0) {
    const broad = satisfied.find((s) => s.level !== 'patient');
    return { allowed: true, patientLevel: broad === undefined, granularUnchecked: false, scope: (broad ?? satisfied[0])!.raw };
  }
  const options = applicable.map((s) => (s.constraints ?? []).map(([n, v]) => `${n}=${v}`).join('&'));
  return {
    allowed: false,
    missing,
    reason:
      `the granted scopes for ${type} are granular (${applicable.map((s) => s.raw).join(', ')}): ` +
      `add ${options.map((o) => `"${o}"`).join(' or ')} to the search, or the session needs ${missing}`,
  };
}

/** Splits a FHIR search value on unescaped commas (`\,` is a literal comma). */
export function splitOrValues(value: string): string[] {
  const out: string[] = [];
  let current = '';
  for (let i = 0; i < value.length; i++) {
    const ch = value[i] as string;
    if (ch === '\\' && i + 1 < value.length) {
      current += ch + (value[i + 1] as string);
      i++;
    } else if (ch === ',') {
      out.push(current);
      current = '';
    } else {
      current += ch;
    }
  }
  out.push(current);
  return out;
}

/** The patient id a reference search value names (`123`, `Patient/123`, `{base}/Patient/123`), if any. */
function patientIdIn(value: string, fhirBase: string, bareIdIsPatient: boolean): string | undefined {
  const base = fhirBase.replace(/\/+$/, '');
  let ref = value.startsWith(`${base}/`) ? value.slice(base.length + 1) : value;
  // A versioned reference names the same patient.
  ref = ref.replace(/\/_history\/[^/]+$/, '');
  const typed = /^Patient\/([^/]+)$/.exec(ref);
  if (typed) return typed[1];
  if (/^https?:\/\//i.test(ref)) {
    // Another server's Patient is never this session's patient.
    const other = /\/Patient\/([^/]+)$/.exec(ref);
    return other ? `${ref}` : undefined;
  }
  if (!ref.includes('/') && bareIdIsPatient && ref !== '') return ref;
  return undefined;
}

/** What a patient-level request refers to, for the "other patient" check. */
export interface PatientTargets {
  /** `[type, id]` from the path (`Patient/123`, `Patient/123/Observation`, `Observation/9`). */
  readonly pathType: string | undefined;
  readonly pathId: string | undefined;
  /** Search parameters (query string and `_search` form body), decoded. */
  readonly params: ReadonlyArray<readonly [string, string]>;
}

/**
 * For a patient-level session, finds a plain reference to **another** patient in the request:
 * `Patient/{other}` (read, vread, history, `$op`, compartment search `Patient/{other}/…`), or a
 * `patient`, `patient:Patient`, `subject`, `subject:Patient` parameter (or `_id` on a Patient search)
 * naming another patient as `id`, `Patient/id` or an absolute URL, in any of its comma-separated
 * values. Chained parameters (`subject:Patient.name=…`), other modifiers and non-Patient references
 * (`subject=Group/1`) are not "plain" and are left to the EHR. Returns a description without any id (it is logged), or `undefined`.
 */
export function otherPatientTarget(targets: PatientTargets, patientId: string, fhirBase: string): string | undefined {
  if (targets.pathType === 'Patient' && targets.pathId !== undefined && targets.pathId !== patientId) {
    return 'the path names another Patient';
  }
  // A system-level search (`[base]?…`, `[base]/_search`) reaches Patient when `_type` names it or is absent.
  const types = targets.params.filter(([name]) => name === '_type').flatMap(([, value]) => value.split(',').map((t) => t.trim()));
  const systemSearchReachesPatient = targets.pathType === undefined && (types.length === 0 || types.includes('Patient'));
  for (const [name, value] of targets.params) {
    if (name.includes('.')) continue;
    const [code, modifier, ...rest] = name.split(':');
    if (rest.length > 0) continue;
    let bareIdIsPatient: boolean;
    if ((code === 'patient' || code === 'subject') && (modifier === undefined || modifier === 'Patient')) {
      // `patient` only ever targets Patient; a bare id on `subject` is read as a Patient id too (a
      // Group or Device is always written with its type).
      bareIdIsPatient = true;
    } else if (code === '_id' && modifier === undefined && ((targets.pathType === 'Patient' && targets.pathId === undefined) || systemSearchReachesPatient)) {
      bareIdIsPatient = true;
    } else {
      continue;
    }
    for (const part of splitOrValues(value)) {
      const id = patientIdIn(part, fhirBase, bareIdIsPatient);
      if (id !== undefined && id !== patientId) return `the search parameter "${name}" names another patient`;
    }
  }
  return undefined;
}
