// oidc-provider 9.x ships no TypeScript declarations and @types/oidc-provider is not installed
// (and would lag behind 9.13 anyway). This declares only the surface the sandbox uses, typed from
// the 9.13.3 sources (lib/provider.js, lib/helpers/defaults.js, lib/models/*.js), so that strict
// mode catches misuse without `any`. Extend it here rather than redeclaring the module elsewhere:
// two ambient `declare module 'oidc-provider'` blocks in one program would clash.
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http';

  export type Next = () => Promise<void>;

  /** What oidc-provider stores through the adapter (tokens, sessions, grants, interactions...). */
  export interface AdapterPayload {
    [key: string]: unknown;
    jti?: string;
    grantId?: string;
    uid?: string;
    userCode?: string;
    consumed?: number;
  }

  export interface Adapter {
    upsert(id: string, payload: AdapterPayload, expiresIn: number | undefined): Promise<void>;
    find(id: string): Promise<AdapterPayload | undefined>;
    findByUserCode(userCode: string): Promise<AdapterPayload | undefined>;
    findByUid(uid: string): Promise<AdapterPayload | undefined>;
    consume(id: string): Promise<void>;
    destroy(id: string): Promise<void>;
    revokeByGrantId(grantId: string): Promise<void>;
  }

  export interface Client {
    readonly clientId: string;
    readonly clientAuthMethod: string;
    readonly redirectUris: string[];
    grantTypeAllowed(grantType: string): boolean;
  }

  /** Common fields of AuthorizationCode, RefreshToken and AccessToken model instances. */
  export interface TokenEntity {
    readonly kind: string;
    jti: string;
    grantId?: string;
    accountId?: string;
    clientId?: string;
    scope?: string;
    readonly scopes: Set<string>;
    /** Epoch seconds at which a code or refresh token was used (set by the adapter's `consume`). */
    readonly consumed?: number;
  }

  export interface Grant {
    readonly jti?: string;
    accountId?: string;
    clientId?: string;
    addOIDCScope(scope: string): void;
    addResourceScope(resource: string, scope: string): void;
    /** Scopes the user refused: the consent prompt counts them as answered. */
    rejectOIDCScope(scope: string): void;
    rejectResourceScope(resource: string, scope: string): void;
    getOIDCScope(): string;
    getOIDCScopeFiltered(filter: Set<string>): string;
    getResourceScope(resource: string): string;
    save(ttl?: number): Promise<string>;
  }

  export interface GrantConstructor {
    new (properties: { accountId: string; clientId: string }): Grant;
    find(id: string): Promise<Grant | undefined>;
  }

  export interface InteractionPrompt {
    name: string;
    reasons: string[];
    details: Record<string, unknown>;
  }

  export interface Interaction {
    readonly uid: string;
    readonly jti: string;
    readonly returnTo: string;
    readonly prompt: InteractionPrompt;
    /** The authorization request parameters, including the registered extraParams. */
    readonly params: Record<string, unknown>;
    /**
     * The browser session the interaction started from, when it had an account. With `uid` set,
     * `interactionDetails`/`interactionFinished` and the resume step insist that the session still
     * has that uid and account (lib/provider.js, lib/actions/authorization/resume.js).
     */
    readonly session?: { accountId?: string; uid?: string; cookie?: string; acr?: string; amr?: string[] };
    /** Saves the interaction again for the rest of its lifetime (only after it was saved once). */
    persist(): Promise<string>;
  }

  /** oidc-provider's browser session (lib/models/session.js), keyed by the `_session` cookie. */
  export interface Session {
    readonly uid: string;
    readonly jti: string;
    /** Absent until the session has been saved. */
    readonly exp?: number;
    accountId?: string;
    loginTs?: number;
    acr?: string;
    amr?: string[];
    transient?: boolean;
    /** Per client: `sid`, `grantId`, `persistsLogout`. */
    authorizations?: Record<string, Record<string, unknown>>;
    /** Saves the session again for the rest of its lifetime (only after it was saved once). */
    persist(): Promise<string>;
  }

  /** koa's Context for a raw request as `Provider#createContext` builds it; handed back to oidc-provider only. */
  export interface RequestContext {
    readonly req: IncomingMessage;
    readonly res: ServerResponse;
    readonly secure: boolean;
  }

  export interface SessionConstructor {
    /** The session the request's `_session` cookie names, or a new unsaved one. */
    get(ctx: RequestContext): Promise<Session>;
  }

  export interface OIDCContext {
    readonly route: string;
    readonly params?: Record<string, unknown>;
    /** The parsed urlencoded request body (token, revocation, POST authorization). */
    readonly body?: Record<string, unknown>;
    readonly client?: Client;
    /** The interaction result being resumed (route `resume`). */
    readonly result?: InteractionResults;
    readonly entities: {
      readonly AuthorizationCode?: TokenEntity;
      readonly RefreshToken?: TokenEntity;
      readonly RotatedRefreshToken?: TokenEntity;
      readonly AccessToken?: TokenEntity;
      readonly Grant?: Grant;
      readonly Interaction?: Interaction;
      readonly Client?: Client;
    };
  }

  /** The subset of koa's Context (koa 3) the sandbox touches. */
  export interface KoaContextWithOIDC {
    /** Absent for requests that matched no provider route. */
    oidc?: OIDCContext;
    status: number;
    body: unknown;
    type: string;
    readonly method: string;
    readonly path: string;
    readonly query: Record<string, string | string[] | undefined>;
    set(field: string, value: string): void;
  }

  export type Middleware = (ctx: KoaContextWithOIDC, next: Next) => Promise<void>;

  export type ClaimsValue = string | number | boolean | null | undefined | string[] | Record<string, unknown>;

  export interface Account {
    accountId: string;
    claims(
      use: 'id_token' | 'userinfo',
      scope: string,
      claims: Record<string, unknown>,
      rejected: string[],
    ): Promise<Record<string, ClaimsValue>> | Record<string, ClaimsValue>;
  }

  export interface ResourceServerInfo {
    scope: string;
    audience?: string;
    accessTokenTTL?: number;
    accessTokenFormat?: 'opaque' | 'jwt';
    jwt?: { sign?: { alg?: string } };
  }

  export interface ClientMetadata {
    client_id: string;
    client_secret?: string;
    token_endpoint_auth_method?: string;
    redirect_uris: string[];
    grant_types?: string[];
    response_types?: string[];
    application_type?: 'web' | 'native';
    client_name?: string;
    jwks_uri?: string;
    token_endpoint_auth_signing_alg?: string;
  }

  export interface JWK {
    [key: string]: unknown;
    kty?: string;
    kid?: string;
    alg?: string;
    use?: string;
  }

  export interface InteractionResults {
    login?: { accountId: string; remember?: boolean };
    consent?: { grantId: string };
    error?: string;
    error_description?: string;
  }

  export interface Configuration {
    adapter?: (name: string) => Adapter;
    clients?: ClientMetadata[];
    clientAuthMethods?: string[];
    enabledJWA?: { clientAuthSigningAlgValues?: string[] };
    fetch?: (url: string | URL, options: RequestInit) => Promise<Response>;
    clientBasedCORS?: (ctx: KoaContextWithOIDC, origin: string, client: Client) => boolean;
    claims?: Record<string, string[] | null>;
    conformIdTokenClaims?: boolean;
    cookies?: {
      keys?: string[];
      long?: Record<string, unknown>;
      short?: Record<string, unknown>;
    };
    extraParams?: Record<string, ((ctx: KoaContextWithOIDC, value: unknown, client: Client) => void | Promise<void>) | null>;
    extraTokenClaims?: (
      ctx: KoaContextWithOIDC,
      token: TokenEntity,
    ) => Promise<Record<string, unknown> | undefined> | Record<string, unknown> | undefined;
    expiresWithSession?: (ctx: KoaContextWithOIDC, token: TokenEntity) => Promise<boolean> | boolean;
    features?: {
      devInteractions?: { enabled: boolean };
      revocation?: {
        enabled: boolean;
        allowedPolicy?: (ctx: KoaContextWithOIDC, client: Client, token: TokenEntity) => Promise<boolean> | boolean;
      };
      introspection?: {
        enabled: boolean;
        allowedPolicy?: (ctx: KoaContextWithOIDC, client: Client, token: TokenEntity) => Promise<boolean> | boolean;
      };
      userinfo?: { enabled: boolean };
      rpInitiatedLogout?: { enabled: boolean };
      pushedAuthorizationRequests?: { enabled: boolean };
      resourceIndicators?: {
        enabled: boolean;
        defaultResource?: (ctx: KoaContextWithOIDC, client: Client, oneOf?: string[]) => Promise<string | string[] | undefined> | string | string[] | undefined;
        useGrantedResource?: (ctx: KoaContextWithOIDC, model: TokenEntity) => Promise<boolean> | boolean;
        getResourceServerInfo?: (
          ctx: KoaContextWithOIDC,
          resourceIndicator: string,
          client: Client,
        ) => Promise<ResourceServerInfo> | ResourceServerInfo;
      };
    };
    findAccount?: (ctx: KoaContextWithOIDC, sub: string, token?: TokenEntity) => Promise<Account | undefined> | Account | undefined;
    interactions?: {
      policy?: interactionPolicy.Prompt[];
      url?: (ctx: KoaContextWithOIDC, interaction: Interaction) => Promise<string> | string;
    };
    issueRefreshToken?: (ctx: KoaContextWithOIDC, client: Client, code: TokenEntity) => Promise<boolean> | boolean;
    jwks?: { keys: JWK[] };
    loadExistingGrant?: (ctx: KoaContextWithOIDC) => Promise<Grant | undefined> | Grant | undefined;
    pkce?: { required?: (ctx: KoaContextWithOIDC, client: Client) => boolean };
    renderError?: (ctx: KoaContextWithOIDC, out: Record<string, unknown>, error: Error) => Promise<void> | void;
    responseTypes?: string[];
    rotateRefreshToken?: boolean | ((ctx: KoaContextWithOIDC) => Promise<boolean> | boolean);
    scopes?: string[];
    ttl?: Record<string, number | ((ctx: KoaContextWithOIDC, token: unknown, client: Client) => number)>;
  }

  export class Provider {
    constructor(issuer: string, configuration?: Configuration);
    readonly issuer: string;
    readonly Grant: GrantConstructor;
    readonly Session: SessionConstructor;
    /** koa's `Application#createContext` (oidc-provider's Provider is a koa application). */
    createContext(req: IncomingMessage, res: ServerResponse): RequestContext;
    /** koa's request listener; mount it under the issuer's path (see the sandbox's index.ts). */
    callback(): (req: IncomingMessage, res: ServerResponse) => Promise<void>;
    use(middleware: Middleware): this;
    interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<Interaction>;
    interactionFinished(
      req: IncomingMessage,
      res: ServerResponse,
      result: InteractionResults,
      options?: { mergeWithLastSubmission?: boolean },
    ): Promise<void>;
    on(event: 'grant.revoked', listener: (ctx: KoaContextWithOIDC, grantId: string) => void): this;
    on(event: 'access_token.issued', listener: (token: TokenEntity & { exp?: number }) => void): this;
    on(event: 'interaction.started', listener: (ctx: KoaContextWithOIDC, prompt: InteractionPrompt) => void): this;
    on(event: 'server_error', listener: (ctx: KoaContextWithOIDC, error: Error) => void): this;
  }

  export namespace errors {
    class OIDCProviderError extends Error {
      error: string;
      error_description?: string;
      status: number;
    }
    class InvalidRequest extends OIDCProviderError {
      constructor(description?: string, status?: number);
    }
    class InvalidTarget extends OIDCProviderError {
      constructor(description?: string);
    }
    class AccessDenied extends OIDCProviderError {
      constructor(description?: string);
    }
  }

  export namespace interactionPolicy {
    class Check {
      constructor(
        reason: string,
        description: string,
        check: (ctx: KoaContextWithOIDC) => boolean | Promise<boolean>,
      );
      static readonly REQUEST_PROMPT: true;
      static readonly NO_NEED_TO_PROMPT: false;
    }
    class Prompt {
      readonly name: string;
      readonly checks: Check[] & { add(check: Check, index?: number): void };
    }
    function base(): Prompt[] & { get(name: string): Prompt | undefined };
  }

  export default Provider;
}
