import { awsSigner } from '../../shared/runtime/aws-signer.js';
import { publishableJwks } from '../../shared/core/client-assertion.js';
import type { ClientSigner, PublicJwk } from '../../shared/core/ports.js';
import { ENV } from '../../shared/config/env.js';
import type { Logger } from '@aws-lambda-powertools/logger';
import { apiHandler } from '../../shared/http/api-handler.js';
import { createLogger } from '../../shared/http/logger.js';
import { BASE_HEADERS } from '../../shared/http/responses.js';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import { METRIC_NAMESPACE_PREFIX } from '../../shared/ops/metric-points.js';
import { tracing } from '../../shared/ops/tracing.js';

const logger = createLogger('smart-launch-jwks');

/** How long EHRs may cache the key set: short enough that a rotation's new key is seen within minutes. */
export const JWKS_MAX_AGE_SECONDS = 300;

/** Counts unreadable keys: `JwksKeyUnreadable` (dimension `Function` = `jwks`), one EMF line. */
export type UnreadableKeyCounter = (count: number) => void;

let metrics: Metrics | undefined;
function countUnreadable(count: number): void {
  metrics ??= new Metrics({ namespace: process.env[ENV.metricNamespace]?.trim() || METRIC_NAMESPACE_PREFIX, serviceName: 'smart-launch' });
  const single = metrics.singleMetric();
  single.clearDefaultDimensions();
  single.addDimensions({ Function: 'jwks' });
  single.addMetric('JwksKeyUnreadable', MetricUnit.Count, count);
}

/**
 * The keys to publish. One unreadable key (a grant removed, a key disabled or pending deletion) does
 * not take the others down: it is logged (the key id and the error's name, never key material) and
 * counted, and the readable keys are served; only when none is readable does the error surface
 * (503 KEYRING_UNAVAILABLE through the one error mapping).
 */
async function readableKeys(signer: ClientSigner, count: UnreadableKeyCounter, log: Pick<Logger, 'warn'>): Promise<readonly PublicJwk[]> {
  if (signer.readablePublicJwks === undefined) return (await signer.publicJwks()).keys;
  const { keys, unreadable } = await signer.readablePublicJwks();
  for (const { keyId, error } of unreadable) {
    const name = error instanceof Error ? error.name : 'unknown';
    const details = (error as { details?: Record<string, unknown> } | undefined)?.details;
    log.warn('JWKS key unreadable', { keyId, error: name, awsError: details?.awsError, operation: details?.operation, served: keys.length });
  }
  if (unreadable.length > 0) count(unreadable.length);
  if (keys.length === 0 && unreadable.length > 0) throw unreadable[0]!.error;
  return keys;
}

/**
 * `GET /.well-known/jwks.json`: the public keys EHRs verify our `private_key_jwt` assertions with
 * (current and next, SMART-REG-03/04), unauthenticated and cacheable; an empty set when no issuer
 * uses `private_key_jwt`. Only public members ever leave: `publishableJwks` drops everything else.
 */
export interface JwksHandlerOptions {
  readonly countUnreadable?: UnreadableKeyCounter;
  /** Where an unreadable key is reported (default: the function's structured logger). */
  readonly log?: Pick<Logger, 'warn'>;
}

export function createJwksHandler(getSigner: () => Promise<ClientSigner | undefined>, options: JwksHandlerOptions = {}) {
  return apiHandler('jwks', 'json', logger, async () => {
    const signer = await getSigner();
    const jwks = publishableJwks(signer === undefined ? [] : await readableKeys(signer, options.countUnreadable ?? countUnreadable, options.log ?? logger));
    const { pragma: _noCache, ...base } = BASE_HEADERS;
    return {
      statusCode: 200,
      headers: { ...base, 'content-type': 'application/json', 'cache-control': `public, max-age=${JWKS_MAX_AGE_SECONDS}` },
      body: JSON.stringify(jwks),
    };
  }, { observe: tracing() });
}

export const handler = createJwksHandler(async () => awsSigner());
