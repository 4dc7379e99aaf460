import { createHash, randomUUID } from 'node:crypto';
import { CompactSign } from 'jose';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { countTokenRequest } from '../faults.js';
import type { IdTokenFault } from '../types.js';
import { isRecord, splitScope } from './state.js';
import type { AuthState } from './state.js';

/*
 * Token responses as oidc-provider gives them, completed for SMART: the launch context (patient,
 * encounter, fhirContext, need_patient_banner, smart_style_url, tenant), the full granted scope, the
 * counters of the token and revocation endpoints, and the id_token faults (faults.idToken).
 */

/**
 * Post-middleware on oidc-provider's own koa stack: counts calls and adds SMART launch context to
 * token responses (oidc-provider has no configuration hook for token response parameters). Token
 * requests the sandbox answers itself (faults) never get here; TokenEndpointFaults counts them.
 */
export function tokenEndpointMiddleware(state: AuthState): (ctx: KoaContextWithOIDC, next: () => Promise<void>) => Promise<void> {
  const { stats } = state.options;
  return async (ctx, next) => {
    await next();
    if (ctx.method !== 'POST' || !ctx.oidc) {
      return;
    }
    if (ctx.oidc.route === 'revocation') {
      const hint = ctx.oidc.body?.token_type_hint;
      const key = typeof hint === 'string' && hint !== '' ? hint : 'none';
      stats.revocations += 1;
      stats.revocationsByTokenType[key] = (stats.revocationsByTokenType[key] ?? 0) + 1;
      return;
    }
    if (ctx.oidc.route !== 'token') {
      return;
    }
    const grantType = typeof ctx.oidc.body?.grant_type === 'string' ? ctx.oidc.body.grant_type : 'unknown';
    // oidc-provider answers a reused refresh token with invalid_grant after loading it as the
    // RefreshToken entity, already consumed (lib/actions/grants/refresh_token.js); a successful
    // rotation replaces that entity with the new, unconsumed token.
    if (grantType === 'refresh_token' && ctx.status >= 400 && ctx.oidc.entities.RefreshToken?.consumed !== undefined) {
      stats.refreshReuseDetected += 1;
    }
    let status = ctx.status;
    try {
      if (ctx.status === 200 && isRecord(ctx.body)) {
        await decorateTokenResponse(state, ctx, ctx.body);
      }
    } catch (error) {
      status = 500; // koa answers 500 for an error thrown here
      throw error;
    } finally {
      countTokenRequest(stats, grantType, status);
    }
  };
}

async function decorateTokenResponse(state: AuthState, ctx: KoaContextWithOIDC, body: Record<string, unknown>): Promise<void> {
  const { grantContexts, quirks, options } = state;
  const oidc = ctx.oidc;
  const source = oidc?.entities.AuthorizationCode ?? oidc?.entities.RefreshToken;
  const grant = oidc?.entities.Grant;
  const context = source?.grantId === undefined ? undefined : grantContexts.get(source.grantId);
  if (!oidc || !source || !grant || !context) {
    return;
  }

  // With resource indicators, oidc-provider's token response scope holds only the resource scopes;
  // SMART clients also expect the OIDC, launch and refresh scopes they were granted, so add them back.
  const requested = oidc.params?.scope ? splitScope(oidc.params.scope) : [...source.scopes];
  const grantedOidc = new Set(splitScope(grant.getOIDCScope()));
  const scope = requested.filter((s) => grantedOidc.has(s));
  if (context.refresh === 'offline_access' && typeof body.refresh_token === 'string') {
    scope.push('offline_access');
  }
  scope.push(...splitScope(body.scope));
  body.scope = [...new Set(scope)].join(' ');

  // Quirk noPatientContext: the launch context is left out (the access token still carries it).
  if (context.patient !== undefined && quirks.noPatientContext !== true) {
    body.patient = context.patient;
  }
  if (context.encounter !== undefined && quirks.noPatientContext !== true) {
    body.encounter = context.encounter;
  }
  if (context.fhirContext.length > 0) {
    body.fhirContext = context.fhirContext;
  }
  body.need_patient_banner = context.launchType === 'standalone';
  body.smart_style_url = options.smartStyleUrl;
  body.tenant = options.tenant;

  // `sid` (OpenID Connect Back-Channel Logout §2.1): one per grant, the same across refreshes, so a
  // back-channel logout token can name one sign-in of a user who has several.
  if (typeof body.id_token === 'string') {
    body.id_token = await withSid(state, body.id_token, sidOfGrant(source.grantId as string));
  }

  const fault = options.faults.idToken;
  if (fault !== undefined && typeof body.id_token === 'string') {
    body.id_token = await tamperIdToken(state, body.id_token, fault);
  }
}

/** The sandbox's OpenID provider session id of a grant: stable, opaque, not the grant id itself. */
export function sidOfGrant(grantId: string): string {
  return createHash('sha256').update(`sid:${grantId}`).digest('base64url').slice(0, 22);
}

/** The id_token with `sid` set (when oidc-provider left it out), re-signed with the sandbox's key. */
async function withSid(state: AuthState, jwt: string, sid: string): Promise<string> {
  const [header, payload] = jwt.split('.');
  if (header === undefined || payload === undefined) throw new Error('oidc-provider returned an id_token that is not a compact JWS');
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
  if (typeof claims.sid === 'string') return jwt;
  const protectedHeader = JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as { alg: string; kid?: string; typ?: string };
  return new CompactSign(new TextEncoder().encode(JSON.stringify({ ...claims, sid })))
    .setProtectedHeader(protectedHeader)
    .sign(state.options.signingKey.privateKey);
}

async function tamperIdToken(state: AuthState, jwt: string, fault: IdTokenFault): Promise<string> {
  const { options } = state;
  const [header, payload, signature] = jwt.split('.');
  if (header === undefined || payload === undefined || signature === undefined) {
    throw new Error('oidc-provider returned an id_token that is not a compact JWS');
  }
  if (fault === 'bad-signature') {
    const bytes = Buffer.from(signature, 'base64url');
    for (const i of [0, Math.floor(bytes.length / 2), bytes.length - 1]) {
      bytes[i] = (bytes[i] ?? 0) ^ 0xff;
    }
    return `${header}.${payload}.${bytes.toString('base64url')}`;
  }
  const protectedHeader = JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as { alg: string; kid?: string; typ?: string };
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
  const now = Math.floor(Date.now() / 1000);
  switch (fault) {
    case 'wrong-aud':
      claims.aud = 'some-other-client';
      break;
    case 'wrong-nonce':
      claims.nonce = `not-your-nonce-${randomUUID()}`;
      break;
    case 'wrong-iss':
      claims.iss = `${options.origin}/not-the-issuer`;
      break;
    case 'expired':
      claims.iat = now - 3600;
      claims.exp = now - 600;
      break;
  }
  // Re-signed with the real key, so only the named claim is wrong.
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader(protectedHeader)
    .sign(options.signingKey.privateKey);
}
