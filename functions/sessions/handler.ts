import { awsDeps } from '../../shared/runtime/aws-deps.js';
import type { CoreDeps } from '../../shared/core/deps.js';
import { SmartError } from '../../shared/core/errors.js';
import { openSession, sessionView } from '../../shared/core/session.js';
import { apiHandler } from '../../shared/http/api-handler.js';
import { cookieOf } from '../../shared/http/api-event.js';
import { BINDING_COOKIE } from '../../shared/http/cookies.js';
import { createLogger } from '../../shared/http/logger.js';
import { jsonResponse } from '../../shared/http/responses.js';

const logger = createLogger('smart-launch-sessions');

/** `GET /sessions/{id}` (launch context, never a token) and `POST /sessions/{id}/logout`. */
export function createSessionsHandler(getDeps: () => Promise<CoreDeps>) {
  return apiHandler('sessions', 'json', logger, async (event) => {
    const deps = await getDeps();
    const session = await openSession(event.pathParameters?.id, cookieOf(event, BINDING_COOKIE), deps);
    switch (`${event.httpMethod} ${event.resource}`) {
      case 'GET /sessions/{id}':
        return jsonResponse(200, sessionView(deps.config, session));
      case 'POST /sessions/{id}/logout':
        await deps.store.deleteSession(session.record.key);
        logger.info('session ended');
        return jsonResponse(200, { loggedOut: true });
      default:
        throw new SmartError('METHOD_NOT_ALLOWED', `${event.httpMethod} is not supported on this route`);
    }
  });
}

export const handler = createSessionsHandler(awsDeps);
