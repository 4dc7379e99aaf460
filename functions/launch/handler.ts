import { awsDeps } from '../../shared/runtime/aws-deps.js';
import type { CoreDeps } from '../../shared/core/deps.js';
import { completeCallback, startLaunch } from '../../shared/core/launch.js';
import { invocationDeadline, withDeadline } from '../../shared/runtime/deadline.js';
import { apiHandler } from '../../shared/http/api-handler.js';
import { cookieOf, queryOf } from '../../shared/http/api-event.js';
import { BINDING_COOKIE, bindingCookie } from '../../shared/http/cookies.js';
import { createLogger } from '../../shared/http/logger.js';
import { formPostResponse, redirectResponse } from '../../shared/http/responses.js';
import { auditTrail, noteAudit } from '../../shared/audit/trail.js';
import { tracing } from '../../shared/ops/tracing.js';
import { opsMetrics } from '../../shared/ops/metrics.js';

const logger = createLogger('smart-launch-launch');

/** `GET /launch` and `GET /callback`: browser navigations, so errors answer an HTML page. */
export function createLaunchHandler(getDeps: () => Promise<CoreDeps>) {
  return apiHandler('launch', 'html', logger, async (event, context) => {
    // Every EHR call ends before Lambda's or API Gateway's clock does (a clear 503/504, never a cut-off).
    const deps = withDeadline(await getDeps(), invocationDeadline(event, context, Date.now()));
    const cookie = cookieOf(event, BINDING_COOKIE);
    if (event.resource === '/callback') {
      const result = await completeCallback(queryOf(event), cookie, deps);
      if (result.signedIn) noteAudit(event, result.signedIn);
      logger.info('sign-in completed');
      return redirectResponse(result.appUrl, result.bindingSecret ? [bindingCookie(deps.config, result.bindingSecret)] : []);
    }
    const result = await startLaunch(queryOf(event), cookie, deps);
    noteAudit(event, { iss: result.issuer.iss, launchMode: result.mode });
    logger.info('launch started', { mode: result.mode, iss: result.issuer.iss, authorizeMethod: result.authorizeForm ? 'POST' : 'GET' });
    const cookies = result.bindingSecret ? [bindingCookie(deps.config, result.bindingSecret)] : [];
    // SMART-AUTHZ-10: a request too long for a URL goes as an auto-submitting form.
    if (result.authorizeForm) return formPostResponse(result.authorizeForm.action, result.authorizeForm.fields, cookies);
    return redirectResponse(result.authorizeUrl, cookies);
  }, { observe: [...tracing(), auditTrail(getDeps, logger, (event) => (event.resource === '/callback' ? 'sign-in' : undefined)), opsMetrics(getDeps, 'launch')] });
}

export const handler = createLaunchHandler(awsDeps);
