import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { generateKeyPair, SignJWT } from 'jose';
import { z } from 'zod';
import { SIGNING_ALG, type SigningKey } from './signing-key.js';

/** The event a logout token carries (OpenID Connect Back-Channel Logout 1.0 §2.4). */
export const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout';

/**
 * `POST /admin/backchannel-logout`: makes the sandbox act as an OpenID provider whose user signed
 * out, POSTing a signed `logout_token` (form-encoded) to a relying party's `backchannel_logout_uri`.
 * `claims` overrides or (with `null`) removes claims, and `signWithOtherKey` signs with a throw-away
 * key, so tests can send invalid tokens as well. Loopback targets only.
 */
export const BackchannelLogoutRequestSchema = z.strictObject({
  uri: z.url(),
  clientId: z.string().min(1),
  sub: z.string().min(1).optional(),
  sid: z.string().min(1).optional(),
  claims: z.record(z.string(), z.unknown()).optional(),
  signWithOtherKey: z.boolean().optional(),
});
export type BackchannelLogoutRequest = z.infer<typeof BackchannelLogoutRequestSchema>;

function isLoopbackUrl(uri: string): boolean {
  const hostname = new URL(uri).hostname.replace(/^\[|\]$/g, '');
  return hostname === 'localhost' || hostname === '::1' || (isIP(hostname) === 4 && hostname.startsWith('127.'));
}

export async function sendBackchannelLogout(
  issuer: string,
  signingKey: SigningKey,
  request: BackchannelLogoutRequest,
  nowSeconds: number = Math.floor(Date.now() / 1000),
): Promise<{ status: number; body: string; cacheControl: string | null }> {
  if (!isLoopbackUrl(request.uri)) throw new Error('the sandbox sends back-channel logout tokens to loopback receivers only');
  const payload: Record<string, unknown> = {
    iss: issuer,
    aud: request.clientId,
    iat: nowSeconds,
    exp: nowSeconds + 120,
    jti: randomBytes(16).toString('base64url'),
    events: { [BACKCHANNEL_LOGOUT_EVENT]: {} },
    ...(request.sub !== undefined ? { sub: request.sub } : {}),
    ...(request.sid !== undefined ? { sid: request.sid } : {}),
  };
  for (const [name, value] of Object.entries(request.claims ?? {})) {
    if (value === null) delete payload[name];
    else payload[name] = value;
  }
  const key = request.signWithOtherKey ? generateKeyPair(SIGNING_ALG).then((pair) => pair.privateKey) : Promise.resolve(signingKey.privateKey);
  const token = await new SignJWT(payload).setProtectedHeader({ alg: SIGNING_ALG, kid: signingKey.kid, typ: 'logout+jwt' }).sign(await key);
  const response = await fetch(request.uri, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ logout_token: token }).toString(),
  });
  return { status: response.status, body: await response.text(), cacheControl: response.headers.get('cache-control') };
}

/** Where the sandbox serves RP-initiated logout (advertised only under the `endSession` quirk). */
export const END_SESSION_PATH = '/end-session';

/** One call of the sandbox's end-session endpoint, as recorded for tests. */
export interface EndSessionCall {
  readonly clientId: string | null;
  readonly postLogoutRedirectUri: string | null;
  readonly state: string | null;
  /** The `sub` of a valid `id_token_hint`; `undefined` when no hint was sent. */
  readonly sub: string | undefined;
  readonly outcome: 'redirected' | 'refused';
}

/**
 * `GET /end-session` (OpenID Connect RP-Initiated Logout 1.0): identifies the client by `client_id`
 * (one of the sandbox's clients) and, when an `id_token_hint` is sent, verifies it (signed by the
 * sandbox, for that client); records the call, and redirects to `post_logout_redirect_uri` with
 * `state`; anything invalid answers 400 and redirects nowhere.
 */
export async function endSessionRedirect(
  issuer: string,
  signingKey: SigningKey,
  url: URL,
  isClient: (clientId: string) => boolean,
): Promise<{ call: EndSessionCall; location?: string }> {
  const params = url.searchParams;
  const clientId = params.get('client_id');
  const postLogoutRedirectUri = params.get('post_logout_redirect_uri');
  const state = params.get('state');
  let sub: string | undefined;
  let hintValid = true;
  const hint = params.get('id_token_hint');
  if (hint !== null) {
    try {
      const { jwtVerify, importJWK } = await import('jose');
      // An expired id_token is still a valid hint (RP-Initiated Logout §2).
      const { payload } = await jwtVerify(hint, await importJWK(signingKey.publicJwk, SIGNING_ALG), {
        issuer,
        ...(clientId ? { audience: clientId } : {}),
        clockTolerance: 365 * 24 * 3600,
      });
      sub = typeof payload.sub === 'string' ? payload.sub : undefined;
    } catch {
      hintValid = false;
    }
  }
  const valid = clientId !== null && isClient(clientId) && hintValid && postLogoutRedirectUri !== null && URL.canParse(postLogoutRedirectUri);
  const call: EndSessionCall = { clientId, postLogoutRedirectUri, state, sub, outcome: valid ? 'redirected' : 'refused' };
  if (!valid) return { call };
  const location = new URL(postLogoutRedirectUri!);
  if (state !== null) location.searchParams.set('state', state);
  return { call, location: location.href };
}
