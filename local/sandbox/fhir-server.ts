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
  Operator,
  OperationOutcomeError,
  parseSearchRequest,
  toTypedValue,
} from '@medplum/core';
import type { SearchRequest } from '@medplum/core';
import type { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import type { Bundle, BundleEntry, CapabilityStatement, Identifier, OperationOutcome, OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import { AccessTokenRejected } from './auth-server.js';
import type { VerifiedAccessToken } from './auth-server.js';
import type { PatientCompartment } from './fhir-definitions.js';
import { FHIR_CONTENT_TYPES, negotiate, waitUnlessGone, writeAnswer } from './fhir-wire.js';
import type { Negotiated } from './fhir-wire.js';
import { toFhirXml } from './fhir-xml.js';
import { readBody } from './http-util.js';
import { applyJsonPatch, JsonPatchError } from './json-patch.js';
import { decideAccess, parseResourceScopes } from './scopes.js';
import type { AccessDecision, Permission } from './scopes.js';
import type { SandboxFaults } from './types.js';

export interface FhirServerOptions {
  readonly fhirBaseUrl: string;
  readonly repo: MemoryRepository;
  readonly router: FhirRouter;
  readonly compartment: PatientCompartment;
  readonly verifyAccessToken: (token: string) => Promise<VerifiedAccessToken>;
  /** Served at `/metadata`; a function is asked on every request (the sandbox's quirks shape it). */
  readonly capabilityStatement: CapabilityStatement | (() => CapabilityStatement);
  /** `fhir401`, `fhirDelayMs` and `fhirDropConnection` are read from here on every request. */
  readonly faults?: SandboxFaults;
  /** The bytes of a Binary, by id: the repository holds Binaries without `data` (see data.ts). */
  readonly binaryContent?: (id: string) => Buffer | undefined;
}

type Query = Record<string, string[]>;
type Granted = Extract<AccessDecision, { allowed: true }>;

/** Resource types the sandbox accepts writes for (create, update, conditional update, patch, delete). */
export const WRITABLE_TYPES: ReadonlySet<string> = new Set(['Observation', 'Basic']);

/** Request bodies (resources, JSON Patches, `_search` forms, operation Parameters). */
const MAX_REQUEST_BODY_BYTES = 8 * 1024 * 1024;

const FORM_TYPE = /^application\/x-www-form-urlencoded\s*(;|$)/i;
const FHIR_JSON_TYPE = /^application\/(fhir\+)?json\s*(;|$)/i;
const JSON_PATCH_TYPE = /^application\/json-patch\+json\s*(;|$)/i;

/** Bearer tokens, no cookies: any origin may call the FHIR API from a browser. */
const CORS_HEADERS: Readonly<Record<string, string>> = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Expose-Headers': 'ETag, Location, WWW-Authenticate',
};

class FhirError extends Error {
  readonly status: number;
  readonly issueCode: OperationOutcomeIssue['code'];
  readonly headers: Readonly<Record<string, string>>;
  constructor(
    status: number,
    issueCode: OperationOutcomeIssue['code'],
    message: string,
    headers: Readonly<Record<string, string>> = {},
    errorOptions?: ErrorOptions,
  ) {
    super(message, errorOptions);
    this.name = 'FhirError';
    this.status = status;
    this.issueCode = issueCode;
    this.headers = headers;
  }
}

function outcome(issueCode: OperationOutcomeIssue['code'], diagnostics: string): OperationOutcome {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: issueCode, diagnostics }] };
}

/** One request being answered: how (format, gzip) and whether the answer is to be cut off. */
interface Exchange {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly wire: Negotiated;
  /** `faults.fhirDropConnection` was on when the request was taken. */
  drop: boolean;
}

/** A FHIR answer (JSON or XML as negotiated, gzip when accepted); no body for `undefined`. */
async function sendFhir(ex: Exchange, status: number, body: Resource | undefined, headers: Readonly<Record<string, string>> = {}): Promise<void> {
  const common = {
    // Patient data: never cache.
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    Vary: 'Accept, Accept-Encoding',
    ...CORS_HEADERS,
  };
  if (body === undefined) {
    await writeAnswer(ex.res, status, { ...common, ...headers }, undefined, { drop: ex.drop });
    return;
  }
  const text = ex.wire.format === 'xml' ? toFhirXml(body) : JSON.stringify(body);
  await writeAnswer(ex.res, status, { 'Content-Type': FHIR_CONTENT_TYPES[ex.wire.format], ...common, ...headers }, Buffer.from(text, 'utf8'), {
    gzip: ex.wire.gzip,
    drop: ex.drop,
  });
}

/** RFC 6750 §3: no error attribute when the request carried no token at all. */
function bearerChallenge(error?: { code: string; description: string }): string {
  const realm = 'Bearer realm="sandbox-fhir"';
  if (!error) {
    return realm;
  }
  return `${realm}, error="${error.code}", error_description="${error.description.replaceAll('"', "'")}"`;
}

/** Search parameters as medplum takes them; `_format` is for the answer, not the search. */
function toQuery(params: URLSearchParams, into: Query = {}): Query {
  for (const [key, value] of params) {
    if (key !== '_format') {
      (into[key] ??= []).push(value);
    }
  }
  return into;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `W/"3"` or `"3"` → `3`. */
function ifMatchVersion(req: IncomingMessage): string | undefined {
  const header = req.headers['if-match'];
  if (header === undefined) {
    return undefined;
  }
  const match = /^(?:W\/)?"([^"]*)"$/.exec(header.trim());
  if (!match) {
    throw new FhirError(400, 'invalid', 'If-Match must be an entity tag such as W/"1"');
  }
  return match[1];
}

/** A request header as one string ('' when absent; repeated ones joined). */
function headerValue(req: IncomingMessage, name: string): string {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(', ') : (value ?? '');
}

function versionHeaders(resource: Resource): Record<string, string> {
  const headers: Record<string, string> = {};
  if (resource.meta?.versionId) {
    headers.ETag = `W/"${resource.meta.versionId}"`;
  }
  if (resource.meta?.lastUpdated) {
    headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  }
  return headers;
}

export interface FhirServer {
  /** Handles a request whose path starts with the FHIR base path; `subPath` is what follows it. */
  handle(req: IncomingMessage, res: ServerResponse, subPath: string, params: URLSearchParams): Promise<void>;
}

export function createFhirServer(options: FhirServerOptions): FhirServer {
  const { fhirBaseUrl, repo, router, compartment } = options;
  const fhirBasePath = new URL(fhirBaseUrl).pathname;

  // Writes run one at a time, so a check (If-Match, the compartment) and the write it guards see the
  // same version of a resource.
  let writeQueue: Promise<unknown> = Promise.resolve();
  function serialized<T>(work: () => Promise<T>): Promise<T> {
    const run = writeQueue.then(work, work);
    writeQueue = run.catch(() => undefined);
    return run;
  }

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

  /**
   * The compartment rule, with Binary added: a Binary is governed by its `securityContext` (FHIR R4
   * Binary), so a patient-level token may read it when that resource is in the token's patient
   * compartment (or is the patient). Without a securityContext, or with one outside the compartment
   * (a shared Practitioner, another patient's document), it is refused.
   */
  async function inPatientCompartment(resource: Resource, patientId: string): Promise<boolean> {
    if (resource.resourceType !== 'Binary') {
      return belongsToPatient(resource, patientId);
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
    const context = await existing(type, id);
    return context !== undefined && belongsToPatient(context, patientId);
  }

  /** The current version of a resource, or undefined when there is none. */
  async function existing(resourceType: string, id: string): Promise<Resource | undefined> {
    try {
      return await repo.readResource(resourceType, id);
    } catch (error) {
      if (error instanceof OperationOutcomeError && getStatus(error.outcome) === 404) {
        return undefined;
      }
      throw error;
    }
  }

  /** Attaches the bytes of Binaries (alone or in a Bundle) as base64 `data`, for FHIR JSON and XML. */
  function withContent<T extends Resource>(resource: T): T {
    if (resource.resourceType === 'Binary' && resource.data === undefined && resource.id !== undefined) {
      const bytes = options.binaryContent?.(resource.id);
      return bytes === undefined ? resource : { ...resource, data: bytes.toString('base64') };
    }
    if (resource.resourceType === 'Bundle' && resource.entry?.some((e) => e.resource?.resourceType === 'Binary')) {
      return { ...resource, entry: resource.entry.map((e) => (e.resource ? { ...e, resource: withContent(e.resource) } : e)) };
    }
    return resource;
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

  function decide(token: VerifiedAccessToken, resourceType: string, permission: Permission): Granted {
    const decision = decideAccess(parseResourceScopes(token.scope), resourceType, permission, token.patient);
    if (!decision.allowed) {
      throw forbidden(decision.reason);
    }
    return decision;
  }

  /** Applies the patient compartment to a search: refuses other patients, adds the patient filter. */
  function confineSearch(resourceType: string, query: Query, patientId: string): void {
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

  /**
   * medplum matches a token by the type of the value, which it cannot tell for an Identifier without
   * the StructureDefinitions the sandbox does not load (fhir-definitions.ts): an `identifier` search
   * would match nothing. It is resolved here into the `_id`s of the resources it matches (`system|value`,
   * `|value`, `system|` or `value`, compared exactly; a comma means or, a repeated parameter and).
   */
  async function resolveIdentifiers(resourceType: string, query: Query): Promise<void> {
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
  async function search(
    resourceType: string,
    query: Query,
    patient: string | undefined,
    constraints: readonly string[],
    linkPath = `/${resourceType}`,
  ): Promise<Bundle> {
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
    // Links repeat the search as asked (before `identifier` becomes `_id` below).
    const searchRequest = parseSearchRequest(resourceType, structuredClone(query));
    await resolveIdentifiers(resourceType, query);

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

  async function read(url: string, patient: string | undefined, constraints: readonly string[]): Promise<Resource> {
    const [result, resource] = await router.handleRequest(
      { method: 'GET', url, pathname: '', body: undefined, params: {}, query: {} },
      repo,
    );
    if (!isOk(result) || !resource) {
      throw new FhirError(getStatus(result), result.issue?.[0]?.code ?? 'exception', result.issue?.[0]?.details?.text ?? 'read failed');
    }
    if (patient !== undefined && !(await inPatientCompartment(resource, patient))) {
      throw forbidden(`this token may only read the compartment of patient ${patient}`);
    }
    if (!matchesConstraint(resource, constraints)) {
      throw forbidden('the granted granular scopes do not cover this resource');
    }
    return resource;
  }

  async function body(req: IncomingMessage): Promise<Buffer> {
    try {
      return await readBody(req, MAX_REQUEST_BODY_BYTES);
    } catch (error) {
      throw new FhirError(413, 'too-costly', `the request body is larger than ${MAX_REQUEST_BODY_BYTES} bytes`, {}, { cause: error });
    }
  }

  /** A resource of `resourceType` sent as FHIR JSON (create, update). */
  async function resourceBody(req: IncomingMessage, resourceType: string): Promise<Resource> {
    if (!FHIR_JSON_TYPE.test(req.headers['content-type'] ?? '')) {
      throw new FhirError(415, 'not-supported', 'send the resource as FHIR JSON (Content-Type: application/fhir+json)');
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse((await body(req)).toString('utf8'));
    } catch (error) {
      if (error instanceof FhirError) {
        throw error;
      }
      throw new FhirError(400, 'structure', 'the body is not JSON');
    }
    if (!isRecord(parsed) || parsed.resourceType !== resourceType) {
      throw new FhirError(400, 'invalid', `the body must be a ${resourceType} resource`);
    }
    return parsed as unknown as Resource;
  }

  /** Stores a new version (`previous` undefined: the first); versions count 1, 2, 3… */
  function commit(resource: Resource, previous: Resource | undefined): Promise<Resource> {
    const before = previous?.meta?.versionId;
    const versionId = previous === undefined ? '1' : before !== undefined && /^\d+$/.test(before) ? String(Number(before) + 1) : repo.generateId();
    // createResource stores the resource as given (an upsert that also records the version in history).
    return repo.createResource({ ...resource, meta: { ...resource.meta, versionId, lastUpdated: new Date().toISOString() } });
  }

  /** Without the server-assigned fields: `meta.versionId` and `meta.lastUpdated` (and `id` for a create). */
  function clientFields(resource: Resource, keepId: boolean): Resource {
    const { id, meta, ...rest } = resource;
    const { versionId: _versionId, lastUpdated: _lastUpdated, ...otherMeta } = meta ?? {};
    return {
      ...rest,
      ...(keepId && id !== undefined ? { id } : {}),
      ...(Object.keys(otherMeta).length > 0 ? { meta: otherMeta } : {}),
    } as Resource;
  }

  /** A resource a write would leave behind must stay inside what the token may write. */
  async function checkWritable(resource: Resource, decision: Granted): Promise<void> {
    if (decision.patient !== undefined && !(await inPatientCompartment(resource, decision.patient))) {
      throw forbidden(`this token may only write resources in the compartment of patient ${decision.patient}`);
    }
    if (!matchesConstraint(resource, decision.constraints)) {
      throw forbidden('the granted granular scopes do not cover this resource');
    }
  }

  /** The current version, which must exist and be within the token's reach; If-Match is checked against it. */
  async function current(resourceType: string, id: string, decision: Granted, ifMatch: string | undefined): Promise<Resource> {
    const resource = await existing(resourceType, id);
    if (resource === undefined) {
      throw new FhirError(404, 'not-found', `${resourceType}/${id} is not known`);
    }
    await checkWritable(resource, decision);
    checkIfMatch(resource, ifMatch);
    return resource;
  }

  function checkIfMatch(resource: Resource | undefined, ifMatch: string | undefined): void {
    if (ifMatch !== undefined && resource?.meta?.versionId !== ifMatch) {
      throw new FhirError(
        412,
        'conflict',
        resource === undefined ? 'If-Match names a version of a resource that does not exist' : `If-Match W/"${ifMatch}" is not the current version W/"${resource.meta?.versionId ?? ''}"`,
      );
    }
  }

  /** Resources a conditional interaction's search matches (at most 2: enough to tell none, one, several). */
  async function matching(resourceType: string, query: Query, decision: Granted): Promise<Resource[]> {
    for (const control of Object.keys(query).filter((key) => key.startsWith('_') && key !== '_id')) {
      delete query[control];
    }
    if (Object.keys(query).length === 0) {
      throw new FhirError(400, 'invalid', 'a conditional interaction needs search parameters');
    }
    query._count = ['2'];
    const bundle = await search(resourceType, query, decision.patient, []);
    return (bundle.entry ?? []).flatMap((e) => (e.resource ? [e.resource] : []));
  }

  async function sendWritten(ex: Exchange, status: number, resource: Resource): Promise<void> {
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

  async function create(ex: Exchange, token: VerifiedAccessToken, resourceType: string): Promise<void> {
    const decision = decide(token, resourceType, 'c');
    const resource = clientFields(await resourceBody(ex.req, resourceType), false);
    await checkWritable(resource, decision);
    const ifNoneExist = headerValue(ex.req, 'if-none-exist');
    const result = await serialized(async () => {
      if (ifNoneExist !== '') {
        const matches = await matching(resourceType, toQuery(new URLSearchParams(ifNoneExist)), decision);
        if (matches.length > 1) {
          throw new FhirError(412, 'duplicate', 'If-None-Exist matches several resources');
        }
        if (matches[0] !== undefined) {
          return { status: 200, resource: matches[0] };
        }
      }
      return { status: 201, resource: await commit({ ...resource, id: repo.generateId() }, undefined) };
    });
    await sendWritten(ex, result.status, result.resource);
  }

  /** `PUT [type]/[id]`, or `PUT [type]?search` (conditional update) when `id` is undefined. */
  async function update(ex: Exchange, token: VerifiedAccessToken, resourceType: string, id: string | undefined, params: URLSearchParams): Promise<void> {
    const decision = decide(token, resourceType, 'u');
    const incoming = clientFields(await resourceBody(ex.req, resourceType), true);
    if (id !== undefined && incoming.id === undefined) {
      throw new FhirError(400, 'required', 'an update carries the resource with its id');
    }
    if (id !== undefined && incoming.id !== id) {
      throw new FhirError(400, 'invalid', `the id in the body (${incoming.id ?? ''}) is not the id in the URL (${id})`);
    }
    const ifMatch = ifMatchVersion(ex.req);
    await checkWritable(incoming, decision);
    const result = await serialized(async () => {
      let previous: Resource | undefined;
      if (id === undefined) {
        const matches = await matching(resourceType, toQuery(params), decision);
        if (matches.length > 1) {
          throw new FhirError(412, 'multiple-matches', 'the conditional update matches several resources');
        }
        previous = matches[0];
        if (previous !== undefined && incoming.id !== undefined && incoming.id !== previous.id) {
          throw new FhirError(400, 'invalid', `the id in the body (${incoming.id}) is not the id of the matching resource`);
        }
      } else {
        previous = await existing(resourceType, id);
      }
      if (previous !== undefined) {
        await checkWritable(previous, decision);
      }
      checkIfMatch(previous, ifMatch);
      // No current version: update as create, with the id the client chose (or a new one).
      const saved = await commit({ ...incoming, id: previous?.id ?? incoming.id ?? repo.generateId() }, previous);
      return { status: previous === undefined ? 201 : 200, resource: saved };
    });
    await sendWritten(ex, result.status, result.resource);
  }

  async function patch(ex: Exchange, token: VerifiedAccessToken, resourceType: string, id: string): Promise<void> {
    const decision = decide(token, resourceType, 'u');
    if (!JSON_PATCH_TYPE.test(ex.req.headers['content-type'] ?? '')) {
      throw new FhirError(415, 'not-supported', 'send a JSON Patch (Content-Type: application/json-patch+json)');
    }
    let operations: unknown;
    try {
      operations = JSON.parse((await body(ex.req)).toString('utf8'));
    } catch (error) {
      if (error instanceof FhirError) {
        throw error;
      }
      throw new FhirError(400, 'structure', 'the body is not JSON');
    }
    const ifMatch = ifMatchVersion(ex.req);
    const saved = await serialized(async () => {
      const previous = await current(resourceType, id, decision, ifMatch);
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
      await checkWritable(patched, decision);
      return commit(clientFields(patched, true), previous);
    });
    await sendWritten(ex, 200, saved);
  }

  async function remove(ex: Exchange, token: VerifiedAccessToken, resourceType: string, id: string): Promise<void> {
    const decision = decide(token, resourceType, 'd');
    const ifMatch = ifMatchVersion(ex.req);
    await serialized(async () => {
      await current(resourceType, id, decision, ifMatch);
      await repo.deleteResource(resourceType, id);
    });
    await sendFhir(ex, 204, undefined);
  }

  /** `Patient/[id]/[type]`: the type's search within that patient's compartment. */
  async function compartmentSearch(ex: Exchange, token: VerifiedAccessToken, patientId: string, resourceType: string, params: URLSearchParams): Promise<void> {
    if (resourceType === 'Patient' || !compartment.params(resourceType)) {
      throw new FhirError(400, 'not-supported', `${resourceType} is not a type of the Patient compartment`);
    }
    const decision = decide(token, resourceType, 's');
    const query = toQuery(params);
    const linking = linkingParams(resourceType);
    const code = linking.includes('patient') ? 'patient' : linking[0];
    if (code === undefined) {
      throw new FhirError(400, 'not-supported', `${resourceType} cannot be searched by patient`);
    }
    const value = `Patient/${patientId}`;
    if (!(query[code] ?? []).includes(value)) {
      (query[code] ??= []).push(value);
    }
    const bundle = await search(resourceType, query, decision.patient, decision.constraints, `/Patient/${encodeURIComponent(patientId)}/${resourceType}`);
    await sendFhir(ex, 200, withContent(bundle));
  }

  /** Parameters of an operation: the query, plus a POSTed form or Parameters resource. */
  async function operationQuery(req: IncomingMessage, params: URLSearchParams): Promise<Query> {
    const query = toQuery(params);
    if (req.method !== 'POST') {
      return query;
    }
    const raw = await body(req);
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
  async function everything(ex: Exchange, token: VerifiedAccessToken, patientId: string, query: Query): Promise<void> {
    const patientDecision = decide(token, 'Patient', 'r');
    const patient = await read(`/Patient/${patientId}`, patientDecision.patient, patientDecision.constraints);
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

  /** A Binary read without a FHIR format asked for: the content itself, in its own content type. */
  async function sendBinaryContent(ex: Exchange, resource: Resource, headers: Readonly<Record<string, string>>): Promise<void> {
    if (resource.resourceType !== 'Binary') {
      return;
    }
    const bytes = (resource.id === undefined ? undefined : options.binaryContent?.(resource.id)) ?? Buffer.from(resource.data ?? '', 'base64');
    await writeAnswer(
      ex.res,
      200,
      {
        'Content-Type': resource.contentType ?? 'application/octet-stream',
        'Cache-Control': 'no-store',
        'X-Content-Type-Options': 'nosniff',
        ...CORS_HEADERS,
        ...headers,
        // As from a content server behind a sticky load balancer: a cookie and a node header that a
        // proxy in front of this EHR must not hand to browsers.
        'Set-Cookie': `sandbox-content-node=1; Path=${fhirBasePath}/Binary; HttpOnly; SameSite=Lax`,
        'X-Content-Node': 'sandbox-1',
      },
      bytes,
      { drop: ex.drop },
    );
  }

  /**
   * Test switches, for interactions that need a token (not `/metadata`, not CORS preflights): a
   * delay first, then a refused token, and a connection that breaks while the answer is sent.
   * Returns false when the client went away during the delay (nothing is answered then).
   */
  async function applyFaults(ex: Exchange): Promise<boolean> {
    const faults = options.faults;
    if (faults === undefined) {
      return true;
    }
    const delay = faults.fhirDelayMs;
    if (delay !== undefined) {
      if (!Number.isInteger(delay) || delay < 0 || delay > 600_000) {
        throw new TypeError(`faults.fhirDelayMs must be an integer from 0 to 600000, got ${String(delay)}`);
      }
      if (!(await waitUnlessGone(ex.res, delay))) {
        return false;
      }
    }
    ex.drop = faults.fhirDropConnection === true;
    const refuse = faults.fhir401;
    if (refuse !== undefined) {
      if (refuse !== 'once' && refuse !== 'always') {
        throw new TypeError(`faults.fhir401 must be 'once' or 'always', got ${String(refuse)}`);
      }
      if (refuse === 'once') {
        faults.fhir401 = undefined;
      }
      const message = 'the access token was refused (sandbox fault fhir401)';
      throw new FhirError(401, 'expired', message, { 'WWW-Authenticate': bearerChallenge({ code: 'invalid_token', description: message }) });
    }
    const canned = faults.fhirAnswer;
    if (canned !== undefined) {
      const path = new URL(ex.req.url ?? '/', 'http://sandbox.invalid').pathname.slice(fhirBasePath.length + 1);
      if (canned.pathPrefix === undefined || path.startsWith(canned.pathPrefix)) {
        const body = canned.body === undefined ? undefined : canned.body.startsWith('base64:') ? Buffer.from(canned.body.slice(7), 'base64') : Buffer.from(canned.body, 'utf8');
        ex.res.writeHead(canned.status, { ...(canned.headers ?? {}) });
        ex.res.end(body);
        return false;
      }
    }
    return true;
  }

  function methodNotAllowed(allow: string, what: string): FhirError {
    return new FhirError(405, 'not-supported', `${what} takes ${allow}`, { Allow: allow });
  }

  function checkWritableType(resourceType: string): void {
    if (!WRITABLE_TYPES.has(resourceType)) {
      throw new FhirError(405, 'not-supported', `the sandbox FHIR server takes writes for ${[...WRITABLE_TYPES].join(' and ')} only; ${resourceType} is read-only`, {
        Allow: 'GET',
      });
    }
  }

  async function route(ex: Exchange, subPath: string, params: URLSearchParams): Promise<void> {
    const { req, res } = ex;
    if (req.method === 'OPTIONS') {
      res.writeHead(204, {
        ...CORS_HEADERS,
        'Access-Control-Allow-Methods': 'GET, POST, PUT, PATCH, DELETE, OPTIONS',
        'Access-Control-Allow-Headers': 'Authorization, Accept, Content-Type, If-Match, If-None-Exist, Prefer',
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
      await sendFhir(ex, 200, typeof statement === 'function' ? statement() : statement);
      return;
    }
    if (!(await applyFaults(ex))) {
      return;
    }

    const token = await authenticate(req);
    const method = req.method ?? 'GET';
    const segments = subPath.split('/').filter((s) => s !== '').map(decodeURIComponent);
    const [resourceType, id, third, versionId] = segments;
    if (resourceType === undefined) {
      throw new FhirError(404, 'not-supported', 'system-level interactions are not supported; use [base]/[type]');
    }
    if (!compartment.resourceTypes.has(resourceType)) {
      throw new FhirError(404, 'not-supported', `unknown resource type "${resourceType}"`);
    }

    // [type], [type]/_search
    if (segments.length === 1 || (segments.length === 2 && id === '_search')) {
      if (method === 'GET' || (method === 'POST' && id === '_search')) {
        const query = toQuery(params);
        if (method === 'POST') {
          if (!FORM_TYPE.test(req.headers['content-type'] ?? '')) {
            throw new FhirError(415, 'not-supported', 'POST _search takes an application/x-www-form-urlencoded body');
          }
          toQuery(new URLSearchParams((await body(req)).toString('utf8')), query);
        }
        const decision = decide(token, resourceType, 's');
        await sendFhir(ex, 200, withContent(await search(resourceType, query, decision.patient, decision.constraints)));
        return;
      }
      if (segments.length === 2) {
        throw methodNotAllowed('GET, POST', '[type]/_search');
      }
      if (method === 'POST') {
        checkWritableType(resourceType);
        await create(ex, token, resourceType);
        return;
      }
      if (method === 'PUT') {
        checkWritableType(resourceType);
        if ([...params.keys()].every((key) => key === '_format')) {
          throw new FhirError(400, 'invalid', 'an update needs an id ([type]/[id]) or search parameters (conditional update)');
        }
        await update(ex, token, resourceType, undefined, params);
        return;
      }
      throw methodNotAllowed('GET, POST, PUT', '[type]');
    }
    if (id === undefined) {
      throw new FhirError(404, 'not-supported', `unsupported path ${fhirBasePath}${subPath}`);
    }

    // [type]/[id]
    if (segments.length === 2) {
      switch (method) {
        case 'GET':
          await readRoute(ex, token, resourceType, id, undefined);
          return;
        case 'PUT':
          checkWritableType(resourceType);
          await update(ex, token, resourceType, id, params);
          return;
        case 'PATCH':
          checkWritableType(resourceType);
          await patch(ex, token, resourceType, id);
          return;
        case 'DELETE':
          checkWritableType(resourceType);
          await remove(ex, token, resourceType, id);
          return;
        default:
          throw methodNotAllowed('GET, PUT, PATCH, DELETE', '[type]/[id]');
      }
    }

    // Patient/[id]/$everything, Patient/[id]/[type]
    if (segments.length === 3 && resourceType === 'Patient' && third === '$everything') {
      if (method !== 'GET' && method !== 'POST') {
        throw methodNotAllowed('GET, POST', '$everything');
      }
      await everything(ex, token, id, await operationQuery(req, params));
      return;
    }
    if (segments.length === 3 && resourceType === 'Patient' && third !== undefined && compartment.resourceTypes.has(third)) {
      if (method !== 'GET') {
        throw methodNotAllowed('GET', 'a compartment search');
      }
      await compartmentSearch(ex, token, id, third, params);
      return;
    }

    // [type]/[id]/_history[/[vid]]
    const isHistory = third === '_history' && (segments.length === 3 || (segments.length === 4 && versionId !== undefined));
    if (!isHistory) {
      throw new FhirError(404, 'not-supported', `unsupported path ${fhirBasePath}${subPath}`);
    }
    if (method !== 'GET') {
      throw methodNotAllowed('GET', 'history');
    }
    if (segments.length === 4) {
      await readRoute(ex, token, resourceType, id, versionId);
      return;
    }
    // Instance history: check access on the current version, then return the history bundle.
    const decision = decide(token, resourceType, 'r');
    await read(`/${resourceType}/${id}`, decision.patient, decision.constraints);
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
    await sendFhir(ex, 200, withContent({ ...bundle, ...(entries.length > 0 ? { entry: entries } : {}) }));
  }

  async function readRoute(ex: Exchange, token: VerifiedAccessToken, resourceType: string, id: string, versionId: string | undefined): Promise<void> {
    const decision = decide(token, resourceType, 'r');
    const url = versionId === undefined ? `/${resourceType}/${id}` : `/${resourceType}/${id}/_history/${versionId}`;
    const resource = await read(url, decision.patient, decision.constraints);
    const headers = versionHeaders(resource);
    if (resource.resourceType === 'Binary' && !ex.wire.explicit) {
      await sendBinaryContent(ex, resource, headers);
      return;
    }
    await sendFhir(ex, 200, withContent(resource), headers);
  }

  return {
    async handle(req, res, subPath, params) {
      const ex: Exchange = { req, res, wire: negotiate(req, params.get('_format')), drop: false };
      try {
        await route(ex, subPath, params);
      } catch (error) {
        if (res.headersSent || res.destroyed) {
          res.destroy();
          return;
        }
        if (error instanceof FhirError) {
          await sendFhir(ex, error.status, outcome(error.issueCode, error.message), error.headers);
          return;
        }
        console.error('sandbox FHIR server error:', error);
        await sendFhir(ex, 500, outcome('exception', 'internal error in the sandbox FHIR server'));
      }
    },
  };
}
