import { randomBytes, randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { CompactSign, createLocalJWKSet, decodeJwt, errors as joseErrors, exportJWK, generateKeyPair, jwtVerify } from 'jose';
import type { CryptoKey, JWK as JoseJWK } from 'jose';
import Provider, { errors, interactionPolicy } from 'oidc-provider';
import type { Account, ClaimsValue, ClientMetadata, Configuration, Grant, Interaction, InteractionResults, KoaContextWithOIDC } from 'oidc-provider';
import type { Directory, LaunchStore } from './directory.js';
import { accessTokenTtl, countTokenRequest, TokenEndpointFaultCounter, tokenEndpointFaulted } from './faults.js';
import { escapeHtml, page, readBody, readForm, sendHtml, sendJson } from './http-util.js';
import { SandboxAdapterStore } from './oidc-adapter.js';
import { renderConsentPage, renderErrorPage, renderLoginPage } from './pages.js';
import type { LoginAccount } from './pages.js';
import { isV2ResourceScope, narrowResourceScopes } from './quirks.js';
import { isResourceScope } from './scopes.js';
import type { IdTokenFault, SandboxClient, SandboxFaults, SandboxQuirks, SandboxStats } from './types.js';

/** Non-resource scopes the authorization server knows (oidc-provider drops unknown ones silently). */
export const STATIC_SCOPES = [
  'openid',
  'fhirUser',
  'profile',
  'launch',
  'launch/patient',
  'launch/encounter',
  'offline_access',
  'online_access',
] as const;
const STATIC_SCOPE_SET: ReadonlySet<string> = new Set(STATIC_SCOPES);

const SIGNING_ALG = 'RS256';
/** oidc-provider's token route below the issuer (its default `routes.token`). */
const TOKEN_ROUTE = '/token';
/** oidc-provider's authorization route below the issuer (its default `routes.authorization`). */
const AUTHORIZATION_ROUTE = '/auth';
/** oidc-provider's own limit for urlencoded bodies (lib/shared/selective_body.js). */
const MAX_TOKEN_BODY_BYTES = 56 * 1024;

/**
 * Hands a request body the sandbox already read over to oidc-provider, which reads it again from the
 * request stream (lib/shared/selective_body.js: `req.readable`, then `req.iterator()`). Without this
 * it would fall back to `req.body` and print its "already parsed request body" warning.
 */
function replayBody(req: IncomingMessage, body: Buffer): void {
  const replay = Readable.from([body]);
  Object.defineProperties(req, {
    readable: { value: true, configurable: true },
    iterator: { value: replay.iterator.bind(replay), configurable: true },
    [Symbol.asyncIterator]: { value: replay[Symbol.asyncIterator].bind(replay), configurable: true },
  });
}

export interface SigningKey {
  readonly privateKey: CryptoKey;
  readonly privateJwk: JoseJWK;
  readonly publicJwk: JoseJWK;
  readonly kid: string;
}

/** A fresh RS256 key per sandbox start (RS256 is what SMART requires servers to support for id_tokens). */
export async function generateSigningKey(): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(SIGNING_ALG, { extractable: true, modulusLength: 2048 });
  const kid = `sandbox-${randomBytes(6).toString('base64url')}`;
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: SIGNING_ALG, use: 'sig' };
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: SIGNING_ALG, use: 'sig' };
  return { privateKey, privateJwk, publicJwk, kid };
}

type LaunchType = 'ehr' | 'standalone';

/** What the sandbox remembers about a grant (oidc-provider's Grant has no room for launch context). */
interface GrantContext {
  readonly launchType: LaunchType;
  /** Relative reference of the signed-in user, e.g. `Practitioner/erin-example`. */
  readonly user: string;
  readonly patient: string | undefined;
  readonly encounter: string | undefined;
  readonly fhirContext: readonly { reference: string }[];
  /** Which refresh scope the client asked for (oidc-provider strips offline_access before we see it). */
  readonly refresh: 'offline_access' | 'online_access' | undefined;
  /** The launch's own access-token lifetime (launch option), else the sandbox-wide one. */
  readonly accessTokenTtlSeconds?: number | undefined;
}

/** Headers of the EHR sign-in pages of a launch whose sign-in refuses framing (launch option refuseFraming). */
const FRAME_REFUSED: Readonly<Record<string, string>> = {
  'X-Frame-Options': 'DENY',
  'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
};

interface SandboxAccount {
  readonly accountId: string;
  readonly resourceType: 'Practitioner' | 'Patient';
  readonly id: string;
  readonly name: string;
}

export interface VerifiedAccessToken {
  readonly sub: string;
  readonly clientId: string | undefined;
  readonly scope: string;
  readonly patient: string | undefined;
}

/** Why a bearer token was refused; `code` feeds the OperationOutcome and WWW-Authenticate. */
export class AccessTokenRejected extends Error {
  readonly expired: boolean;
  constructor(message: string, expired: boolean, options?: ErrorOptions) {
    super(message, options);
    this.name = 'AccessTokenRejected';
    this.expired = expired;
  }
}

export interface AuthServerOptions {
  readonly origin: string;
  readonly issuer: string;
  readonly fhirBaseUrl: string;
  readonly clients: readonly SandboxClient[];
  readonly accessTokenTtlSeconds: number;
  readonly directory: Directory;
  readonly launches: LaunchStore;
  readonly faults: SandboxFaults;
  readonly stats: SandboxStats;
  readonly signingKey: SigningKey;
  readonly tenant: string;
  readonly smartStyleUrl: string;
  /** Quirk switches (see quirks.ts); read on every request. */
  readonly quirks?: SandboxQuirks;
}

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

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function splitScope(scope: unknown): string[] {
  return typeof scope === 'string' ? scope.split(' ').filter((s) => s !== '') : [];
}

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

export function createAuthServer(options: AuthServerOptions): AuthServer {
  const { issuer, fhirBaseUrl, directory, launches, faults, stats, signingKey } = options;
  const quirks: SandboxQuirks = options.quirks ?? {};
  const issuerPath = new URL(issuer).pathname;

  const accounts = new Map<string, SandboxAccount>();
  const practitionerAccount: SandboxAccount = {
    accountId: `practitioner-${directory.practitioner.id}`,
    resourceType: 'Practitioner',
    id: directory.practitioner.id,
    name: directory.practitioner.name,
  };
  accounts.set(practitionerAccount.accountId, practitionerAccount);
  for (const patient of directory.patients) {
    const account: SandboxAccount = { accountId: `patient-${patient.id}`, resourceType: 'Patient', id: patient.id, name: patient.name };
    accounts.set(account.accountId, account);
  }

  const grantContexts = new Map<string, GrantContext>();
  /** Refresh scope per interaction uid, captured from the raw authorization request. */
  const requestedRefresh = new Map<string, { refresh: GrantContext['refresh']; at: number }>();
  /** Access-token jti -> grant, so the FHIR server can refuse tokens of revoked grants. */
  const tokenGrants = new Map<string, { grantId: string; exp: number }>();
  const revokedGrants = new Set<string>();
  const adapterStore = new SandboxAdapterStore();

  // Read on every issue, so faults.accessTokenTtlSeconds applies to the next token (code or refresh).
  const currentAccessTokenTtl = (): number => accessTokenTtl(faults, options.accessTokenTtlSeconds);
  const ttl = {
    AccessToken: (_ctx: KoaContextWithOIDC, token: unknown): number => {
      const grantId = isRecord(token) && typeof token.grantId === 'string' ? token.grantId : undefined;
      return (grantId ? grantContexts.get(grantId)?.accessTokenTtlSeconds : undefined) ?? currentAccessTokenTtl();
    },
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 600,
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
    // Gotcha 5: the default only issues refresh tokens for offline_access with prompt=consent,
    // which SMART apps never send.
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
      return grantId ? provider.Grant.find(grantId) : undefined;
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

  const provider = new Provider(issuer, configuration);

  provider.on('interaction.started', (ctx) => {
    const interaction = ctx.oidc?.entities.Interaction;
    if (!interaction) {
      return;
    }
    // oidc-provider removes offline_access from the request's scope unless prompt=consent (OIDC Core
    // 11), so the interaction never sees it; read what the client really sent.
    const raw = ctx.method === 'POST' ? ctx.oidc?.body?.scope : ctx.query.scope;
    const requested = new Set(splitScope(Array.isArray(raw) ? raw.join(' ') : raw));
    const now = Date.now();
    // Abandoned interactions (the user never came back) would otherwise pile up in a long session.
    for (const [uid, entry] of requestedRefresh) {
      if (now - entry.at > ttl.Interaction * 1000) {
        requestedRefresh.delete(uid);
      }
    }
    requestedRefresh.set(interaction.uid, {
      refresh: requested.has('offline_access') ? 'offline_access' : requested.has('online_access') ? 'online_access' : undefined,
      at: now,
    });
  });
  provider.on('access_token.issued', (token) => {
    if (token.grantId !== undefined) {
      tokenGrants.set(token.jti, { grantId: token.grantId, exp: token.exp ?? 0 });
    }
    if (tokenGrants.size > 1000) {
      const now = Math.floor(Date.now() / 1000);
      for (const [jti, entry] of tokenGrants) {
        if (entry.exp < now) {
          tokenGrants.delete(jti);
        }
      }
    }
  });
  provider.on('grant.revoked', (_ctx, grantId) => {
    revokedGrants.add(grantId);
  });
  provider.on('server_error', (_ctx, error) => {
    console.error('sandbox oidc-provider server_error:', error);
  });

  // Post-middleware on oidc-provider's own koa stack: counts calls and adds SMART launch context to
  // token responses (oidc-provider has no configuration hook for token response parameters).
  // Token requests the sandbox answers itself (faults) never get here; handleFaultedTokenRequest counts them.
  provider.use(async (ctx, next) => {
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
        await decorateTokenResponse(ctx, ctx.body);
      }
    } catch (error) {
      status = 500; // koa answers 500 for an error thrown here
      throw error;
    } finally {
      countTokenRequest(stats, grantType, status);
    }
  });

  // koa composes the middleware list when callback() is called: create it only after provider.use().
  const providerCallback = provider.callback();

  async function decorateTokenResponse(ctx: KoaContextWithOIDC, body: Record<string, unknown>): Promise<void> {
    const oidc = ctx.oidc;
    const source = oidc?.entities.AuthorizationCode ?? oidc?.entities.RefreshToken;
    const grant = oidc?.entities.Grant;
    const context = source?.grantId === undefined ? undefined : grantContexts.get(source.grantId);
    if (!oidc || !source || !grant || !context) {
      return;
    }

    // Gotcha 6: with resource indicators the response scope holds only the resource scopes; SMART
    // clients also expect the OIDC, launch and refresh scopes they were granted.
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

    const fault = faults.idToken;
    if (fault !== undefined && typeof body.id_token === 'string') {
      body.id_token = await tamperIdToken(body.id_token, fault);
    }
  }

  async function tamperIdToken(jwt: string, fault: IdTokenFault): Promise<string> {
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
      .sign(signingKey.privateKey);
  }

  function requestedScopes(params: Record<string, unknown>): { oidc: string[]; resource: string[]; all: string[] } {
    const all = splitScope(params.scope);
    return {
      all,
      oidc: all.filter((s) => STATIC_SCOPE_SET.has(s)),
      resource: all.filter(isResourceScope),
    };
  }

  async function grantEverything(accountId: string, clientId: string, params: Record<string, unknown>): Promise<string> {
    const grant: Grant = new provider.Grant({ accountId, clientId });
    const scopes = requestedScopes(params);
    if (scopes.oidc.length > 0) {
      grant.addOIDCScope(scopes.oidc.join(' '));
    }
    if (scopes.resource.length > 0) {
      grant.addResourceScope(fhirBaseUrl, scopes.resource.join(' '));
    }
    return grant.save();
  }

  /** A grant of the scopes the user left ticked; the unticked ones are recorded as refused, so oidc-provider does not ask again. */
  async function grantChosen(accountId: string, clientId: string, params: Record<string, unknown>, chosen: Record<string, unknown>): Promise<string> {
    const grant: Grant = new provider.Grant({ accountId, clientId });
    const asked = requestedScopes(params);
    const kept = new Set(splitScope(chosen.scope));
    const split = (scopes: string[]) => [scopes.filter((s) => kept.has(s)), scopes.filter((s) => !kept.has(s))] as const;
    const [oidcKept, oidcRefused] = split(asked.oidc);
    const [resourceKept, resourceRefused] = split(asked.resource);
    if (oidcKept.length > 0) grant.addOIDCScope(oidcKept.join(' '));
    if (oidcRefused.length > 0) grant.rejectOIDCScope(oidcRefused.join(' '));
    if (resourceKept.length > 0) grant.addResourceScope(fhirBaseUrl, resourceKept.join(' '));
    if (resourceRefused.length > 0) grant.rejectResourceScope(fhirBaseUrl, resourceRefused.join(' '));
    return grant.save();
  }

  /*
   * Account switching. One browser keeps one oidc-provider session, and a sandbox launch signs in
   * whichever account it needs: the practitioner for an EHR launch, the chosen user for a standalone
   * one. oidc-provider does not change a session's account in place: when the login result names
   * another account than the session holds, the resume step (lib/actions/authorization/resume.js)
   * answers with an auto-submitting form to the end-session confirmation instead of the redirect to
   * the client, which a client without JavaScript cannot follow and which, once confirmed, revokes the
   * earlier launches' grants. The sandbox therefore ends the previous sign-in itself before finishing
   * the interaction (signOutOtherAccount), and, as resume.js does before its own logout detour,
   * unbinds interactions from the session's uid so that a sign-in page left open while another launch
   * switched the account can still be finished (detachFromSession).
   */

  /**
   * Drops the interaction's binding to the session it started from. With the binding, oidc-provider
   * refuses to load or finish the interaction once the session's account changed ("session principal
   * changed"), and resume checks the session uid. A sandbox interaction never relies on the session's
   * account (every result names its own login and grant), so the binding protects nothing here.
   */
  async function detachFromSession(interaction: Interaction): Promise<void> {
    if (interaction.session?.uid === undefined) {
      return;
    }
    delete interaction.session.uid;
    await interaction.persist();
  }

  /**
   * Ends the browser session's sign-in when it belongs to another account than `accountId`, so that
   * resuming the interaction signs `accountId` in without oidc-provider's end-session detour. Grants
   * and tokens of earlier launches stay valid (tokens do not expire with the session here), as they
   * would in an EHR where one user signing in does not sign other apps out.
   */
  async function signOutOtherAccount(req: IncomingMessage, res: ServerResponse, accountId: string): Promise<void> {
    const session = await provider.Session.get(provider.createContext(req, res));
    if (session.accountId === undefined || session.accountId === accountId || session.exp === undefined) {
      return;
    }
    delete session.accountId;
    delete session.loginTs;
    delete session.acr;
    delete session.amr;
    delete session.transient;
    // The per-client sids and grant ids belong to the previous account's sign-in.
    delete session.authorizations;
    await session.persist();
  }

  function loginAccounts(params: Record<string, unknown>): LoginAccount[] {
    const wantsPatient = requestedScopes(params).all.includes('launch/patient');
    const list: LoginAccount[] = directory.patients.map((p) => ({
      accountId: `patient-${p.id}`,
      label: p.name,
      detail: `Patient ${p.name}, born ${p.birthDate}`,
    }));
    // A clinician has no patient of their own, so they are offered only when no patient context is needed.
    if (!wantsPatient) {
      list.push({ accountId: practitionerAccount.accountId, label: practitionerAccount.name, detail: `Clinician ${practitionerAccount.name}` });
    }
    return list;
  }

  async function handleInteraction(
    req: IncomingMessage,
    res: ServerResponse,
    uid: string,
    action: 'show' | 'login' | 'cancel',
  ): Promise<void> {
    let details;
    try {
      details = await provider.interactionDetails(req, res);
    } catch {
      sendHtml(res, 400, renderErrorPage('Sign-in expired', 'This sign-in was not started in this browser or has expired. Start the launch again from the app.'));
      return;
    }
    if (details.uid !== uid) {
      sendHtml(res, 400, renderErrorPage('Sign-in mismatch', 'This sign-in page does not belong to the current authorization request.'));
      return;
    }
    const params = details.params;
    const clientId = typeof params.client_id === 'string' ? params.client_id : '';
    const refresh = requestedRefresh.get(uid)?.refresh;
    const launch = typeof params.launch === 'string' ? params.launch : undefined;
    const finish = async (result: InteractionResults): Promise<void> => {
      requestedRefresh.delete(uid);
      if (result.login !== undefined) {
        await signOutOtherAccount(req, res, result.login.accountId);
      }
      await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
    };

    if (launch !== undefined) {
      // EHR launch: the clinician is already signed in to the EHR, so there is nothing to show.
      const context = launches.resolve(launch);
      if (!context) {
        await finish({ error: 'invalid_request', error_description: 'launch is unknown or has expired' });
        return;
      }
      // Launch options of the sandbox EHR page: simulated authorize errors, a consent step.
      const launchOptions = context.options ?? {};
      if (launchOptions.authorizeOutcome === 'invalid_scope') {
        await finish({ error: 'invalid_scope', error_description: 'the EHR refused the requested scope (simulated by the sandbox EHR)' });
        return;
      }
      if (launchOptions.authorizeOutcome === 'access_denied') {
        await finish({ error: 'access_denied', error_description: 'the user cancelled the sign-in (simulated by the sandbox EHR)' });
        return;
      }
      let granted = params;
      let grantedRefresh = refresh;
      if (launchOptions.consent === true || launchOptions.refuseFraming === true) {
        const offered = [...splitScope(params.scope), ...(refresh && !splitScope(params.scope).includes(refresh) ? [refresh] : [])];
        if (action === 'show') {
          const patientName = directory.patients.find((p) => p.id === context.patient)?.name ?? context.patient;
          sendHtml(res, 200, renderConsentPage({ uid, clientId, patientName, scopes: offered }), launchOptions.refuseFraming ? FRAME_REFUSED : {});
          return;
        }
        if (action === 'cancel') {
          await finish({ error: 'access_denied', error_description: 'the user did not allow access' });
          return;
        }
        // Only what was asked for and left ticked: the user narrows the grant, never widens it.
        const kept = new Set((await readForm(req)).getAll('scope'));
        const chosen = offered.filter((scope) => kept.has(scope));
        granted = { ...params, scope: chosen.join(' ') };
        grantedRefresh = refresh !== undefined && kept.has(refresh) ? refresh : undefined;
      }
      const grantId =
        granted === params ? await grantEverything(practitionerAccount.accountId, clientId, params) : await grantChosen(practitionerAccount.accountId, clientId, params, granted);
      const focus = context.encounter === undefined ? undefined : directory.encounterFocus(context.encounter);
      grantContexts.set(grantId, {
        launchType: 'ehr',
        user: `Practitioner/${practitionerAccount.id}`,
        patient: context.patient,
        encounter: context.encounter,
        // fhirContext may not carry Patient or Encounter (they have their own parameters), so it names
        // the problem the open encounter addresses.
        fhirContext: focus === undefined ? [] : [{ reference: focus }],
        refresh: grantedRefresh,
        accessTokenTtlSeconds: launchOptions.accessTokenTtlSeconds,
      });
      await finish({ login: { accountId: practitionerAccount.accountId }, consent: { grantId } });
      return;
    }

    const accountsOffered = loginAccounts(params);
    const scope = typeof params.scope === 'string' ? params.scope : '';
    if (action === 'show') {
      sendHtml(res, 200, renderLoginPage({ uid, clientId, scope, accounts: accountsOffered }));
      return;
    }
    if (action === 'cancel') {
      await finish({ error: 'access_denied', error_description: 'the user cancelled the sign-in' });
      return;
    }
    const form = await readForm(req);
    const chosen = accountsOffered.find((a) => a.accountId === form.get('account'));
    const account = chosen ? accounts.get(chosen.accountId) : undefined;
    if (!account) {
      sendHtml(res, 400, renderLoginPage({ uid, clientId, scope, accounts: accountsOffered, error: 'Choose one of the listed users.' }));
      return;
    }
    const grantId = await grantEverything(account.accountId, clientId, params);
    grantContexts.set(grantId, {
      launchType: 'standalone',
      user: `${account.resourceType}/${account.id}`,
      // A signed-in patient is their own patient context (SMART lets the server infer launch/patient).
      patient: account.resourceType === 'Patient' ? account.id : undefined,
      encounter: undefined,
      fhirContext: [],
      refresh,
    });
    await finish({ login: { accountId: account.accountId }, consent: { grantId } });
  }

  async function handleProviderRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Mount oidc-provider under the issuer path the way express does: strip the prefix from req.url
    // and keep the full path in req.originalUrl, from which oidc-provider derives its own URLs.
    const original = req.url ?? '/';
    let rest = original.slice(issuerPath.length);
    if (!rest.startsWith('/')) {
      rest = `/${rest}`;
    }
    Object.assign(req, { originalUrl: original, url: rest });
    if (req.method === 'POST' && rest.split('?')[0] === AUTHORIZATION_ROUTE) {
      // SMART authorize-post (SMART-AUTHZ-10). oidc-provider takes authorization requests by POST only
      // with SameSite=None session cookies, which plain-http browsers refuse: the sandbox hands the
      // same request to it as a GET instead, in process (the browser never sees a long URL).
      const type = (req.headers['content-type'] ?? '').toLowerCase();
      if (!type.startsWith('application/x-www-form-urlencoded')) {
        sendHtml(res, 400, renderErrorPage('invalid_request', 'Send the authorization request as an application/x-www-form-urlencoded form.'));
        return;
      }
      const body = (await readBody(req, MAX_TOKEN_BODY_BYTES)).toString('utf8');
      rest = `${AUTHORIZATION_ROUTE}?${new URLSearchParams(body).toString()}`;
      Object.assign(req, { method: 'GET', url: rest, originalUrl: `${issuerPath}${rest}` });
    }
    if (req.method === 'GET' && rest.split('?')[0] === AUTHORIZATION_ROUTE) {
      const launchId = new URLSearchParams(rest.split('?')[1] ?? '').get('launch');
      const launchOptions = launchId === null ? undefined : launches.resolve(launchId)?.options;
      const frameHeaders = launchOptions?.refuseFraming === true ? FRAME_REFUSED : {};
      for (const [name, value] of Object.entries(frameHeaders)) res.setHeader(name, value);
      // RFC 6749 §4.1.2.1: with an unknown client or a wrong redirect URI the EHR must not redirect.
      if (launchOptions?.authorizeOutcome === 'invalid_client') {
        sendHtml(res, 400, renderErrorPage('invalid_client', 'The EHR does not know this app (client_id), so it cannot send you back to it. (Simulated by the sandbox EHR.)'), frameHeaders);
        return;
      }
      if (launchOptions?.authorizeOutcome === 'invalid_redirect') {
        sendHtml(res, 400, renderErrorPage('invalid_request', 'The redirect_uri is not registered for this app, so the EHR will not send you there. (Simulated by the sandbox EHR.)'), frameHeaders);
        return;
      }
    }
    if (quirks.narrowScopes === true && req.method === 'GET' && rest.split('?')[0] === AUTHORIZATION_ROUTE) {
      // Quirk narrowScopes: the user shares less than the app asked for, as if they had unticked
      // boxes on a consent screen; the request goes on with the narrower scope.
      rest = narrowedAuthorizationRequest(rest);
      Object.assign(req, { url: rest, originalUrl: `${issuerPath}${rest}` });
    }
    if (quirks.v1Only === true && rest.split('?')[0] === AUTHORIZATION_ROUTE && refusedV2Scopes(res, rest)) {
      return;
    }
    if (req.method === 'POST' && rest.split('?')[0] === TOKEN_ROUTE && tokenEndpointFaulted(faults)) {
      await handleFaultedTokenRequest(req, res);
      return;
    }
    await providerCallback(req, res);
  }

  /**
   * Quirk v1Only: a SMART v1 server does not know v2 resource scopes (`.rs`, granular ones) and refuses
   * the authorization request with `invalid_scope` (RFC 6749 §4.1.2.1), redirected back to a
   * registered redirect URI (an error page otherwise). True when it answered.
   */
  /** `narrowScopes`: no refresh scopes, and only Patient access among the resource scopes. */
  function narrowedAuthorizationRequest(rest: string): string {
    const params = new URLSearchParams(rest.split('?')[1] ?? '');
    const scope = splitScope(params.get('scope') ?? '');
    const kept = scope.filter((s) => !isResourceScope(s) && s !== 'offline_access' && s !== 'online_access');
    params.set('scope', [...kept, ...narrowResourceScopes(scope.filter(isResourceScope))].join(' '));
    return `${AUTHORIZATION_ROUTE}?${params.toString()}`;
  }

  function refusedV2Scopes(res: ServerResponse, rest: string): boolean {
    const params = new URLSearchParams(rest.split('?')[1] ?? '');
    const v2 = splitScope(params.get('scope') ?? '').filter(isV2ResourceScope);
    if (v2.length === 0) {
      return false;
    }
    const client = options.clients.find((c) => c.clientId === params.get('client_id'));
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
    target.searchParams.set('iss', issuer);
    res.writeHead(303, { Location: target.href, 'Cache-Control': 'no-store' });
    res.end();
    return true;
  }

  /*
   * Token endpoint faults. They are decided here, in front of oidc-provider, so that a faulted error
   * answer cannot have touched anything: the authorization code or refresh token presented is neither
   * consumed nor rotated, and a retry can succeed. Deciding by grant_type means reading the body
   * first; a request that is not answered here (other grant type, or only delayed) gets the same
   * bytes handed to oidc-provider (replayBody).
   */
  const faultCounter = new TokenEndpointFaultCounter();
  const pendingDelays = new Set<{ timer: NodeJS.Timeout; resolve: () => void }>();
  let disposed = false;

  async function handleFaultedTokenRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let body: Buffer;
    try {
      body = await readBody(req, MAX_TOKEN_BODY_BYTES);
    } catch {
      answerToken(res, 'unknown', 400, { error: 'invalid_request', error_description: 'the request body could not be read' });
      return;
    }
    const isForm = (req.headers['content-type'] ?? '').toLowerCase().startsWith('application/x-www-form-urlencoded');
    const grantType = (isForm ? new URLSearchParams(body.toString('utf8')).get('grant_type') : null) || 'unknown';

    if (faults.invalidClient === true) {
      answerToken(res, grantType, 401, { error: 'invalid_client', error_description: 'client authentication failed (sandbox fault)' }, {
        'WWW-Authenticate': 'Basic realm="sandbox"',
      });
      return;
    }
    const action = faultCounter.take(faults, grantType);
    if (action.kind === 'answer') {
      answerToken(res, grantType, action.status, action.body, action.headers);
      return;
    }
    if (action.kind === 'delay') {
      // A client that gives up meanwhile does not stop the request: like a slow real server, the
      // sandbox still processes it (a refresh still rotates) and the answer is lost.
      await delay(action.ms);
      if (disposed) {
        return;
      }
    }
    if (faults.malformedTokenResponse === true) {
      answerToken(res, grantType, 200, { token_type: 'Bearer', expires_in: currentAccessTokenTtl(), scope: '' });
      return;
    }
    replayBody(req, body);
    await providerCallback(req, res);
  }

  /** An answer the sandbox gives instead of oidc-provider, counted like oidc-provider's own. */
  function answerToken(res: ServerResponse, grantType: string, status: number, body: Record<string, unknown>, headers: Record<string, string> = {}): void {
    countTokenRequest(stats, grantType, status);
    sendJson(res, status, body, { 'Cache-Control': 'no-store', Pragma: 'no-cache', ...headers });
  }

  function delay(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const entry = {
        timer: setTimeout(() => {
          pendingDelays.delete(entry);
          resolve();
        }, ms),
        resolve,
      };
      pendingDelays.add(entry);
    });
  }

  function dispose(): void {
    disposed = true;
    for (const entry of pendingDelays) {
      clearTimeout(entry.timer);
      entry.resolve();
    }
    pendingDelays.clear();
  }

  /*
   * Grant revocation from outside OAuth (an administrator, or the patient revoking the app in a
   * portal): everything oidc-provider stores for the grant goes, as in its own revoke helper
   * (lib/helpers/revoke.js), and the FHIR server refuses the grant's JWT access tokens from then on.
   */
  function revokeGrant(grantId: string): void {
    adapterStore.revokeGrant(grantId);
    revokedGrants.add(grantId);
  }

  async function revokeGrantForAccessToken(accessToken: string): Promise<void> {
    let jti: unknown;
    try {
      jti = decodeJwt(accessToken).jti;
    } catch (error) {
      throw new Error('not a JWT access token of this sandbox', { cause: error });
    }
    const grant = typeof jti === 'string' ? tokenGrants.get(jti) : undefined;
    if (!grant) {
      throw new Error('unknown access token: this sandbox did not issue it, or it expired long ago');
    }
    revokeGrant(grant.grantId);
  }

  async function revokeGrantForRefreshToken(refreshToken: string): Promise<void> {
    const grantId = adapterStore.grantIdOf('RefreshToken', refreshToken);
    if (grantId === undefined) {
      throw new Error('unknown refresh token: never issued, expired, or its grant is already revoked');
    }
    revokeGrant(grantId);
  }

  const jwks = createLocalJWKSet({ keys: [signingKey.publicJwk] });

  async function verifyAccessToken(token: string): Promise<VerifiedAccessToken> {
    let payload;
    try {
      ({ payload } = await jwtVerify(token, jwks, {
        issuer,
        audience: fhirBaseUrl,
        algorithms: [SIGNING_ALG],
        typ: 'at+jwt',
        requiredClaims: ['exp', 'jti', 'sub'],
      }));
    } catch (error) {
      if (error instanceof joseErrors.JWTExpired) {
        throw new AccessTokenRejected('the access token has expired', true, { cause: error });
      }
      throw new AccessTokenRejected('the access token is not valid for this server', false, { cause: error });
    }
    const grant = typeof payload.jti === 'string' ? tokenGrants.get(payload.jti) : undefined;
    if (grant && revokedGrants.has(grant.grantId)) {
      throw new AccessTokenRejected('the grant behind this access token was revoked', false);
    }
    return {
      sub: payload.sub ?? '',
      clientId: typeof payload.client_id === 'string' ? payload.client_id : undefined,
      scope: typeof payload.scope === 'string' ? payload.scope : '',
      patient: typeof payload.patient === 'string' ? payload.patient : undefined,
    };
  }

  return {
    provider,
    handleProviderRequest,
    handleInteraction,
    verifyAccessToken,
    revokeGrantForAccessToken,
    revokeGrantForRefreshToken,
    dispose,
  };
}
