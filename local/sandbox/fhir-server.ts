import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  convertToSearchableReferences,
  DEFAULT_MAX_SEARCH_COUNT,
  DEFAULT_SEARCH_COUNT,
  evalFhirPathTyped,
  formatSearchQuery,
  getSearchParameter,
  getStatus,
  isOk,
  matchesSearchRequest,
  parseSearchRequest,
  toTypedValue,
} from '@medplum/core';
import type { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import type { Bundle, CapabilityStatement, OperationOutcome, OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import { AccessTokenRejected } from './auth-server.js';
import type { VerifiedAccessToken } from './auth-server.js';
import type { PatientCompartment } from './fhir-definitions.js';
import { decideAccess, parseResourceScopes } from './scopes.js';
import type { Permission } from './scopes.js';

export interface FhirServerOptions {
  readonly fhirBaseUrl: string;
  readonly repo: MemoryRepository;
  readonly router: FhirRouter;
  readonly compartment: PatientCompartment;
  readonly verifyAccessToken: (token: string) => Promise<VerifiedAccessToken>;
  /** Served at `/metadata`; a function is asked on every request (the sandbox's quirks shape it). */
  readonly capabilityStatement: CapabilityStatement | (() => CapabilityStatement);
}

type Query = Record<string, string[]>;

const FHIR_JSON = 'application/fhir+json; charset=utf-8';

/** Bearer tokens, no cookies: any origin may call the FHIR API from a browser. */
const CORS_HEADERS: Readonly<Record<string, string>> = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Expose-Headers': 'ETag, Location, WWW-Authenticate',
};

class FhirError extends Error {
  readonly status: number;
  readonly issueCode: OperationOutcomeIssue['code'];
  readonly headers: Readonly<Record<string, string>>;
  constructor(status: number, issueCode: OperationOutcomeIssue['code'], message: string, headers: Readonly<Record<string, string>> = {}) {
    super(message);
    this.name = 'FhirError';
    this.status = status;
    this.issueCode = issueCode;
    this.headers = headers;
  }
}

function outcome(issueCode: OperationOutcomeIssue['code'], diagnostics: string): OperationOutcome {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: issueCode, diagnostics }] };
}

function sendFhir(res: ServerResponse, status: number, body: Resource, headers: Readonly<Record<string, string>> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': FHIR_JSON,
    'Content-Length': Buffer.byteLength(text),
    // Patient data: never cache.
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    ...CORS_HEADERS,
    ...headers,
  });
  res.end(text);
}

/** RFC 6750 §3: no error attribute when the request carried no token at all. */
function bearerChallenge(error?: { code: string; description: string }): string {
  const realm = 'Bearer realm="sandbox-fhir"';
  if (!error) {
    return realm;
  }
  return `${realm}, error="${error.code}", error_description="${error.description.replaceAll('"', "'")}"`;
}

function toQuery(params: URLSearchParams): Query {
  const query: Query = {};
  for (const [key, value] of params) {
    (query[key] ??= []).push(value);
  }
  return query;
}

export interface FhirServer {
  /** Handles a request whose path starts with the FHIR base path; `subPath` is what follows it. */
  handle(req: IncomingMessage, res: ServerResponse, subPath: string, params: URLSearchParams): Promise<void>;
}

export function createFhirServer(options: FhirServerOptions): FhirServer {
  const { fhirBaseUrl, repo, router, compartment } = options;
  const fhirBasePath = new URL(fhirBaseUrl).pathname;

  /** Normalises a reference search value naming a patient: `123`, `Patient/123` or `${base}/Patient/123`. */
  function patientIdOf(value: string): string | undefined {
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
  function linkingParams(resourceType: string): string[] {
    const members = compartment.params(resourceType) ?? [];
    return [...new Set([...members, 'patient', 'subject'])].filter((code) => getSearchParameter(resourceType, code) !== undefined);
  }

  function belongsToPatient(resource: Resource, patientId: string): boolean {
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

  function matchesConstraint(resource: Resource, constraints: readonly string[]): boolean {
    return (
      constraints.length === 0 ||
      constraints.some((q) => matchesSearchRequest(resource, parseSearchRequest(`${resource.resourceType}?${q}`)))
    );
  }

  async function authenticate(req: IncomingMessage): Promise<VerifiedAccessToken> {
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

  function forbidden(message: string): FhirError {
    return new FhirError(403, 'forbidden', message, {
      'WWW-Authenticate': bearerChallenge({ code: 'insufficient_scope', description: message }),
    });
  }

  /** Applies the patient compartment to a search: refuses other patients, adds the patient filter. */
  function confineSearch(resourceType: string, query: Query, patientId: string): void {
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
    const linking = new Set(linkingParams(resourceType));
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
        const ids = value.split(',').map(patientIdOf);
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

  /**
   * Rewrites reference search values to the `Type/id` form medplum matches: absolute URLs under this
   * base become relative, and bare ids get their type when it is unambiguous (a `:Type` modifier, or a
   * parameter with a single target type, like `patient`).
   */
  function normaliseReferences(resourceType: string, query: Query): void {
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

  function integerParam(query: Query, name: string, fallback: number): number {
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

  async function search(resourceType: string, query: Query, patient: string | undefined, constraints: readonly string[]): Promise<Bundle> {
    normaliseReferences(resourceType, query);
    if (patient !== undefined) {
      confineSearch(resourceType, query, patient);
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
    const searchRequest = parseSearchRequest(resourceType, query);
    const linkTo = (pageOffset: number): string =>
      `${fhirBaseUrl}/${resourceType}${formatSearchQuery({ ...searchRequest, offset: pageOffset, count })}`;
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

  async function read(url: string, patient: string | undefined, constraints: readonly string[]): Promise<Resource> {
    const [result, resource] = await router.handleRequest(
      { method: 'GET', url, pathname: '', body: undefined, params: {}, query: {} },
      repo,
    );
    if (!isOk(result) || !resource) {
      throw new FhirError(getStatus(result), result.issue?.[0]?.code ?? 'exception', result.issue?.[0]?.details?.text ?? 'read failed');
    }
    if (patient !== undefined && !belongsToPatient(resource, patient)) {
      throw forbidden(`this token may only read the compartment of patient ${patient}`);
    }
    if (!matchesConstraint(resource, constraints)) {
      throw forbidden('the granted granular scopes do not cover this resource');
    }
    return resource;
  }

  async function route(req: IncomingMessage, res: ServerResponse, subPath: string, params: URLSearchParams): Promise<void> {
    if (req.method === 'OPTIONS') {
      res.writeHead(204, {
        ...CORS_HEADERS,
        'Access-Control-Allow-Methods': 'GET, OPTIONS',
        'Access-Control-Allow-Headers': 'Authorization, Accept, Content-Type',
        'Access-Control-Max-Age': '600',
      });
      res.end();
      return;
    }
    if (subPath === '/metadata') {
      if (req.method !== 'GET') {
        throw new FhirError(405, 'not-supported', 'only GET is supported on /metadata', { Allow: 'GET' });
      }
      const statement = options.capabilityStatement;
      sendFhir(res, 200, typeof statement === 'function' ? statement() : statement);
      return;
    }

    const token = await authenticate(req);
    if (req.method !== 'GET') {
      throw new FhirError(405, 'not-supported', 'the sandbox FHIR server is read-only (read and search)', { Allow: 'GET' });
    }
    const segments = subPath.split('/').filter((s) => s !== '').map(decodeURIComponent);
    const [resourceType, id, history, versionId] = segments;
    if (resourceType === undefined) {
      throw new FhirError(404, 'not-supported', 'system-level interactions are not supported; use [base]/[type]');
    }
    if (!compartment.resourceTypes.has(resourceType)) {
      throw new FhirError(404, 'not-supported', `unknown resource type "${resourceType}"`);
    }
    const isSearch = segments.length === 1;
    const isRead =
      segments.length === 2 ||
      (segments.length === 3 && history === '_history') ||
      (segments.length === 4 && history === '_history' && versionId !== undefined);
    if (!isSearch && !isRead) {
      throw new FhirError(404, 'not-supported', `unsupported path ${fhirBasePath}${subPath}`);
    }

    const permission: Permission = isSearch ? 's' : 'r';
    const decision = decideAccess(parseResourceScopes(token.scope), resourceType, permission, token.patient);
    if (!decision.allowed) {
      throw forbidden(decision.reason);
    }

    if (isSearch) {
      sendFhir(res, 200, await search(resourceType, toQuery(params), decision.patient, decision.constraints));
      return;
    }
    if (history === '_history' && versionId === undefined) {
      // Instance history: check access on the current version, then return the history bundle.
      await read(`/${resourceType}/${id ?? ''}`, decision.patient, decision.constraints);
      const [result, bundle] = await router.handleRequest(
        { method: 'GET', url: `/${resourceType}/${id ?? ''}/_history`, pathname: '', body: undefined, params: {}, query: {} },
        repo,
      );
      if (!isOk(result) || !bundle) {
        throw new FhirError(getStatus(result), result.issue?.[0]?.code ?? 'exception', 'history failed');
      }
      sendFhir(res, 200, bundle);
      return;
    }
    const url = versionId === undefined ? `/${resourceType}/${id ?? ''}` : `/${resourceType}/${id ?? ''}/_history/${versionId}`;
    const resource = await read(url, decision.patient, decision.constraints);
    const headers: Record<string, string> = {};
    if (resource.meta?.versionId) {
      headers.ETag = `W/"${resource.meta.versionId}"`;
    }
    if (resource.meta?.lastUpdated) {
      headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
    }
    sendFhir(res, 200, resource, headers);
  }

  return {
    async handle(req, res, subPath, params) {
      try {
        await route(req, res, subPath, params);
      } catch (error) {
        if (error instanceof FhirError) {
          sendFhir(res, error.status, outcome(error.issueCode, error.message), error.headers);
          return;
        }
        console.error('sandbox FHIR server error:', error);
        sendFhir(res, 500, outcome('exception', 'internal error in the sandbox FHIR server'));
      }
    },
  };
}
