import * as z from '../config/zod.js';
import { builtOnFirstUse } from '../core/lazy.js';
import { boundedMemo } from '../core/memo.js';

/**
 * The audit trail: one record per sign-in, refresh, logout, session end and proxied FHIR interaction.
 * Who (`fhirUser`), which patient, which issuer and client, what (interaction and resource type), the
 * outcome and status, when, and the correlation id shared with the logs. Never a token, a code, a
 * session id, a cookie, a request or response body, or a query value: the record has no field that
 * could hold one, and every field is shaped (`AuditRecordSchema`) before it is written.
 *
 * Pure: no I/O. Sinks (`AuditSink`) write records where the deployment keeps them: a file under the
 * local data folder, or a dedicated CloudWatch Logs group in AWS.
 */

export const AUDIT_ACTIONS = ['sign-in', 'refresh', 'logout', 'session-end', 'fhir'] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

/** Why a session ended without a logout by its user. */
export const SESSION_END_CAUSES = ['operator', 'refresh-rejected', 'backchannel-logout'] as const;

const Bounded = (max: number) => z.string().check(z.minLength(1), z.maxLength(max));
/** No control characters, no whitespace: what a reference, a URL or an id can hold, nothing more. */
const Token = (max: number) => Bounded(max).check(z.regex(/^[\x21-\x7e]+$/));

export const AuditRecordSchema = builtOnFirstUse(() =>
  z.strictObject({
    v: z.literal(1),
    /** ISO 8601 instant with milliseconds (UTC). */
    time: z.iso.datetime({ precision: 3 }),
    action: z.enum(AUDIT_ACTIONS),
    outcome: z.enum(['success', 'failure']),
    /** HTTP status answered to the caller. */
    status: z.number().check(z.int(), z.gte(100), z.lte(599)),
    /** Stable error code on failure. */
    code: z.optional(z.string().check(z.regex(/^[A-Z][A-Z0-9_]{1,63}$/))),
    correlationId: Token(128),
    customer: Token(64),
    /** Exact issuer (FHIR base URL) of the session. */
    iss: z.optional(Token(2048)),
    clientId: z.optional(Token(256)),
    /** The `fhirUser` claim of the id_token (a FHIR reference to the user). */
    fhirUser: z.optional(Token(2048)),
    /** Id of the launch's patient, as the EHR's token response gave it. */
    patient: z.optional(Token(256)),
    launchMode: z.optional(z.enum(['ehr', 'standalone'])),
    /** FHIR RESTful interaction (`read`, `search-type`, …) of a proxied request. */
    interaction: z.optional(z.string().check(z.regex(/^[a-z-]{1,32}$/))),
    resourceType: z.optional(z.string().check(z.regex(/^[A-Z][A-Za-z]{0,63}$/))),
    /** Status the EHR answered a proxied request with. */
    upstreamStatus: z.optional(z.number().check(z.int(), z.gte(100), z.lte(599))),
    cause: z.optional(z.enum(SESSION_END_CAUSES)),
    revocation: z.optional(z.enum(['revoked', 'failed', 'not-offered'])),
  }),
);
export type AuditRecord = z.infer<typeof AuditRecordSchema>;

/** The fields a record cannot be without (their schema refuses `undefined`). */
const REQUIRED_FIELDS: readonly string[] = builtOnFirstUse(() =>
  Object.entries(AuditRecordSchema.shape as Record<string, z.ZodMiniType>)
    .filter(([, schema]) => !schema.safeParse(undefined).success)
    .map(([field]) => field),
);

/**
 * Whether a string fact value fits its field's schema, checked once per field and value: one memo per
 * field, keyed by the value itself (the same string on every request of a session, its hash kept).
 */
const fitsByField = new Map<string, (value: string) => boolean>();
function fieldFits(field: string, fieldSchema: z.ZodMiniType, value: string): boolean {
  let fits = fitsByField.get(field);
  if (fits === undefined) {
    fits = boundedMemo(1024, (candidate) => fieldSchema.safeParse(candidate).success);
    fitsByField.set(field, fits);
  }
  return fits(value);
}
/** Longer than any field allows: checked (and refused) without being remembered. */
const MEMO_MAX_LENGTH = 2048;

const TOKEN_128 = /^[\x21-\x7e]{1,128}$/;
const isStatus = (value: unknown) => typeof value === 'number' && Number.isInteger(value) && value >= 100 && value <= 599;
/**
 * The fields every record carries, whose value is new on each request (the correlation id) or a
 * number: checked here as their schema checks them (`v`, `status`, `upstreamStatus`, `correlationId`
 * above), without a schema parse per record or a memo entry per request. Exported for the test that
 * holds each check to its schema.
 */
export const DIRECT_FIELD_CHECKS: ReadonlyMap<string, (value: unknown) => boolean> = new Map([
  ['v', (value: unknown) => value === 1],
  ['status', isStatus],
  ['upstreamStatus', isStatus],
  ['correlationId', (value: unknown) => typeof value === 'string' && TOKEN_128.test(value)],
]);

/** Writes audit records; a sink keeps them apart from the operational logs. */
export interface AuditSink {
  write(records: readonly AuditRecord[]): Promise<void>;
  /**
   * The write is a network call worth taking off a proxied read's response path: the streaming FHIR
   * proxy then writes its `fhir` records right after the answer is streamed, before the invocation
   * ends (docs/operations.md, "Audit durability"). A local file append is not.
   */
  readonly afterResponse?: boolean;
}

/** Reads audit records back for an export (`from` inclusive, `to` exclusive, epoch ms). */
export interface AuditSource {
  read(fromMs: number, toMs: number): AsyncIterable<AuditRecord>;
}

/** The facts a route knows about its request; `auditRecord` keeps only what the schema allows. */
export type AuditFacts = Partial<Omit<AuditRecord, 'v' | 'time' | 'action' | 'outcome' | 'status' | 'correlationId' | 'customer'>>;

/** The record's own fields, in the order a record has them; a fact by one of these names takes its place. */
const BASE_FIELDS = ['v', 'time', 'action', 'outcome', 'status', 'code', 'correlationId', 'customer'] as const;

/** The schema's fields and the fields a record cannot be without, read through the lazy schema once. */
let fields: { readonly shape: Record<string, z.ZodMiniType>; readonly required: readonly string[] } | undefined;

/**
 * `toISOString()` of a date in the years 0000-9999: a valid instant with milliseconds by construction,
 * which is what `time` allows (other years have 6 digits and a sign, and go through the schema).
 */
const ISO_INSTANT_LENGTH = 24;

/** Keeps `value` in `record` if it fits `field` (an unknown field, or `undefined`, is left out). */
function keep(record: Record<string, unknown>, shape: Record<string, z.ZodMiniType>, field: string, value: unknown): void {
  if (value === undefined) return;
  const fieldSchema = shape[field];
  if (fieldSchema === undefined) return;
  const direct = DIRECT_FIELD_CHECKS.get(field);
  if (direct !== undefined) {
    if (direct(value)) record[field] = value;
    return;
  }
  if (typeof value === 'string' && field !== 'time' && value.length <= MEMO_MAX_LENGTH) {
    // The same issuer, client, user, patient and customer come back on every request of a session:
    // each distinct string is checked against its field's schema once (no schema transforms strings).
    if (fieldFits(field, fieldSchema, value)) record[field] = value;
    return;
  }
  const parsed = fieldSchema.safeParse(value);
  if (parsed.success) record[field] = parsed.data;
}

/**
 * Shapes one record. A fact that does not fit its field (too long, control characters, not a FHIR
 * type) is left out rather than written: the trail never carries free text from a request.
 */
export function auditRecord(base: {
  readonly nowMs: number;
  readonly action: AuditAction;
  readonly status: number;
  readonly correlationId: string;
  readonly customer: string;
  readonly code?: string | undefined;
  readonly facts?: AuditFacts | undefined;
}): AuditRecord {
  fields ??= { shape: AuditRecordSchema.shape as Record<string, z.ZodMiniType>, required: REQUIRED_FIELDS.slice() };
  const { shape, required } = fields;
  const time = new Date(base.nowMs).toISOString();
  const outcome = base.status < 400 ? 'success' : 'failure';
  const facts = base.facts as Record<string, unknown> | undefined;
  const record: Record<string, unknown> = {};
  if (facts !== undefined && BASE_FIELDS.some((field) => Object.hasOwn(facts, field))) {
    // A fact named like a field of the record's own replaces it, in its place (as a spread would).
    const candidate: Record<string, unknown> = { v: 1, time, action: base.action, outcome, status: base.status, code: base.code, correlationId: base.correlationId, customer: base.customer, ...facts };
    for (const field of Object.keys(candidate)) keep(record, shape, field, candidate[field]);
  } else {
    record.v = 1;
    if (time.length === ISO_INSTANT_LENGTH) record.time = time;
    else keep(record, shape, 'time', time);
    keep(record, shape, 'action', base.action);
    keep(record, shape, 'outcome', outcome);
    keep(record, shape, 'status', base.status);
    keep(record, shape, 'code', base.code);
    keep(record, shape, 'correlationId', base.correlationId);
    keep(record, shape, 'customer', base.customer);
    if (facts !== undefined) for (const field of Object.keys(facts)) keep(record, shape, field, facts[field]);
  }
  if (record.correlationId === undefined) record.correlationId = 'unknown';
  // Every field kept has passed its own schema and the object has no cross-field rule: parsing the
  // whole record again only re-does that work, per audited request. Only a missing required field
  // still needs the whole-object parse, which then throws as it always did.
  for (const field of required) if (record[field] === undefined) return AuditRecordSchema.parse(record);
  return record as AuditRecord;
}

/** One NDJSON line per record (the local file and the CloudWatch message are the same JSON). */
export function auditLine(record: AuditRecord): string {
  return JSON.stringify(record);
}

/** Reads one stored line back; `undefined` for anything that is not an audit record. */
export function parseAuditLine(line: string): AuditRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  const parsed = AuditRecordSchema.safeParse(value);
  return parsed.success ? parsed.data : undefined;
}
