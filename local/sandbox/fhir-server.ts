import type { IncomingMessage, ServerResponse } from 'node:http';
import { negotiate } from './fhir-wire.js';
import { authenticate } from './fhir/access.js';
import { createFhirContext } from './fhir/context.js';
import type { FhirContext, FhirServerOptions } from './fhir/context.js';
import { CORS_HEADERS, FhirError, methodNotAllowed, outcome, sendFhir } from './fhir/exchange.js';
import type { Exchange } from './fhir/exchange.js';
import { batchOrTransaction } from './fhir/bundles.js';
import { applyFaults } from './fhir/faults.js';
import { everything, operationQuery } from './fhir/operations.js';
import { compartmentSearch, instanceHistory, readRoute, searchType } from './fhir/read-search.js';
import { checkWritableType, create, patch, remove, update } from './fhir/writes.js';

/*
 * The sandbox's FHIR server: medplum's router and memory repository behind SMART access control.
 * This file routes a request to the module of its concern under fhir/: exchange.ts (errors, answers,
 * request helpers), context.ts (shared state), access.ts (token, scopes, compartment), read-search.ts,
 * writes.ts, operations.ts ($everything), binary-content.ts, faults.ts; the wire formats are in
 * fhir-wire.ts and fhir-xml.ts.
 */

export type { FhirServerOptions } from './fhir/context.js';
export { WRITABLE_TYPES } from './fhir/writes.js';

export interface FhirServer {
  /** Handles a request whose path starts with the FHIR base path; `subPath` is what follows it. */
  handle(req: IncomingMessage, res: ServerResponse, subPath: string, params: URLSearchParams): Promise<void>;
}

export function createFhirServer(options: FhirServerOptions): FhirServer {
  const ctx = createFhirContext(options);
  return {
    async handle(req, res, subPath, params) {
      const ex: Exchange = { req, res, wire: negotiate(req, params.get('_format')), drop: false };
      try {
        await route(ctx, ex, subPath, params);
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

/** Routes one request under the FHIR base to the module of its concern; errors are thrown as FhirError. */
async function route(ctx: FhirContext, ex: Exchange, subPath: string, params: URLSearchParams): Promise<void> {
  const { options, fhirBasePath, compartment } = ctx;
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
  if (!(await applyFaults(ctx, ex))) {
    return;
  }

  const token = await authenticate(ctx, req);
  const method = req.method ?? 'GET';
  const segments = subPath.split('/').filter((s) => s !== '').map(decodeURIComponent);
  const [resourceType, id, third, versionId] = segments;
  if (resourceType === undefined && method === 'POST') {
    await batchOrTransaction(ctx, ex, (entry, path, query) => route(ctx, entry, path, query));
    return;
  }
  if (resourceType === undefined) {
    throw new FhirError(404, 'not-supported', 'system-level interactions are not supported; use [base]/[type] (or POST a batch or transaction to [base])');
  }
  if (!compartment.resourceTypes.has(resourceType)) {
    throw new FhirError(404, 'not-supported', `unknown resource type "${resourceType}"`);
  }

  // [type], [type]/_search
  if (segments.length === 1 || (segments.length === 2 && id === '_search')) {
    if (method === 'GET' || (method === 'POST' && id === '_search')) {
      await searchType(ctx, ex, token, resourceType, params);
      return;
    }
    if (segments.length === 2) {
      throw methodNotAllowed('GET, POST', '[type]/_search');
    }
    if (method === 'POST') {
      checkWritableType(resourceType);
      await create(ctx, ex, token, resourceType);
      return;
    }
    if (method === 'PUT') {
      checkWritableType(resourceType);
      if ([...params.keys()].every((key) => key === '_format')) {
        throw new FhirError(400, 'invalid', 'an update needs an id ([type]/[id]) or search parameters (conditional update)');
      }
      await update(ctx, ex, token, resourceType, undefined, params);
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
        await readRoute(ctx, ex, token, resourceType, id, undefined);
        return;
      case 'PUT':
        checkWritableType(resourceType);
        await update(ctx, ex, token, resourceType, id, params);
        return;
      case 'PATCH':
        checkWritableType(resourceType);
        await patch(ctx, ex, token, resourceType, id);
        return;
      case 'DELETE':
        checkWritableType(resourceType);
        await remove(ctx, ex, token, resourceType, id);
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
    await everything(ctx, ex, token, id, await operationQuery(req, params));
    return;
  }
  if (segments.length === 3 && resourceType === 'Patient' && third !== undefined && compartment.resourceTypes.has(third)) {
    if (method !== 'GET') {
      throw methodNotAllowed('GET', 'a compartment search');
    }
    await compartmentSearch(ctx, ex, token, id, third, params);
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
    await readRoute(ctx, ex, token, resourceType, id, versionId);
    return;
  }
  await instanceHistory(ctx, ex, token, resourceType, id);
}
