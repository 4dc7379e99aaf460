import { createHash, randomBytes } from 'node:crypto';

/**
 * A deliberately small SMART client for driving the sandbox over real HTTP in tests: a cookie jar,
 * PKCE S256, manual redirect following and token requests. No mocks, no library client, so the tests
 * see exactly what goes over the wire.
 */

interface StoredCookie {
  readonly name: string;
  readonly value: string;
  readonly path: string;
  readonly expiresAt: number;
}

/** Single-origin cookie jar honouring Path and Max-Age/Expires (enough for oidc-provider's cookies). */
export class CookieJar {
  readonly #cookies = new Map<string, StoredCookie>();

  capture(response: Response): void {
    for (const line of response.headers.getSetCookie()) {
      const [pair = '', ...attributes] = line.split(';').map((part) => part.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = '/';
      let expiresAt = Number.POSITIVE_INFINITY;
      for (const attribute of attributes) {
        const [key = '', val = ''] = attribute.split('=');
        switch (key.toLowerCase()) {
          case 'path':
            path = val || '/';
            break;
          case 'max-age':
            expiresAt = Date.now() + Number(val) * 1000;
            break;
          case 'expires':
            if (expiresAt === Number.POSITIVE_INFINITY) {
              expiresAt = Date.parse(val);
            }
            break;
        }
      }
      const key = `${name};${path}`;
      if (expiresAt <= Date.now()) {
        this.#cookies.delete(key);
      } else {
        this.#cookies.set(key, { name, value, path, expiresAt });
      }
    }
  }

  headerFor(url: URL): string | undefined {
    const now = Date.now();
    const matching = [...this.#cookies.values()].filter(
      (c) => c.expiresAt > now && (url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`)),
    );
    return matching.length === 0 ? undefined : matching.map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

export interface Pkce {
  readonly verifier: string;
  readonly challenge: string;
}

export function createPkce(): Pkce {
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  return { verifier, challenge };
}

export function randomToken(): string {
  return randomBytes(16).toString('base64url');
}

export async function browserGet(url: URL, jar: CookieJar): Promise<Response> {
  const cookie = jar.headerFor(url);
  const response = await fetch(url, { redirect: 'manual', headers: cookie ? { cookie } : {} });
  jar.capture(response);
  return response;
}

export async function browserPostForm(url: URL, form: Record<string, string>, jar: CookieJar): Promise<Response> {
  const cookie = jar.headerFor(url);
  const response = await fetch(url, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...(cookie ? { cookie } : {}) },
    body: new URLSearchParams(form),
  });
  jar.capture(response);
  return response;
}

export type BrowserStop =
  | { readonly kind: 'left-origin'; readonly location: URL }
  | { readonly kind: 'page'; readonly response: Response; readonly url: URL };

/**
 * Follows redirects the way a browser would while they stay on `origin`; stops at the first redirect
 * that leaves it (the app's redirect URI) or at the first non-redirect answer (a page).
 */
export async function followRedirects(first: Response, firstUrl: URL, origin: string, jar: CookieJar): Promise<BrowserStop> {
  let response = first;
  let url = firstUrl;
  for (let hops = 0; hops < 10; hops++) {
    const location = response.headers.get('location');
    if (response.status < 300 || response.status >= 400 || location === null) {
      return { kind: 'page', response, url };
    }
    const next = new URL(location, url);
    if (next.origin !== origin) {
      return { kind: 'left-origin', location: next };
    }
    url = next;
    response = await browserGet(url, jar);
  }
  throw new Error('too many redirects');
}

export interface AuthorizeRequest {
  readonly authorizationEndpoint: string;
  readonly clientId: string;
  readonly redirectUri: string;
  readonly scope: string;
  readonly aud: string | undefined;
  readonly state: string;
  readonly nonce?: string;
  readonly launch?: string;
  readonly codeChallenge?: string;
  readonly codeChallengeMethod?: string;
}

export function buildAuthorizeUrl(request: AuthorizeRequest): URL {
  const url = new URL(request.authorizationEndpoint);
  const params: Record<string, string | undefined> = {
    response_type: 'code',
    client_id: request.clientId,
    redirect_uri: request.redirectUri,
    scope: request.scope,
    state: request.state,
    aud: request.aud,
    nonce: request.nonce,
    launch: request.launch,
    code_challenge: request.codeChallenge,
    code_challenge_method: request.codeChallengeMethod,
  };
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined) {
      url.searchParams.set(key, value);
    }
  }
  return url;
}

export function basicAuth(clientId: string, secret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64')}`;
}

export async function postForm(
  url: string,
  form: Record<string, string>,
  authorization?: string,
): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const response = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
      ...(authorization ? { authorization } : {}),
    },
    body: new URLSearchParams(form),
  });
  const text = await response.text();
  const body = text === '' ? {} : (JSON.parse(text) as Record<string, unknown>);
  return { status: response.status, body, headers: response.headers };
}

/** GET with an optional Bearer token; the caller names the JSON shape it expects (tests assert on it). */
export async function getJson<T = Record<string, unknown>>(
  url: string,
  accessToken?: string,
): Promise<{ status: number; body: T; headers: Headers }> {
  const response = await fetch(url, {
    headers: { accept: 'application/fhir+json', ...(accessToken ? { authorization: `Bearer ${accessToken}` } : {}) },
  });
  return { status: response.status, body: (await response.json()) as T, headers: response.headers };
}

/**
 * An EHR launch from the sandbox's EHR page, end to end, for tests that only need its token
 * response: launch, authorize (PKCE S256), code exchange with client_secret_basic.
 */
export async function ehrLaunchToken(
  sandbox: { readonly url: string; readonly fhirBaseUrl: string },
  client: { readonly clientId: string; readonly clientSecret: string; readonly redirectUri: string },
  patient: string,
  scope: string,
): Promise<Record<string, unknown>> {
  const config = (await getJson<{ authorization_endpoint: string; token_endpoint: string }>(`${sandbox.fhirBaseUrl}/.well-known/smart-configuration`)).body;
  const jar = new CookieJar();
  const launchPage = await browserGet(new URL(`/ehr/launch?patient=${encodeURIComponent(patient)}`, sandbox.url), jar);
  const launch = new URL(launchPage.headers.get('location') ?? '').searchParams.get('launch') ?? '';
  const pkce = createPkce();
  const url = buildAuthorizeUrl({
    authorizationEndpoint: config.authorization_endpoint,
    clientId: client.clientId,
    redirectUri: client.redirectUri,
    scope,
    aud: sandbox.fhirBaseUrl,
    state: randomToken(),
    launch,
    codeChallenge: pkce.challenge,
    codeChallengeMethod: 'S256',
  });
  const stop = await followRedirects(await browserGet(url, jar), url, sandbox.url, jar);
  const code = stop.kind === 'left-origin' ? stop.location.searchParams.get('code') : null;
  if (code === null) {
    throw new Error(`the launch did not return a code (${stop.kind === 'page' ? `page ${stop.response.status}` : stop.location.href})`);
  }
  const token = await postForm(
    config.token_endpoint,
    { grant_type: 'authorization_code', code, redirect_uri: client.redirectUri, code_verifier: pkce.verifier },
    basicAuth(client.clientId, client.clientSecret),
  );
  if (token.status !== 200) {
    throw new Error(`the token endpoint answered ${token.status}: ${JSON.stringify(token.body)}`);
  }
  return token.body;
}
