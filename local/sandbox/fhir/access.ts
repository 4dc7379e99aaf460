import type { IncomingMessage } from 'node:http';
import {
  convertToSearchableReferences,
  evalFhirPathTyped,
  getSearchParameter,
  getStatus,
  matchesSearchRequest,
  OperationOutcomeError,
  parseSearchRequest,
  toTypedValue,
} from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import { AccessTokenRejected } from '../auth/grants.js';
import type { VerifiedAccessToken } from '../auth/grants.js';
import { decideAccess, parseResourceScopes } from '../scopes.js';
import type { AccessDecision, Permission } from '../scopes.js';
import type { FhirContext } from './context.js';
import { bearerChallenge, FhirError } from './exchange.js';
import type { Query } from './exchange.js';

/*
 * SMART access control of the FHIR server: the bearer token, the scopes it grants (scopes.ts) and
 * the patient compartment a patient-level token is confined to (reads, searches, Binary through its
 * securityContext).
 */

/** A decision that allows: the token's patient (patient-level tokens) and granular constraints. */
export type Granted = Extract<AccessDecision, { allowed: true }>;

/** Normalises a reference search value naming a patient: `123`, `Patient/123` or `${base}/Patient/123`. */
export function patientIdOf(ctx: FhirContext, value: string): string | undefined {
  const { fhirBaseUrl } = ctx;
  let ref = value;
  if (ref.startsWith(`${fhirBaseUrl}/`)) {
    ref = ref.slice(fhirBaseUrl.length + 1);
  }
  if (!ref.includes('/')) {
    return ref;
  }
  const match = /^Patient\/([^/]+)$/.exec(ref);
  return match?.[1];
}

/** Search parameters through which a resource of this type points at its patient. */
export function linkingParams(ctx: FhirContext, resourceType: string): string[] {
  const { compartment } = ctx;
  const members = compartment.params(resourceType) ?? [];
  return [...new Set([...members, 'patient', 'subject'])].filter((code) => getSearchParameter(resourceType, code) !== undefined);
}

export function belongsToPatient(ctx: FhirContext, resource: Resource, patientId: string): boolean {
  const { compartment } = ctx;
  if (resource.resourceType === 'Patient') {
    return resource.id === patientId;
  }
  const members = compartment.params(resource.resourceType);
  if (!members) {
    // Not a patient-compartment type (Practitioner, Organization...): shared reference data.
    return true;
  }
  const target = `Patient/${patientId}`;
  return members.some((code) => {
    const expression = getSearchParameter(resource.resourceType, code)?.expression;
    if (!expression) {
      return false;
    }
    const values = evalFhirPathTyped(expression, [toTypedValue(resource)]);
    return convertToSearchableReferences(values).includes(target);
  });
}

/**
 * The compartment rule, with Binary added: a Binary is governed by its `securityContext` (FHIR R4
 * Binary), so a patient-level token may read it when that resource is in the token's patient
 * compartment (or is the patient). Without a securityContext, or with one outside the compartment
 * (a shared Practitioner, another patient's document), it is refused.
 */
export async function inPatientCompartment(ctx: FhirContext, resource: Resource, patientId: string): Promise<boolean> {
  const { fhirBaseUrl, compartment } = ctx;
  if (resource.resourceType !== 'Binary') {
    return belongsToPatient(ctx, resource, patientId);
  }
  let reference = resource.securityContext?.reference ?? '';
  if (reference.startsWith(`${fhirBaseUrl}/`)) {
    reference = reference.slice(fhirBaseUrl.length + 1);
  }
  const [type, id, ...rest] = reference.split('/');
  if (type === undefined || id === undefined || rest.length > 0 || type === 'Binary') {
    return false;
  }
  if (type === 'Patient') {
    return id === patientId;
  }
  if (!compartment.params(type)) {
    return false;
  }
  const context = await existing(ctx, type, id);
  return context !== undefined && belongsToPatient(ctx, context, patientId);
}

/** The current version of a resource, or undefined when there is none. */
export async function existing(ctx: FhirContext, resourceType: string, id: string): Promise<Resource | undefined> {
  const { repo } = ctx;
  try {
    return await repo.readResource(resourceType, id);
  } catch (error) {
    if (error instanceof OperationOutcomeError && getStatus(error.outcome) === 404) {
      return undefined;
    }
    throw error;
  }
}

export function matchesConstraint(resource: Resource, constraints: readonly string[]): boolean {
  return (
    constraints.length === 0 ||
    constraints.some((q) => matchesSearchRequest(resource, parseSearchRequest(`${resource.resourceType}?${q}`)))
  );
}

export async function authenticate(ctx: FhirContext, req: IncomingMessage): Promise<VerifiedAccessToken> {
  const { options } = ctx;
  const header = req.headers.authorization;
  if (!header) {
    throw new FhirError(401, 'login', 'an access token is required (Authorization: Bearer ...)', {
      'WWW-Authenticate': bearerChallenge(),
    });
  }
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  if (!match?.[1]) {
    throw new FhirError(401, 'login', 'the Authorization header must use the Bearer scheme', {
      'WWW-Authenticate': bearerChallenge({ code: 'invalid_request', description: 'expected a Bearer token' }),
    });
  }
  try {
    return await options.verifyAccessToken(match[1]);
  } catch (error) {
    if (error instanceof AccessTokenRejected) {
      throw new FhirError(401, error.expired ? 'expired' : 'security', error.message, {
        'WWW-Authenticate': bearerChallenge({ code: 'invalid_token', description: error.message }),
      });
    }
    throw error;
  }
}

export function forbidden(message: string): FhirError {
  return new FhirError(403, 'forbidden', message, {
    'WWW-Authenticate': bearerChallenge({ code: 'insufficient_scope', description: message }),
  });
}

export function decide(token: VerifiedAccessToken, resourceType: string, permission: Permission): Granted {
  const decision = decideAccess(parseResourceScopes(token.scope), resourceType, permission, token.patient);
  if (!decision.allowed) {
    throw forbidden(decision.reason);
  }
  return decision;
}

/** Applies the patient compartment to a search: refuses other patients, adds the patient filter. */
export function confineSearch(ctx: FhirContext, resourceType: string, query: Query, patientId: string): void {
  const { compartment } = ctx;
  if (resourceType === 'Binary') {
    // Binaries belong to a patient through their securityContext, which search cannot filter on.
    throw forbidden('Binary cannot be searched with a patient-level token; read it by id (its DocumentReference links it)');
  }
  if (resourceType === 'Patient') {
    for (const [key, values] of Object.entries(query)) {
      if (key.split(':')[0] === '_id' && values.some((v) => v.split(',').some((id) => id !== patientId))) {
        throw forbidden('this token may only read its own patient');
      }
    }
    (query._id ??= []).push(patientId);
    return;
  }
  if (!compartment.params(resourceType)) {
    return;
  }
  const linking = new Set(linkingParams(ctx, resourceType));
  let named = false;
  for (const [key, values] of Object.entries(query)) {
    if (key.includes('.')) {
      continue; // chained parameter: constrains the target's fields, not which patient
    }
    const [code, modifier] = key.split(':');
    if (code === undefined || !linking.has(code)) {
      continue;
    }
    if (modifier !== undefined && modifier !== 'Patient') {
      throw forbidden(`"${key}" is not allowed with a patient-level token`);
    }
    const normalised: string[] = [];
    for (const value of values) {
      const ids = value.split(',').map((v) => patientIdOf(ctx, v));
      if (ids.some((id) => id !== patientId)) {
        throw forbidden(`this token may only search the compartment of patient ${patientId}`);
      }
      normalised.push(ids.map((id) => `Patient/${id ?? ''}`).join(','));
    }
    query[key] = normalised;
    named = true;
  }
  if (!named) {
    const code = linking.has('patient') ? 'patient' : [...linking][0];
    if (code === undefined) {
      throw forbidden(`${resourceType} cannot be limited to one patient`);
    }
    query[code] = [`Patient/${patientId}`];
  }
}
