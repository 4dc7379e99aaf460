import { createHash, randomBytes } from 'node:crypto';
import { exportJWK, SignJWT, type CryptoKey, type JWK } from 'jose';
import type { Query } from '../../shared/core/query.js';
import type { Clock, HttpClient } from '../../shared/core/ports.js';
import { rs256 } from '../fixtures/keys.js';

export const EHR_FHIR_BASE = 'https://ehr.example.org/fhir/r4';
export const EHR_CLIENT_ID = 'my-app';
/** Unreserved characters only (SMART-CAUTH-02), and long enough never to appear by chance in ciphertext. */
export const EHR_CLIENT_SECRET = 'client-secret-4f1c2a7e9b3d5f60a8c1e2d3b4a59687';

/** What the core sent over its `HttpClient`. */
export interface RecordedRequest {
  readonly url: string;
  readonly method: string;
  /** Lower-case header names. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string | undefined;
}

export interface FakeEhrOptions {
  readonly clock: Clock;
  /** The FHIR base URL (the `iss`), exactly as configured. */
  readonly fhirBase?: string;
  /** The authorization server's `issuer`; defaults to `{origin}/oauth2`. */
  readonly issuer?: string;
  readonly clientId?: string;
  /** The registered client secret; `undefined` registers a public client (client_id in the body). */
  readonly clientSecret?: string | undefined;
}

interface PendingCode {
  readonly clientId: string;
  readonly redirectUri: string;
  readonly codeChallenge: string;
  readonly nonce: string | undefined;
  readonly scope: string;
  used: boolean;
}

export interface AuthorizeOptions {
  /** RFC 9207 `iss` in the response: a string to send, `false` to omit; by default sent iff advertised. */
  readonly iss?: string | false;
  /** Answer with this OAuth error (e.g. `access_denied`) instead of a code. */
  readonly error?: string;
}

export interface AuthorizeOutcome {
  /** The parameters of the authorization request, as the EHR received them. */
  readonly params: URLSearchParams;
  readonly state: string;
  readonly nonce: string | undefined;
  readonly codeChallenge: string;
  readonly code: string | undefined;
  /** The query of the redirect back to `redirect_uri`, in the shape API Gateway hands to the core. */
  readonly callbackQuery: Record<string, string[]>;
}

/** A token endpoint call, as the fake EHR parsed it. */
export interface TokenCall {
  readonly headers: Readonly<Record<string, string>>;
  readonly form: URLSearchParams;
}

type Handler = (url: URL, request: RecordedRequest) => Response | Promise<Response>;

export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}

function withoutUndefined(value: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined));
}

function recordRequest(url: string, init: RequestInit | undefined): RecordedRequest {
  const headers: Record<string, string> = {};
  new Headers(init?.headers).forEach((value, name) => {
    headers[name.toLowerCase()] = value;
  });
  const body = typeof init?.body === 'string' ? init.body : init?.body instanceof URLSearchParams ? init.body.toString() : init?.body instanceof Uint8Array ? Buffer.from(init.body).toString('utf8') : undefined;
  return { url, method: (init?.method ?? 'GET').toUpperCase(), headers, body };
}

/**
 * An in-process SMART EHR exposed as an `HttpClient`: it serves `/.well-known/smart-configuration`
 * for its FHIR base, a JWKS, and a token endpoint that checks grant_type, code (single use),
 * redirect_uri, the PKCE verifier against the S256 challenge it saw at `authorize`, and client auth,
 * then answers with tokens and an id_token it signs (echoing the nonce of the authorization request).
 * Every request the core makes is recorded. Anything not on the EHR's origin fails like a network error.
 *
 * The knobs (`smartConfiguration`, `tokenResponse`, `idTokenClaims`, `idTokenKey`, the `*Answer`
 * overrides) are plain mutable properties: a test changes what it needs before acting.
 */
export class FakeEhr {
  readonly fhirBase: string;
  readonly origin: string;
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string | undefined;
  readonly authorizationEndpoint: string;
  readonly tokenEndpoint: string;
  readonly jwksUri: string;
  /**
   * RFC 7009 revocation endpoint. Served always, but advertised in discovery only when a test adds it:
   * `ehr.smartConfiguration.revocation_endpoint = ehr.revocationEndpoint`.
   */
  readonly revocationEndpoint: string;
  readonly kid = 'ehr-key-1';

  /** The discovery document served; edit or replace it to test discovery failures. */
  smartConfiguration: Record<string, unknown>;
  /** Replaces the discovery answer entirely (HTTP errors, non-JSON, network failures by throwing). */
  discoveryAnswer: (() => Response | Promise<Response>) | undefined;
  /** Replaces the token endpoint answer entirely; the call is still recorded. */
  tokenAnswer: ((call: TokenCall) => Response | Promise<Response>) | undefined;
  /** Merged into a successful token response; an `undefined` member removes that member. */
  tokenResponse: Record<string, unknown> = {};
  /** Merged into the id_token payload; an `undefined` member removes that claim. */
  idTokenClaims: Record<string, unknown> = {};
  /** Signs id_tokens with this key instead of the published one. */
  idTokenKey: CryptoKey | undefined;
  /** Replaces the revocation endpoint answer entirely (status codes, network failures by throwing); the call is still recorded. */
  revocationAnswer: ((call: TokenCall) => Response | Promise<Response>) | undefined;
  /** The tokens the revocation endpoint accepted (after client authentication), in order. */
  readonly revoked: string[] = [];
  /**
   * Replaces the client authentication check of the token and revocation endpoints (e.g. verifying
   * `private_key_jwt` assertions); `endpoint` is the URL the request was sent to.
   */
  clientAuthenticator: ((call: TokenCall, endpoint: string) => boolean | Promise<boolean>) | undefined;
  /** FHIR API requests under the base; 404 by default. */
  fhirAnswer: Handler = (url) => {
    // The patient of the launch exists (sign-in reads it once to confirm access); nothing else does.
    const patient = /\/Patient\/([A-Za-z0-9\-.]{1,64})$/.exec(url.pathname)?.[1];
    if (patient !== undefined && patient === (this.tokenResponse.patient ?? '123')) {
      return json({ resourceType: 'Patient', id: patient }, 200, { 'content-type': 'application/fhir+json' });
    }
    return json({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] }, 404);
  };

  readonly requests: RecordedRequest[] = [];
  /** Every secret the EHR handed out or received, for "never stored in clear" checks. */
  readonly issued = { codes: [] as string[], accessTokens: [] as string[], refreshTokens: [] as string[], idTokens: [] as string[], verifiers: [] as string[] };

  readonly #clock: Clock;
  readonly #privateKey: CryptoKey;
  readonly #publicJwk: JWK;
  readonly #codes = new Map<string, PendingCode>();

  private constructor(options: FakeEhrOptions, privateKey: CryptoKey, publicJwk: JWK) {
    this.#clock = options.clock;
    this.#privateKey = privateKey;
    this.fhirBase = options.fhirBase ?? EHR_FHIR_BASE;
    this.origin = new URL(this.fhirBase).origin;
    this.issuer = options.issuer ?? `${this.origin}/oauth2`;
    this.clientId = options.clientId ?? EHR_CLIENT_ID;
    this.clientSecret = 'clientSecret' in options ? options.clientSecret : EHR_CLIENT_SECRET;
    this.authorizationEndpoint = `${this.origin}/oauth2/authorize`;
    this.tokenEndpoint = `${this.origin}/oauth2/token`;
    this.jwksUri = `${this.origin}/oauth2/jwks`;
    this.revocationEndpoint = `${this.origin}/oauth2/revoke`;
    this.#publicJwk = { ...publicJwk, kid: this.kid, alg: 'RS256', use: 'sig' };
    this.smartConfiguration = {
      issuer: this.issuer,
      jwks_uri: this.jwksUri,
      authorization_endpoint: this.authorizationEndpoint,
      token_endpoint: this.tokenEndpoint,
      grant_types_supported: ['authorization_code', 'refresh_token'],
      capabilities: ['launch-ehr', 'launch-standalone', 'client-confidential-symmetric', 'client-public', 'sso-openid-connect', 'context-ehr-patient'],
      code_challenge_methods_supported: ['S256'],
      token_endpoint_auth_methods_supported: ['client_secret_basic'],
      scopes_supported: ['openid', 'fhirUser', 'launch', 'launch/patient', 'offline_access'],
    };
  }

  /** RSA key generation is slow: the first pooled test key (test/fixtures/keys.ts), never committed. */
  static #keys: Promise<{ privateKey: CryptoKey; publicJwk: JWK }> | undefined;

  static async create(options: FakeEhrOptions): Promise<FakeEhr> {
    FakeEhr.#keys ??= rs256(1).then(async ({ privateKey, publicKey }) => ({ privateKey, publicJwk: await exportJWK(publicKey) }));
    const { privateKey, publicJwk } = await FakeEhr.#keys;
    return new FakeEhr(options, privateKey, publicJwk);
  }

  /** The EHR as the core sees it. */
  readonly http: HttpClient = async (url, init) => {
    const request = recordRequest(url, init);
    this.requests.push(request);
    const parsed = new URL(url);
    if (parsed.origin !== this.origin) throw new TypeError('fetch failed');
    const path = parsed.href.split('?')[0] as string;
    if (path === `${this.fhirBase.replace(/\/+$/, '')}/.well-known/smart-configuration`) {
      return this.discoveryAnswer ? this.discoveryAnswer() : json(this.smartConfiguration);
    }
    if (path === this.jwksUri) return json({ keys: [this.#publicJwk] });
    if (path === this.tokenEndpoint) return this.#token(request);
    if (path === this.revocationEndpoint) return this.#revoke(request);
    if (path === this.fhirBase.replace(/\/+$/, '') || path.startsWith(`${this.fhirBase.replace(/\/+$/, '')}/`)) return this.fhirAnswer(parsed, request);
    return json({ error: 'not_found' }, 404);
  };

  /** Requests whose URL starts with `prefix`. */
  requestsTo(prefix: string): RecordedRequest[] {
    return this.requests.filter((r) => r.url.startsWith(prefix));
  }

  tokenRequests(): RecordedRequest[] {
    return this.requestsTo(this.tokenEndpoint);
  }

  /**
   * What the EHR's authorization endpoint does with the browser's request: checks the client, the
   * redirect URI, PKCE S256 and `aud`, then "redirects" back with a code (or an error).
   */
  authorize(authorizeUrl: string, options: AuthorizeOptions = {}): AuthorizeOutcome {
    const url = new URL(authorizeUrl);
    if (`${url.origin}${url.pathname}` !== this.authorizationEndpoint) throw new Error(`not this EHR's authorization endpoint: ${url.origin}${url.pathname}`);
    const params = url.searchParams;
    const get = (name: string) => {
      const values = params.getAll(name);
      if (values.length !== 1) throw new Error(`authorize: "${name}" must appear exactly once`);
      return values[0] as string;
    };
    if (get('response_type') !== 'code') throw new Error('authorize: response_type must be code');
    if (get('client_id') !== this.clientId) throw new Error('authorize: unknown client_id');
    if (get('code_challenge_method') !== 'S256') throw new Error('authorize: code_challenge_method must be S256');
    if (get('aud') !== this.fhirBase) throw new Error('authorize: aud is not this FHIR base');
    const state = get('state');
    const codeChallenge = get('code_challenge');
    const redirectUri = get('redirect_uri');
    const scope = get('scope');
    const nonce = params.get('nonce') ?? undefined;

    const callbackQuery: Record<string, string[]> = { state: [state] };
    const iss = options.iss ?? (this.smartConfiguration.authorization_response_iss_parameter_supported === true ? this.issuer : false);
    if (iss !== false) callbackQuery.iss = [iss];
    if (options.error !== undefined) {
      callbackQuery.error = [options.error];
      return { params, state, nonce, codeChallenge, code: undefined, callbackQuery };
    }
    const code = randomBytes(24).toString('base64url');
    this.#codes.set(code, { clientId: this.clientId, redirectUri, codeChallenge, nonce, scope, used: false });
    this.issued.codes.push(code);
    callbackQuery.code = [code];
    return { params, state, nonce, codeChallenge, code, callbackQuery };
  }

  /** An id_token as this EHR would issue it (valid by default; `claims` override or, when undefined, remove). */
  async signIdToken(claims: Record<string, unknown> = {}, key: CryptoKey = this.#privateKey): Promise<string> {
    const now = Math.floor(this.#clock.now() / 1000);
    const payload = withoutUndefined({
      iss: this.issuer,
      aud: this.clientId,
      sub: 'practitioner-user-1',
      iat: now,
      exp: now + 300,
      fhirUser: `${this.fhirBase}/Practitioner/abc`,
      ...claims,
    });
    return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', kid: this.kid, typ: 'JWT' }).sign(key);
  }

  async #token(request: RecordedRequest): Promise<Response> {
    const form = new URLSearchParams(request.body ?? '');
    if (this.tokenAnswer) return this.tokenAnswer({ headers: request.headers, form });
    if (request.method !== 'POST') return json({ error: 'invalid_request' }, 405);
    if (!request.headers['content-type']?.startsWith('application/x-www-form-urlencoded')) return json({ error: 'invalid_request' }, 400);
    if (!(await this.#authenticates(request, form, this.tokenEndpoint))) return json({ error: 'invalid_client' }, 401, { 'www-authenticate': 'Basic' });
    if (form.get('grant_type') !== 'authorization_code') return json({ error: 'unsupported_grant_type' }, 400);
    const code = form.get('code') ?? '';
    const pending = this.#codes.get(code);
    if (pending === undefined || pending.used) return json({ error: 'invalid_grant', error_description: 'unknown code' }, 400);
    pending.used = true;
    if (form.get('redirect_uri') !== pending.redirectUri) return json({ error: 'invalid_grant', error_description: 'redirect_uri' }, 400);
    const verifier = form.get('code_verifier') ?? '';
    this.issued.verifiers.push(verifier);
    if (createHash('sha256').update(verifier, 'ascii').digest('base64url') !== pending.codeChallenge) {
      return json({ error: 'invalid_grant', error_description: 'PKCE verification failed' }, 400);
    }
    const accessToken = `at-${randomBytes(32).toString('base64url')}`;
    const refreshToken = `rt-${randomBytes(32).toString('base64url')}`;
    const idToken = pending.scope.split(' ').includes('openid')
      ? await this.signIdToken({ nonce: pending.nonce, ...this.idTokenClaims }, this.idTokenKey)
      : undefined;
    const body = withoutUndefined({
      access_token: accessToken,
      token_type: 'Bearer',
      expires_in: 3600,
      scope: pending.scope,
      refresh_token: refreshToken,
      id_token: idToken,
      patient: '123',
      need_patient_banner: true,
      ...this.tokenResponse,
    });
    for (const [list, value] of [
      [this.issued.accessTokens, body.access_token],
      [this.issued.refreshTokens, body.refresh_token],
      [this.issued.idTokens, body.id_token],
    ] as const) {
      if (typeof value === 'string') list.push(value);
    }
    return json(body, 200, { 'cache-control': 'no-store', pragma: 'no-cache' });
  }

  /** RFC 7009 §2.1/2.2: form POST with `token`, client authentication as at the token endpoint; 200 with an empty body. */
  async #revoke(request: RecordedRequest): Promise<Response> {
    const form = new URLSearchParams(request.body ?? '');
    if (this.revocationAnswer) return this.revocationAnswer({ headers: request.headers, form });
    if (request.method !== 'POST') return json({ error: 'invalid_request' }, 405);
    if (!request.headers['content-type']?.startsWith('application/x-www-form-urlencoded')) return json({ error: 'invalid_request' }, 400);
    if (!(await this.#authenticates(request, form, this.revocationEndpoint))) return json({ error: 'invalid_client' }, 401, { 'www-authenticate': 'Basic' });
    const token = form.get('token');
    if (token === null || token === '') return json({ error: 'invalid_request' }, 400);
    this.revoked.push(token);
    return new Response(null, { status: 200 });
  }

  async #authenticates(request: RecordedRequest, form: URLSearchParams, endpoint: string): Promise<boolean> {
    if (this.clientAuthenticator) return this.clientAuthenticator({ headers: request.headers, form }, endpoint);
    return this.#clientAuthenticated(request.headers, form);
  }

  #clientAuthenticated(headers: Readonly<Record<string, string>>, form: URLSearchParams): boolean {
    if (this.clientSecret === undefined) {
      return headers.authorization === undefined && form.get('client_id') === this.clientId;
    }
    const match = /^Basic ([A-Za-z0-9+/=]+)$/.exec(headers.authorization ?? '');
    if (!match) return false;
    const decoded = Buffer.from(match[1] as string, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return false;
    const formDecode = (v: string) => decodeURIComponent(v.replace(/\+/g, ' '));
    return formDecode(decoded.slice(0, colon)) === this.clientId && formDecode(decoded.slice(colon + 1)) === this.clientSecret;
  }
}

/** The query shape API Gateway hands to the core, from plain pairs (repeat a name to repeat it). */
export function query(...pairs: Array<readonly [string, string]>): Query {
  const result: Record<string, string[]> = {};
  for (const [name, value] of pairs) (result[name] ??= []).push(value);
  return result;
}
