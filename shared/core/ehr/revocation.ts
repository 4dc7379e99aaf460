import type { CoreDeps } from '../deps.js';
import type { ClientAuthentication } from './client-auth.js';
import { postForm } from './http.js';

/**
 * Revokes a token at the EHR's RFC 7009 `revocation_endpoint` with the client's authentication (with
 * `private_key_jwt` the assertion's `aud` is the revocation endpoint itself, SMART-CAUTH-07).
 * Answers the HTTP status (RFC 7009 §2.2: 200 for a revoked or already invalid token); throws when
 * the endpoint cannot be reached in time.
 * @see https://www.rfc-editor.org/rfc/rfc7009#section-2.1
 */
export async function revokeToken(
  deps: Pick<CoreDeps, 'http' | 'clock'>,
  auth: ClientAuthentication,
  endpoint: string,
  token: string,
  tokenTypeHint: 'refresh_token' | 'access_token',
): Promise<number> {
  const request = await auth.formRequest(endpoint, { token, token_type_hint: tokenTypeHint });
  const response = await postForm(deps.http, request, undefined, deps.clock);
  await response.body?.cancel();
  return response.status;
}
