import { SmartError } from '../core/errors.js';
import type { EncryptionContext } from '../core/ports.js';

/**
 * An empty context would still wrap and unwrap, silently dropping the binding of a data key to its
 * record (a wrapped key copied into another record would then open). That is a caller bug, so it
 * fails loudly instead.
 */
export function assertContextNotEmpty(context: EncryptionContext): void {
  if (Object.keys(context).length === 0) {
    throw new SmartError('INTERNAL', 'an encryption context naming the record is required');
  }
}

/**
 * One byte string per context, whatever the insertion order of its keys: entries sorted by key and
 * JSON-encoded as pairs, so no choice of keys or values can make two contexts serialize alike.
 */
export function canonicalContext(context: EncryptionContext): string {
  const entries = Object.keys(context)
    .sort()
    .map((name) => [name, context[name]]);
  return JSON.stringify(entries);
}
