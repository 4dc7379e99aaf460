import { createHash } from 'node:crypto';
import { randomToken } from './crypto.js';
import type { Random } from './ports.js';

/** How the app was opened: from inside the EHR (with `launch`) or standalone. */
export type LaunchMode = 'ehr' | 'standalone';

/**
 * PKCE (RFC 7636): a verifier of 32 random octets (43 base64url characters, within 43..128 of
 * `[A-Za-z0-9-._~]`) and its S256 challenge. `plain` is never used (SMART-AUTHZ-08).
 */
export function createPkce(random: Random): { verifier: string; challenge: string } {
  const verifier = randomToken(random, 32);
  return { verifier, challenge: pkceChallenge(verifier) };
}

export function pkceChallenge(verifier: string): string {
  return createHash('sha256').update(verifier, 'ascii').digest('base64url');
}

/**
 * The scope to request. EHR launch needs `launch` (SMART-LAUNCH-03); a standalone launch has no
 * `launch` parameter, so `launch` is dropped and `launch/patient` added when patient-level access is
 * asked for (SMART-LAUNCH-04, SMART-SCOPE-09). Order is kept, duplicates removed.
 */
export function requestedScope(configured: string, mode: LaunchMode): string {
  const tokens = [...new Set(configured.split(' ').filter(Boolean))];
  if (mode === 'ehr') {
    return (tokens.includes('launch') ? tokens : ['launch', ...tokens]).join(' ');
  }
  const standalone = tokens.filter((t) => t !== 'launch');
  const wantsPatient = standalone.some((t) => t.startsWith('patient/'));
  if (wantsPatient && !standalone.includes('launch/patient')) standalone.unshift('launch/patient');
  return standalone.join(' ');
}

export function scopeIncludes(scope: string, token: string): boolean {
  return scope.split(' ').includes(token);
}

export interface AuthorizeRequest {
  readonly authorizationEndpoint: string;
  readonly clientId: string;
  readonly redirectUri: string;
  readonly scope: string;
  readonly state: string;
  /** The FHIR base URL, exactly the `iss` string received (SMART-AUTHZ-07). */
  readonly aud: string;
  readonly codeChallenge: string;
  readonly launch?: string | undefined;
  readonly nonce?: string | undefined;
}

/** The authorization request parameters (SMART-AUTHZ-01..08), in the order they are sent. */
function authorizeParams(request: AuthorizeRequest): Array<[string, string]> {
  const params: Array<[string, string]> = [
    ['response_type', 'code'],
    ['client_id', request.clientId],
    ['redirect_uri', request.redirectUri],
    ['scope', request.scope],
    ['state', request.state],
    ['aud', request.aud],
    ['code_challenge', request.codeChallenge],
    ['code_challenge_method', 'S256'],
  ];
  if (request.launch !== undefined) params.push(['launch', request.launch]);
  if (request.nonce !== undefined) params.push(['nonce', request.nonce]);
  return params;
}

/**
 * The authorization request URL (SMART-AUTHZ-01..08): `response_type=code`, `client_id`,
 * `redirect_uri`, `scope`, `state`, `aud`, `code_challenge` + `S256`, `launch` (EHR launch only) and
 * `nonce` (when `openid` is asked). Query parameters already on the endpoint are kept.
 * @see https://hl7.org/fhir/smart-app-launch/STU2.2/app-launch.html#step-4-authorization-code
 */
export function buildAuthorizeUrl(request: AuthorizeRequest): string {
  const url = new URL(request.authorizationEndpoint);
  for (const [name, value] of authorizeParams(request)) url.searchParams.set(name, value);
  return url.href;
}

/** The same authorization request as an HTML form POST (`application/x-www-form-urlencoded`). */
export interface AuthorizeForm {
  /** The authorization endpoint, with any query parameters of its own. */
  readonly action: string;
  readonly fields: ReadonlyArray<readonly [string, string]>;
}

/**
 * The authorization request sent by POST (SMART-AUTHZ-10, OIDC Core §3.1.2.1), for scopes too long for
 * a URL: the same parameters as `buildAuthorizeUrl`, PKCE included, in the form body.
 * @see https://hl7.org/fhir/smart-app-launch/STU2.2/app-launch.html#step-4-authorization-code
 */
export function buildAuthorizeForm(request: AuthorizeRequest): AuthorizeForm {
  return { action: new URL(request.authorizationEndpoint).href, fields: authorizeParams(request) };
}
