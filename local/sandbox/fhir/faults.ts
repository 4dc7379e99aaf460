import { waitUnlessGone } from '../fhir-wire.js';
import type { FhirContext } from './context.js';
import { bearerChallenge, FhirError } from './exchange.js';
import type { Exchange } from './exchange.js';

/*
 * FHIR faults, read from `faults` on every request: `fhirDelayMs` (delays), `fhir401` (refused
 * tokens), `fhirDropConnection` (answers cut off), `fhirAnswer` (canned answers with any status).
 */

/**
 * Test switches, for interactions that need a token (not `/metadata`, not CORS preflights): a
 * delay first, then a refused token, and a connection that breaks while the answer is sent.
 * Returns false when the client went away during the delay (nothing is answered then).
 */
export async function applyFaults(ctx: FhirContext, ex: Exchange): Promise<boolean> {
  const { options, fhirBasePath } = ctx;
  const faults = options.faults;
  if (faults === undefined) {
    return true;
  }
  const delay = faults.fhirDelayMs;
  if (delay !== undefined) {
    if (!Number.isInteger(delay) || delay < 0 || delay > 600_000) {
      throw new TypeError(`faults.fhirDelayMs must be an integer from 0 to 600000, got ${String(delay)}`);
    }
    if (!(await waitUnlessGone(ex.res, delay))) {
      return false;
    }
  }
  ex.drop = faults.fhirDropConnection === true;
  const refuse = faults.fhir401;
  if (refuse !== undefined) {
    if (refuse !== 'once' && refuse !== 'always') {
      throw new TypeError(`faults.fhir401 must be 'once' or 'always', got ${String(refuse)}`);
    }
    if (refuse === 'once') {
      faults.fhir401 = undefined;
    }
    const message = 'the access token was refused (sandbox fault fhir401)';
    throw new FhirError(401, 'expired', message, { 'WWW-Authenticate': bearerChallenge({ code: 'invalid_token', description: message }) });
  }
  const canned = faults.fhirAnswer;
  if (canned !== undefined) {
    const path = new URL(ex.req.url ?? '/', 'http://sandbox.invalid').pathname.slice(fhirBasePath.length + 1);
    if (canned.pathPrefix === undefined || path.startsWith(canned.pathPrefix)) {
      const body = canned.body === undefined ? undefined : canned.body.startsWith('base64:') ? Buffer.from(canned.body.slice(7), 'base64') : Buffer.from(canned.body, 'utf8');
      ex.res.writeHead(canned.status, { ...(canned.headers ?? {}) });
      ex.res.end(body);
      return false;
    }
  }
  return true;
}
