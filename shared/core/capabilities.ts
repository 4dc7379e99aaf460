import type { IssuerConfig } from '../config/schema.js';
import { requestedScope, scopeIncludes, type LaunchMode } from './authorize.js';
import { checkSigningAlgSupported } from './client-assertion.js';
import { checkPkceSupported, type SmartConfiguration } from './discovery.js';
import { SmartError, isSmartError, safeList } from './errors.js';
import { effectiveScopeSyntax, rewriteScopes, type ScopeRewrite, type ScopeSyntax } from './scope-syntax.js';

/**
 * What an EHR's discovery must offer for this customer's configuration of it (SMART-DISC-04/08,
 * SMART-CAUTH-09, SMART-SCOPE-02, SMART-AUTHZ-10). One set of checks serves two callers with the same
 * words: a launch (`requireCapabilities`: the first failure is thrown before the authorize redirect)
 * and `doctor` (`assessCapabilities`: every finding, as a table). Pure: no I/O.
 */

export type FindingStatus = 'pass' | 'warn' | 'fail' | 'info';

export interface Finding {
  /** Short, stable name of the check (a doctor table row). */
  readonly check: string;
  readonly status: FindingStatus;
  /** What was found. For a failure, the message a launch gives (`error.message`). */
  readonly summary: string;
  /** For a failure, what a launch throws; its `hint` is the fix. */
  readonly error?: SmartError | undefined;
  /** For a warning, what to do about it. */
  readonly hint?: string | undefined;
}

const known = (smart: SmartConfiguration) => smart.source !== 'capability-statement';
const V1_UNKNOWN = 'not advertised: SMART v1 discovery (CapabilityStatement) says nothing about it';

/** Printable, short values of a discovery list, safe to quote in a message. */
function failure(check: string, error: SmartError): Finding {
  return { check, status: 'fail', summary: error.message, error };
}

/** SMART-DISC-04: S256 advertised; unknown for SMART v1, where PKCE S256 and `state` are still sent. */
export function pkceFinding(smart: SmartConfiguration): Finding {
  try {
    checkPkceSupported(smart);
  } catch (error) {
    if (isSmartError(error)) return failure('pkce', error);
    throw error;
  }
  if (smart.codeChallengeMethods === undefined) {
    return {
      check: 'pkce',
      status: 'warn',
      summary: `S256 ${V1_UNKNOWN}; PKCE S256 and state are sent anyway`,
      hint: 'If sign-in fails with an error about code_challenge, the EHR does not support PKCE: ask the EHR to enable it.',
    };
  }
  return { check: 'pkce', status: 'pass', summary: 'S256 is advertised in code_challenge_methods_supported' };
}

const CAPABILITY_OF_METHOD: Readonly<Record<IssuerConfig['clientAuth'], string>> = {
  none: 'client-public',
  client_secret_basic: 'client-confidential-symmetric',
  private_key_jwt: 'client-confidential-asymmetric',
};

/**
 * The configured `clientAuth` against `token_endpoint_auth_methods_supported` (SMART-DISC-03) and the
 * client capabilities (SMART-DISC-08). A list that lacks a confidential method fails; without a list,
 * `client_secret_basic` is the OAuth default (RFC 8414 §2) and `private_key_jwt` needs
 * `client-confidential-asymmetric`. A public client is only warned about: servers rarely list `none`.
 */
export function clientAuthFinding(smart: SmartConfiguration, issuer: IssuerConfig): Finding {
  const method = issuer.clientAuth;
  const methods = smart.tokenEndpointAuthMethods;
  const capability = CAPABILITY_OF_METHOD[method];
  if (!known(smart)) {
    return { check: 'client-auth', status: 'warn', summary: `${method} ${V1_UNKNOWN}`, hint: 'Confirm the client registration at the EHR uses this method.' };
  }
  if (methods?.includes(method) === true) return { check: 'client-auth', status: 'pass', summary: `${method} is offered` };
  if (method === 'none') {
    if (smart.capabilities.includes(capability)) return { check: 'client-auth', status: 'pass', summary: 'public clients are offered ("client-public")' };
    return {
      check: 'client-auth',
      status: 'warn',
      summary: `public clients ("none") are not advertised (no "client-public" capability; token_endpoint_auth_methods_supported: ${safeList(methods)})`,
      hint: 'Confirm the EHR registered the app as a public client, or use a confidential "clientAuth".',
    };
  }
  if (methods === undefined && method === 'client_secret_basic') {
    return { check: 'client-auth', status: 'pass', summary: 'client_secret_basic (the OAuth default: no token_endpoint_auth_methods_supported published)' };
  }
  if (methods === undefined && smart.capabilities.includes(capability)) {
    return { check: 'client-auth', status: 'pass', summary: `${method} (capability "${capability}")` };
  }
  const message =
    methods === undefined
      ? `the EHR does not advertise the "${capability}" capability that "${method}" needs`
      : `the EHR does not list "${method}" in token_endpoint_auth_methods_supported (it lists ${safeList(methods)})`;
  return failure('client-auth', new SmartError('CLIENT_AUTH_UNSUPPORTED', message, { details: { method } }));
}

/** SMART-CAUTH-09, through the client-assertion module's own check (its message and hint). */
export function signingAlgFinding(smart: SmartConfiguration, issuer: IssuerConfig): Finding | undefined {
  if (issuer.clientAuth !== 'private_key_jwt') return undefined;
  try {
    checkSigningAlgSupported(issuer, smart);
  } catch (error) {
    if (isSmartError(error)) return failure('signing-alg', error);
    throw error;
  }
  const alg = issuer.signingAlg ?? 'RS384';
  return smart.tokenEndpointAuthSigningAlgs === undefined
    ? { check: 'signing-alg', status: 'info', summary: `${alg}: token_endpoint_auth_signing_alg_values_supported is not published` }
    : { check: 'signing-alg', status: 'pass', summary: `${alg} is listed in token_endpoint_auth_signing_alg_values_supported` };
}

const CAPABILITY_OF_LAUNCH: Readonly<Record<LaunchMode, string>> = { ehr: 'launch-ehr', standalone: 'launch-standalone' };
const LAUNCH_NAME: Readonly<Record<LaunchMode, string>> = { ehr: 'an EHR launch', standalone: 'a standalone launch' };

/** SMART-DISC-08: `launch-ehr` / `launch-standalone` advertised for the launch being made. */
export function launchModeFinding(smart: SmartConfiguration, mode: LaunchMode): Finding {
  const check = `launch-${mode}`;
  const capability = CAPABILITY_OF_LAUNCH[mode];
  if (!known(smart)) return { check, status: 'info', summary: `${capability} ${V1_UNKNOWN}` };
  if (smart.capabilities.includes(capability)) return { check, status: 'pass', summary: `"${capability}" is advertised` };
  return failure(
    check,
    new SmartError('LAUNCH_MODE_UNSUPPORTED', `the EHR does not advertise the "${capability}" capability needed for ${LAUNCH_NAME[mode]}`, {
      details: { capability },
    }),
  );
}

/**
 * An `openid` scope needs an issuer and a JWKS to verify the id_token with (invariant 5). Refused before
 * the redirect, not after the clinician signed in.
 */
export function openidFinding(smart: SmartConfiguration, scope: string): Finding | undefined {
  if (!scopeIncludes(scope, 'openid')) return undefined;
  const { issuer, jwksUri } = smart.endpoints;
  if (issuer !== undefined && jwksUri !== undefined) {
    return {
      check: 'openid',
      status: 'pass',
      summary:
        smart.openidFromConfig === true
          ? 'issuer and jwks_uri from the openidIssuer setting'
          : smart.openidDiscovery?.found !== undefined
            ? `issuer ${issuer} found at ${smart.openidDiscovery.found} (the authorization server's own origin; SMART v1 discovery names none)`
            : 'issuer and jwks_uri are published',
    };
  }
  const tried = smart.openidDiscovery?.tried ?? [];
  const where = known(smart)
    ? 'the SMART configuration names no "issuer" and "jwks_uri"'
    : `SMART v1 discovery (CapabilityStatement) names no OpenID issuer${tried.length > 0 ? ` and none was found at ${tried.join(', ')}` : ''}`;
  return failure('openid', new SmartError('OPENID_UNSUPPORTED', `the scope asks for "openid" but ${where}`));
}

/**
 * Every check a launch makes before the authorize redirect, in order; throws the first failure (the
 * same `SmartError` doctor shows). PKCE comes first: without it nothing else matters (SMART-DISC-04).
 */
export function requireCapabilities(smart: SmartConfiguration, issuer: IssuerConfig, mode: LaunchMode): void {
  const findings = [
    pkceFinding(smart),
    clientAuthFinding(smart, issuer),
    signingAlgFinding(smart, issuer),
    launchModeFinding(smart, mode),
    openidFinding(smart, requestedScope(issuer.scope, mode)),
  ];
  const failed = findings.find((finding) => finding?.status === 'fail');
  if (failed?.error) throw failed.error;
}

/** The scope a launch sends: context scopes for the mode, then the issuer's syntax (SMART-SCOPE-02). */
export interface LaunchScope extends ScopeRewrite {
  /** The syntax rewritten to, or `undefined` when the scope goes as configured. */
  readonly syntax: ScopeSyntax | undefined;
}

/** Throws `SCOPE_NOT_EXPRESSIBLE` for granular scopes to a v1 EHR. */
export function launchScope(issuer: IssuerConfig, mode: LaunchMode, smart: SmartConfiguration): LaunchScope {
  const scope = requestedScope(issuer.scope, mode);
  const syntax = effectiveScopeSyntax(issuer.scopeSyntax, smart.capabilities);
  if (syntax === undefined) return { scope, rewritten: [], broadened: [], syntax };
  return { ...rewriteScopes(scope, syntax), syntax };
}

/** Past this many characters an authorize URL is sent by POST where the EHR allows it (SMART-AUTHZ-10). */
export const AUTHORIZE_URL_MAX_LENGTH = 2000;

/**
 * GET or POST to the authorization endpoint (SMART-AUTHZ-10, SMART-SCOPE-10): `auto` posts when the GET
 * URL is longer than `AUTHORIZE_URL_MAX_LENGTH` and the EHR advertises `authorize-post`; `POST` is
 * refused (`AUTHORIZE_POST_UNSUPPORTED`) when discovery lists capabilities without `authorize-post`.
 */
export function authorizeMethodFor(issuer: IssuerConfig, smart: SmartConfiguration, getUrlLength: number): 'GET' | 'POST' {
  const setting = issuer.authorizeMethod ?? 'auto';
  const post = smart.capabilities.includes('authorize-post');
  if (setting === 'GET') return 'GET';
  if (setting === 'POST') {
    if (known(smart) && !post) {
      throw new SmartError('AUTHORIZE_POST_UNSUPPORTED', 'the issuer is set to authorize by POST but the EHR does not advertise "authorize-post"');
    }
    return 'POST';
  }
  return getUrlLength > AUTHORIZE_URL_MAX_LENGTH && post ? 'POST' : 'GET';
}

/**
 * The capability findings doctor shows for one issuer: every check a launch makes (both launch modes;
 * a missing one only warns unless the issuer is the standalone default), plus the scope syntax and
 * the authorize method.
 */
export function assessCapabilities(smart: SmartConfiguration, issuer: IssuerConfig): Finding[] {
  const findings: Finding[] = [pkceFinding(smart), clientAuthFinding(smart, issuer)];
  const signing = signingAlgFinding(smart, issuer);
  if (signing) findings.push(signing);

  const modes = (['ehr', 'standalone'] as const).map((mode) => launchModeFinding(smart, mode));
  const usable = modes.filter((finding) => finding.status !== 'fail').length;
  for (const finding of modes) {
    const needed = usable === 0 || (finding.check === 'launch-standalone' && issuer.default === true);
    findings.push(
      finding.status === 'fail' && !needed
        ? { check: finding.check, status: 'warn', summary: `${finding.summary}: such launches fail with ${finding.error?.code}`, hint: finding.error?.hint }
        : finding,
    );
  }

  const openid = openidFinding(smart, issuer.scope);
  if (openid) findings.push(openid);

  try {
    findings.push(scopeSyntaxFinding((['ehr', 'standalone'] as const).map((mode) => launchScope(issuer, mode, smart))));
  } catch (error) {
    if (!isSmartError(error)) throw error;
    findings.push(failure('scope-syntax', error));
  }
  return findings;
}

function scopeSyntaxFinding(scopes: readonly LaunchScope[]): Finding {
  const check = 'scope-syntax';
  const syntax = scopes[0]?.syntax;
  if (syntax === undefined) return { check, status: 'pass', summary: 'scopes sent as configured' };
  const changes = [...new Set(scopes.flatMap((scope) => scope.rewritten.map((r) => `${r.from} → ${r.to}`)))].join(', ');
  const broadened = [...new Set(scopes.flatMap((scope) => scope.broadened))];
  if (broadened.length > 0) {
    return {
      check,
      status: 'warn',
      summary: `${syntax}: ${broadened.join(', ')} have no exact ${syntax} form and ask for more (${changes})`,
      hint: 'Use permission sets with an exact v1 form (.rs, .cud, .cruds) or an EHR that accepts v2 scopes.',
    };
  }
  return { check, status: 'pass', summary: `${syntax}${changes ? ` (${changes})` : ''}` };
}
