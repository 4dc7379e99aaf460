import type { WriteInteraction } from '../../config/schema.js';
import { SmartError } from '../errors.js';
import type { Permission } from '../scopes.js';

/*
 * The FHIR RESTful interactions the proxy forwards (FHIR R4 §3.1.0 "RESTful API"), as a table of
 * path shapes: each shape lists the methods it takes and what each one is.
 */

/** Methods forwarded at all; anything else (HEAD, OPTIONS, TRACE, CONNECT, …) is refused. */
export const PROXY_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;
export type ProxyMethod = (typeof PROXY_METHODS)[number];

export type InteractionKind =
  | 'capabilities'
  | 'read'
  | 'vread'
  | 'search-type'
  | 'search-system'
  | 'search-compartment'
  | 'history-instance'
  | 'history-type'
  | 'history-system'
  | 'operation-system'
  | 'operation-type'
  | 'operation-instance'
  | 'create'
  | 'update'
  | 'patch'
  | 'delete'
  | 'batch'
  | 'transaction';

export interface FhirInteraction {
  readonly kind: InteractionKind;
  /** The resource type the scopes are checked on; `undefined` at system level. */
  readonly resourceType: string | undefined;
  /** `[type, id]` of the path's instance (or of the compartment, for `Patient/1/Observation`). */
  readonly pathType: string | undefined;
  readonly pathId: string | undefined;
  /** The scope permission the interaction needs; `undefined` for `metadata`. */
  readonly permission: Permission | undefined;
  /** The write it is, when it is one (`issuers[].writes`). */
  readonly write: WriteInteraction | undefined;
  /** A search whose parameters may come in a form body (`POST …/_search`). */
  readonly formSearch: boolean;
}

/** A resource type segment. */
const TYPE = /^[A-Z][A-Za-z]{0,63}$/;
/** A logical id (or version id) segment. */
export const FHIR_ID = /^[A-Za-z0-9\-.]{1,256}$/;
/** An `$operation` segment. */
const OPERATION = /^\$[A-Za-z][A-Za-z0-9\-_.]{0,63}$/;

/** What one method on one path shape is. */
interface MethodRule {
  readonly kind: InteractionKind;
  readonly permission: Permission | undefined;
  readonly write?: WriteInteraction;
  readonly formSearch?: boolean;
  /** Set on type-level writes: they are conditional and need search parameters; the refusal without them. */
  readonly needsQuery?: string;
}

interface PathShape {
  /** One entry per segment: a literal segment, or the pattern a segment must match. */
  readonly segments: ReadonlyArray<string | RegExp>;
  /** How a refusal names the shape. */
  readonly name: string;
  /** Index of the segment naming the resource type the scopes are checked on; none at system level. */
  readonly typeAt?: number;
  /** The first two segments are `[type]/[id]` of an instance (or of a compartment). */
  readonly instance?: boolean;
  readonly methods: Readonly<Partial<Record<ProxyMethod, MethodRule>>>;
}

const operation: PathShape['methods'] = { GET: { kind: 'operation-system', permission: 's' }, POST: { kind: 'operation-system', permission: 's' } };

/** Every shape the proxy forwards; the first whose segments all match a path names it. */
const SHAPES: readonly PathShape[] = [
  { segments: ['metadata'], name: 'metadata', methods: { GET: { kind: 'capabilities', permission: undefined } } },
  { segments: ['_history'], name: '_history', methods: { GET: { kind: 'history-system', permission: 's' } } },
  { segments: ['_search'], name: '_search', methods: { POST: { kind: 'search-system', permission: 's', formSearch: true } } },
  { segments: [OPERATION], name: 'an operation', methods: operation },
  {
    segments: [TYPE],
    name: 'a resource type',
    typeAt: 0,
    methods: {
      GET: { kind: 'search-type', permission: 's' },
      POST: { kind: 'create', permission: 'c', write: 'create' },
      PUT: { kind: 'update', permission: 'u', write: 'update', needsQuery: 'an update needs an id ([type]/[id]) or search parameters (conditional update)' },
      PATCH: { kind: 'patch', permission: 'u', write: 'patch', needsQuery: 'a patch needs an id ([type]/[id]) or search parameters (conditional patch)' },
      DELETE: { kind: 'delete', permission: 'd', write: 'delete', needsQuery: 'a delete needs an id ([type]/[id]) or search parameters (conditional delete)' },
    },
  },
  {
    segments: [TYPE, '_search'],
    name: '[type]/_search',
    typeAt: 0,
    methods: { GET: { kind: 'search-type', permission: 's' }, POST: { kind: 'search-type', permission: 's', formSearch: true } },
  },
  { segments: [TYPE, '_history'], name: '[type]/_history', typeAt: 0, methods: { GET: { kind: 'history-type', permission: 's' } } },
  {
    segments: [TYPE, OPERATION],
    name: 'an operation',
    typeAt: 0,
    methods: { GET: { kind: 'operation-type', permission: 's' }, POST: { kind: 'operation-type', permission: 's' } },
  },
  {
    segments: [TYPE, FHIR_ID],
    name: '[type]/[id]',
    typeAt: 0,
    instance: true,
    methods: {
      GET: { kind: 'read', permission: 'r' },
      PUT: { kind: 'update', permission: 'u', write: 'update' },
      PATCH: { kind: 'patch', permission: 'u', write: 'patch' },
      DELETE: { kind: 'delete', permission: 'd', write: 'delete' },
    },
  },
  { segments: [TYPE, FHIR_ID, '_history'], name: '[type]/[id]/_history', typeAt: 0, instance: true, methods: { GET: { kind: 'history-instance', permission: 'r' } } },
  {
    segments: [TYPE, FHIR_ID, OPERATION],
    name: 'an operation',
    typeAt: 0,
    instance: true,
    methods: { GET: { kind: 'operation-instance', permission: 'r' }, POST: { kind: 'operation-instance', permission: 'r' } },
  },
  { segments: [TYPE, FHIR_ID, TYPE], name: 'a compartment search', typeAt: 2, instance: true, methods: { GET: { kind: 'search-compartment', permission: 's' } } },
  { segments: [TYPE, FHIR_ID, '_history', FHIR_ID], name: '[type]/[id]/_history/[vid]', typeAt: 0, instance: true, methods: { GET: { kind: 'vread', permission: 'r' } } },
];

function matches(shape: PathShape, segments: readonly string[]): boolean {
  return (
    shape.segments.length === segments.length &&
    shape.segments.every((expected, at) => (typeof expected === 'string' ? segments[at] === expected : expected.test(segments[at] as string)))
  );
}

/**
 * Operations FHIR defines as not changing state (`affectsState` false), which a POST may invoke with
 * the read or search permission their path needs. Any other POSTed operation may change what the EHR
 * stores (`$merge`, `$meta-delete`, `$process-message`, `$apply`, …): it is the write `operation`,
 * refused unless `issuers[].writes` enables it, and it needs the update permission (`u`) on its type. A GET invokes only operations that do not change
 * state (FHIR R4 §3.1.0.1.4 of the operations framework), so GET stays a read.
 */
export const READ_ONLY_OPERATIONS: ReadonlySet<string> = new Set([
  '$everything',
  '$lastn',
  '$stats',
  '$expand',
  '$lookup',
  '$validate-code',
  '$translate',
  '$subsumes',
  '$validate',
  '$match',
  '$meta',
  '$docref',
  '$summary',
]);

/**
 * Names the FHIR RESTful interaction of a method and path, or refuses it: a path that is not one of
 * the shapes is a 400 (`PROXY_REQUEST_INVALID`), a method the shape does not take a 405.
 */
export function classifyInteraction(method: string, rawPath: string, hasQuery: boolean): FhirInteraction {
  const segments = rawPath.split('/');
  const shape = SHAPES.find((candidate) => matches(candidate, segments));
  if (shape === undefined) {
    throw new SmartError('PROXY_REQUEST_INVALID', 'the FHIR path is not a FHIR RESTful interaction ([type], [type]/[id], …/_history, …/$operation, metadata)');
  }
  const rule = shape.methods[method as ProxyMethod];
  if (rule === undefined) {
    const allow = PROXY_METHODS.filter((candidate) => shape.methods[candidate] !== undefined).join(', ');
    throw new SmartError('METHOD_NOT_ALLOWED', `${method} is not a FHIR interaction on ${shape.name}`, {
      hint: `Use ${allow} on ${shape.name}.`,
      details: { allow },
    });
  }
  if (rule.needsQuery !== undefined && !hasQuery) throw new SmartError('PROXY_REQUEST_INVALID', rule.needsQuery);
  const resourceType = shape.typeAt === undefined ? undefined : segments[shape.typeAt];
  const operationName = rule.kind.startsWith('operation-') ? segments.at(-1) : undefined;
  const write = operationName !== undefined && method === 'POST' && !READ_ONLY_OPERATIONS.has(operationName) ? 'operation' : rule.write;
  return {
    kind: rule.kind,
    resourceType,
    // A state-changing operation changes stored data: it needs the update permission on its type.
    permission: write === 'operation' ? 'u' : rule.permission,
    pathType: shape.instance ? segments[0] : resourceType,
    pathId: shape.instance ? segments[1] : undefined,
    write,
    formSearch: rule.formSearch ?? false,
  };
}
