import type { Logger } from '@aws-lambda-powertools/logger';
import type { CoreDeps } from '../../shared/core/deps.js';
import { correlationIdOf, headerOf, type ApiEvent, type ApiResult } from '../../shared/http/api-event.js';
import { jsonResponse } from '../../shared/http/responses.js';
import { backchannelLogout as carryOutBackchannelLogout } from '../../shared/ops/backchannel-logout.js';

/** At most this many form bytes are read: a logout token is a few hundred. */
const MAX_BODY_BYTES = 16_384;

function logoutTokenOf(event: ApiEvent): string | undefined {
  const type = headerOf(event, 'content-type') ?? '';
  if (!/^application\/x-www-form-urlencoded\b/i.test(type) || !event.body) return undefined;
  const body = event.isBase64Encoded ? Buffer.from(event.body, 'base64').toString('utf8') : event.body;
  if (body.length > MAX_BODY_BYTES) return undefined;
  const values = new URLSearchParams(body).getAll('logout_token');
  return values.length === 1 ? values[0] : undefined;
}

/**
 * `POST /backchannel-logout` (OpenID Connect Back-Channel Logout 1.0 §2.5-2.8): the EHR's OpenID
 * provider sends a form-encoded `logout_token`; shared/ops/backchannel-logout.ts validates it and ends
 * the sessions it names. Answers 200 with `Cache-Control: no-store`; a refused token is
 * `400 { "error": "invalid_request" }`; a sign-out that could not be carried out is an error through
 * the one error mapping.
 */
export async function backchannelLogout(event: ApiEvent, deps: CoreDeps, logger: Logger): Promise<ApiResult> {
  const noStore = { 'cache-control': 'no-store' };
  const result = await carryOutBackchannelLogout(logoutTokenOf(event), deps, { operationId: correlationIdOf(event), log: logger });
  if (result.outcome === 'refused') {
    logger.warn('back-channel logout token refused', { check: result.check });
    return jsonResponse(400, { error: 'invalid_request', error_description: result.message }, noStore);
  }
  logger.info('back-channel logout', { issuer: result.issuer, by: result.by, ended: result.ended });
  return jsonResponse(200, {}, noStore);
}
