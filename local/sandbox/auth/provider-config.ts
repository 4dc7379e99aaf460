import { randomBytes } from 'node:crypto';
import { errors, interactionPolicy } from 'oidc-provider';
import type Provider from 'oidc-provider';
import type { Account, ClaimsValue, ClientMetadata, Configuration, KoaContextWithOIDC } from 'oidc-provider';
import { escapeHtml, page } from '../http-util.js';
import { isResourceScope } from '../scopes.js';
import type { SandboxClient } from '../types.js';
import { detachFromSession, INTERACTION_TTL_SECONDS } from './interaction.js';
import { SIGNING_ALG } from './signing-key.js';
import { isRecord, splitScope, STATIC_SCOPES } from './state.js';
import type { AuthState } from './state.js';

/*
 * oidc-provider's configuration for the sandbox: registered clients (client authentication, including
 * private_key_jwt with keys from the client's JWKS URL), token lifetimes, the SMART `launch` and `aud`
 * parameters, resource indicators for the FHIR server, refresh-token policy and the token claims that
 * carry the launch context.
 */

function toClientMetadata(client: SandboxClient): ClientMetadata {
  if (client.redirectUris.length === 0) {
    throw new Error(`client "${client.clientId}" needs at least one redirect URI`);
  }
  const base: ClientMetadata = {
    client_id: client.clientId,
    redirect_uris: [...client.redirectUris],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    application_type: 'web',
    token_endpoint_auth_method: client.clientAuth,
  };
  if (client.clientAuth === 'client_secret_basic') {
    if (!client.clientSecret) {
      throw new Error(`client "${client.clientId}" uses client_secret_basic but has no clientSecret`);
    }
    return { ...base, client_secret: client.clientSecret };
  }
  if (client.clientAuth === 'private_key_jwt') {
    // SMART client-confidential-asymmetric: the keys come from the client's JWKS URL (SMART-REG-03),
    // fetched by oidc-provider when it verifies an assertion; every jti is accepted once only.
    if (!client.jwksUri) {
      throw new Error(`client "${client.clientId}" uses private_key_jwt but has no jwksUri`);
    }
    return {
      ...base,
      jwks_uri: client.jwksUri,
      ...(client.signingAlg ? { token_endpoint_auth_signing_alg: client.signingAlg } : {}),
    };
  }
  return base;
}

/** Client assertion algorithms the sandbox accepts: the two a SMART client must support (SMART-REG-05). */
export const CLIENT_AUTH_SIGNING_ALGS = ['RS384', 'ES384'] as const;

/**
 * The configuration of the sandbox's oidc-provider. `getProvider` returns the Provider built from it
 * (some hooks need the instance, which exists only once this configuration does).
 */
export function providerConfiguration(state: AuthState, getProvider: () => Provider): Configuration {
  const { options, quirks, issuerPath, accounts, grantContexts, adapterStore, currentAccessTokenTtl } = state;
  const { fhirBaseUrl, launches, signingKey } = options;

  const ttl = {
    AccessToken: (_ctx: KoaContextWithOIDC, token: unknown): number => {
      const grantId = isRecord(token) && typeof token.grantId === 'string' ? token.grantId : undefined;
      return (grantId ? grantContexts.get(grantId)?.accessTokenTtlSeconds : undefined) ?? currentAccessTokenTtl();
    },
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: INTERACTION_TTL_SECONDS,
    Session: 8 * 3600,
    Grant: 30 * 24 * 3600,
    // online_access lives for a working day, offline_access for 30 days (both rotate on every use).
    RefreshToken: (_ctx: KoaContextWithOIDC, token: unknown): number => {
      const grantId = isRecord(token) && typeof token.grantId === 'string' ? token.grantId : undefined;
      const refresh = grantId ? grantContexts.get(grantId)?.refresh : undefined;
      return refresh === 'online_access' ? 8 * 3600 : 30 * 24 * 3600;
    },
  };

  const policy = interactionPolicy.base();
  // Every authorization request goes through the sandbox's interaction, even with a live session and
  // an earlier grant: each launch binds its own context (patient, encounter) to a new grant, and
  // reusing a grant would hand the previous launch's patient to the new one.
  policy.get('login')?.checks.add(
    new interactionPolicy.Check(
      'smart_launch_context',
      'each SMART launch resolves its context at the sandbox EHR',
      (ctx) => ctx.oidc?.route === 'authorization',
    ),
  );

  const configuration: Configuration = {
    adapter: adapterStore.factory,
    clients: options.clients.map(toClientMetadata),
    clientAuthMethods: ['client_secret_basic', 'private_key_jwt', 'none'],
    // oidc-provider fetches a private_key_jwt client's jwks_uri through a dispatcher that refuses
    // special-use addresses (SSRF protection), loopback included; the sandbox's clients live on
    // loopback (the local API), so loopback URLs go without it. Everything else keeps the protection.
    fetch: (url, init) => {
      const host = new URL(url).hostname;
      const loopback = host === 'localhost' || host === '[::1]' || /^127(\.\d{1,3}){3}$/.test(host);
      if (!loopback) return fetch(url, init);
      const { dispatcher: _ssrfGuard, ...rest } = init as RequestInit & { dispatcher?: unknown };
      return fetch(url, rest);
    },
    // oidc-provider's default list lacks RS384/ES384 (a client registered with them is refused); only what SMART names.
    enabledJWA: { clientAuthSigningAlgValues: [...CLIENT_AUTH_SIGNING_ALGS] },
    clientBasedCORS: (_ctx, origin, client) => client.redirectUris.some((uri) => URL.parse(uri)?.origin === origin),
    scopes: [...STATIC_SCOPES],
    claims: { openid: ['sub'], fhirUser: ['fhirUser'], profile: ['name'] },
    // SMART wants fhirUser inside the id_token; OIDC's "conform" mode would move scope-requested
    // claims to the userinfo endpoint, which the sandbox does not offer.
    conformIdTokenClaims: false,
    responseTypes: ['code'],
    pkce: { required: () => true },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    jwks: { keys: [signingKey.privateJwk] },
    ttl,
    extraParams: {
      launch(_ctx, value) {
        if (value === undefined) {
          return;
        }
        if (typeof value !== 'string' || launches.resolve(value) === undefined) {
          throw new errors.InvalidRequest('launch is unknown or has expired');
        }
      },
      // SMART-AUTHZ-07: `aud` is required and must be exactly the FHIR base URL.
      aud(_ctx, value) {
        if (value === undefined) {
          throw new errors.InvalidRequest(`aud is required and must be the FHIR base URL ${fhirBaseUrl}`);
        }
        if (value !== fhirBaseUrl) {
          throw new errors.InvalidRequest(`aud must be exactly the FHIR base URL ${fhirBaseUrl}`);
        }
      },
    },
    features: {
      devInteractions: { enabled: false },
      pushedAuthorizationRequests: { enabled: false },
      rpInitiatedLogout: { enabled: false },
      // Access tokens are JWTs for the FHIR server, which the userinfo endpoint could not accept.
      userinfo: { enabled: false },
      revocation: {
        enabled: true,
        allowedPolicy: (_ctx, client, token) => token.clientId === client.clientId,
      },
      introspection: {
        enabled: true,
        allowedPolicy: (_ctx, client, token) => client.clientAuthMethod !== 'none' || token.clientId === client.clientId,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => fhirBaseUrl,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resourceIndicator) => {
          if (resourceIndicator !== fhirBaseUrl) {
            throw new errors.InvalidTarget(`the only resource server is ${fhirBaseUrl}`);
          }
          // SMART resource scopes are an open-ended grammar, so the resource server accepts whatever
          // parses as one in this request, plus whatever the grant already holds (token and refresh
          // requests carry no scope parameter of their own).
          const scopes = new Set(splitScope(ctx.oidc?.params?.scope).filter(isResourceScope));
          for (const s of splitScope(ctx.oidc?.entities.Grant?.getResourceScope(fhirBaseUrl))) {
            scopes.add(s);
          }
          return {
            scope: [...scopes].join(' '),
            audience: fhirBaseUrl,
            accessTokenTTL: currentAccessTokenTtl(),
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: SIGNING_ALG } },
          };
        },
      },
    },
    // oidc-provider's default issues a refresh token only for offline_access requested with
    // prompt=consent, which SMART apps never send: issue one whenever the grant allows refresh.
    issueRefreshToken: (_ctx, client, code) =>
      client.grantTypeAllowed('refresh_token') &&
      code.grantId !== undefined &&
      grantContexts.get(code.grantId)?.refresh !== undefined &&
      quirks.noRefreshToken !== true,
    expiresWithSession: () => false,
    rotateRefreshToken: true,
    loadExistingGrant: async (ctx) => {
      // Only the grant the interaction just created; never a grant left over from an earlier launch.
      const grantId = ctx.oidc?.result?.consent?.grantId;
      return grantId ? getProvider().Grant.find(grantId) : undefined;
    },
    extraTokenClaims: (_ctx, token) => {
      if (token.kind !== 'AccessToken' || token.grantId === undefined) {
        return undefined;
      }
      const context = grantContexts.get(token.grantId);
      if (!context) {
        return undefined;
      }
      return {
        fhirUser: `${fhirBaseUrl}/${context.user}`,
        ...(context.patient ? { patient: context.patient } : {}),
        ...(context.encounter ? { encounter: context.encounter } : {}),
      };
    },
    findAccount: (_ctx, sub): Account | undefined => {
      const account = accounts.get(sub);
      if (!account) {
        return undefined;
      }
      return {
        accountId: account.accountId,
        claims: (): Record<string, ClaimsValue> => ({
          sub: account.accountId,
          fhirUser: `${fhirBaseUrl}/${account.resourceType}/${account.id}`,
          name: account.name,
        }),
      };
    },
    interactions: {
      policy,
      // oidc-provider calls this right after saving a new interaction, so it is also where the
      // interaction is detached from the browser session it started from (see detachFromSession).
      url: async (_ctx, interaction) => {
        await detachFromSession(interaction);
        return `${issuerPath}/interaction/${interaction.uid}`;
      },
    },
    renderError: (ctx, out) => {
      const rows = Object.entries(out)
        .map(([key, value]) => `<p><strong>${escapeHtml(key)}</strong>: ${escapeHtml(String(value))}</p>`)
        .join('\n');
      ctx.type = 'html';
      ctx.body = page('Sandbox EHR: authorization error', `<h1>Authorization error</h1>\n${rows}`);
    },
  };
  return configuration;
}
