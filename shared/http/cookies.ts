import type { Config } from '../config/schema.js';

/**
 * The browser-binding cookie (invariant 2): `__Host-` prefixed (so `Secure`, `Path=/` and no
 * `Domain`), `HttpOnly`, `SameSite` from config; `None` is always sent with `Partitioned` (CHIPS)
 * so that it works, and stays in the EHR's partition, inside an EHR iframe (BFF-12).
 */
export const BINDING_COOKIE = '__Host-smart-launch';

export function bindingCookie(config: Config, secret: string): string {
  const attributes = [
    `${BINDING_COOKIE}=${secret}`,
    'Path=/',
    'Secure',
    'HttpOnly',
    `SameSite=${config.cookie.sameSite}`,
    `Max-Age=${config.session.lifetimeMinutes * 60}`,
  ];
  if (config.cookie.sameSite === 'None') attributes.push('Partitioned');
  return attributes.join('; ');
}
