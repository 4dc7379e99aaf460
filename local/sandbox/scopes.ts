/**
 * SMART resource scopes (v1 and v2), and the access decision the sandbox FHIR server derives from
 * the scopes granted in an access token.
 *
 * @see https://hl7.org/fhir/smart-app-launch/STU2.2/scopes-and-launch-context.html
 */

export type ScopeLevel = 'patient' | 'user' | 'system';
export type Permission = 'c' | 'r' | 'u' | 'd' | 's';

export interface ResourceScope {
  readonly raw: string;
  readonly level: ScopeLevel;
  /** A resource type, or `*`. */
  readonly resourceType: string;
  readonly permissions: ReadonlySet<Permission>;
  /** The query of a granular (query-qualified) v2 scope, without the `?`; undefined when absent. */
  readonly query: string | undefined;
}

// v1: `.read`, `.write`, `.*`; v2: c, r, u, d, s in that order (at least one). Anything after `?` is a
// granular constraint (`patient/Observation.rs?category=...|laboratory`).
const RESOURCE_SCOPE = /^(patient|user|system)\/(\*|[A-Z][A-Za-z]*)\.(read|write|\*|c?r?u?d?s?)(?:\?(\S+))?$/;

const V1_PERMISSIONS: Readonly<Record<string, readonly Permission[]>> = {
  read: ['r', 's'],
  write: ['c', 'u', 'd'],
  '*': ['c', 'r', 'u', 'd', 's'],
};

/** Parses one scope token; undefined when it is not a SMART resource scope. */
export function parseResourceScope(scope: string): ResourceScope | undefined {
  const match = RESOURCE_SCOPE.exec(scope);
  if (!match) {
    return undefined;
  }
  const [, level, resourceType, access, query] = match;
  if (level === undefined || resourceType === undefined || access === undefined || access === '') {
    return undefined;
  }
  const v1 = V1_PERMISSIONS[access];
  if (v1 && query !== undefined) {
    // Granular constraints exist only in v2 syntax.
    return undefined;
  }
  const permissions = new Set<Permission>(v1 ?? (access.split('') as Permission[]));
  return { raw: scope, level: level as ScopeLevel, resourceType, permissions, query };
}

/** True for scope tokens the sandbox accepts as resource scopes at the authorization server. */
export function isResourceScope(scope: string): boolean {
  return parseResourceScope(scope) !== undefined;
}

export function parseResourceScopes(scope: string | undefined): ResourceScope[] {
  const out: ResourceScope[] = [];
  for (const token of (scope ?? '').split(' ')) {
    const parsed = parseResourceScope(token);
    if (parsed) {
      out.push(parsed);
    }
  }
  return out;
}

export type AccessDecision =
  | { readonly allowed: false; readonly reason: string }
  | {
      readonly allowed: true;
      /** Patient id the request is confined to (patient-level access); undefined for user/system access. */
      readonly patient: string | undefined;
      /**
       * Granular constraints (search query strings) of which the resource must match at least one;
       * empty when a resource-level scope applies.
       */
      readonly constraints: readonly string[];
    };

/**
 * Decides whether the granted scopes allow `permission` on `resourceType`, picking the most
 * permissive applicable option: user/system level before patient level, resource-level scopes
 * before granular ones.
 */
export function decideAccess(
  scopes: readonly ResourceScope[],
  resourceType: string,
  permission: Permission,
  patientClaim: string | undefined,
): AccessDecision {
  const applicable = scopes.filter(
    (s) => (s.resourceType === '*' || s.resourceType === resourceType) && s.permissions.has(permission),
  );
  if (applicable.length === 0) {
    return { allowed: false, reason: `no granted scope allows "${permission}" on ${resourceType}` };
  }
  const broad = applicable.filter((s) => s.level !== 'patient');
  const patientLevel = applicable.filter((s) => s.level === 'patient');

  const unconstrained = (list: readonly ResourceScope[]): boolean => list.some((s) => s.query === undefined);
  const constraintsOf = (list: readonly ResourceScope[]): string[] => [
    ...new Set(list.flatMap((s) => (s.query === undefined ? [] : [s.query]))),
  ];

  if (unconstrained(broad)) {
    return { allowed: true, patient: undefined, constraints: [] };
  }
  if (patientLevel.length > 0 && unconstrained(patientLevel)) {
    if (!patientClaim) {
      return { allowed: false, reason: 'patient-level scope without a patient in context' };
    }
    return { allowed: true, patient: patientClaim, constraints: [] };
  }
  if (broad.length > 0) {
    return { allowed: true, patient: undefined, constraints: constraintsOf(broad) };
  }
  if (!patientClaim) {
    return { allowed: false, reason: 'patient-level scope without a patient in context' };
  }
  return { allowed: true, patient: patientClaim, constraints: constraintsOf(patientLevel) };
}
