import { timingSafeEqual } from 'node:crypto';
import * as z from '../config/zod.js';
import type { CoreDeps } from './deps.js';
import { randomToken, sha256Base64url } from './crypto.js';
import { SmartError } from './errors.js';
import { encryptionContext, openJson, sealJson, sessionKey } from './sealed-records.js';
import { OPAQUE_ID } from './records.js';
import { checkSessionId, type OpenSession } from './session.js';
import { builtOnFirstUse } from './lazy.js';

/**
 * Popup sign-in hand-off. An app embedded in an EHR frame whose authorize page refuses framing signs
 * in through a popup; the popup's binding cookie lives in another cookie partition than the frame's,
 * so the session must be handed over:
 *
 * 1. Before opening the popup, the framed app draws a random `verifier` and gives the popup only
 *    `challenge = base64url(SHA-256(verifier))`.
 * 2. The popup completes the callback normally, then (with its binding cookie) asks for a hand-off
 *    code for its session and that challenge: single-use, bound to the session, valid seconds.
 * 3. The popup posts `{ session id, code }` to its opener with the app's exact origin as target.
 * 4. The framed app redeems `code` + `verifier` from inside the frame: the answer sets the binding
 *    cookie in the frame's own partition.
 *
 * The code record is keyed by a hash of the code and holds the binding secret sealed under the
 * session's data key (AAD: the hand-off record), so an intercepted code, or code and session id
 * together, open nothing without the verifier, which never leaves the frame.
 */
export const HANDOFF_SECONDS = 30;

export const handoffKey = (code: string) => `hof#${sha256Base64url(code)}`;

const HandoffSecretsSchema = builtOnFirstUse(() =>
  z.object({
    v: z.literal(1),
    bindingSecret: z.string().check(z.regex(OPAQUE_ID)),
    challenge: z.string().check(z.regex(OPAQUE_ID)),
  }),
);

export interface HandoffCode {
  readonly code: string;
  readonly expiresAt: string;
}

/** The challenge of `POST /sessions/{id}/handoff`: a base64url SHA-256, 43 characters. */
export function parseHandoffChallenge(body: unknown): string {
  const challenge = (body as { challenge?: unknown } | null)?.challenge;
  if (typeof challenge !== 'string' || !OPAQUE_ID.test(challenge)) {
    throw new SmartError('INVALID_REQUEST', 'send JSON {"challenge": base64url(SHA-256(verifier))}');
  }
  return challenge;
}

/** Step 2: a code for an open session (opened with its binding cookie) and the frame's challenge. */
export async function createHandoff(session: OpenSession, bindingSecret: string | undefined, challenge: string, deps: CoreDeps): Promise<HandoffCode> {
  if (bindingSecret === undefined) {
    // Binding turned off: the session id alone opens the session; there is nothing to hand over.
    throw new SmartError('INVALID_REQUEST', 'this configuration does not bind sessions to a browser, so no hand-off is needed');
  }
  const now = Math.floor(deps.clock.now() / 1000);
  const code = randomToken(deps.random);
  const key = handoffKey(code);
  await deps.store.putTransaction({
    key,
    iss: session.record.iss,
    bindingHash: session.record.bindingHash,
    endpoints: session.record.endpoints,
    // The session's own data key: redeeming unwraps it under the session's encryption context.
    wrappedKey: session.record.wrappedKey,
    sealed: sealJson(session.dataKey, { v: 1, bindingSecret, challenge }, key, deps.random),
    createdAt: now,
    expiresAt: Math.min(now + HANDOFF_SECONDS, session.record.expiresAt),
    sessionKey: session.record.key,
  });
  return { code, expiresAt: new Date((now + HANDOFF_SECONDS) * 1000).toISOString() };
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Step 4: takes the code (once, whatever follows), checks it belongs to this session and that the
 * verifier matches its challenge, and answers the binding secret to set as the frame's cookie. Every
 * failure is the same `401 HANDOFF_REJECTED`: a caller learns nothing about which part was wrong.
 */
export async function redeemHandoff(sessionIdParam: string | undefined, body: unknown, deps: CoreDeps): Promise<string> {
  const sessionId = checkSessionId(sessionIdParam);
  const { code, verifier } = (body ?? {}) as { code?: unknown; verifier?: unknown };
  const rejected = () => new SmartError('HANDOFF_REJECTED', 'the hand-off code is unknown, used, expired, or not for this session');
  if (typeof code !== 'string' || !OPAQUE_ID.test(code) || typeof verifier !== 'string' || verifier.length < 43 || verifier.length > 128) {
    throw rejected();
  }
  const nowSeconds = Math.floor(deps.clock.now() / 1000);
  const key = handoffKey(code);
  const taken = await deps.store.takeTransaction(key, nowSeconds);
  const expectedSession = sessionKey(sessionId);
  if (taken.outcome !== 'taken' || !sameSecret(taken.record.sessionKey, expectedSession)) throw rejected();
  const { record } = taken;
  // The session must still be open: a code outliving a logout opens nothing.
  if (!(await deps.store.getSession(expectedSession, nowSeconds))) throw rejected();
  const dataKey = await deps.keyRing.decryptDataKey(record.wrappedKey, encryptionContext(deps.config, expectedSession));
  const secrets = openJson(HandoffSecretsSchema, dataKey, record.sealed, key);
  if (!sameSecret(sha256Base64url(verifier), secrets.challenge)) throw rejected();
  return secrets.bindingSecret;
}
