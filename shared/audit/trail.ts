import type { MiddlewareObj } from '@middy/core';
import type { Logger } from '@aws-lambda-powertools/logger';
import type { CoreDeps } from '../core/deps.js';
import { toSmartError, type SmartError } from '../core/errors.js';
import { issuerOf } from '../core/issuers.js';
import type { SessionRefresher } from '../core/proxy/index.js';
import type { OpenSession } from '../core/session.js';
import { correlationIdOf, type ApiEvent, type ApiResult } from '../http/api-event.js';
import { auditRecord, type AuditAction, type AuditFacts, type AuditRecord } from './record.js';

/**
 * The audit hook of the HTTP routes: handlers note what they learn (`noteAudit`) as the request runs;
 * when it ends, successful or not, one record per audited action goes to the deployment's audit sink
 * with the status answered and, on failure, the error code. A sink that fails is logged and never
 * fails the request the user made.
 */

interface Pending {
  facts: AuditFacts;
  /** Further actions of the same request (a refresh during a proxied read, a session it ended). */
  readonly extra: Array<{ action: AuditAction; status: number; code?: string | undefined; facts: AuditFacts }>;
}

const pending = new WeakMap<ApiEvent, Pending>();

function entry(event: ApiEvent): Pending {
  let found = pending.get(event);
  if (!found) {
    found = { facts: {}, extra: [] };
    pending.set(event, found);
  }
  return found;
}

/** Adds what the route learned to the request's audit record (later facts win). */
export function noteAudit(event: ApiEvent, facts: AuditFacts): void {
  // The request's own object (made by `entry`), added to in place.
  Object.assign(entry(event).facts, facts);
}

/** What the route noted so far (metrics count the same facts, without who or which patient). */
export function auditFactsOf(event: ApiEvent): AuditFacts {
  return pending.get(event)?.facts ?? {};
}

/** The further actions noted so far (refreshes and session ends during the request). */
export function auditActionsOf(event: ApiEvent): ReadonlyArray<{ action: AuditAction; status: number; code?: string | undefined; facts: AuditFacts }> {
  return pending.get(event)?.extra ?? [];
}

const refreshWaits = new WeakSet<ApiEvent>();
/** This request waited on another request's refresh (the single flight of invariant 8). */
export function noteRefreshWait(event: ApiEvent): void {
  refreshWaits.add(event);
}
export function waitedForRefresh(event: ApiEvent): boolean {
  return refreshWaits.has(event);
}

/** Records one more action of this request (it shares the request's facts and correlation id). */
export function noteAuditAction(event: ApiEvent, action: AuditAction, status: number, code?: string, facts: AuditFacts = {}): void {
  entry(event).extra.push({ action, status, code, facts });
}

/** What the audit trail says about a session: who, which patient, which issuer and client. */
export function sessionFacts(deps: CoreDeps, session: OpenSession): AuditFacts {
  const { context, launchMode } = session.secrets;
  return {
    iss: session.record.iss,
    clientId: issuerOf(deps.config, session.record.iss)?.clientId,
    fhirUser: context.fhirUser,
    patient: context.patient,
    launchMode,
  };
}

/**
 * The outcome an audit record and a metric carry for a failure: the error's code, except that the one
 * "sign in again" answer (`SESSION_NOT_OPEN`) is told apart when it is the EHR refusing a refresh
 * (`REFRESH_REJECTED`), which operators must see separately from sessions that were simply not open.
 */
export function outcomeOf(error: SmartError): string {
  return error.code === 'SESSION_NOT_OPEN' && error.details?.notOpen === 'refresh-refused' ? 'REFRESH_REJECTED' : error.code;
}

/**
 * A refresh the EHR refused ended the session: one `session-end` (cause `refresh-rejected`) per
 * request, whichever hook saw the refusal first (the refresher, or the request's own outcome).
 */
function noteRefreshEnded(extra: Pending['extra'], status: number): void {
  if (extra.some((action) => action.action === 'session-end')) return;
  extra.push({ action: 'session-end', status, code: 'REFRESH_REJECTED', facts: { cause: 'refresh-rejected' } });
}

/** The request already noted the end of its session (a refresh the EHR refused, through `auditedRefresher`). */
export function sessionEndNoted(event: ApiEvent): boolean {
  return auditActionsOf(event).some((action) => action.action === 'session-end');
}

/**
 * A refresher that records the refreshes it performs: a `refresh` record when the session moved to a
 * new revision, a failed one (and a `session-end` when the EHR refused) when it throws.
 */
export function auditedRefresher(event: ApiEvent, refresher: SessionRefresher): SessionRefresher {
  return async (session, deps, options) => {
    try {
      const after = await refresher(session, deps, options);
      // A request that waited on another's refresh used its tokens: that refresh has its own record.
      if (after.waitedForRefresh) noteRefreshWait(event);
      else if (after.record.revision !== session.record.revision) noteAuditAction(event, 'refresh', 200);
      return after;
    } catch (error) {
      const failure = toSmartError(error);
      const outcome = outcomeOf(failure);
      noteAuditAction(event, 'refresh', failure.status, outcome);
      if (outcome === 'REFRESH_REJECTED') noteRefreshEnded(entry(event).extra, failure.status);
      throw error;
    }
  };
}

/** The records of a finished request, in the order they happened (extra actions first). */
export function recordsOf(
  event: ApiEvent,
  action: AuditAction,
  status: number,
  code: string | undefined,
  customer: string,
  nowMs: number,
): AuditRecord[] {
  const found = pending.get(event) ?? { facts: {}, extra: [] };
  const correlationId = correlationIdOf(event);
  let extra = found.extra;
  // A refresh the EHR refused ended the session: that is recorded too (once, if the refresher did not already).
  if (action === 'refresh' && code === 'REFRESH_REJECTED') noteRefreshEnded((extra = [...extra]), status);
  const records: AuditRecord[] = [];
  for (const more of extra) {
    records.push(auditRecord({ nowMs, action: more.action, status: more.status, code: more.code, correlationId, customer, facts: { ...found.facts, ...more.facts } }));
  }
  records.push(auditRecord({ nowMs, action, status, code, correlationId, customer, facts: found.facts }));
  return records;
}

/** Audit writes left for after the response (`auditTrail`'s `afterResponse`), by request. */
const afterResponse = new WeakMap<ApiEvent, () => Promise<void>>();

/**
 * Writes the records this request left for after its response, and resolves when they are written
 * or their failure is logged (never rejects). The streaming FHIR proxy calls it once the answer is
 * streamed, before its invocation ends; nothing to do for a request that wrote them already.
 */
export function writeAuditAfterResponse(event: ApiEvent): Promise<void> {
  const write = afterResponse.get(event);
  afterResponse.delete(event);
  return write ? write() : Promise.resolve();
}

/** Never silently lost: which request's records failed, with the correlation id (no user, no patient). */
function writeFailed(logger: Logger, event: ApiEvent, records: readonly AuditRecord[], failure: unknown): void {
  logger.error('audit records could not be written', {
    cause: failure instanceof Error ? failure.name : typeof failure,
    correlationId: correlationIdOf(event),
    records: records.map((record) => ({ action: record.action, status: record.status, time: record.time })),
  });
}

/**
 * The middy middleware: `action(event)` names what a request is (or `undefined` for requests that are
 * not audited, such as `GET /launch`). Registered outside the error mapping, so on failure it sees the
 * status the caller was answered.
 */
export function auditTrail(
  getDeps: () => Promise<CoreDeps>,
  logger: Logger,
  action: (event: ApiEvent) => AuditAction | undefined,
  options: { readonly afterResponse?: boolean } = {},
): MiddlewareObj<ApiEvent, ApiResult> {
  const finish = async (event: ApiEvent, status: number, error: unknown): Promise<void> => {
    const named = action(event);
    if (named === undefined) return;
    let records: AuditRecord[] = [];
    try {
      const deps = await getDeps();
      const code = error === undefined ? undefined : outcomeOf(toSmartError(error));
      records = recordsOf(event, named, status, code, deps.config.customer, deps.clock.now());
      const sink = deps.audit;
      // Only plain FHIR records wait for the response: a refresh or session end stays synchronous.
      if (options.afterResponse && sink?.afterResponse && records.every((record) => record.action === 'fhir')) {
        const written = records;
        afterResponse.set(event, () => sink.write(written).catch((failure: unknown) => writeFailed(logger, event, written, failure)));
        return;
      }
      await sink?.write(records);
    } catch (failure) {
      writeFailed(logger, event, records, failure);
    }
  };
  return {
    after: async (request) => finish(request.event, request.response?.statusCode ?? 200, undefined),
    onError: async (request) => finish(request.event, request.response?.statusCode ?? toSmartError(request.error).status, request.error),
  };
}
