/**
 * smart-launch browser SDK: the app side of the smart-launch token handler.
 *
 * - `ready()` takes the session id from the URL fragment (`#session=…`), removes it from the address
 *   bar and the history entry, and keeps it in this tab's `sessionStorage` (one entry per browsing
 *   context), so a reload keeps working. A new tab starts empty (it must be launched again); a
 *   duplicated tab gets a copy of the tab's storage, so it opens the same session.
 * - `session.fhir()` is fetch-style, `session.request()` answers JSON with paging helpers; both go
 *   through the proxy at `fhirBaseUrl` with the HttpOnly binding cookie. No token ever reaches the page.
 * - On a 401 from any session route the SDK refreshes once; if the session is still not open it
 *   clears what it stored and cached and emits one `sessionEnded` event with a way forward.
 *
 * No runtime dependencies; ES2022; works in any browser with `fetch`, `crypto.subtle` and
 * `sessionStorage`.
 */

/** The launch context of `GET /sessions/{id}`: never a token. */
export interface LaunchContext {
  readonly patient?: string;
  readonly encounter?: string;
  readonly fhirUser?: string;
  readonly scope: string;
  readonly need_patient_banner?: boolean;
  readonly smart_style_url?: string;
  readonly intent?: string;
  readonly tenant?: string;
  readonly fhirContext?: ReadonlyArray<Record<string, unknown>>;
  readonly fhirBaseUrl: string;
  readonly iss: string;
  readonly launchMode: 'ehr' | 'standalone';
  readonly canRefresh: boolean;
  readonly expiresAt: string;
  readonly sessionExpiresAt: string;
  readonly [extra: string]: unknown;
}

export interface SmartLaunchOptions {
  /** Base URL of the smart-launch API (its `publicUrl`); default: this page's origin. */
  readonly apiUrl?: string;
  /**
   * How an app opened with `?iss=…&launch=…` signs in: `redirect` (this window goes to `/launch`),
   * `popup` (a sign-in window, for frames whose EHR sign-in page refuses framing), or `auto`
   * (popup when framed, redirect otherwise). Default `redirect`.
   */
  readonly signIn?: 'redirect' | 'popup' | 'auto';
  /** Replaces `fetch` (tests, instrumentation). */
  readonly fetch?: typeof fetch;
}

/** Why a session is no longer usable. */
export type EndReason = 'not-open' | 'logged-out';

export interface SessionEndedDetail {
  readonly reason: EndReason;
  /** The server's stable error code, when it gave one (`SESSION_NOT_OPEN`, `HANDOFF_REJECTED`, …). */
  readonly code: string | undefined;
  readonly message: string;
  /** Where to start a new sign-in: set for standalone launches; EHR launches start again from the EHR. */
  readonly relaunchUrl: string | undefined;
}

/** Every failure the SDK reports; `code` is stable. */
export class SmartLaunchError extends Error {
  override readonly name: string = 'SmartLaunchError';
  constructor(
    readonly code: string,
    message: string,
    readonly status = 0,
    readonly hint = '',
    readonly body: unknown = undefined,
  ) {
    super(message);
  }
}

/** The session is not open (any more): carries the way forward. */
export class SessionEndedError extends SmartLaunchError {
  override readonly name = 'SessionEndedError';
  constructor(readonly detail: SessionEndedDetail) {
    super(detail.code ?? 'SESSION_ENDED', detail.message, 401);
  }
}

/** `ready()` found an EHR launch that must sign in through a popup: call `signIn()` from a click. */
export class SignInRequiredError extends SmartLaunchError {
  override readonly name = 'SignInRequiredError';
  constructor(readonly signIn: () => Promise<SmartSession>) {
    super('SIGN_IN_REQUIRED', 'sign in through a popup window (the EHR does not let its sign-in page load in a frame)');
  }
}

export interface RequestOptions extends Omit<RequestInit, 'body'> {
  readonly body?: unknown;
  /** Pages to fetch by following `next` links: 1 (default) is one page, 0 is all of them. */
  readonly pageLimit?: number;
  /** Answer the resources of the bundle(s) as one array instead of the bundle(s). */
  readonly flat?: boolean;
  /** Called with each page as it arrives. */
  readonly onPage?: (page: FhirBundle) => void | Promise<void>;
  /** Keep the answer in the session's memory cache (GET only); cleared when the session ends. */
  readonly memoize?: boolean;
}

export interface FhirBundle {
  readonly resourceType: 'Bundle';
  readonly link?: ReadonlyArray<{ relation: string; url: string }>;
  readonly entry?: ReadonlyArray<{ resource?: Record<string, unknown>; fullUrl?: string }>;
  readonly total?: number;
  readonly [extra: string]: unknown;
}

const STORAGE_PREFIX = 'smart-launch:';
const POPUP_MARKER = 'smart-launch:popup';
const NAME_PREFIX = 'smart-launch-';
const HANDOFF_MESSAGE = 'smart-launch:handoff';

interface Stored {
  readonly id: string;
  readonly iss?: string;
  readonly launchMode?: string;
}

function base64url(bytes: Uint8Array): string {
  let text = '';
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function randomId(): string {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

async function sha256(text: string): Promise<string> {
  return base64url(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text))));
}

/**
 * The storage key of this browsing context. `sessionStorage` is per tab and origin, but frames of one
 * origin in one tab share it; the window name (kept across reloads) tells frames apart.
 */
function storageKey(): string {
  if (!window.name.startsWith(NAME_PREFIX)) window.name = `${NAME_PREFIX}${randomId().slice(0, 16)}`;
  return `${STORAGE_PREFIX}${window.name}`;
}

/**
 * `sessionStorage`, or `undefined` where the browser refuses it (third-party frames with third-party
 * storage blocked, e.g. Chrome's incognito default): the session then lives in page memory only.
 */
function tabStorage(): Storage | undefined {
  try {
    const storage = window.sessionStorage;
    storage.getItem(STORAGE_PREFIX);
    return storage;
  } catch {
    return undefined;
  }
}

function readStored(): Stored | undefined {
  try {
    const raw = tabStorage()?.getItem(storageKey());
    const value = raw ? (JSON.parse(raw) as Stored) : undefined;
    return typeof value?.id === 'string' ? value : undefined;
  } catch {
    return undefined;
  }
}

function writeStored(value: Stored): void {
  try {
    tabStorage()?.setItem(storageKey(), JSON.stringify(value));
  } catch {
    // Storage refused (some embedded browsers): the session lives in memory only; a reload relaunches.
  }
}

function clearStored(): void {
  try {
    tabStorage()?.removeItem(storageKey());
  } catch {
    // nothing stored
  }
}

/** Reads and removes `#session=…` (and only it) from the address bar and the history entry. */
function takeFragment(name: string): string | undefined {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const value = params.get(name);
  if (value === null) return undefined;
  params.delete(name);
  const rest = params.toString();
  window.history.replaceState(window.history.state, '', `${window.location.pathname}${window.location.search}${rest ? `#${rest}` : ''}`);
  return value;
}

/** The server's error as `{ code, message, hint }`, from its JSON error or a FHIR OperationOutcome. */
async function errorOf(response: Response): Promise<SmartLaunchError> {
  let body: unknown;
  try {
    body = await response.json();
  } catch {
    body = undefined;
  }
  const json = body as
    | { error?: { code?: string; message?: string; hint?: string }; issue?: Array<{ diagnostics?: string; details?: { text?: string; coding?: Array<{ code?: string }> } }> }
    | undefined;
  const issue = json?.issue?.[0];
  const code = json?.error?.code ?? issue?.details?.coding?.[0]?.code ?? `HTTP_${response.status}`;
  const message = json?.error?.message ?? issue?.diagnostics ?? `the server answered ${response.status}`;
  const hint = json?.error?.hint ?? issue?.details?.text ?? '';
  return new SmartLaunchError(code, message, response.status, hint, body);
}

/** True for "this session is not open": every 401, and the 404 some versions answer for unknown ids. */
function notOpen(response: Response, sessionRoute: boolean): boolean {
  return response.status === 401 || (sessionRoute && response.status === 404);
}

/** One launch: its context, FHIR access through the proxy, refresh, logout and the end of it. */
export class SmartSession extends EventTarget {
  readonly id: string;
  readonly apiUrl: string;
  #context: LaunchContext;
  readonly #fetch: typeof fetch;
  readonly #cache = new Map<string, unknown>();
  #ended: SessionEndedDetail | undefined;
  #refreshing: Promise<boolean> | undefined;

  /** @internal use `ready()` */
  constructor(id: string, apiUrl: string, context: LaunchContext, fetcher: typeof fetch) {
    super();
    this.id = id;
    this.apiUrl = apiUrl;
    this.#context = context;
    this.#fetch = fetcher;
  }

  get context(): LaunchContext {
    return this.#context;
  }
  get patientId(): string | undefined {
    return this.#context.patient;
  }
  get fhirBaseUrl(): string {
    return this.#context.fhirBaseUrl;
  }
  /** The granted scopes, one per entry (what the EHR really granted, maybe less than asked). */
  get grantedScopes(): string[] {
    return this.#context.scope.split(/\s+/).filter(Boolean);
  }
  /** Set once the session ended; every call then rejects with `SessionEndedError` without a request. */
  get ended(): SessionEndedDetail | undefined {
    return this.#ended;
  }
  /** How many answers the memory cache holds (for apps and tests that check it was cleared). */
  get cacheSize(): number {
    return this.#cache.size;
  }
  /** Drops every memoized answer (the SDK also does this when the session ends). */
  clearCache(): void {
    this.#cache.clear();
  }
  get sessionUrl(): string {
    return `${this.apiUrl}/sessions/${encodeURIComponent(this.id)}`;
  }

  /** Subscribes to `sessionEnded` (emitted once); answers the unsubscribe function. */
  onSessionEnded(listener: (detail: SessionEndedDetail) => void): () => void {
    const handler = (event: Event) => listener((event as CustomEvent<SessionEndedDetail>).detail);
    this.addEventListener('sessionEnded', handler);
    return () => this.removeEventListener('sessionEnded', handler);
  }

  /** fetch-style access to the FHIR proxy: `path` relative to `fhirBaseUrl` (or a URL under it). */
  async fhir(path: string, init: RequestInit = {}): Promise<Response> {
    const url = this.#fhirUrl(path);
    const headers = new Headers(init.headers);
    if (!headers.has('accept')) headers.set('accept', 'application/fhir+json');
    return this.#send(url, { ...init, headers }, false);
  }

  /**
   * A FHIR request answering JSON: a resource, a bundle, or with `pageLimit`/`flat` several pages
   * or their resources. Errors reject with `SmartLaunchError` (`code` from the OperationOutcome).
   */
  async request<T = unknown>(path: string, options: RequestOptions = {}): Promise<T> {
    const { pageLimit = 1, flat = false, onPage, memoize = false, body, ...init } = options;
    const method = (init.method ?? 'GET').toUpperCase();
    const key = `${method} ${this.#fhirUrl(path)}|${pageLimit}|${flat}`;
    if (memoize && method === 'GET' && this.#cache.has(key)) return this.#cache.get(key) as T;
    const headers = new Headers(init.headers);
    if (body !== undefined && !headers.has('content-type')) headers.set('content-type', 'application/fhir+json');
    const requestInit: RequestInit = { ...init, headers, ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }) };

    const pages: unknown[] = [];
    let next: string | undefined = path;
    let fetched = 0;
    while (next !== undefined && (pageLimit === 0 || fetched < pageLimit)) {
      const response = await this.fhir(next, fetched === 0 ? requestInit : { headers: { accept: 'application/fhir+json' } });
      if (!response.ok) throw await errorOf(response);
      const text = await response.text();
      const json: unknown = text === '' ? undefined : JSON.parse(text);
      fetched += 1;
      const bundle = json as FhirBundle | undefined;
      if (bundle?.resourceType !== 'Bundle') {
        pages.push(json);
        break;
      }
      if (onPage) await onPage(bundle);
      pages.push(bundle);
      // Only links under this session's proxy are followed (never another origin).
      const link = bundle.link?.find((l) => l.relation === 'next')?.url;
      next = link !== undefined && link.startsWith(`${this.fhirBaseUrl}/`) ? link : undefined;
    }
    let result: unknown;
    if (flat) {
      result = pages.flatMap((p) => ((p as FhirBundle)?.resourceType === 'Bundle' ? ((p as FhirBundle).entry ?? []).map((e) => e.resource).filter(Boolean) : [p]));
    } else {
      result = pages.length === 1 ? pages[0] : pages;
    }
    if (memoize && method === 'GET' && !this.#ended) this.#cache.set(key, result);
    return result as T;
  }

  /** Reads the launch patient (rejects when the launch has none). */
  async patient<T = Record<string, unknown>>(): Promise<T> {
    if (!this.patientId) throw new SmartLaunchError('NO_PATIENT', 'this launch has no patient in context');
    return this.request<T>(`Patient/${encodeURIComponent(this.patientId)}`, { memoize: true });
  }

  /** Refreshes the tokens now (the proxy also refreshes by itself); answers the new expiry. */
  async refresh(): Promise<{ expiresAt: string; scope: string }> {
    const response = await this.#send(`${this.sessionUrl}/refresh`, { method: 'POST' }, true, false);
    if (!response.ok) throw await errorOf(response);
    const answer = (await response.json()) as { expiresAt: string; scope: string };
    this.#context = { ...this.#context, expiresAt: answer.expiresAt, scope: answer.scope };
    return answer;
  }

  /** Reloads the launch context (e.g. after a refresh that narrowed the scope). */
  async reload(): Promise<LaunchContext> {
    const response = await this.#send(this.sessionUrl, { headers: { accept: 'application/json' } }, true);
    if (!response.ok) throw await errorOf(response);
    this.#context = (await response.json()) as LaunchContext;
    return this.#context;
  }

  /**
   * Revokes at the EHR (where it offers revocation), ends the session, clears what the SDK kept.
   * Where the EHR offers RP-initiated logout, the answer carries `endSessionUrl` and this window goes
   * there (the user is signed out at the EHR too, which returns to the app's URL); pass
   * `{ endAtEhr: false }` to stay, or read `endSessionUrl` from the resolved value to decide yourself.
   */
  async logout(options: { readonly endAtEhr?: boolean } = {}): Promise<{ readonly endSessionUrl?: string | undefined }> {
    if (this.#ended) return {};
    const response = await this.#send(`${this.sessionUrl}/logout`, { method: 'POST' }, true, false);
    if (!response.ok && !notOpen(response, true)) throw await errorOf(response);
    const answer = response.ok ? ((await response.json().catch(() => ({}))) as { endSessionUrl?: unknown }) : {};
    const endSessionUrl = typeof answer.endSessionUrl === 'string' && /^https?:\/\//.test(answer.endSessionUrl) ? answer.endSessionUrl : undefined;
    this.#end({ reason: 'logged-out', code: undefined, message: 'You signed out.', relaunchUrl: this.relaunchUrl });
    if (endSessionUrl !== undefined && options.endAtEhr !== false && typeof window !== 'undefined') window.location.assign(endSessionUrl);
    return { endSessionUrl };
  }

  /** Where a new sign-in starts: the standalone launch of this issuer; EHR launches start in the EHR. */
  get relaunchUrl(): string | undefined {
    return relaunchUrlOf(this.apiUrl, this.#context.launchMode, this.#context.iss);
  }

  /**
   * For FHIR clients that make their own requests (the fhirclient.js bridge): after a 401, one
   * refresh; resolves when a retry is worth it, otherwise ends the session and rejects.
   */
  async recoverFrom401(): Promise<void> {
    if (this.#ended) throw new SessionEndedError(this.#ended);
    if (await this.#refreshOnce()) return;
    throw this.#notOpen(new SmartLaunchError('SESSION_NOT_OPEN', 'the session is no longer open', 401, 'Open the app again from the EHR, or start a new sign-in.'));
  }

  /** Ends the session on this page after a 401 that a refresh did not cure (see `recoverFrom401`). */
  endAfter401(code: string | undefined, message: string): SessionEndedError {
    return this.#notOpen(new SmartLaunchError(code ?? 'SESSION_NOT_OPEN', message, 401));
  }

  #fhirUrl(path: string): string {
    if (/^https?:/i.test(path)) {
      if (!path.startsWith(`${this.fhirBaseUrl}/`)) throw new SmartLaunchError('URL_OUTSIDE_SESSION', 'only URLs under this session\'s fhirBaseUrl are requested');
      return path;
    }
    return `${this.fhirBaseUrl}/${path.replace(/^\/+/, '')}`;
  }

  /**
   * One request with the binding cookie. A 401 (or, on the session route, 404) leads to one refresh
   * shared by concurrent callers and one retry; still not open ends the session.
   */
  async #send(url: string, init: RequestInit, sessionRoute: boolean, retry = true): Promise<Response> {
    if (this.#ended) throw new SessionEndedError(this.#ended);
    const response = await this.#fetch(url, { ...init, credentials: 'include' });
    if (!notOpen(response, sessionRoute)) return response;
    // Ended while this request was in flight: no second refresh, no second event.
    if (this.#ended) throw new SessionEndedError(this.#ended);
    const error = await errorOf(response.clone());
    // A 401 the EHR gave for one resource still means the session is not usable; try one refresh.
    if (retry && (await this.#refreshOnce())) {
      const again = await this.#fetch(url, { ...init, credentials: 'include' });
      if (!notOpen(again, sessionRoute)) return again;
      const second = await errorOf(again.clone());
      throw this.#notOpen(second);
    }
    throw this.#notOpen(error);
  }

  /**
   * One refresh for every 401 that arrives while it runs. A failed refresh stays failed (the
   * session is over); after a successful one, a later 401 may try once more.
   */
  #refreshOnce(): Promise<boolean> {
    if (this.#ended) return Promise.resolve(false);
    this.#refreshing ??= (async () => {
      let ok = false;
      try {
        const response = await this.#fetch(`${this.sessionUrl}/refresh`, { method: 'POST', credentials: 'include' });
        if (response.ok) {
          const answer = (await response.json()) as { expiresAt: string; scope: string };
          this.#context = { ...this.#context, expiresAt: answer.expiresAt, scope: answer.scope };
          ok = true;
        }
      } catch {
        ok = false;
      }
      if (ok) setTimeout(() => (this.#refreshing = undefined), 0);
      return ok;
    })();
    return this.#refreshing;
  }

  #notOpen(error: SmartLaunchError): SessionEndedError {
    const detail: SessionEndedDetail = {
      reason: 'not-open',
      code: error.code,
      message: error.hint || error.message,
      relaunchUrl: this.relaunchUrl,
    };
    this.#end(detail);
    return new SessionEndedError(this.#ended ?? detail);
  }

  #end(detail: SessionEndedDetail): void {
    if (this.#ended) return;
    this.#ended = detail;
    this.#cache.clear();
    clearStored();
    this.dispatchEvent(new CustomEvent<SessionEndedDetail>('sessionEnded', { detail }));
  }
}

function relaunchUrlOf(apiUrl: string, launchMode: string | undefined, iss: string | undefined): string | undefined {
  return launchMode === 'standalone' && iss ? `${apiUrl}/launch?iss=${encodeURIComponent(iss)}` : undefined;
}

function isFramed(): boolean {
  try {
    return window.self !== window.top;
  } catch {
    return true;
  }
}

/** Never settles: the page is navigating away (or closing). */
const leaving = <T>() => new Promise<T>(() => undefined);

async function openSession(id: string, apiUrl: string, fetcher: typeof fetch, stored: Stored | undefined): Promise<SmartSession> {
  const response = await fetcher(`${apiUrl}/sessions/${encodeURIComponent(id)}`, { credentials: 'include', headers: { accept: 'application/json' } });
  if (response.ok) {
    const context = (await response.json()) as LaunchContext;
    writeStored({ id, iss: context.iss, launchMode: context.launchMode });
    return new SmartSession(id, apiUrl, context, fetcher);
  }
  const error = await errorOf(response);
  if (notOpen(response, true) || response.status === 400) {
    clearStored();
    throw new SessionEndedError({
      reason: 'not-open',
      code: error.code,
      message: error.hint || error.message,
      relaunchUrl: relaunchUrlOf(apiUrl, stored?.launchMode, stored?.iss),
    });
  }
  throw error;
}

/** Popup side of the hand-off: asks for a code with the popup's cookie and posts it to the opener. */
async function completePopup(id: string, challenge: string, apiUrl: string, fetcher: typeof fetch): Promise<never> {
  const opener = window.opener as Window | null;
  const response = await fetcher(`${apiUrl}/sessions/${encodeURIComponent(id)}/handoff`, {
    method: 'POST',
    credentials: 'include',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ challenge }),
  });
  if (!response.ok || !opener) {
    throw response.ok ? new SmartLaunchError('NO_OPENER', 'the app that opened this sign-in window is gone; open the app again') : await errorOf(response);
  }
  const { code } = (await response.json()) as { code: string };
  // Exactly the app's origin: the frame that opened this window is the app, on this very origin.
  opener.postMessage({ type: HANDOFF_MESSAGE, session: id, code }, window.location.origin);
  document.body.textContent = 'Signed in. You can close this window.';
  window.close();
  return leaving();
}

/**
 * Frame side of the popup sign-in: opens the app page in a window that runs the launch, waits for
 * its hand-off message and redeems it here, so the binding cookie lands in this frame's partition.
 * Call from a click handler (popup blockers).
 */
export function signInWithPopup(launchQuery: string, options: SmartLaunchOptions = {}): Promise<SmartSession> {
  const apiUrl = (options.apiUrl ?? window.location.origin).replace(/\/+$/, '');
  const fetcher = options.fetch ?? window.fetch.bind(window);
  const verifier = randomId();
  // The window must open synchronously within the click; the challenge follows by navigation.
  const popup = window.open('about:blank', 'smart-launch-sign-in', 'popup,width=560,height=680');
  if (!popup) return Promise.reject(new SmartLaunchError('POPUP_BLOCKED', 'the browser blocked the sign-in window; allow pop-ups for this app and try again'));
  return new Promise<SmartSession>((resolve, reject) => {
    let settled = false;
    const finish = (outcome: () => Promise<SmartSession>) => {
      if (settled) return;
      settled = true;
      window.removeEventListener('message', onMessage);
      clearInterval(watch);
      outcome().then(resolve, reject);
    };
    const onMessage = (event: MessageEvent) => {
      const data = event.data as { type?: string; session?: string; code?: string } | null;
      if (event.source !== popup || event.origin !== window.location.origin || data?.type !== HANDOFF_MESSAGE) return;
      if (typeof data.session !== 'string' || typeof data.code !== 'string') return;
      const { session, code } = data;
      finish(async () => {
        const redeemed = await fetcher(`${apiUrl}/sessions/${encodeURIComponent(session)}/handoff/redeem`, {
          method: 'POST',
          credentials: 'include',
          headers: { 'content-type': 'application/json', accept: 'application/json' },
          body: JSON.stringify({ code, verifier }),
        });
        if (!redeemed.ok) throw await errorOf(redeemed);
        return openSession(session, apiUrl, fetcher, undefined);
      });
    };
    window.addEventListener('message', onMessage);
    const watch = setInterval(() => {
      if (popup.closed) finish(() => Promise.reject(new SmartLaunchError('SIGN_IN_CANCELLED', 'the sign-in window was closed before the sign-in finished')));
    }, 400);
    void sha256(verifier).then((challenge) => {
      const marker = base64url(new TextEncoder().encode(JSON.stringify({ launch: `${apiUrl}/launch?${launchQuery}`, challenge })));
      popup.location.href = `${window.location.origin}${window.location.pathname}#${POPUP_MARKER}=${marker}`;
    });
  });
}

/**
 * Starts the app: answers the session of this launch (from the fragment, or this tab's storage after
 * a reload). Rejects with `SessionEndedError` when the stored session is no longer open, with
 * `SignInRequiredError` when an EHR launch must sign in through a popup, and with `NO_SESSION` when
 * the page was opened without a launch.
 */
export async function ready(options: SmartLaunchOptions = {}): Promise<SmartSession> {
  const apiUrl = (options.apiUrl ?? window.location.origin).replace(/\/+$/, '');
  const fetcher = options.fetch ?? window.fetch.bind(window);

  // A sign-in window opened by signInWithPopup(): remember that, then run the launch.
  const marker = takeFragment(POPUP_MARKER);
  if (marker !== undefined) {
    const { launch, challenge } = JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(marker.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0)))) as {
      launch: string;
      challenge: string;
    };
    if (!launch.startsWith(`${apiUrl}/launch?`)) throw new SmartLaunchError('INVALID_REQUEST', 'the sign-in window was opened for another service');
    const storage = tabStorage();
    if (!storage) throw new SmartLaunchError('STORAGE_BLOCKED', 'this sign-in window cannot keep its state: allow site data for this app and try again');
    storage.setItem(POPUP_MARKER, challenge);
    window.location.replace(launch);
    return leaving();
  }

  const fromFragment = takeFragment('session');
  if (fromFragment !== undefined) {
    const storage = tabStorage();
    const challenge = storage?.getItem(POPUP_MARKER) ?? null;
    if (challenge !== null) {
      storage?.removeItem(POPUP_MARKER);
      return completePopup(fromFragment, challenge, apiUrl, fetcher);
    }
    return openSession(fromFragment, apiUrl, fetcher, undefined);
  }

  // The EHR opened the app itself with launch parameters (the app's URL registered as launch URL).
  const query = new URLSearchParams(window.location.search);
  if (query.has('iss') && query.has('launch')) {
    const launchQuery = new URLSearchParams({ iss: query.get('iss') ?? '', launch: query.get('launch') ?? '' }).toString();
    window.history.replaceState(window.history.state, '', window.location.pathname);
    const mode = options.signIn ?? 'redirect';
    if (mode === 'popup' || (mode === 'auto' && isFramed())) throw new SignInRequiredError(() => signInWithPopup(launchQuery, options));
    window.location.assign(`${apiUrl}/launch?${launchQuery}`);
    return leaving();
  }

  const stored = readStored();
  if (stored) return openSession(stored.id, apiUrl, fetcher, stored);
  throw new SmartLaunchError('NO_SESSION', 'no launch in progress: open this app from the EHR (or a patient portal link)');
}
