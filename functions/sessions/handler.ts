import { awsDeps } from '../../shared/runtime/aws-deps.js';
import type { CoreDeps } from '../../shared/core/deps.js';
import { SmartError } from '../../shared/core/errors.js';
import { endSession, endSessionUrl } from '../../shared/core/logout.js';
import { createHandoff, parseHandoffChallenge, redeemHandoff } from '../../shared/core/handoff.js';
import { ensureFreshSession } from '../../shared/core/refresh.js';
import { openSession, sessionView } from '../../shared/core/session.js';
import { invocationDeadline, withDeadline } from '../../shared/runtime/deadline.js';
import { apiHandler } from '../../shared/http/api-handler.js';
import { cookieOf, headerOf, type ApiEvent } from '../../shared/http/api-event.js';
import { BINDING_COOKIE, bindingCookie } from '../../shared/http/cookies.js';
import { createLogger } from '../../shared/http/logger.js';
import { jsonResponse } from '../../shared/http/responses.js';
import { auditTrail, noteAudit, noteRefreshWait, sessionFacts } from '../../shared/audit/trail.js';
import type { AuditAction } from '../../shared/audit/record.js';
import { tracing } from '../../shared/ops/tracing.js';
import { backchannelLogout } from './backchannel-logout.js';
import { opsMetrics } from '../../shared/ops/metrics.js';

const logger = createLogger('smart-launch-sessions');

/** A small JSON request body (the hand-off routes); anything else is treated as empty. */
function jsonBody(event: ApiEvent): unknown {
  if (!event.body || event.body.length > 4096) return undefined;
  try {
    return JSON.parse(event.isBase64Encoded ? Buffer.from(event.body, 'base64').toString('utf8') : event.body);
  } catch {
    return undefined;
  }
}

/**
 * `GET /sessions/{id}` (launch context, never a token), `POST /sessions/{id}/refresh` (renew now)
 * and `POST /sessions/{id}/logout` (revoke at the EHR, delete the session).
 */
export function createSessionsHandler(getDeps: () => Promise<CoreDeps>) {
  return apiHandler('sessions', 'json', logger, async (event, context) => {
    // Every EHR call ends before Lambda's or API Gateway's clock does (a clear 503/504, never a cut-off).
    const deps = withDeadline(await getDeps(), invocationDeadline(event, context, Date.now()));
    const requestStartedAt = deps.clock.now();
    if (event.resource === '/sessions/{id}/handoff/redeem') {
      // Redeemed from inside the app's frame, which has no binding cookie yet: the code and verifier
      // stand in for it. Only the app's own origin may redeem (browsers always send Origin on POST).
      if (headerOf(event, 'origin') !== new URL(deps.config.app.url).origin) {
        throw new SmartError('HANDOFF_REJECTED', 'the hand-off was not redeemed from the app origin');
      }
      const bindingSecret = await redeemHandoff(event.pathParameters?.id, jsonBody(event), deps);
      logger.info('sign-in handed off to the app frame');
      return { ...jsonResponse(200, { handedOff: true }), multiValueHeaders: { 'set-cookie': [bindingCookie(deps.config, bindingSecret)] } };
    }
    if (event.resource === '/backchannel-logout') return backchannelLogout(event, deps, logger);
    const session = await openSession(event.pathParameters?.id, cookieOf(event, BINDING_COOKIE), deps);
    noteAudit(event, sessionFacts(deps, session));
    switch (`${event.httpMethod} ${event.resource}`) {
      case 'GET /sessions/{id}':
        return jsonResponse(200, sessionView(deps.config, session));
      case 'POST /sessions/{id}/refresh': {
        if (session.secrets.refreshToken === undefined) {
          throw new SmartError('REFRESH_NOT_AVAILABLE', 'this session has no refresh token');
        }
        const refreshed = await ensureFreshSession(session, deps, { force: true, requestStartedAt });
        if (refreshed.refreshNotStored) logger.warn('refreshed tokens could not be stored: the lease lapsed');
        // Joined another request's refresh (waited for it, or found its fresh token): no token request of its own.
        if (refreshed.waitedForRefresh || refreshed.record.revision === session.record.revision) noteRefreshWait(event);
        logger.info('session refreshed', { revision: refreshed.record.revision });
        return jsonResponse(200, {
          expiresAt: new Date(refreshed.secrets.accessTokenExpiresAt).toISOString(),
          sessionExpiresAt: new Date(refreshed.record.expiresAt * 1000).toISOString(),
          scope: refreshed.secrets.scope,
        });
      }
      case 'POST /sessions/{id}/handoff': {
        const challenge = parseHandoffChallenge(jsonBody(event));
        const handoff = await createHandoff(session, cookieOf(event, BINDING_COOKIE), challenge, deps);
        logger.info('sign-in hand-off code issued');
        return jsonResponse(200, handoff);
      }
      case 'POST /sessions/{id}/logout': {
        // Read before the session goes: it needs the session's id_token.
        const endSessionRedirect = await endSessionUrl(session, deps);
        const { revocation, status } = await endSession(session, deps);
        if (revocation === 'failed') logger.warn('revocation at the EHR failed; the session was deleted anyway', { upstreamStatus: status ?? 0 });
        logger.info('session ended', { revocation });
        noteAudit(event, { revocation });
        return jsonResponse(200, { loggedOut: true, revocation, ...(endSessionRedirect !== undefined ? { endSessionUrl: endSessionRedirect } : {}) });
      }
      default:
        throw new SmartError('METHOD_NOT_ALLOWED', `${event.httpMethod} is not supported on this route`);
    }
  }, { corsConfig: async () => (await getDeps()).config, observe: [...tracing(), auditTrail(getDeps, logger, auditedAction), opsMetrics(getDeps, 'sessions')] });
}

/** The audited actions of this route group (reading the launch context is not one). */
function auditedAction(event: { httpMethod: string; resource: string }): AuditAction | undefined {
  if (event.httpMethod !== 'POST') return undefined;
  if (event.resource === '/sessions/{id}/refresh') return 'refresh';
  if (event.resource === '/sessions/{id}/logout') return 'logout';
  return undefined;
}

export const handler = createSessionsHandler(awsDeps);
