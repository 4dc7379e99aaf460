import { awsDeps } from '../../shared/runtime/aws-deps.js';
import type { CoreDeps } from '../../shared/core/deps.js';
import { SmartError } from '../../shared/core/errors.js';
import { endSession } from '../../shared/core/logout.js';
import { ensureFreshSession } from '../../shared/core/refresh.js';
import { openSession, sessionView } from '../../shared/core/session.js';
import { apiHandler } from '../../shared/http/api-handler.js';
import { cookieOf } from '../../shared/http/api-event.js';
import { BINDING_COOKIE } from '../../shared/http/cookies.js';
import { createLogger } from '../../shared/http/logger.js';
import { jsonResponse } from '../../shared/http/responses.js';
import { auditTrail, noteAudit, noteRefreshWait, sessionFacts } from '../../shared/audit/trail.js';
import type { AuditAction } from '../../shared/audit/record.js';
import { tracing } from '../../shared/ops/tracing.js';
import { opsMetrics } from '../../shared/ops/metrics.js';

const logger = createLogger('smart-launch-sessions');

/**
 * `GET /sessions/{id}` (launch context, never a token), `POST /sessions/{id}/refresh` (renew now)
 * and `POST /sessions/{id}/logout` (revoke at the EHR, delete the session).
 */
export function createSessionsHandler(getDeps: () => Promise<CoreDeps>) {
  return apiHandler('sessions', 'json', logger, async (event) => {
    const deps = await getDeps();
    const requestStartedAt = deps.clock.now();
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
      case 'POST /sessions/{id}/logout': {
        const { revocation, status } = await endSession(session, deps);
        if (revocation === 'failed') logger.warn('revocation at the EHR failed; the session was deleted anyway', { upstreamStatus: status ?? 0 });
        logger.info('session ended', { revocation });
        noteAudit(event, { revocation });
        return jsonResponse(200, { loggedOut: true, revocation });
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
