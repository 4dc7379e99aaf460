import { awsSigner } from '../../shared/runtime/aws-signer.js';
import { publishableJwks } from '../../shared/core/client-assertion.js';
import type { ClientSigner } from '../../shared/core/ports.js';
import { apiHandler } from '../../shared/http/api-handler.js';
import { createLogger } from '../../shared/http/logger.js';
import { BASE_HEADERS } from '../../shared/http/responses.js';
import { tracing } from '../../shared/ops/tracing.js';

const logger = createLogger('smart-launch-jwks');

/** How long EHRs may cache the key set: short enough that a rotation's new key is seen within minutes. */
export const JWKS_MAX_AGE_SECONDS = 300;

/**
 * `GET /.well-known/jwks.json`: the public keys EHRs verify our `private_key_jwt` assertions with
 * (current and next, SMART-REG-03/04), unauthenticated and cacheable; an empty set when no issuer
 * uses `private_key_jwt`. Only public members ever leave: `publishableJwks` drops everything else.
 */
export function createJwksHandler(getSigner: () => Promise<ClientSigner | undefined>) {
  return apiHandler('jwks', 'json', logger, async () => {
    const signer = await getSigner();
    const jwks = publishableJwks(signer === undefined ? [] : (await signer.publicJwks()).keys);
    const { pragma: _noCache, ...base } = BASE_HEADERS;
    return {
      statusCode: 200,
      headers: { ...base, 'content-type': 'application/json', 'cache-control': `public, max-age=${JWKS_MAX_AGE_SECONDS}` },
      body: JSON.stringify(jwks),
    };
  }, { observe: tracing() });
}

export const handler = createJwksHandler(async () => awsSigner());
