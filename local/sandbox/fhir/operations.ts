import type { IncomingMessage } from 'node:http';
import { DEFAULT_MAX_SEARCH_COUNT, DEFAULT_SEARCH_COUNT, getSearchParameter, Operator } from '@medplum/core';
import type { SearchRequest } from '@medplum/core';
import type { Bundle, BundleEntry, Resource } from '@medplum/fhirtypes';
import type { VerifiedAccessToken } from '../auth/grants.js';
import { decideAccess, parseResourceScopes } from '../scopes.js';
import { decide, matchesConstraint } from './access.js';
import type { FhirContext } from './context.js';
import { FHIR_JSON_TYPE, FhirError, FORM_TYPE, isRecord, readRequestBody, sendFhir, toQuery } from './exchange.js';
import type { Exchange, Query } from './exchange.js';
import { integerParam, read } from './read-search.js';

/*
 * Operations: `Patient/[id]/$everything`, and the parameters of an operation (the query, plus a
 * POSTed form or Parameters resource).
 */

/** Parameters of an operation: the query, plus a POSTed form or Parameters resource. */
export async function operationQuery(req: IncomingMessage, params: URLSearchParams): Promise<Query> {
  const query = toQuery(params);
  if (req.method !== 'POST') {
    return query;
  }
  const raw = await readRequestBody(req);
  if (raw.length === 0) {
    return query;
  }
  const contentType = req.headers['content-type'] ?? '';
  if (FORM_TYPE.test(contentType)) {
    return toQuery(new URLSearchParams(raw.toString('utf8')), query);
  }
  if (!FHIR_JSON_TYPE.test(contentType)) {
    throw new FhirError(415, 'not-supported', 'send the operation parameters as a FHIR JSON Parameters resource or a form');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new FhirError(400, 'structure', 'the body is not JSON');
  }
  if (!isRecord(parsed) || parsed.resourceType !== 'Parameters') {
    throw new FhirError(400, 'invalid', 'the body must be a Parameters resource');
  }
  for (const parameter of Array.isArray(parsed.parameter) ? (parsed.parameter as unknown[]) : []) {
    if (!isRecord(parameter) || typeof parameter.name !== 'string') {
      continue;
    }
    const value = Object.entries(parameter).find(([key, v]) => key.startsWith('value') && ['string', 'number', 'boolean'].includes(typeof v))?.[1];
    if (value !== undefined) {
      (query[parameter.name] ??= []).push(String(value));
    }
  }
  return query;
}

/**
 * `Patient/[id]/$everything` (GET or POST): the patient and every resource of its compartment the
 * token may search (granular scopes filter), types in alphabetical order after the Patient. Binaries
 * (outside the compartment) and referenced shared resources are not included. `_type`, `_count`
 * and `_offset`; paging links under the FHIR base.
 */
export async function everything(ctx: FhirContext, ex: Exchange, token: VerifiedAccessToken, patientId: string, query: Query): Promise<void> {
  const { fhirBaseUrl, repo, compartment } = ctx;
  const patientDecision = decide(token, 'Patient', 'r');
  const patient = await read(ctx, `/Patient/${patientId}`, patientDecision.patient, patientDecision.constraints);
  const count = Math.min(integerParam(query, '_count', DEFAULT_SEARCH_COUNT), DEFAULT_MAX_SEARCH_COUNT);
  const offset = integerParam(query, '_offset', 0);
  const typeList = query._type?.flatMap((t) => t.split(',')).filter((t) => t !== '');
  const types = typeList === undefined ? undefined : new Set(typeList);
  const scopes = parseResourceScopes(token.scope);

  const resources: Resource[] = types === undefined || types.has('Patient') ? [patient] : [];
  for (const resourceType of [...compartment.resourceTypes].sort()) {
    const codes = compartment.params(resourceType);
    if (codes === undefined || resourceType === 'Patient' || (types !== undefined && !types.has(resourceType))) {
      continue;
    }
    const decision = decideAccess(scopes, resourceType, 's', token.patient);
    if (!decision.allowed || (decision.patient !== undefined && decision.patient !== patientId)) {
      continue;
    }
    const seen = new Set<string>();
    for (const code of codes.filter((c) => getSearchParameter(resourceType, c) !== undefined)) {
      const request = { resourceType, filters: [{ code, operator: Operator.EQUALS, value: `Patient/${patientId}` }] } as SearchRequest;
      for (const resource of await repo.searchResources(request)) {
        if (!seen.has(resource.id) && matchesConstraint(resource, decision.constraints)) {
          seen.add(resource.id);
          resources.push(resource);
        }
      }
    }
  }

  const linkTo = (pageOffset: number): string => {
    const linkQuery = new URLSearchParams();
    if (typeList !== undefined) {
      linkQuery.set('_type', typeList.join(','));
    }
    linkQuery.set('_count', String(count));
    linkQuery.set('_offset', String(pageOffset));
    return `${fhirBaseUrl}/Patient/${encodeURIComponent(patientId)}/$everything?${linkQuery.toString()}`;
  };
  const link: NonNullable<Bundle['link']> = [{ relation: 'self', url: linkTo(offset) }];
  if (count > 0) {
    link.push({ relation: 'first', url: linkTo(0) });
    if (offset > 0) {
      link.push({ relation: 'previous', url: linkTo(Math.max(0, offset - count)) });
    }
    if (offset + count < resources.length) {
      link.push({ relation: 'next', url: linkTo(offset + count) });
    }
  }
  const entry: BundleEntry[] = resources.slice(offset, offset + count).map((resource) => ({
    fullUrl: `${fhirBaseUrl}/${resource.resourceType}/${resource.id ?? ''}`,
    resource,
    search: { mode: 'match' },
  }));
  await sendFhir(ex, 200, { resourceType: 'Bundle', type: 'searchset', total: resources.length, link, entry });
}
