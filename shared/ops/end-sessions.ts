import { decodeJwt } from 'jose';
import type { CoreDeps } from '../core/deps.js';
import { toSmartError } from '../core/errors.js';
import { issuerOf } from '../core/issuers.js';
import { endSession, type RevocationOutcome } from '../core/logout.js';
import { SessionSecretsSchema, type SessionRecord, type SessionSecrets } from '../core/records.js';
import { encryptionContext, openJson } from '../core/sealed-records.js';
import { auditRecord, type AuditRecord, type SESSION_END_CAUSES } from '../audit/record.js';

type SessionEndCause = (typeof SESSION_END_CAUSES)[number];

/**
 * The operator control "end sessions": by issuer, by `fhirUser`, or all. Each matching session is
 * revoked at its EHR where the EHR offers revocation (RFC 7009, with the client's authentication, as
 * a logout does), then deleted, and audited as a `session-end` with cause `operator`.
 *
 * Finding sessions: the issuer is an attribute in clear, so `--issuer` filters the scan; `fhirUser`
 * lives only inside the sealed secrets, so `--fhir-user` opens each candidate (one key-ring decrypt per
 * session). Nothing new is stored to make users findable: a dump of the table still names no one.
 * Revocation needs the refresh token anyway, so every ended session is opened once.
 */

export type SessionSelector =
  | { readonly kind: 'issuer'; readonly iss: string }
  /**
   * The sessions an EHR's back-channel logout names: of that launch issuer, whose id_token (verified
   * at sign-in, stored sealed) carries this `sid`, or this `sub` when the token named no `sid`.
   */
  | { readonly kind: 'op-session'; readonly iss: string; readonly issuer?: string | undefined; readonly sid?: string | undefined; readonly sub?: string | undefined }
  | { readonly kind: 'fhir-user'; readonly fhirUser: string }
  | { readonly kind: 'all' };

export interface SessionScanner {
  scanSessions(options: { readonly iss?: string | undefined; readonly nowSeconds: number }): AsyncIterable<SessionRecord>;
}

export interface EndSessionsOptions {
  readonly selector: SessionSelector;
  /** Count only: nothing is revoked or deleted. */
  readonly dryRun?: boolean | undefined;
  /** Sessions worked on at once (KMS decrypts and EHR revocations in flight). */
  readonly concurrency?: number | undefined;
  /** Shared by every audit record of this run. */
  readonly operationId: string;
  /** Why they end, in the audit trail (default `operator`). */
  readonly cause?: SessionEndCause | undefined;
}

/**
 * Does the id_token stored with a session name this OpenID provider session (`sid`) or user (`sub`),
 * and, given `issuer`, was it issued by that provider (`sid` and `sub` are only unique per issuer)?
 */
export function idTokenMatches(
  selector: { readonly issuer?: string | undefined; readonly sid?: string | undefined; readonly sub?: string | undefined },
  idToken: string | undefined,
): boolean {
  if (idToken === undefined) return false;
  let claims: Record<string, unknown>;
  try {
    // Verified when the session was created (invariant 5); here it is only read back.
    claims = decodeJwt(idToken);
  } catch {
    return false;
  }
  if (selector.issuer !== undefined && claims.iss !== selector.issuer) return false;
  if (selector.sid !== undefined) return claims.sid === selector.sid && (selector.sub === undefined || claims.sub === selector.sub);
  return selector.sub !== undefined && claims.sub === selector.sub;
}

export interface EndSessionsReport {
  readonly scanned: number;
  readonly matched: number;
  readonly ended: number;
  readonly revocation: Record<RevocationOutcome, number>;
  /** Sessions that could not be opened or deleted (left as they were), by error code. */
  readonly failed: Record<string, number>;
}

/**
 * `fhirUser` as given matches the claim exactly, and a relative reference (`Practitioner/123`) also
 * matches the absolute one the EHR issued (`https://ehr/fhir/Practitioner/123`).
 */
export function fhirUserMatches(wanted: string, actual: string | undefined): boolean {
  if (actual === undefined) return false;
  if (actual === wanted) return true;
  return !/^[a-z][a-z0-9+.-]*:/i.test(wanted) && actual.endsWith(`/${wanted}`);
}

export async function endSessions(scanner: SessionScanner, deps: CoreDeps, options: EndSessionsOptions): Promise<EndSessionsReport> {
  const { selector } = options;
  const report = { scanned: 0, matched: 0, ended: 0, revocation: { revoked: 0, failed: 0, 'not-offered': 0 }, failed: {} as Record<string, number> };
  const audit: AuditRecord[] = [];

  const handle = async (record: SessionRecord): Promise<void> => {
    let secrets: SessionSecrets;
    let dataKey: Uint8Array;
    try {
      dataKey = await deps.keyRing.decryptDataKey(record.wrappedKey, encryptionContext(deps.config, record.key));
      secrets = openJson(SessionSecretsSchema, dataKey, record.sealed, record.key);
    } catch (error) {
      const code = toSmartError(error).code;
      report.failed[code] = (report.failed[code] ?? 0) + 1;
      return;
    }
    if (selector.kind === 'fhir-user' && !fhirUserMatches(selector.fhirUser, secrets.context.fhirUser)) return;
    if (selector.kind === 'op-session' && !idTokenMatches(selector, secrets.idToken)) return;
    report.matched += 1;
    if (options.dryRun) return;
    let outcome: { revocation: RevocationOutcome; status?: number };
    try {
      // The session id itself is never known here (only its hash is stored), and revocation does not need it.
      outcome = await endSession({ sessionId: '', record, secrets, dataKey }, deps);
    } catch (error) {
      const code = toSmartError(error).code;
      report.failed[code] = (report.failed[code] ?? 0) + 1;
      return;
    }
    report.ended += 1;
    report.revocation[outcome.revocation] += 1;
    audit.push(
      auditRecord({
        nowMs: deps.clock.now(),
        action: 'session-end',
        status: 200,
        correlationId: options.operationId,
        customer: deps.config.customer,
        facts: {
          cause: options.cause ?? 'operator',
          revocation: outcome.revocation,
          iss: record.iss,
          clientId: issuerOf(deps.config, record.iss)?.clientId,
          fhirUser: secrets.context.fhirUser,
          patient: secrets.context.patient,
          launchMode: secrets.launchMode,
        },
      }),
    );
  };

  const inFlight = new Set<Promise<void>>();
  const limit = Math.max(1, options.concurrency ?? 16);
  const nowSeconds = Math.floor(deps.clock.now() / 1000);
  for await (const record of scanner.scanSessions({ iss: selector.kind === 'issuer' || selector.kind === 'op-session' ? selector.iss : undefined, nowSeconds })) {
    report.scanned += 1;
    const task: Promise<void> = handle(record).finally(() => inFlight.delete(task));
    inFlight.add(task);
    if (inFlight.size >= limit) await Promise.race(inFlight);
    if (audit.length >= 100) await deps.audit?.write(audit.splice(0));
  }
  await Promise.all(inFlight);
  if (audit.length > 0) await deps.audit?.write(audit.splice(0));
  return report;
}
