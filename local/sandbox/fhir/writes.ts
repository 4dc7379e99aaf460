import type { IncomingMessage } from 'node:http';
import type { Resource } from '@medplum/fhirtypes';
import type { VerifiedAccessToken } from '../auth/grants.js';
import { applyJsonPatch, JsonPatchError } from '../json-patch.js';
import { decide, existing, forbidden, inPatientCompartment, matchesConstraint } from './access.js';
import type { Granted } from './access.js';
import type { FhirContext } from './context.js';
import {
  FHIR_JSON_TYPE,
  FhirError,
  headerValue,
  ifMatchVersion,
  isRecord,
  JSON_PATCH_TYPE,
  readJsonBody,
  sendFhir,
  toQuery,
  versionHeaders,
} from './exchange.js';
import type { Exchange, Query } from './exchange.js';
import { search } from './read-search.js';

/*
 * Writes, for WRITABLE_TYPES only: create (with If-None-Exist), update and conditional update, JSON
 * Patch, delete; versions counted 1, 2, 3…, If-Match, Prefer; run one at a time (WriteQueue).
 */

/** Resource types the sandbox accepts writes for (create, update, conditional update, patch, delete). */
export const WRITABLE_TYPES: ReadonlySet<string> = new Set(['Observation', 'Basic']);

export function checkWritableType(resourceType: string): void {
  if (!WRITABLE_TYPES.has(resourceType)) {
    throw new FhirError(405, 'not-supported', `the sandbox FHIR server takes writes for ${[...WRITABLE_TYPES].join(' and ')} only; ${resourceType} is read-only`, {
      Allow: 'GET',
    });
  }
}

/** A resource of `resourceType` sent as FHIR JSON (create, update). */
export async function resourceBody(req: IncomingMessage, resourceType: string): Promise<Resource> {
  const parsed = await readJsonBody(req, FHIR_JSON_TYPE, 'send the resource as FHIR JSON (Content-Type: application/fhir+json)');
  if (!isRecord(parsed) || parsed.resourceType !== resourceType) {
    throw new FhirError(400, 'invalid', `the body must be a ${resourceType} resource`);
  }
  return parsed as unknown as Resource;
}

/** Stores a new version (`previous` undefined: the first); versions count 1, 2, 3… */
export function commit(ctx: FhirContext, resource: Resource, previous: Resource | undefined): Promise<Resource> {
  const { repo } = ctx;
  const before = previous?.meta?.versionId;
  const versionId = previous === undefined ? '1' : before !== undefined && /^\d+$/.test(before) ? String(Number(before) + 1) : repo.generateId();
  // createResource stores the resource as given (an upsert that also records the version in history).
  return repo.createResource({ ...resource, meta: { ...resource.meta, versionId, lastUpdated: new Date().toISOString() } });
}

/** Without the server-assigned fields: `meta.versionId` and `meta.lastUpdated` (and `id` for a create). */
export function clientFields(resource: Resource, keepId: boolean): Resource {
  const { id, meta, ...rest } = resource;
  const { versionId: _versionId, lastUpdated: _lastUpdated, ...otherMeta } = meta ?? {};
  return {
    ...rest,
    ...(keepId && id !== undefined ? { id } : {}),
    ...(Object.keys(otherMeta).length > 0 ? { meta: otherMeta } : {}),
  } as Resource;
}

/** A resource a write would leave behind must stay inside what the token may write. */
export async function checkWritable(ctx: FhirContext, resource: Resource, decision: Granted): Promise<void> {
  if (decision.patient !== undefined && !(await inPatientCompartment(ctx, resource, decision.patient))) {
    throw forbidden(`this token may only write resources in the compartment of patient ${decision.patient}`);
  }
  if (!matchesConstraint(resource, decision.constraints)) {
    throw forbidden('the granted granular scopes do not cover this resource');
  }
}

/** The current version, which must exist and be within the token's reach; If-Match is checked against it. */
export async function current(ctx: FhirContext, resourceType: string, id: string, decision: Granted, ifMatch: string | undefined): Promise<Resource> {
  const resource = await existing(ctx, resourceType, id);
  if (resource === undefined) {
    throw new FhirError(404, 'not-found', `${resourceType}/${id} is not known`);
  }
  await checkWritable(ctx, resource, decision);
  checkIfMatch(resource, ifMatch);
  return resource;
}

export function checkIfMatch(resource: Resource | undefined, ifMatch: string | undefined): void {
  if (ifMatch !== undefined && resource?.meta?.versionId !== ifMatch) {
    throw new FhirError(
      412,
      'conflict',
      resource === undefined ? 'If-Match names a version of a resource that does not exist' : `If-Match W/"${ifMatch}" is not the current version W/"${resource.meta?.versionId ?? ''}"`,
    );
  }
}

/** Resources a conditional interaction's search matches (at most 2: enough to tell none, one, several). */
export async function matching(ctx: FhirContext, resourceType: string, query: Query, decision: Granted): Promise<Resource[]> {
  for (const control of Object.keys(query).filter((key) => key.startsWith('_') && key !== '_id')) {
    delete query[control];
  }
  if (Object.keys(query).length === 0) {
    throw new FhirError(400, 'invalid', 'a conditional interaction needs search parameters');
  }
  query._count = ['2'];
  const bundle = await search(ctx, resourceType, query, decision.patient, []);
  return (bundle.entry ?? []).flatMap((e) => (e.resource ? [e.resource] : []));
}

export async function sendWritten(ctx: FhirContext, ex: Exchange, status: number, resource: Resource): Promise<void> {
  const { fhirBaseUrl } = ctx;
  const headers = versionHeaders(resource);
  if (status === 201) {
    headers.Location = `${fhirBaseUrl}/${resource.resourceType}/${resource.id ?? ''}/_history/${resource.meta?.versionId ?? ''}`;
  }
  const prefer = headerValue(ex.req, 'prefer').toLowerCase();
  if (/\breturn=minimal\b/.test(prefer)) {
    await sendFhir(ex, status, undefined, headers);
    return;
  }
  if (/\breturn=operationoutcome\b/.test(prefer)) {
    const text = `${status === 201 ? 'created' : 'updated'} ${resource.resourceType}/${resource.id ?? ''} version ${resource.meta?.versionId ?? ''}`;
    await sendFhir(ex, status, { resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational', diagnostics: text }] }, headers);
    return;
  }
  await sendFhir(ex, status, resource, headers);
}

export async function create(ctx: FhirContext, ex: Exchange, token: VerifiedAccessToken, resourceType: string): Promise<void> {
  const { repo } = ctx;
  const decision = decide(token, resourceType, 'c');
  const resource = clientFields(await resourceBody(ex.req, resourceType), false);
  await checkWritable(ctx, resource, decision);
  const ifNoneExist = headerValue(ex.req, 'if-none-exist');
  const result = await ctx.writeQueue.run(async () => {
    if (ifNoneExist !== '') {
      const matches = await matching(ctx, resourceType, toQuery(new URLSearchParams(ifNoneExist)), decision);
      if (matches.length > 1) {
        throw new FhirError(412, 'duplicate', 'If-None-Exist matches several resources');
      }
      if (matches[0] !== undefined) {
        return { status: 200, resource: matches[0] };
      }
    }
    return { status: 201, resource: await commit(ctx, { ...resource, id: repo.generateId() }, undefined) };
  });
  await sendWritten(ctx, ex, result.status, result.resource);
}

/** `PUT [type]/[id]`, or `PUT [type]?search` (conditional update) when `id` is undefined. */
export async function update(
  ctx: FhirContext,
  ex: Exchange,
  token: VerifiedAccessToken,
  resourceType: string,
  id: string | undefined,
  params: URLSearchParams,
): Promise<void> {
  const { repo } = ctx;
  const decision = decide(token, resourceType, 'u');
  const incoming = clientFields(await resourceBody(ex.req, resourceType), true);
  if (id !== undefined && incoming.id === undefined) {
    throw new FhirError(400, 'required', 'an update carries the resource with its id');
  }
  if (id !== undefined && incoming.id !== id) {
    throw new FhirError(400, 'invalid', `the id in the body (${incoming.id ?? ''}) is not the id in the URL (${id})`);
  }
  const ifMatch = ifMatchVersion(ex.req);
  await checkWritable(ctx, incoming, decision);
  const result = await ctx.writeQueue.run(async () => {
    let previous: Resource | undefined;
    if (id === undefined) {
      const matches = await matching(ctx, resourceType, toQuery(params), decision);
      if (matches.length > 1) {
        throw new FhirError(412, 'multiple-matches', 'the conditional update matches several resources');
      }
      previous = matches[0];
      if (previous !== undefined && incoming.id !== undefined && incoming.id !== previous.id) {
        throw new FhirError(400, 'invalid', `the id in the body (${incoming.id}) is not the id of the matching resource`);
      }
    } else {
      previous = await existing(ctx, resourceType, id);
    }
    if (previous !== undefined) {
      await checkWritable(ctx, previous, decision);
    }
    checkIfMatch(previous, ifMatch);
    // No current version: update as create, with the id the client chose (or a new one).
    const saved = await commit(ctx, { ...incoming, id: previous?.id ?? incoming.id ?? repo.generateId() }, previous);
    return { status: previous === undefined ? 201 : 200, resource: saved };
  });
  await sendWritten(ctx, ex, result.status, result.resource);
}

export async function patch(ctx: FhirContext, ex: Exchange, token: VerifiedAccessToken, resourceType: string, id: string): Promise<void> {
  const decision = decide(token, resourceType, 'u');
  const operations = await readJsonBody(ex.req, JSON_PATCH_TYPE, 'send a JSON Patch (Content-Type: application/json-patch+json)');
  const ifMatch = ifMatchVersion(ex.req);
  const saved = await ctx.writeQueue.run(async () => {
    const previous = await current(ctx, resourceType, id, decision, ifMatch);
    let patched: Resource;
    try {
      patched = applyJsonPatch(previous, operations);
    } catch (error) {
      if (error instanceof JsonPatchError) {
        throw new FhirError(error.malformed ? 400 : 422, error.malformed ? 'structure' : 'processing', `the JSON Patch cannot be applied: ${error.message}`);
      }
      throw error;
    }
    if (!isRecord(patched) || patched.resourceType !== resourceType || patched.id !== id) {
      throw new FhirError(422, 'processing', 'a patch may not change the resourceType or the id');
    }
    await checkWritable(ctx, patched, decision);
    return commit(ctx, clientFields(patched, true), previous);
  });
  await sendWritten(ctx, ex, 200, saved);
}

export async function remove(ctx: FhirContext, ex: Exchange, token: VerifiedAccessToken, resourceType: string, id: string): Promise<void> {
  const { repo } = ctx;
  const decision = decide(token, resourceType, 'd');
  const ifMatch = ifMatchVersion(ex.req);
  await ctx.writeQueue.run(async () => {
    await current(ctx, resourceType, id, decision, ifMatch);
    await repo.deleteResource(resourceType, id);
  });
  await sendFhir(ex, 204, undefined);
}
