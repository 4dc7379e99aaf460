import { DEFAULT_MAX_SEARCH_COUNT, DEFAULT_SEARCH_COUNT, formatSearchQuery, getSearchParameter, getStatus, isOk, parseSearchRequest } from '@medplum/core';
import type { SearchRequest } from '@medplum/core';
import type { Bundle, Identifier, Resource } from '@medplum/fhirtypes';
import type { VerifiedAccessToken } from '../auth/grants.js';
import { confineSearch, decide, forbidden, inPatientCompartment, linkingParams, matchesConstraint } from './access.js';
import { sendBinaryContent, withContent } from './binary-content.js';
import type { FhirContext } from './context.js';
import { FhirError, FORM_TYPE, readRequestBody, sendFhir, toQuery, versionHeaders } from './exchange.js';
import type { Exchange, Query } from './exchange.js';

/*
 * Reads and searches: `[type]` and `[type]/_search`, `[type]/[id]`, history, and the compartment
 * search `Patient/[id]/[type]`, on medplum's router; paging links, reference and identifier search
 * values the memory repository cannot match on its own.
 */

/**
 * Rewrites reference search values to the `Type/id` form medplum matches: absolute URLs under this
 * base become relative, and bare ids get their type when it is unambiguous (a `:Type` modifier, or a
 * parameter with a single target type, like `patient`).
 */
export function normaliseReferences(ctx: FhirContext, resourceType: string, query: Query): void {
  const { fhirBaseUrl } = ctx;
  for (const [key, values] of Object.entries(query)) {
    const [code, modifier] = key.split(':');
    if (code === undefined || key.includes('.')) {
      continue;
    }
    const definition = getSearchParameter(resourceType, code);
    if (definition?.type !== 'reference') {
      continue;
    }
    const targets = definition.target ?? [];
    const impliedType = modifier !== undefined && /^[A-Z]/.test(modifier) ? modifier : targets.length === 1 ? targets[0] : undefined;
    query[key] = values.map((value) =>
      value
        .split(',')
        .map((v) => {
          if (v.startsWith(`${fhirBaseUrl}/`)) {
            return v.slice(fhirBaseUrl.length + 1);
          }
          return impliedType !== undefined && v !== '' && !v.includes('/') ? `${impliedType}/${v}` : v;
        })
        .join(','),
    );
  }
}

export function integerParam(query: Query, name: string, fallback: number): number {
  const raw = query[name]?.at(-1);
  if (raw === undefined) {
    return fallback;
  }
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) {
    throw new FhirError(400, 'invalid', `${name} must be a non-negative integer`);
  }
  return value;
}

/**
 * medplum matches a token by the type of the value, which it cannot tell for an Identifier without
 * the StructureDefinitions the sandbox does not load (fhir-definitions.ts): an `identifier` search
 * would match nothing. It is resolved here into the `_id`s of the resources it matches (`system|value`,
 * `|value`, `system|` or `value`, compared exactly; a comma means or, a repeated parameter and).
 */
export async function resolveIdentifiers(ctx: FhirContext, resourceType: string, query: Query): Promise<void> {
  const { repo } = ctx;
  const values = query.identifier;
  if (values === undefined || getSearchParameter(resourceType, 'identifier')?.expression !== `${resourceType}.identifier`) {
    return;
  }
  delete query.identifier;
  const candidates = (await repo.searchResources({ resourceType } as SearchRequest)) as (Resource & { identifier?: Identifier[] })[];
  const matches = (identifier: Identifier, token: string): boolean => {
    const bar = token.indexOf('|');
    if (bar < 0) {
      return identifier.value === token;
    }
    const system = token.slice(0, bar);
    const value = token.slice(bar + 1);
    return (system === '' ? identifier.system === undefined : identifier.system === system) && (value === '' || identifier.value === value);
  };
  for (const value of values) {
    const tokens = value.split(',');
    const ids = candidates.filter((r) => (r.identifier ?? []).some((i) => tokens.some((t) => matches(i, t)))).map((r) => r.id ?? '');
    (query._id ??= []).push(ids.length > 0 ? ids.join(',') : 'sandbox-no-identifier-match');
  }
}

/** A type search; `linkPath` (below the base) is where the paging links point (`/Patient/x/Observation` for a compartment search). */
export async function search(
  ctx: FhirContext,
  resourceType: string,
  query: Query,
  patient: string | undefined,
  constraints: readonly string[],
  linkPath = `/${resourceType}`,
): Promise<Bundle> {
  const { fhirBaseUrl, repo, router } = ctx;
  normaliseReferences(ctx, resourceType, query);
  if (patient !== undefined) {
    confineSearch(ctx, resourceType, query, patient);
  }
  if (constraints.length > 1) {
    throw forbidden('several granular scopes apply to this type; search each of them separately');
  }
  for (const constraint of constraints) {
    for (const [key, value] of new URLSearchParams(constraint)) {
      (query[key] ??= []).push(value);
    }
  }
  const count = Math.min(integerParam(query, '_count', DEFAULT_SEARCH_COUNT), DEFAULT_MAX_SEARCH_COUNT);
  const offset = integerParam(query, '_offset', 0);
  query._count = [String(count)];
  query._offset = [String(offset)];
  // Links repeat the search as asked (before `identifier` becomes `_id` below).
  const searchRequest = parseSearchRequest(resourceType, structuredClone(query));
  await resolveIdentifiers(ctx, resourceType, query);

  const [result, resource] = await router.handleRequest(
    { method: 'GET', url: `/${resourceType}`, pathname: '', body: undefined, params: {}, query },
    repo,
  );
  if (!isOk(result) || resource?.resourceType !== 'Bundle') {
    throw new FhirError(getStatus(result), result.issue?.[0]?.code ?? 'exception', result.issue?.[0]?.details?.text ?? 'search failed');
  }
  const bundle = resource as Bundle;
  const total = bundle.total ?? 0;
  // The memory repository returns bare entries; clients page with absolute links and need fullUrl.
  const linkTo = (pageOffset: number): string =>
    `${fhirBaseUrl}${linkPath}${formatSearchQuery({ ...searchRequest, offset: pageOffset, count })}`;
  const link: NonNullable<Bundle['link']> = [{ relation: 'self', url: linkTo(offset) }];
  if (count > 0) {
    link.push({ relation: 'first', url: linkTo(0) });
    if (offset > 0) {
      link.push({ relation: 'previous', url: linkTo(Math.max(0, offset - count)) });
    }
    if (offset + count < total) {
      link.push({ relation: 'next', url: linkTo(offset + count) });
    }
  }
  return {
    resourceType: 'Bundle',
    type: 'searchset',
    total,
    link,
    entry: (bundle.entry ?? []).map((e) => ({
      fullUrl: `${fhirBaseUrl}/${resourceType}/${e.resource?.id ?? ''}`,
      resource: e.resource,
      search: { mode: 'match' },
    })),
  };
}

export async function read(ctx: FhirContext, url: string, patient: string | undefined, constraints: readonly string[]): Promise<Resource> {
  const { repo, router } = ctx;
  const [result, resource] = await router.handleRequest(
    { method: 'GET', url, pathname: '', body: undefined, params: {}, query: {} },
    repo,
  );
  if (!isOk(result) || !resource) {
    throw new FhirError(getStatus(result), result.issue?.[0]?.code ?? 'exception', result.issue?.[0]?.details?.text ?? 'read failed');
  }
  if (patient !== undefined && !(await inPatientCompartment(ctx, resource, patient))) {
    throw forbidden(`this token may only read the compartment of patient ${patient}`);
  }
  if (!matchesConstraint(resource, constraints)) {
    throw forbidden('the granted granular scopes do not cover this resource');
  }
  return resource;
}

/** `Patient/[id]/[type]`: the type's search within that patient's compartment. */
export async function compartmentSearch(
  ctx: FhirContext,
  ex: Exchange,
  token: VerifiedAccessToken,
  patientId: string,
  resourceType: string,
  params: URLSearchParams,
): Promise<void> {
  const { compartment } = ctx;
  if (resourceType === 'Patient' || !compartment.params(resourceType)) {
    throw new FhirError(400, 'not-supported', `${resourceType} is not a type of the Patient compartment`);
  }
  const decision = decide(token, resourceType, 's');
  const query = toQuery(params);
  const linking = linkingParams(ctx, resourceType);
  const code = linking.includes('patient') ? 'patient' : linking[0];
  if (code === undefined) {
    throw new FhirError(400, 'not-supported', `${resourceType} cannot be searched by patient`);
  }
  const value = `Patient/${patientId}`;
  if (!(query[code] ?? []).includes(value)) {
    (query[code] ??= []).push(value);
  }
  const bundle = await search(ctx, resourceType, query, decision.patient, decision.constraints, `/Patient/${encodeURIComponent(patientId)}/${resourceType}`);
  await sendFhir(ex, 200, withContent(ctx, bundle));
}

export async function readRoute(
  ctx: FhirContext,
  ex: Exchange,
  token: VerifiedAccessToken,
  resourceType: string,
  id: string,
  versionId: string | undefined,
): Promise<void> {
  const decision = decide(token, resourceType, 'r');
  const url = versionId === undefined ? `/${resourceType}/${id}` : `/${resourceType}/${id}/_history/${versionId}`;
  const resource = await read(ctx, url, decision.patient, decision.constraints);
  const headers = versionHeaders(resource);
  if (resource.resourceType === 'Binary' && !ex.wire.explicit) {
    await sendBinaryContent(ctx, ex, resource, headers);
    return;
  }
  await sendFhir(ex, 200, withContent(ctx, resource), headers);
}

/** `[type]` (GET) and `[type]/_search` (GET, or POST with a form body merged with the URL's parameters). */
export async function searchType(ctx: FhirContext, ex: Exchange, token: VerifiedAccessToken, resourceType: string, params: URLSearchParams): Promise<void> {
  const query = toQuery(params);
  if (ex.req.method === 'POST') {
    if (!FORM_TYPE.test(ex.req.headers['content-type'] ?? '')) {
      throw new FhirError(415, 'not-supported', 'POST _search takes an application/x-www-form-urlencoded body');
    }
    toQuery(new URLSearchParams((await readRequestBody(ex.req)).toString('utf8')), query);
  }
  const decision = decide(token, resourceType, 's');
  await sendFhir(ex, 200, withContent(ctx, await search(ctx, resourceType, query, decision.patient, decision.constraints)));
}

/** `[type]/[id]/_history`: access is checked on the current version, then the history bundle, newest first. */
export async function instanceHistory(ctx: FhirContext, ex: Exchange, token: VerifiedAccessToken, resourceType: string, id: string): Promise<void> {
  const { repo, router } = ctx;
  const decision = decide(token, resourceType, 'r');
  await read(ctx, `/${resourceType}/${id}`, decision.patient, decision.constraints);
  const [result, bundle] = await router.handleRequest(
    { method: 'GET', url: `/${resourceType}/${id}/_history`, pathname: '', body: undefined, params: {}, query: {} },
    repo,
  );
  if (!isOk(result) || bundle?.resourceType !== 'Bundle') {
    throw new FhirError(getStatus(result), result.issue?.[0]?.code ?? 'exception', 'history failed');
  }
  // Newest first (medplum's memory repository reverses its stored list in place on every call).
  const entries = [...(bundle.entry ?? [])].sort((a, b) => {
    const byTime = (b.resource?.meta?.lastUpdated ?? '').localeCompare(a.resource?.meta?.lastUpdated ?? '');
    return byTime !== 0 ? byTime : Number(b.resource?.meta?.versionId ?? 0) - Number(a.resource?.meta?.versionId ?? 0);
  });
  await sendFhir(ex, 200, withContent(ctx, { ...bundle, ...(entries.length > 0 ? { entry: entries } : {}) }));
}
