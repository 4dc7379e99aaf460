import type { IncomingMessage, ServerResponse } from 'node:http';
import { readBody, sendHtml } from '../http-util.js';
import { renderErrorPage } from '../pages.js';
import { isV2ResourceScope, narrowResourceScopes } from '../quirks.js';
import { isResourceScope } from '../scopes.js';
import { AUTHORIZATION_ROUTE, MAX_TOKEN_BODY_BYTES, splitScope } from './state.js';
import type { AuthState } from './state.js';

/*
 * The authorization endpoint, in front of oidc-provider: authorize-post, the launch options of the
 * sandbox EHR page that act before the sign-in (simulated authorize errors, framing refusal) and the
 * quirks that change the authorization request (narrowScopes, v1Only).
 */

/** Headers of the EHR sign-in pages of a launch whose sign-in refuses framing (launch option refuseFraming). */
export const FRAME_REFUSED: Readonly<Record<string, string>> = {
  'X-Frame-Options': 'DENY',
  'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
};

/**
 * Takes a request below the issuer (`path` is its path and query there, `req.url` already set to it)
 * before oidc-provider does. Returns the path to hand on (rewritten for authorize-post and
 * narrowScopes), or undefined when the request was answered here.
 */
export async function interceptAuthorizationRequest(ctx: AuthState, req: IncomingMessage, res: ServerResponse, path: string): Promise<string | undefined> {
  let rest = path;
  if (req.method === 'POST' && rest.split('?')[0] === AUTHORIZATION_ROUTE) {
    // SMART authorize-post (SMART-AUTHZ-10). oidc-provider takes authorization requests by POST only
    // with SameSite=None session cookies, which plain-http browsers refuse: the sandbox hands the
    // same request to it as a GET instead, in process (the browser never sees a long URL).
    const type = (req.headers['content-type'] ?? '').toLowerCase();
    if (!type.startsWith('application/x-www-form-urlencoded')) {
      sendHtml(res, 400, renderErrorPage('invalid_request', 'Send the authorization request as an application/x-www-form-urlencoded form.'));
      return undefined;
    }
    const body = (await readBody(req, MAX_TOKEN_BODY_BYTES)).toString('utf8');
    rest = `${AUTHORIZATION_ROUTE}?${new URLSearchParams(body).toString()}`;
    Object.assign(req, { method: 'GET', url: rest, originalUrl: `${ctx.issuerPath}${rest}` });
  }
  if (req.method === 'GET' && rest.split('?')[0] === AUTHORIZATION_ROUTE) {
    const launchId = new URLSearchParams(rest.split('?')[1] ?? '').get('launch');
    const launchOptions = launchId === null ? undefined : ctx.options.launches.resolve(launchId)?.options;
    const frameHeaders = launchOptions?.refuseFraming === true ? FRAME_REFUSED : {};
    for (const [name, value] of Object.entries(frameHeaders)) res.setHeader(name, value);
    // RFC 6749 §4.1.2.1: with an unknown client or a wrong redirect URI the EHR must not redirect.
    if (launchOptions?.authorizeOutcome === 'invalid_client') {
      sendHtml(res, 400, renderErrorPage('invalid_client', 'The EHR does not know this app (client_id), so it cannot send you back to it. (Simulated by the sandbox EHR.)'), frameHeaders);
      return undefined;
    }
    if (launchOptions?.authorizeOutcome === 'invalid_redirect') {
      sendHtml(res, 400, renderErrorPage('invalid_request', 'The redirect_uri is not registered for this app, so the EHR will not send you there. (Simulated by the sandbox EHR.)'), frameHeaders);
      return undefined;
    }
  }
  if (ctx.quirks.narrowScopes === true && req.method === 'GET' && rest.split('?')[0] === AUTHORIZATION_ROUTE) {
    // Quirk narrowScopes: the user shares less than the app asked for, as if they had unticked
    // boxes on a consent screen; the request goes on with the narrower scope.
    rest = narrowedAuthorizationRequest(rest);
    Object.assign(req, { url: rest, originalUrl: `${ctx.issuerPath}${rest}` });
  }
  if (ctx.quirks.v1Only === true && rest.split('?')[0] === AUTHORIZATION_ROUTE && refusedV2Scopes(ctx, res, rest)) {
    return undefined;
  }
  return rest;
}

/** `narrowScopes`: no refresh scopes, and only Patient access among the resource scopes. */
function narrowedAuthorizationRequest(rest: string): string {
  const params = new URLSearchParams(rest.split('?')[1] ?? '');
  const scope = splitScope(params.get('scope') ?? '');
  const kept = scope.filter((s) => !isResourceScope(s) && s !== 'offline_access' && s !== 'online_access');
  params.set('scope', [...kept, ...narrowResourceScopes(scope.filter(isResourceScope))].join(' '));
  return `${AUTHORIZATION_ROUTE}?${params.toString()}`;
}

/**
 * Quirk v1Only: a SMART v1 server does not know v2 resource scopes (`.rs`, granular ones) and refuses
 * the authorization request with `invalid_scope` (RFC 6749 §4.1.2.1), redirected back to a
 * registered redirect URI (an error page otherwise). True when it answered.
 */
function refusedV2Scopes(ctx: AuthState, res: ServerResponse, rest: string): boolean {
  const params = new URLSearchParams(rest.split('?')[1] ?? '');
  const v2 = splitScope(params.get('scope') ?? '').filter(isV2ResourceScope);
  if (v2.length === 0) {
    return false;
  }
  const client = ctx.options.clients.find((c) => c.clientId === params.get('client_id'));
  const redirectUri = params.get('redirect_uri') ?? '';
  if (!client?.redirectUris.includes(redirectUri)) {
    sendHtml(res, 400, renderErrorPage('invalid_scope', 'This EHR accepts SMART v1 scopes only (.read, .write, .*).'));
    return true;
  }
  const target = new URL(redirectUri);
  target.searchParams.set('error', 'invalid_scope');
  target.searchParams.set('error_description', `SMART v1 scopes only; not accepted: ${v2.join(' ').slice(0, 200)}`);
  const state = params.get('state');
  if (state !== null) {
    target.searchParams.set('state', state);
  }
  target.searchParams.set('iss', ctx.options.issuer);
  res.writeHead(303, { Location: target.href, 'Cache-Control': 'no-store' });
  res.end();
  return true;
}
