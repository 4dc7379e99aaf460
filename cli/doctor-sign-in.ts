import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scopeIncludes } from '../shared/core/authorize.js';
import { launchScope, type Finding } from '../shared/core/capabilities.js';
import { timeoutSignal } from '../shared/core/clock.js';
import { discoverIssuer } from '../shared/core/discovery.js';
import { ERRORS, safeList, SmartError, type ErrorCode } from '../shared/core/errors.js';
import type { Clock, HttpClient } from '../shared/core/ports.js';
import { openSession } from '../shared/core/session.js';
import type { IssuerConfig } from '../shared/config/schema.js';
import { BINDING_COOKIE } from '../shared/http/cookies.js';
import { escapeHtml } from '../shared/http/responses.js';
import { listenOnLoopback, startLocalStack, type LocalStack } from '../local/stack.js';

/**
 * `doctor --sign-in`: a real standalone sign-in at the EHR with the customer's config, through the
 * product's own launch, callback, session and proxy handlers (the local runner) on a loopback port.
 * The operator signs in in a browser; doctor keeps the session for itself (the callback's hand-off
 * to the app is answered by doctor), then reports what only shows after sign-in: the grant, the
 * launch context, the refresh token, the id_token, and proxied reads. The session and its keys live
 * in a temporary folder removed at the end; tokens never leave this process.
 */

export interface SignInOptions {
  /** The customer config as written (the raw JSON): publicUrl and app.url are overridden to the loopback listener. */
  readonly rawConfig: Record<string, unknown>;
  /** The issuer to sign in at (one of the config's). */
  readonly issuer: IssuerConfig;
  readonly mode: 'aws' | 'local';
  readonly http: HttpClient;
  readonly clock: Clock;
  /** Loopback port of the listener (0: any free port); ignored when `redirectUri` names one. */
  readonly port: number;
  /** A redirect URI registered at the EHR: `http://localhost:PORT[/prefix]/callback` (or 127.0.0.1). */
  readonly redirectUri?: string | undefined;
  /** How long to wait for the callback, in ms (on `clock`). */
  readonly timeoutMs: number;
  /** Prints progress (the sign-in URL, the redirect URI to register). */
  readonly print: (text: string) => void;
  /** Opens the sign-in URL in the operator's browser; undefined to only print it. */
  readonly open?: ((url: string) => void | Promise<void>) | undefined;
}

/** What the loopback listener saw of the sign-in. */
type Outcome =
  | { readonly kind: 'session'; readonly sessionId: string; readonly cookie: string }
  | { readonly kind: 'error'; readonly step: 'launch' | 'callback'; readonly status: number; readonly code: string | undefined; readonly message: string; readonly hint: string | undefined };

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);
const DONE_PATH = '/doctor-sign-in/';

/** The loopback listener's public URL and port from `--redirect-uri`, or an error message. */
export function parseLoopbackRedirect(uri: string): { publicUrl: string; port: number; prefix: string } | string {
  const url = URL.parse(uri);
  if (url === null || url.protocol !== 'http:' || !LOOPBACK_HOSTS.has(url.hostname) || url.search !== '' || url.hash !== '') {
    return `--redirect-uri must be an http loopback URL (http://localhost:PORT/callback), got "${uri}"`;
  }
  if (!url.pathname.endsWith('/callback')) return `--redirect-uri must end with /callback (the product's redirect URI is {publicUrl}/callback), got "${uri}"`;
  const prefix = url.pathname.slice(0, -'/callback'.length);
  return { publicUrl: `${url.origin}${prefix}`, port: url.port === '' ? 80 : Number(url.port), prefix };
}

function unescapeHtml(text: string): string {
  return text
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#(\d+);/g, (_, c: string) => String.fromCharCode(Number(c)))
    .replace(/&amp;/g, '&');
}

/** The code, message and hint of one of the product's error pages (shared/http/error-response.ts). */
function errorOfPage(status: number, step: 'launch' | 'callback', body: string): Outcome {
  const code = /Error code <code>([^<]+)<\/code>/.exec(body)?.[1];
  // The message is the paragraph after the heading, capitalised and ended with a period.
  const paragraph = /<\/h1>\s*<p>([^<]*)<\/p>/.exec(body)?.[1];
  const message = paragraph === undefined ? undefined : (paragraph.charAt(0).toLowerCase() + paragraph.slice(1)).replace(/\.$/, '');
  const hint = /class="hint"[^>]*>([^<]*)</.exec(body)?.[1];
  return {
    kind: 'error',
    step,
    status,
    code: code === undefined ? undefined : unescapeHtml(code),
    message: message === undefined ? `the ${step} answered HTTP ${status}` : unescapeHtml(message),
    hint: hint === undefined ? undefined : unescapeHtml(hint),
  };
}

const PAGE = (title: string, text: string) =>
  `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head><body><main><h1>${escapeHtml(title)}</h1><p>${escapeHtml(text)}</p></main></body></html>`;

/** Forwards one request to the local stack and answers with its response, or hands it to `inspect` first. */
function forward(
  stackPort: number,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  inspect?: (status: number, headers: IncomingMessage['headers'], body: string) => string | undefined,
): void {
  const upstream = httpRequest({ host: '127.0.0.1', port: stackPort, method: req.method, path, headers: req.headers }, (answer) => {
    if (inspect === undefined) {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
      return;
    }
    const chunks: Buffer[] = [];
    answer.on('data', (chunk: Buffer) => chunks.push(chunk));
    answer.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const page = inspect(answer.statusCode ?? 502, answer.headers, body);
      if (page !== undefined) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
        res.end(page);
        return;
      }
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      res.end(body);
    });
  });
  upstream.on('error', () => {
    if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
    res.end('doctor: the local stack did not answer');
  });
  req.pipe(upstream);
}

/** A scope token as (level, type, permissions) with v1 permissions mapped to v2 letters; undefined for non-resource scopes. */
function resourceScope(token: string): { level: string; type: string; perms: Set<string> } | undefined {
  const match = /^(patient|user|system)\/([A-Za-z*]+)\.([a-z*]+)$/.exec(token);
  if (!match) return undefined;
  const v1: Record<string, string> = { read: 'rs', write: 'cud', '*': 'cruds' };
  const perms = v1[match[3] as string] ?? (match[3] as string);
  return { level: match[1] as string, type: match[2] as string, perms: new Set(perms) };
}

/** Whether `granted` covers the requested token (exactly, v1/v2 alike, or by a wildcard with the permissions). */
function covered(token: string, granted: readonly string[]): boolean {
  if (granted.includes(token)) return true;
  const wanted = resourceScope(token);
  if (!wanted) return false;
  return granted.some((g) => {
    const have = resourceScope(g);
    return have !== undefined && have.level === wanted.level && (have.type === '*' || have.type === wanted.type) && [...wanted.perms].every((p) => have.perms.has(p));
  });
}

/** What stops working without a requested scope the EHR did not grant. */
function consequence(token: string): string {
  if (token === 'offline_access' || token === 'online_access') return 'no refresh token: the session ends when the access token expires';
  if (token === 'openid' || token === 'fhirUser') return 'no verified fhirUser: the app cannot tell who signed in';
  if (token === 'launch' || token === 'launch/patient') return 'no patient context';
  if (token === 'launch/encounter') return 'no encounter context';
  const scope = resourceScope(token);
  if (scope) return `the proxy refuses ${scope.type === '*' ? 'requests' : `${scope.type} requests`} outside the grant (403 SCOPE_INSUFFICIENT)`;
  return 'whatever the app relies on it for';
}

/** Reads `reference` (`Patient/123`) through the product's proxy with the session; a finding either way. */
async function proxiedRead(stack: LocalStack, sessionId: string, cookie: string, check: string, reference: string, clock: Clock): Promise<Finding> {
  let response: Response;
  try {
    response = await fetch(`${stack.apiUrl}/sessions/${sessionId}/fhir/${reference}`, {
      headers: { cookie, accept: 'application/fhir+json' },
      signal: timeoutSignal(clock, 30_000),
    });
  } catch (cause) {
    return { check, status: 'fail', summary: `GET ${reference} through the proxy failed`, error: new SmartError('UPSTREAM_UNAVAILABLE', 'the proxy did not answer', { cause }) };
  }
  const text = await response.text();
  if (response.ok) return { check, status: 'pass', summary: `GET ${reference} through the proxy answered HTTP ${response.status}` };
  let code: string | undefined;
  try {
    const outcome = JSON.parse(text) as { issue?: Array<{ details?: { coding?: Array<{ system?: string; code?: string }> } }> };
    code = outcome.issue?.[0]?.details?.coding?.find((c) => c.system === 'urn:smart-launch:error')?.code;
  } catch {
    // not an OperationOutcome
  }
  const summary = `GET ${reference} through the proxy answered HTTP ${response.status}${code ? ` ${code}` : ''}`;
  const hint =
    response.status === 401 || response.status === 403
      ? `The EHR does not let this sign-in read ${reference}: check that the granted scope covers ${reference.split('/')[0]} and that the user signed in may see this record (ask the EHR administrator about the app's access).`
      : 'The EHR could not answer the read: check the EHR\'s FHIR server (run again with LOG_LEVEL=INFO for the product\'s log); try again later.';
  return { check, status: 'fail', summary, hint };
}

/** The findings of one sign-in at `options.issuer`. */
export async function signInFindings(options: SignInOptions): Promise<Finding[]> {
  const { issuer, clock } = options;
  let publicUrl: string;
  let prefix = '';
  let port = options.port;
  if (options.redirectUri !== undefined) {
    const parsed = parseLoopbackRedirect(options.redirectUri);
    if (typeof parsed === 'string') return [{ check: 'sign-in', status: 'fail', summary: parsed, hint: 'Pass the loopback redirect URI registered at the EHR for this client.' }];
    ({ publicUrl, prefix, port } = parsed);
  }
  if (issuer.clientAuth === 'private_key_jwt') {
    return [
      {
        check: 'sign-in',
        status: 'fail',
        summary: 'private_key_jwt clients cannot sign in from doctor: the EHR trusts only the deployed stack\'s keys (KMS), which never leave it',
        hint: 'Check this issuer with a launch at the deployed stack (or a client_secret_basic or public test client registered at the EHR).',
      },
    ];
  }
  let clientSecret = issuer.clientSecret;
  if (issuer.clientAuth === 'client_secret_basic' && options.mode === 'aws') {
    clientSecret = process.env.SMART_LAUNCH_CLIENT_SECRET;
    if (clientSecret === undefined || clientSecret === '') {
      return [{ check: 'sign-in', status: 'fail', summary: 'the client secret of a deployed config is a Secrets Manager ARN: doctor cannot sign in with it', hint: 'Set SMART_LAUNCH_CLIENT_SECRET to the client secret for this run (it is only sent to the EHR\'s token endpoint).' }];
    }
  }

  let settle: (outcome: Outcome) => void = () => undefined;
  const outcome = new Promise<Outcome>((resolve) => (settle = resolve));
  let stackPort = 0;
  const server = createServer((req, res) => {
    const target = req.url ?? '/';
    const path = prefix !== '' && target.startsWith(prefix) ? target.slice(prefix.length) || '/' : target;
    const pathname = path.split('?')[0];
    if (stackPort === 0) {
      res.writeHead(503).end();
      return;
    }
    if (pathname === '/launch') {
      forward(stackPort, req, res, path, (status, _headers, body) => {
        if (status >= 300 && status < 400) return undefined;
        if (status >= 400) settle(errorOfPage(status, 'launch', body));
        return undefined;
      });
      return;
    }
    if (pathname === '/callback') {
      forward(stackPort, req, res, path, (status, headers, body) => {
        const location = typeof headers.location === 'string' ? headers.location : undefined;
        const sessionId = location === undefined ? undefined : /#session=([^&]+)/.exec(location)?.[1];
        if (status >= 300 && status < 400 && sessionId !== undefined) {
          const cookie = (headers['set-cookie'] ?? []).map((line) => line.split(';')[0] as string).join('; ');
          settle({ kind: 'session', sessionId: decodeURIComponent(sessionId), cookie });
          return PAGE('Sign-in complete', 'smart-launch doctor has the session: return to the terminal for the report. You can close this tab.');
        }
        settle(errorOfPage(status, 'callback', body));
        return undefined;
      });
      return;
    }
    if (pathname?.startsWith(DONE_PATH)) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(PAGE('Sign-in complete', 'Return to the terminal.'));
      return;
    }
    forward(stackPort, req, res, path);
  });
  const dataDir = await mkdtemp(join(tmpdir(), 'smart-launch-doctor-'));
  let stack: LocalStack | undefined;
  try {
    const listening = await listenOnLoopback(server, port, 'choose another with --port N or --redirect-uri');
    publicUrl ??= `http://localhost:${listening}`;
    const loopbackUrl = publicUrl;
    const rawIssuers = (options.rawConfig.issuers as Array<Record<string, unknown>>).filter((i) => i.iss === issuer.iss);
    stack = await startLocalStack({
      port: 0,
      dataDir,
      sandbox: false,
      http: options.http,
      clock,
      configure: () => ({
        ...options.rawConfig,
        publicUrl: loopbackUrl,
        app: { url: `${loopbackUrl}${DONE_PATH}` },
        issuers: rawIssuers.map((i) => ({ ...i, default: true, ...(clientSecret !== undefined ? { clientSecret } : {}) })),
      }),
    });
    stackPort = Number(new URL(stack.apiUrl).port);

    const redirect = `${loopbackUrl}/callback`;
    const start = `${loopbackUrl}/launch?iss=${encodeURIComponent(issuer.iss)}`;
    options.print(
      [
        '',
        `Sign-in at ${issuer.iss} (client ${issuer.clientId}), through this product's own handlers on ${loopbackUrl}.`,
        `  redirect URI: ${redirect}`,
        '  The EHR must have this exact redirect URI registered for the client; pass a registered loopback one with --redirect-uri.',
        `  Open this URL in a browser and sign in (it redirects to the EHR's authorize endpoint):`,
        `  ${start}`,
        `  Waiting up to ${Math.round(options.timeoutMs / 1000)} s for the callback...`,
        '',
      ].join('\n'),
    );
    if (options.open) void Promise.resolve(options.open(start)).catch(() => undefined);

    const signal = timeoutSignal(clock, options.timeoutMs);
    const timedOut = new Promise<'timeout'>((resolve) => {
      if (signal.aborted) resolve('timeout');
      signal.addEventListener('abort', () => resolve('timeout'), { once: true });
    });
    const result = await Promise.race([outcome, timedOut]);
    if (result === 'timeout') {
      return [
        {
          check: 'sign-in',
          status: 'fail',
          summary: `no callback within ${Math.round(options.timeoutMs / 1000)} s`,
          hint: `Finish the sign-in in the browser within the time (--timeout SECONDS). If the EHR showed an error about the redirect URI, register ${redirect} for client ${issuer.clientId} at the EHR or pass a registered one with --redirect-uri.`,
        },
      ];
    }
    if (result.kind === 'error') {
      const step = result.step === 'launch' ? 'the launch' : 'the callback';
      // The callback itself reads the launch's patient (SMART-CTX-01) and verifies the id_token: name those checks.
      const check =
        result.code?.startsWith('ID_TOKEN') === true || result.code === 'OPENID_UNSUPPORTED' ? 'id-token' : result.code === 'PATIENT_NOT_ACCESSIBLE' ? 'read-patient' : 'sign-in';
      const known = result.code !== undefined && Object.hasOwn(ERRORS, result.code) ? (result.code as ErrorCode) : undefined;
      return [
        {
          check,
          status: 'fail',
          summary: `${step} failed: ${result.message}${known ? '' : ` (HTTP ${result.status})`}`,
          // A code of the catalog carries its fix (the hint the page showed); otherwise the page's own.
          error: known ? new SmartError(known, result.message) : undefined,
          hint: result.hint ?? 'See the page the browser showed; run again with LOG_LEVEL=INFO for the product\'s log.',
        },
      ];
    }
    return await sessionFindings(stack, options, result.sessionId, result.cookie);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((done) => server.close(() => done()));
    await stack?.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

async function sessionFindings(stack: LocalStack, options: SignInOptions, sessionId: string, cookie: string): Promise<Finding[]> {
  const { issuer, clock } = options;
  const findings: Finding[] = [];
  const viewResponse = await fetch(`${stack.apiUrl}/sessions/${sessionId}`, { headers: { cookie }, signal: timeoutSignal(clock, 30_000) });
  if (!viewResponse.ok) {
    await viewResponse.body?.cancel();
    return [{ check: 'sign-in', status: 'fail', summary: `the new session answered HTTP ${viewResponse.status}`, hint: 'Run again with LOG_LEVEL=INFO for the product\'s log.' }];
  }
  const view = (await viewResponse.json()) as { patient?: string; encounter?: string; fhirUser?: string; scope?: string; canRefresh?: boolean; launchMode?: string };
  findings.push({ check: 'sign-in', status: 'pass', summary: `signed in (${view.launchMode ?? 'standalone'}): the callback stored a session` });

  // The scope the launch asked for: the same computation as the launch itself.
  const smart = await discoverIssuer(options.http, stack.config.issuers[0] ?? issuer, 'local');
  const requested = launchScope(issuer, 'standalone', smart).scope.split(' ').filter((t) => t !== '');
  const granted = (view.scope ?? '').split(' ').filter((t) => t !== '');
  const missing = requested.filter((t) => !covered(t, granted));
  findings.push(
    missing.length === 0
      ? { check: 'grant', status: 'pass', summary: `every requested scope was granted (${safeList(granted)})` }
      : {
          check: 'grant',
          status: 'warn',
          summary: `narrowed grant: missing ${missing.map((t) => `${t} (${consequence(t)})`).join('; ')}`,
          hint: 'The user or the EHR granted less than asked. Check the app registration at the EHR allows these scopes and that the user approves them, or drop them from the issuer\'s "scope" if the app can do without.',
        },
  );

  const wantsPatient = requested.includes('launch/patient') || requested.includes('launch');
  const wantsEncounter = requested.includes('launch/encounter');
  const wantsUser = requested.includes('fhirUser');
  const context = `patient ${view.patient ?? '(none)'}, encounter ${view.encounter ?? '(none)'}, fhirUser ${view.fhirUser ?? '(none)'}`;
  const contextGaps = [wantsPatient && view.patient === undefined ? 'patient' : undefined, wantsEncounter && view.encounter === undefined ? 'encounter' : undefined, wantsUser && view.fhirUser === undefined ? 'fhirUser' : undefined].filter(
    (g): g is string => g !== undefined,
  );
  findings.push(
    contextGaps.length === 0
      ? { check: 'context', status: 'pass', summary: context }
      : {
          check: 'context',
          status: 'warn',
          summary: `${context}: no ${contextGaps.join(', ')} although the scope asks for it`,
          hint: 'The token response lacks the launch context: patient-facing apps need "patient" (the proxy then confines reads to what the token allows). Ask the EHR to return the context for this client, or check the scope asks for launch/patient.',
        },
  );

  const wantsOffline = requested.includes('offline_access');
  const wantsOnline = requested.includes('online_access');
  const access = scopeIncludes(view.scope ?? '', 'offline_access') ? 'offline access' : scopeIncludes(view.scope ?? '', 'online_access') ? 'online access' : 'no refresh scope granted';
  if (view.canRefresh === true) {
    findings.push({ check: 'refresh-token', status: 'pass', summary: `a refresh token was issued (${access})` });
  } else if (wantsOffline || wantsOnline) {
    findings.push({
      check: 'refresh-token',
      status: 'warn',
      summary: `no refresh token although the scope asks for ${wantsOffline ? 'offline_access' : 'online_access'} (${access}): sessions end when the access token expires (canRefresh: false)`,
      hint: 'Ask the EHR to enable refresh tokens for this client (some issue them only to confidential clients or with online_access); the app must send the user to sign in again when the session ends.',
    });
  } else {
    findings.push({ check: 'refresh-token', status: 'info', summary: 'no refresh token (the scope asks for none)' });
  }

  if (scopeIncludes(requested.join(' '), 'openid')) {
    const binding = cookie.split('; ').find((c) => c.startsWith(`${BINDING_COOKIE}=`))?.slice(BINDING_COOKIE.length + 1);
    const session = await openSession(sessionId, binding, stack.deps).catch(() => undefined);
    const idToken = session?.secrets.idToken;
    if (idToken === undefined) {
      findings.push({
        check: 'id-token',
        status: 'warn',
        summary: 'no id_token in the token response although the scope asks for openid: no verified fhirUser',
        hint: 'Ask the EHR to issue id_tokens to this client (OpenID Connect), or drop openid fhirUser from the scope if the app does not need the user.',
      });
    } else {
      const claims = JSON.parse(Buffer.from(idToken.split('.')[1] ?? '', 'base64url').toString('utf8')) as { iss?: string };
      findings.push({ check: 'id-token', status: 'pass', summary: `verified at the callback (signature, iss, aud, exp, nonce): issuer ${claims.iss ?? '(none)'}` });
    }
  }

  if (view.patient !== undefined) findings.push(await proxiedRead(stack, sessionId, cookie, 'read-patient', `Patient/${view.patient}`, clock));
  // fhirUser is a reference, relative or absolute on the FHIR base.
  const base = `${issuer.iss.replace(/\/+$/, '')}/`;
  const user = view.fhirUser?.startsWith(base) === true ? view.fhirUser.slice(base.length) : view.fhirUser;
  if (user !== undefined && /^[A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/.test(user)) {
    findings.push(await proxiedRead(stack, sessionId, cookie, 'read-fhir-user', user, clock));
  } else if (user !== undefined) {
    findings.push({ check: 'read-fhir-user', status: 'warn', summary: 'fhirUser is not a reference on this EHR\'s FHIR base: not read', hint: 'The app cannot read the signed-in user through the proxy; ask the EHR about its fhirUser claim.' });
  }
  return findings;
}
