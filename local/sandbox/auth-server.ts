import type { IncomingMessage, ServerResponse } from 'node:http';
import Provider from 'oidc-provider';
import { tokenEndpointFaulted } from './faults.js';
import { interceptAuthorizationRequest } from './auth/authorize.js';
import { accessTokenVerifier, recordIssuedAccessToken, revokeGrantForAccessToken, revokeGrantForRefreshToken } from './auth/grants.js';
import type { VerifiedAccessToken } from './auth/grants.js';
import { handleInteraction, rememberRequestedRefresh } from './auth/interaction.js';
import { providerConfiguration } from './auth/provider-config.js';
import { createAuthState, TOKEN_ROUTE } from './auth/state.js';
import type { AuthContext, AuthServerOptions } from './auth/state.js';
import { TokenEndpointFaults } from './auth/token-faults.js';
import { tokenEndpointMiddleware } from './auth/token-response.js';

/*
 * The sandbox's SMART authorization server: oidc-provider mounted under the issuer path, with the
 * sandbox's own steps in front of it and around it. Each concern has its module under auth/:
 * state.ts (what the modules share), provider-config.ts (oidc-provider's configuration: clients and
 * their authentication, lifetimes, claims), authorize.ts (authorization endpoint: authorize-post,
 * launch options, scope quirks), interaction.ts (sign-in and consent, grants with launch context),
 * token-faults.ts and token-response.ts (token endpoint), grants.ts (access-token checks for the FHIR
 * server, revocation from outside OAuth), signing-key.ts.
 */

export { AccessTokenRejected } from './auth/grants.js';
export type { VerifiedAccessToken } from './auth/grants.js';
export { CLIENT_AUTH_SIGNING_ALGS } from './auth/provider-config.js';
export { generateSigningKey } from './auth/signing-key.js';
export type { SigningKey } from './auth/signing-key.js';
export { STATIC_SCOPES } from './auth/state.js';
export type { AuthServerOptions } from './auth/state.js';

export interface AuthServer {
  readonly provider: Provider;
  /** Passes a request whose path starts with the issuer path to oidc-provider. */
  handleProviderRequest(req: IncomingMessage, res: ServerResponse): Promise<void>;
  /** `GET /oauth/interaction/:uid`, `POST .../login`, `POST .../cancel`. */
  handleInteraction(req: IncomingMessage, res: ServerResponse, uid: string, action: 'show' | 'login' | 'cancel'): Promise<void>;
  /** Verifies a JWT access token for the FHIR server: signature, issuer, audience, expiry, revocation. */
  verifyAccessToken(token: string): Promise<VerifiedAccessToken>;
  /** Revokes the grant of a JWT access token this server issued; rejects for unknown tokens. */
  revokeGrantForAccessToken(accessToken: string): Promise<void>;
  /** Revokes the grant of a refresh token this server holds (current or rotated); rejects for unknown ones. */
  revokeGrantForRefreshToken(refreshToken: string): Promise<void>;
  /** Cancels pending token endpoint delays (faults.tokenEndpoint.delayMs); called when the sandbox closes. */
  dispose(): void;
}

export function createAuthServer(options: AuthServerOptions): AuthServer {
  const state = createAuthState(options);
  const provider: Provider = new Provider(options.issuer, providerConfiguration(state, () => provider));

  provider.on('interaction.started', (ctx) => rememberRequestedRefresh(state, ctx));
  provider.on('access_token.issued', (token) => recordIssuedAccessToken(state, token));
  provider.on('grant.revoked', (_ctx, grantId) => {
    state.revokedGrants.add(grantId);
  });
  provider.on('server_error', (_ctx, error) => {
    console.error('sandbox oidc-provider server_error:', error);
  });
  // Post-middleware on oidc-provider's own koa stack: counts calls and adds SMART launch context to
  // token responses (oidc-provider has no configuration hook for token response parameters).
  provider.use(tokenEndpointMiddleware(state));

  // koa composes the middleware list when callback() is called: create it only after provider.use().
  const ctx: AuthContext = { ...state, provider, providerCallback: provider.callback() };
  const tokenFaults = new TokenEndpointFaults(ctx);

  async function handleProviderRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Mount oidc-provider under the issuer path the way express does: strip the prefix from req.url
    // and keep the full path in req.originalUrl, from which oidc-provider derives its own URLs.
    const original = req.url ?? '/';
    let rest = original.slice(ctx.issuerPath.length);
    if (!rest.startsWith('/')) {
      rest = `/${rest}`;
    }
    Object.assign(req, { originalUrl: original, url: rest });
    if (ctx.quirks.noOpenidConfiguration === true && rest.split('?')[0] === '/.well-known/openid-configuration') {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not_found"}');
      return;
    }
    const next = await interceptAuthorizationRequest(ctx, req, res, rest);
    if (next === undefined) {
      return;
    }
    rest = next;
    if (req.method === 'POST' && rest.split('?')[0] === TOKEN_ROUTE && tokenEndpointFaulted(options.faults)) {
      await tokenFaults.handle(req, res);
      return;
    }
    await ctx.providerCallback(req, res);
  }

  return {
    provider,
    handleProviderRequest,
    handleInteraction: (req, res, uid, action) => handleInteraction(ctx, req, res, uid, action),
    verifyAccessToken: accessTokenVerifier(state),
    revokeGrantForAccessToken: (accessToken) => revokeGrantForAccessToken(state, accessToken),
    revokeGrantForRefreshToken: (refreshToken) => revokeGrantForRefreshToken(state, refreshToken),
    dispose: () => tokenFaults.dispose(),
  };
}
