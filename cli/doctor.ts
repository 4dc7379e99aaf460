import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { cryptoRandom, fetchHttpClient, systemClock } from '../shared/adapters/system.js';
import { parseDeployableConfigText } from '../shared/config/cookie-site.js';
import { ConfigError, parseConfigText, type Config, type ConfigMode, type IssuerConfig } from '../shared/config/schema.js';
import { buildAuthorizeForm, buildAuthorizeUrl, createPkce, scopeIncludes, type AuthorizeRequest } from '../shared/core/authorize.js';
import {
  assessCapabilities,
  authorizeMethodFor,
  launchScope,
  AUTHORIZE_URL_MAX_LENGTH,
  type Finding,
  type FindingStatus,
} from '../shared/core/capabilities.js';
import { randomToken } from '../shared/core/crypto.js';
import {
  capabilityStatementUrl,
  discoverIssuer,
  smartConfigurationUrl,
  type SmartConfiguration,
} from '../shared/core/discovery.js';
import { UPSTREAM_TIMEOUT_MS } from '../shared/core/ehr/http.js';
import { isSmartError, safeList, SmartError } from '../shared/core/errors.js';
import { fetchJwks } from '../shared/core/id-token.js';
import { redirectUri } from '../shared/core/urls.js';
import type { Clock, HttpClient, Random } from '../shared/core/ports.js';

/**
 * `smart-launch doctor`: before go-live, asks every EHR of a customer config what it offers and checks
 * it against what the config relies on, with the core's own checks (a launch refuses the same things
 * with the same messages). Network only: nothing is stored, no client credential is ever sent, except
 * with `--sign-in` (cli/doctor-sign-in.ts), which signs in for real and sends the client's credentials
 * to the EHR's token endpoint, as a launch does.
 */

export interface DoctorOptions {
  readonly config: Config;
  readonly mode: ConfigMode;
  readonly http: HttpClient;
  /** Also run a standalone launch up to the authorization endpoint's answer. */
  readonly launch?: boolean | undefined;
  readonly random?: Random | undefined;
}

export interface IssuerReport {
  readonly iss: string;
  readonly clientId: string;
  readonly clientAuth: IssuerConfig['clientAuth'];
  readonly findings: readonly Finding[];
}

export interface DoctorReport {
  readonly customer: string;
  readonly mode: ConfigMode;
  readonly issuers: readonly IssuerReport[];
  readonly failures: number;
  readonly warnings: number;
}

const failed = (check: string, error: SmartError): Finding => ({ check, status: 'fail', summary: error.message, error });

function asFinding(check: string, error: unknown): Finding {
  if (isSmartError(error)) return failed(check, error);
  return { check, status: 'fail', summary: `unexpected error: ${error instanceof Error ? error.message : String(error)}` };
}

function discoveryFinding(smart: SmartConfiguration, iss: string): Finding {
  if (smart.source === 'capability-statement') {
    return {
      check: 'discovery',
      status: 'warn',
      summary: `no ${smartConfigurationUrl(iss)} (HTTP 404): using the SMART v1 CapabilityStatement at ${capabilityStatementUrl(iss)} (SMART-DISC-07)`,
      hint: 'Launches work through the CapabilityStatement, but PKCE, client authentication and capabilities cannot be checked: ask the EHR to publish .well-known/smart-configuration (SMART App Launch 2).',
    };
  }
  return { check: 'discovery', status: 'pass', summary: `${smartConfigurationUrl(iss)} is valid` };
}

function tlsFinding(smart: SmartConfiguration): Finding {
  const { authorizationEndpoint, tokenEndpoint, jwksUri, revocationEndpoint } = smart.endpoints;
  const urls = [authorizationEndpoint, tokenEndpoint, jwksUri, revocationEndpoint].filter((u): u is string => u !== undefined);
  const plain = urls.filter((u) => new URL(u).protocol !== 'https:');
  if (plain.length > 0) {
    return { check: 'tls', status: 'info', summary: `${plain.length} endpoint(s) use http on loopback: accepted in local runs only` };
  }
  return { check: 'tls', status: 'pass', summary: `all ${urls.length} endpoints use https` };
}

/** Whether a scope token is covered by `scopes_supported` (exactly, or by a listed wildcard of its level and permissions). */
function listed(token: string, supported: readonly string[]): boolean {
  if (supported.includes(token)) return true;
  const match = /^(patient|user|system)\/[A-Z][A-Za-z]*\.(.+)$/.exec(token);
  return match !== null && supported.includes(`${match[1]}/*.${match[2]}`);
}

/** Requested scopes against `scopes_supported`: warnings only, the list is not exhaustive (SMART-DISC-03). */
function scopeFindings(smart: SmartConfiguration, issuer: IssuerConfig): Finding[] {
  const tokens = new Set<string>();
  for (const mode of ['ehr', 'standalone'] as const) {
    try {
      for (const token of launchScope(issuer, mode, smart).scope.split(' ')) tokens.add(token);
    } catch {
      // A scope that cannot be expressed is already a scope-syntax failure.
    }
  }
  const supported = smart.scopesSupported;
  if (supported === undefined) {
    return [{ check: 'scopes', status: 'info', summary: 'scopes_supported is not published: the requested scopes cannot be compared' }];
  }
  const findings: Finding[] = [];
  const missing = [...tokens].filter((token) => !listed(token, supported));
  findings.push(
    missing.length === 0
      ? { check: 'scopes', status: 'pass', summary: 'every requested scope is listed in scopes_supported' }
      : {
          check: 'scopes',
          status: 'warn',
          summary: `not listed in scopes_supported: ${safeList(missing)}`,
          hint: 'scopes_supported need not be exhaustive; confirm with the EHR that the app registration allows these scopes, or drop them from "scope".',
        },
  );
  const wildcards = [...tokens].filter((token) => /^(patient|user|system)\/\*\./.test(token));
  if (wildcards.length > 0 && !supported.some((s) => /^(patient|user|system)\/\*\./.test(s))) {
    findings.push({
      check: 'wildcards',
      status: 'warn',
      summary: `the scope uses wildcards (${safeList(wildcards)}) and scopes_supported lists none`,
      hint: 'Some EHRs (Oracle Health: ORCL-06, SMART-SCOPE-11) refuse wildcard scopes: name each resource type (patient/Observation.rs ...).',
    });
  }
  return findings;
}

function refreshFinding(smart: SmartConfiguration, issuer: IssuerConfig): Finding | undefined {
  const wantsOffline = scopeIncludes(issuer.scope, 'offline_access');
  const wantsOnline = scopeIncludes(issuer.scope, 'online_access');
  if (!wantsOffline && !wantsOnline) return undefined;
  if (smart.source === 'capability-statement') {
    return { check: 'refresh', status: 'info', summary: 'refresh tokens not advertised: SMART v1 discovery (CapabilityStatement) says nothing about them' };
  }
  const problems: string[] = [];
  if (smart.grantTypes !== undefined && !smart.grantTypes.includes('refresh_token')) problems.push('grant_types_supported lacks "refresh_token"');
  if (wantsOffline && !smart.capabilities.includes('permission-offline')) problems.push('"permission-offline" is not advertised');
  if (!wantsOffline && !smart.capabilities.includes('permission-online')) problems.push('"permission-online" is not advertised');
  if (problems.length === 0) return { check: 'refresh', status: 'pass', summary: 'refresh tokens are advertised' };
  return {
    check: 'refresh',
    status: 'warn',
    summary: `the scope asks for ${wantsOffline ? 'offline_access' : 'online_access'} but ${problems.join(' and ')}`,
    hint: 'Sessions may end when the access token expires (canRefresh: false); confirm refresh tokens with the EHR (EPIC-05, CERT-03).',
  };
}

function revocationFinding(smart: SmartConfiguration): Finding {
  if (smart.endpoints.revocationEndpoint !== undefined) return { check: 'revocation', status: 'pass', summary: 'a revocation endpoint is published' };
  return {
    check: 'revocation',
    status: 'warn',
    summary: 'no revocation endpoint: logout deletes the session but cannot revoke at the EHR (it answers revocation: "not-offered")',
    hint: 'Tokens stay valid at the EHR until they expire (SMART-REVOKE-02, EPIC-08). Nothing to change here unless the EHR can publish revocation_endpoint.',
  };
}

async function jwksFinding(http: HttpClient, smart: SmartConfiguration, issuer: IssuerConfig): Promise<Finding | undefined> {
  const jwksUri = smart.endpoints.jwksUri;
  if (!scopeIncludes(issuer.scope, 'openid') || jwksUri === undefined) return undefined;
  try {
    const jwks = await fetchJwks(http, jwksUri);
    return { check: 'jwks', status: 'pass', summary: `${jwksUri} answers ${jwks.keys.length} key(s)` };
  } catch (error) {
    return asFinding('jwks', error);
  }
}

/** The token endpoint answers at all: an empty POST, no credentials; any OAuth error answer will do. */
async function tokenEndpointFinding(http: HttpClient, smart: SmartConfiguration): Promise<Finding> {
  const url = smart.endpoints.tokenEndpoint;
  let response: Response;
  try {
    response = await http(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: '',
      redirect: 'manual',
      signal: AbortSignal.timeout(UPSTREAM_TIMEOUT_MS),
    });
  } catch (cause) {
    return failed('token-endpoint', new SmartError('TOKEN_ENDPOINT_UNAVAILABLE', 'the token endpoint could not be reached', { cause }));
  }
  await response.body?.cancel();
  if (response.status >= 500) {
    return {
      check: 'token-endpoint',
      status: 'warn',
      summary: `the token endpoint answered an empty request with HTTP ${response.status}`,
      hint: 'Expected a 4xx OAuth error. Try again later; if it persists, ask the EHR administrator.',
    };
  }
  return { check: 'token-endpoint', status: 'pass', summary: `reachable (an empty request gets HTTP ${response.status})` };
}

/**
 * `--launch`: a standalone launch up to the authorization endpoint's first answer, as a browser would
 * start it (PKCE S256, state, aud, nonce; GET or POST as a launch would choose). A 2xx or a redirect
 * that is not an OAuth error back to our redirect URI passes; nothing is stored and no code is redeemed.
 */
async function launchFinding(http: HttpClient, smart: SmartConfiguration, issuer: IssuerConfig, config: Config, random: Random): Promise<Finding> {
  const check = 'launch';
  try {
    const { scope } = launchScope(issuer, 'standalone', smart);
    const request: AuthorizeRequest = {
      authorizationEndpoint: smart.endpoints.authorizationEndpoint,
      clientId: issuer.clientId,
      redirectUri: redirectUri(config.publicUrl),
      scope,
      state: randomToken(random),
      aud: issuer.iss,
      codeChallenge: createPkce(random).challenge,
      nonce: scopeIncludes(scope, 'openid') ? randomToken(random) : undefined,
    };
    const url = buildAuthorizeUrl(request);
    const method = authorizeMethodFor(issuer, smart, url.length);
    const form = buildAuthorizeForm(request);
    const response = await http(method === 'GET' ? url : form.action, {
      redirect: 'manual',
      signal: AbortSignal.timeout(UPSTREAM_TIMEOUT_MS),
      ...(method === 'POST'
        ? { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form.fields.map(([k, v]) => [k, v])).toString() }
        : {}),
    }).catch((cause: unknown) => {
      throw new SmartError('DISCOVERY_UNAVAILABLE', 'the authorization endpoint could not be reached', { cause });
    });
    await response.body?.cancel();
    const location = response.headers.get('location');
    const target = location === null ? undefined : URL.parse(location, response.url || smart.endpoints.authorizationEndpoint);
    if (response.status >= 300 && response.status < 400 && target) {
      const error = target.href.startsWith(request.redirectUri) ? target.searchParams.get('error') : null;
      if (error !== null) {
        const safe = /^[\x20-\x7e]{1,64}$/.test(error) ? error : 'invalid';
        const description = target.searchParams.get('error_description');
        return failed(
          check,
          new SmartError('AUTHORIZATION_FAILED', `the EHR answered the sign-in request with "${safe}"${description ? ` (${description.slice(0, 200)})` : ''}`),
        );
      }
      return { check, status: 'pass', summary: `${method} ${url.length > AUTHORIZE_URL_MAX_LENGTH ? '(long URL) ' : ''}answered HTTP ${response.status} to ${target.origin}${target.pathname}` };
    }
    if (response.status >= 200 && response.status < 300) return { check, status: 'pass', summary: `${method} answered HTTP ${response.status} (a sign-in page)` };
    return failed(check, new SmartError('AUTHORIZATION_FAILED', `the authorization endpoint answered the ${method} request with HTTP ${response.status}`));
  } catch (error) {
    return asFinding(check, error);
  }
}

/** Every check for one issuer; discovery failing stops the rest (they all depend on it). */
export async function checkIssuer(options: DoctorOptions, issuer: IssuerConfig): Promise<IssuerReport> {
  const { http, mode, config } = options;
  const report = (findings: Finding[]): IssuerReport => ({ iss: issuer.iss, clientId: issuer.clientId, clientAuth: issuer.clientAuth, findings });
  let smart: SmartConfiguration;
  try {
    smart = await discoverIssuer(http, issuer, mode);
  } catch (error) {
    return report([asFinding('discovery', error)]);
  }
  const findings: Finding[] = [discoveryFinding(smart, issuer.iss), tlsFinding(smart), ...assessCapabilities(smart, issuer), ...scopeFindings(smart, issuer)];
  const refresh = refreshFinding(smart, issuer);
  if (refresh) findings.push(refresh);
  findings.push(revocationFinding(smart));
  const [jwks, token] = await Promise.all([jwksFinding(http, smart, issuer), tokenEndpointFinding(http, smart)]);
  if (jwks) findings.push(jwks);
  findings.push(token);
  if (options.launch === true) findings.push(await launchFinding(http, smart, issuer, config, options.random ?? cryptoRandom));
  return report(findings);
}

export async function runDoctor(options: DoctorOptions): Promise<DoctorReport> {
  const issuers = await Promise.all(options.config.issuers.map((issuer) => checkIssuer(options, issuer)));
  return withCounts({ customer: options.config.customer, mode: options.mode }, issuers);
}

/** The report of these issuers' findings, with its failure and warning counts. */
function withCounts(report: Pick<DoctorReport, 'customer' | 'mode'>, issuers: DoctorReport['issuers']): DoctorReport {
  const count = (status: FindingStatus) => issuers.reduce((n, i) => n + i.findings.filter((f) => f.status === status).length, 0);
  return { customer: report.customer, mode: report.mode, issuers, failures: count('fail'), warnings: count('warn') };
}

/** The report with `findings` added to the issuer `iss`, the counts recomputed. */
function withFindings(report: DoctorReport, iss: string, findings: readonly Finding[]): DoctorReport {
  return withCounts(report, report.issuers.map((i) => (i.iss === iss ? { ...i, findings: [...i.findings, ...findings] } : i)));
}

/** Opens `url` in the operator's browser (xdg-open, open, or start); a failure only leaves the printed URL. */
function openSystemBrowser(url: string): void {
  const [command, args] =
    process.platform === 'darwin' ? ['open', [url]] : process.platform === 'win32' ? ['cmd', ['/c', 'start', '""', url]] : ['xdg-open', [url]];
  const child = spawn(command as string, args as string[], { stdio: 'ignore', detached: true });
  child.on('error', () => undefined);
  child.unref();
}

/** Why a fetch failed (`fetch failed: getaddrinfo ENOTFOUND ehr.example.org`), from the error's cause chain. */
function causeText(cause: unknown): string | undefined {
  const parts: string[] = [];
  for (let current = cause, depth = 0; current instanceof Error && depth < 3; current = current.cause, depth += 1) {
    const code = (current as NodeJS.ErrnoException).code;
    parts.push(code && !current.message.includes(code) ? `${current.message} (${code})` : current.message);
  }
  return parts.length === 0 ? undefined : parts.join(': ').slice(0, 300);
}

const LABEL: Readonly<Record<FindingStatus, string>> = { pass: 'PASS', warn: 'WARN', fail: 'FAIL', info: 'INFO' };
const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** The report as a table per issuer: status, check, what was found, and the fix under each failure or warning. */
export function formatReport(report: DoctorReport): string {
  const width = Math.max(...report.issuers.flatMap((i) => i.findings.map((f) => f.check.length)), 10) + 2;
  const lines = [`smart-launch doctor: customer "${report.customer}", ${plural(report.issuers.length, 'issuer')}, mode ${report.mode}`];
  for (const issuer of report.issuers) {
    const fails = issuer.findings.filter((f) => f.status === 'fail').length;
    const warns = issuer.findings.filter((f) => f.status === 'warn').length;
    lines.push('', `${issuer.iss}  (client ${issuer.clientId}, ${issuer.clientAuth})`);
    for (const finding of issuer.findings) {
      const code = finding.error ? ` [${finding.error.code}]` : '';
      lines.push(`  ${LABEL[finding.status]}  ${finding.check.padEnd(width)}${finding.summary}${code}`);
      const cause = causeText(finding.error?.cause);
      if (cause) lines.push(`  ${' '.repeat(6 + width)}cause: ${cause}`);
      const fix = finding.error?.hint ?? (finding.status === 'warn' || finding.status === 'fail' ? finding.hint : undefined);
      if (fix) lines.push(`  ${' '.repeat(6 + width)}fix: ${fix}`);
    }
    lines.push(`  => ${fails > 0 ? 'FAIL' : 'OK'}: ${plural(fails, 'failure')}, ${plural(warns, 'warning')}`);
  }
  lines.push(
    '',
    `Result: ${report.failures > 0 ? 'FAIL' : 'OK'} (${plural(report.failures, 'failure')}, ${plural(report.warnings, 'warning')}, ${plural(report.issuers.length, 'issuer')})`,
  );
  return `${lines.join('\n')}\n`;
}

function toJson(report: DoctorReport): unknown {
  return {
    ...report,
    issuers: report.issuers.map((issuer) => ({
      ...issuer,
      findings: issuer.findings.map(({ error, ...finding }) => ({
        ...finding,
        ...(error ? { code: error.code, hint: error.hint } : {}),
      })),
    })),
  };
}

export const USAGE = `Usage: smart-launch doctor --config FILE [options]

Checks every EHR of a customer config against what the config relies on (discovery, PKCE S256,
client authentication, launch modes, scopes, OpenID, revocation, TLS, JWKS, token endpoint) and
prints a pass/warn/fail table per issuer with the fix for each failure. Exits 1 on any failure.

  --config FILE      the customer config (validated with the same schema as a deployment)
  --mode aws|local   aws (default): https only; local: http on loopback too (the sandbox)
  --launch           also start a standalone launch up to the authorization endpoint's answer
  --sign-in          also sign in for real (standalone) through this product's own handlers on a
                     loopback port and report what only shows after sign-in: granted vs requested
                     scopes, launch context, refresh token, id_token verification, and proxied reads
                     of the patient and fhirUser. The EHR must have the redirect URI registered
                     (printed; default http://localhost:PORT/callback)
  --issuer ISS       the issuer to sign in at (default: the default issuer, else the first)
  --port N           loopback port of the sign-in listener (default: any free port)
  --redirect-uri URI a registered loopback redirect URI (http://localhost:N/callback) to use instead
  --no-open          print the sign-in URL only; do not open a browser
  --timeout SECONDS  how long to wait for the sign-in (default 300)
  --json             print the report as JSON
  --help             this text
`;

export interface DoctorIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  readonly http?: HttpClient | undefined;
  /** `--sign-in`: opens the sign-in URL (default: the system browser; tests drive a client instead). */
  readonly openBrowser?: ((url: string) => void | Promise<void>) | undefined;
  /** `--sign-in`: the clock of the wait for the callback (default: the system clock). */
  readonly clock?: Clock | undefined;
}

/** The command: parses `argv` (after `doctor`), runs, prints; answers the exit code (0 ok, 1 failures, 2 usage or config). */
export async function doctorMain(argv: readonly string[], io: DoctorIo): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        config: { type: 'string' },
        mode: { type: 'string' },
        launch: { type: 'boolean' },
        'sign-in': { type: 'boolean' },
        issuer: { type: 'string' },
        port: { type: 'string' },
        'redirect-uri': { type: 'string' },
        'no-open': { type: 'boolean' },
        timeout: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean' },
      },
      strict: true,
    }));
  } catch (error) {
    io.stderr(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout(USAGE);
    return 0;
  }
  const mode = values.mode ?? 'aws';
  if (values.config === undefined || (mode !== 'aws' && mode !== 'local')) {
    io.stderr(`${values.config === undefined ? '--config FILE is required' : `--mode must be aws or local, got "${mode}"`}\n\n${USAGE}`);
    return 2;
  }
  const port = Number(values.port ?? '0');
  const timeout = Number(values.timeout ?? '300');
  const portProblem = Number.isInteger(port) && port >= 0 && port <= 65535 ? undefined : `--port must be a port number, got "${values.port}"`;
  const timeoutProblem = Number.isFinite(timeout) && timeout > 0 ? undefined : `--timeout must be a positive number of seconds, got "${values.timeout}"`;
  if (portProblem !== undefined || timeoutProblem !== undefined) {
    io.stderr(`${portProblem ?? timeoutProblem}\n\n${USAGE}`);
    return 2;
  }
  let config: Config;
  let text: string;
  try {
    text = await readFile(values.config, 'utf8');
    config = mode === 'aws' ? parseDeployableConfigText(text, values.config) : parseConfigText(text, mode, values.config);
  } catch (error) {
    io.stderr(error instanceof ConfigError ? `${error.message}\n` : `cannot read ${values.config}: ${(error as Error).message}\n`);
    return 2;
  }
  const signInIssuer = values.issuer === undefined ? (config.issuers.find((i) => i.default === true) ?? config.issuers[0]) : config.issuers.find((i) => i.iss === values.issuer);
  if (values['sign-in'] === true && signInIssuer === undefined) {
    io.stderr(`--issuer "${values.issuer}" is not one of the config's issuers\n`);
    return 2;
  }
  const http = io.http ?? fetchHttpClient;
  let report = await runDoctor({ config, mode, http, launch: values.launch === true });
  if (values['sign-in'] === true && signInIssuer !== undefined) {
    // The product's handlers log JSON lines to stdout, which is the report's: silent unless asked for.
    process.env.LOG_LEVEL ??= 'SILENT';
    const { signInFindings } = await import('./doctor-sign-in.js');
    const found = await signInFindings({
      rawConfig: JSON.parse(text) as Record<string, unknown>,
      issuer: signInIssuer,
      mode,
      http,
      clock: io.clock ?? systemClock,
      port,
      redirectUri: values['redirect-uri'],
      timeoutMs: timeout * 1000,
      // Progress goes to stderr: stdout stays the report (and valid JSON with --json).
      print: io.stderr,
      open: values['no-open'] === true ? undefined : (io.openBrowser ?? openSystemBrowser),
    });
    report = withFindings(report, signInIssuer.iss, found);
  }
  io.stdout(values.json ? `${JSON.stringify(toJson(report), null, 2)}\n` : formatReport(report));
  return report.failures > 0 ? 1 : 0;
}
