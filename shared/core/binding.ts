import { timingSafeEqual } from 'node:crypto';
import { bindingHash } from './sealed-records.js';
import { OPAQUE_ID, UNBOUND } from './records.js';

/**
 * The browser binding (invariant 2): a random secret in the HttpOnly cookie, whose hash is stored
 * with the transaction and then the session. A request opens a session only with the id and the
 * cookie bound to it.
 */

/** A browser-binding secret from the cookie, if it has the shape we issue; anything else is ignored. */
export function validBindingSecret(value: string | undefined): string | undefined {
  return value !== undefined && OPAQUE_ID.test(value) ? value : undefined;
}

/** Whether the cookie's secret is the one whose hash was stored (compared in constant time). */
export function bindingMatches(stored: string, cookieSecret: string | undefined): boolean {
  if (stored === UNBOUND) return true;
  const secret = validBindingSecret(cookieSecret);
  if (secret === undefined) return false;
  const a = Buffer.from(stored);
  const b = Buffer.from(bindingHash(secret));
  return a.length === b.length && timingSafeEqual(a, b);
}
