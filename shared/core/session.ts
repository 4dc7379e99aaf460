import type { Config } from '../config/schema.js';
import { bindingMatches } from './binding.js';
import type { CoreDeps } from './deps.js';
import { SmartError } from './errors.js';
import { encryptionContext, openJson, sessionKey } from './sealed-records.js';
import { OPAQUE_ID, SessionSecretsSchema, type OpenSession, type SessionRecord } from './records.js';
import { fhirBaseUrl } from './urls.js';

export type { OpenSession } from './records.js';

/** Checks the shape of a session id from the request path before it is hashed or looked up. */
export function checkSessionId(sessionId: string | undefined): string {
  if (sessionId === undefined || !OPAQUE_ID.test(sessionId)) {
    throw new SmartError('SESSION_ID_MALFORMED', 'the session id in the path is not a session id this service issues');
  }
  return sessionId;
}

/** Why a session is not open, for the log only: the answer is the same `SESSION_NOT_OPEN` whatever it is. */
export type NotOpenReason = 'unknown-or-expired' | 'not-bound' | 'refresh-refused' | 'ended-during-refresh' | 'issuer-removed' | 'token-expired';

/** The single "sign in again" error of every `/sessions/{id}/…` route (same message whatever the reason). */
export function sessionNotOpen(reason: NotOpenReason, cause?: unknown): SmartError {
  return new SmartError('SESSION_NOT_OPEN', 'no session with this id is open in this browser', {
    details: { notOpen: reason },
    ...(cause !== undefined ? { cause } : {}),
  });
}

/**
 * Loads a session for a request: it must exist, be unexpired, and be bound to this browser's cookie
 * (a session id alone, copied elsewhere, opens nothing). The binding is checked before any KMS call.
 */
export async function openSession(sessionIdParam: string | undefined, cookieSecret: string | undefined, deps: CoreDeps): Promise<OpenSession> {
  const sessionId = checkSessionId(sessionIdParam);
  const key = sessionKey(sessionId);
  const record = await deps.store.getSession(key, Math.floor(deps.clock.now() / 1000));
  return unsealSession(sessionId, key, checkBound(record, cookieSecret), deps);
}

/**
 * The steps of `openSession` after the store read, for a caller that shares one read among several
 * requests (the FHIR proxy): each request checks its own binding cookie, and only then unseals.
 */
export function checkBound(record: SessionRecord | undefined, cookieSecret: string | undefined): SessionRecord {
  if (!record) throw sessionNotOpen('unknown-or-expired');
  if (!bindingMatches(record.bindingHash, cookieSecret)) throw sessionNotOpen('not-bound');
  return record;
}

/**
 * Opens the sealed tokens of the record read under `key` (one data key unwrap, bound to that key's
 * encryption context): only for a record `checkBound` accepted.
 */
export async function unsealSession(sessionId: string, key: string, record: SessionRecord, deps: CoreDeps): Promise<OpenSession> {
  const dataKey = await deps.keyRing.decryptDataKey(record.wrappedKey, encryptionContext(deps.config, key));
  const secrets = openJson(SessionSecretsSchema, dataKey, record.sealed, key);
  return { sessionId, record, secrets, dataKey };
}

/** The JSON launch context of `GET /sessions/{id}`. Never a token. */
export function sessionView(config: Config, session: OpenSession): Record<string, unknown> {
  const { context, scope, accessTokenExpiresAt, launchMode, refreshToken } = session.secrets;
  return {
    patient: context.patient,
    encounter: context.encounter,
    fhirUser: context.fhirUser,
    patientAccess: context.patientAccess,
    scope,
    need_patient_banner: context.need_patient_banner,
    smart_style_url: context.smart_style_url,
    intent: context.intent,
    tenant: context.tenant,
    fhirContext: context.fhirContext,
    fhirBaseUrl: fhirBaseUrl(config, session.sessionId),
    iss: session.record.iss,
    launchMode,
    canRefresh: refreshToken !== undefined,
    expiresAt: new Date(accessTokenExpiresAt).toISOString(),
    sessionExpiresAt: new Date(session.record.expiresAt * 1000).toISOString(),
  };
}
