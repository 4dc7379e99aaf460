import type { Config } from '../config/schema.js';
import { scopeIncludes } from './authorize.js';
import { randomToken } from './crypto.js';
import type { CoreDeps } from './deps.js';
import { SmartError } from './errors.js';
import { verifyIdToken } from './id-token.js';
import { issuerOf } from './issuers.js';
import { SessionSecretsSchema, type LaunchContext, type SessionSecrets } from './records.js';
import { openJson, sealJson } from './sealed-records.js';
import { sessionNotOpen, type OpenSession } from './session.js';
import { clientAuthenticationFor } from './ehr/client-auth.js';
import { callTokenEndpoint } from './ehr/token-endpoint.js';
import { DEFAULT_EXPIRES_IN_SECONDS, type TokenResponse } from './token.js';

/**
 * The record's TTL (epoch seconds): the absolute lifetime from sign-in, or the idle timeout counted
 * from the access token's expiry, whichever comes first. A request after the token expired would
 * have refreshed it (moving this forward), so a session past it has been unused for the whole idle
 * timeout: reads then treat it as absent. Activity before the token's expiry is not recorded (that
 * would cost a write per request), so the effective idle timeout is up to one token lifetime longer.
 */
export function sessionExpiresAt(config: Config, createdAtSeconds: number, accessTokenExpiresAtMs: number): number {
  const absolute = createdAtSeconds + config.session.lifetimeMinutes * 60;
  const idle = Math.ceil(accessTokenExpiresAtMs / 1000) + config.session.idleTimeoutMinutes * 60;
  return Math.min(absolute, idle);
}

/**
 * Granted scope after a refresh (SMART-REFRESH-06): it may only shrink. An absent scope means the
 * same scope (RFC 6749 §5.1); tokens not granted before are dropped, never added.
 */
export function refreshedScope(previous: string, granted: string | undefined): string {
  if (granted === undefined) return previous;
  return granted
    .split(' ')
    .filter((token) => token !== '' && scopeIncludes(previous, token))
    .join(' ');
}

/**
 * Launch context after a refresh: what sign-in established stays (the session is bound to its
 * patient and encounter, SMART-CTX-01); a refresh may only fill in what was missing.
 */
function mergedContext(previous: LaunchContext, tokens: TokenResponse): LaunchContext {
  const fromRefresh: LaunchContext = {
    need_patient_banner: tokens.need_patient_banner,
    smart_style_url: tokens.smart_style_url,
    intent: tokens.intent,
    tenant: tokens.tenant,
    fhirContext: tokens.fhirContext,
    patient: tokens.patient,
    encounter: tokens.encounter,
  };
  const merged: Record<string, unknown> = { ...previous };
  for (const [name, value] of Object.entries(fromRefresh)) {
    if (merged[name] === undefined && value !== undefined) merged[name] = value;
  }
  return merged as LaunchContext;
}

/** Refresh token handling of SMART-REFRESH-02/03/06 and SMART-SCOPE-12. */
export function refreshedSecrets(previous: SessionSecrets, tokens: TokenResponse, nowMs: number): SessionSecrets {
  return {
    ...previous,
    accessToken: tokens.access_token,
    // A new refresh token replaces the old; an absent one keeps the old (Oracle Health never rotates).
    refreshToken: tokens.refresh_token ?? previous.refreshToken,
    idToken: tokens.id_token ?? previous.idToken,
    accessTokenExpiresAt: nowMs + (tokens.expires_in ?? DEFAULT_EXPIRES_IN_SECONDS) * 1000,
    obtainedAt: nowMs,
    scope: refreshedScope(previous.scope, tokens.scope),
    context: mergedContext(previous.context, tokens),
  };
}

/**
 * How long before expiry a token counts as due for renewal: the configured skew, but never more than
 * a quarter of the token's whole lifetime. A token shorter than the skew (some EHRs issue one- or
 * two-minute tokens) would otherwise be due again the moment it is issued, and a request arriving
 * just after a refresh would start another (invariant 8: one refresh per expiry, for any lifetime).
 */
export function refreshSkewMs(config: Config, secrets: Pick<SessionSecrets, 'accessTokenExpiresAt' | 'obtainedAt'>): number {
  const configured = config.session.refreshSkewSeconds * 1000;
  if (secrets.obtainedAt === undefined) return configured;
  const lifetime = Math.max(0, secrets.accessTokenExpiresAt - secrets.obtainedAt);
  return Math.min(configured, Math.floor(lifetime / 4));
}

/** Whether the access token is still good for more than the renewal skew at `nowMs` (`ensureFreshSession` hands it back unchanged). */
export function accessTokenFresh(config: Config, secrets: Pick<SessionSecrets, 'accessTokenExpiresAt' | 'obtainedAt'>, nowMs: number): boolean {
  return secrets.accessTokenExpiresAt - nowMs > refreshSkewMs(config, secrets);
}

const FIRST_BACKOFF_MS = 25;
/** What a waiter tells its client when the lease holder's refresh failed. */
const WAITER_RETRY_AFTER_SECONDS = 5;
const MAX_BACKOFF_MS = 500;

/**
 * Returns the session with an access token good for at least the configured skew, refreshing it
 * when needed (or when `force`d: `POST /refresh`, or the FHIR server answered 401; `requestStartedAt`
 * lets a forced refresh use a token another request obtained meanwhile). One refresh at a time per
 * session across every concurrent Lambda (invariant 8): a conditional write takes a lease on the
 * session record at the revision read; everyone else waits for the next revision with bounded
 * backoff and uses the token it carries. A refresh token is therefore never sent twice.
 */
export async function ensureFreshSession(
  session: OpenSession,
  deps: CoreDeps,
  options: { force?: boolean; requestStartedAt?: number } = {},
): Promise<OpenSession> {
  const { secrets } = session;
  const now = deps.clock.now();
  if (!options.force && accessTokenFresh(deps.config, secrets, now)) return session;
  // A token obtained after this request began is as fresh as forcing would make it: requests of one
  // storm that read the session just after its refresh completed use it instead of renewing again.
  if (options.force && options.requestStartedAt !== undefined && (secrets.obtainedAt ?? 0) >= options.requestStartedAt) return session;
  if (secrets.refreshToken === undefined) {
    // "Can refresh" is the presence of a refresh token, not offline_access in the scope (SMART-SCOPE-12).
    if (options.force || secrets.accessTokenExpiresAt <= now) {
      throw sessionNotOpen('token-expired');
    }
    return session;
  }
  return refreshSingleFlight(session, deps);
}

async function refreshSingleFlight(session: OpenSession, deps: CoreDeps): Promise<OpenSession> {
  const { store, clock, random, config } = deps;
  const leaseMs = config.session.refreshLeaseSeconds * 1000;
  // Waiters give up a little after a whole lease: by then a live holder has finished or lost it.
  const deadline = clock.now() + leaseMs + 2_000;
  let current = session;
  let backoff = FIRST_BACKOFF_MS;
  for (;;) {
    const leaseId = randomToken(random, 16);
    const nowMs = clock.now();
    const acquired = await store.acquireRefreshLease(current.record.key, {
      revision: current.record.revision,
      leaseId,
      nowMs,
      untilMs: nowMs + leaseMs,
    });
    if (acquired) return refreshHoldingLease(current, leaseId, deps);

    // Someone else holds the lease, or already refreshed: wait for a newer revision.
    for (;;) {
      if (clock.now() >= deadline) {
        throw new SmartError('REFRESH_BUSY', 'the session\'s tokens are being renewed by another request', { retryAfterSeconds: 1 });
      }
      await clock.sleep(backoff);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      const record = await store.getSession(current.record.key, Math.floor(clock.now() / 1000));
      if (!record) throw sessionNotOpen('ended-during-refresh');
      if (record.revision > current.record.revision) {
        // Same session, same data key: no key ring call needed to open the new tokens.
        const secrets = openJson(SessionSecretsSchema, current.dataKey, record.sealed, record.key);
        return { ...current, record, secrets, waitedForRefresh: true };
      }
      if (record.leaseUntil === undefined) {
        // The holder released its lease without a new revision: its refresh failed (the EHR answered
        // 5xx/429 or nonsense). Trying again now would turn one failure into a retry storm.
        throw new SmartError('REFRESH_UNAVAILABLE', 'the EHR token service did not renew the tokens', { retryAfterSeconds: WAITER_RETRY_AFTER_SECONDS });
      }
      if (record.leaseUntil < clock.now()) {
        // The holder died inside its lease (a crashed invocation): take over.
        current = { ...current, record };
        break;
      }
    }
  }
}

async function refreshHoldingLease(session: OpenSession, leaseId: string, deps: CoreDeps): Promise<OpenSession> {
  const { store, config, clock, random, http } = deps;
  const { record, secrets } = session;
  const release = () => store.releaseRefreshLease(record.key, leaseId).catch(() => undefined);
  const issuer = issuerOf(config, record.iss);
  if (!issuer) {
    await release();
    throw sessionNotOpen('issuer-removed');
  }
  let tokens: TokenResponse;
  try {
    // A fresh client assertion per refresh (private_key_jwt): never one made for another request.
    const request = await clientAuthenticationFor(deps, issuer).formRequest(record.endpoints.tokenEndpoint, {
      grant_type: 'refresh_token',
      refresh_token: secrets.refreshToken as string,
    });
    // Bounded well inside the lease, so the lease cannot lapse while the refresh token is in flight.
    tokens = await callTokenEndpoint(http, request, config.session.refreshLeaseSeconds * 1000 - 2_000, clock);
  } catch (error) {
    if (error instanceof SmartError && error.code === 'TOKEN_REQUEST_REJECTED') {
      // invalid_grant (revoked, expired, reused) and friends: renewal is impossible. End the session
      // so every later request gets the same single answer instead of retrying; but only while this
      // request still holds the lease. A holder paused past its lease (a frozen invocation) may hear
      // the refusal of a token another request has since rotated: that request renewed the session or
      // ends it itself, so this one deletes nothing and records no end, and its client retries.
      if (!(await store.endSessionHoldingLease(record.key, leaseId))) {
        throw new SmartError('REFRESH_UNAVAILABLE', 'the tokens were renewed or ended by another request meanwhile', {
          cause: error,
          retryAfterSeconds: 1,
          details: { reason: 'lease-lost' },
        });
      }
      const ended = sessionNotOpen('refresh-refused', error);
      throw new SmartError(ended.code, ended.message, { cause: error, details: { ...(error.details ?? {}), ...ended.details } });
    }
    await release();
    if (error instanceof SmartError && error.code === 'TOKEN_ENDPOINT_UNAVAILABLE') {
      throw new SmartError('REFRESH_UNAVAILABLE', 'the EHR token service did not renew the tokens', {
        cause: error,
        retryAfterSeconds: error.retryAfterSeconds ?? 5,
        details: error.details ?? {},
      });
    }
    // CLIENT_AUTH_FAILED (a configuration problem, never retried here) and TOKEN_RESPONSE_INVALID
    // (the stored tokens stay as they were) pass through.
    throw error;
  }

  const nowMs = clock.now();
  if (tokens.id_token !== undefined) {
    try {
      await verifyIdToken(http, tokens.id_token, {
        issuer: record.endpoints.issuer,
        jwksUri: record.endpoints.jwksUri,
        clientId: issuer.clientId,
        nonce: undefined,
        now: nowMs,
      }, deps.jwks, clock);
    } catch (error) {
      await release();
      throw error;
    }
  }
  const next = refreshedSecrets(secrets, tokens, nowMs);
  const sealed = sealJson(session.dataKey, next, record.key, random);
  const expiresAt = sessionExpiresAt(config, record.createdAt, next.accessTokenExpiresAt);
  // The window between the token endpoint's answer and this write is one seal and one UpdateItem.
  const stored = await store.completeRefresh(record.key, { revision: record.revision, leaseId, sealed, expiresAt });
  const updated = { ...record, sealed, expiresAt, revision: record.revision + 1, leaseUntil: undefined };
  if (!stored) {
    // Our lease lapsed and another request took over: this request still has a valid token, but the
    // stored refresh token is stale now; the next refresh will say so and end the session.
    return { ...session, record: updated, secrets: next, refreshNotStored: true };
  }
  return { ...session, record: updated, secrets: next };
}
