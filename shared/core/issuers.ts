import type { Config, IssuerConfig } from '../config/schema.js';
import { SmartError } from './errors.js';

/**
 * Picks the configured issuer for a launch. `iss` is compared as an exact string (no trailing-slash
 * or case normalisation) before anything touches the network: an issuer that is not on the
 * customer's list is never fetched and never redirected to (SMART-LAUNCH-02, invariant 3).
 * Without `iss`, a standalone launch uses the default issuer (or the only one).
 */
export function resolveIssuer(config: Config, iss: string | undefined): IssuerConfig {
  if (iss !== undefined) {
    const match = issuerOf(config, iss);
    if (!match) throw new SmartError('ISSUER_NOT_ALLOWED', '"iss" is not an EHR configured for this customer');
    return match;
  }
  const fallback = config.issuers.find((issuer) => issuer.default === true) ?? (config.issuers.length === 1 ? config.issuers[0] : undefined);
  if (!fallback) throw new SmartError('NO_DEFAULT_ISSUER', 'the launch has no "iss" and no issuer is marked as the default');
  return fallback;
}

/** The configured issuer a session or transaction was opened with (`iss` matched exactly, as at launch); `undefined` once removed from the configuration. */
export function issuerOf(config: Config, iss: string): IssuerConfig | undefined {
  return config.issuers.find((issuer) => issuer.iss === iss);
}
