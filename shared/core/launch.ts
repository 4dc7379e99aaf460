import type { IssuerConfig } from '../config/schema.js';
import { buildAuthorizeForm, buildAuthorizeUrl, createPkce, scopeIncludes, type AuthorizeForm, type AuthorizeRequest, type LaunchMode } from './authorize.js';
import { authorizeMethodFor, launchScope, requireCapabilities } from './capabilities.js';
import { randomToken } from './crypto.js';
import type { CoreDeps } from './deps.js';
import type { DataKey } from './ports.js';
import { discoverCached } from './discovery.js';
import { clientAuthenticationFor } from './ehr/client-auth.js';
import { SmartError } from './errors.js';
import { verifyIdToken } from './id-token.js';
import { validBindingSecret } from './binding.js';
import { singleParam, type Query } from './query.js';
import { bindingHash, encryptionContext, openJson, sealJson, sessionKey, transactionKey, transactionSealKey } from './sealed-records.js';
import { TransactionSecretsSchema, UNBOUND, type SessionSecrets, type TransactionSecrets, type SessionRecord, type TransactionRecord } from './records.js';
import { issuerOf, resolveIssuer } from './issuers.js';
import { verifyPatientAccess } from './proxy/index.js';
import { sessionExpiresAt } from './refresh.js';
import { callTokenEndpoint } from './ehr/token-endpoint.js';
import { DEFAULT_EXPIRES_IN_SECONDS, type TokenResponse } from './token.js';
import { redirectUri, restartUrl } from './urls.js';

export interface LaunchResult {
  /** The authorization request as a URL (what a GET redirect sends). */
  readonly authorizeUrl: string;
  /** Set when the request goes by POST instead (SMART-AUTHZ-10): the form the browser submits. */
  readonly authorizeForm?: AuthorizeForm | undefined;
  /** The browser-binding secret to (re)set as the HttpOnly cookie; absent when binding is off. */
  readonly bindingSecret: string | undefined;
  readonly mode: LaunchMode;
  readonly issuer: IssuerConfig;
}

/**
 * `GET /launch`: EHR launch (`iss` + `launch`) or standalone launch (optional `iss`). Matches `iss`
 * against the allow-list before any network call, discovers the EHR, and stores a single-use
 * transaction (state, PKCE verifier, nonce, endpoints) bound to this browser.
 */
export async function startLaunch(query: Query, cookieSecret: string | undefined, deps: CoreDeps): Promise<LaunchResult> {
  const iss = singleParam(query, 'iss', 2048);
  const launch = singleParam(query, 'launch', 4096);
  if (launch !== undefined && iss === undefined) {
    throw new SmartError('LAUNCH_MISSING_ISS', 'an EHR launch carries "launch" but no "iss"');
  }
  const issuer = resolveIssuer(deps.config, iss);
  const mode: LaunchMode = launch === undefined ? 'standalone' : 'ehr';
  // Cached per container; SMART v1 CapabilityStatement fallback (SMART-DISC-07, SMART-DISC-10).
  const smart = await discoverCached(deps, issuer);
  // PKCE S256, client authentication (and SMART-CAUTH-09 assertion algorithm), launch mode, OpenID:
  // refused here, before the redirect, with the message doctor gives for the same configuration.
  requireCapabilities(smart, issuer, mode);

  const { config, random, clock } = deps;
  const now = Math.floor(clock.now() / 1000);
  const state = randomToken(random);
  const sessionId = randomToken(random);
  const pkce = createPkce(random);
  // The EHR's scope syntax (SMART-SCOPE-02); the transaction keeps what was really asked for.
  const { scope } = launchScope(issuer, mode, smart);
  const nonce = scopeIncludes(scope, 'openid') ? randomToken(random) : undefined;
  const bindingSecret = config.cookie.browserBinding ? (validBindingSecret(cookieSecret) ?? randomToken(random)) : undefined;

  const authorizeRequest: AuthorizeRequest = {
    authorizationEndpoint: smart.endpoints.authorizationEndpoint,
    clientId: issuer.clientId,
    redirectUri: redirectUri(config.publicUrl),
    scope,
    state,
    aud: issuer.iss,
    codeChallenge: pkce.challenge,
    launch,
    nonce,
  };
  const authorizeUrl = buildAuthorizeUrl(authorizeRequest);
  const method = authorizeMethodFor(issuer, smart, authorizeUrl.length);

  const key = transactionKey(state);
  const sesKey = sessionKey(sessionId);
  // No key-ring call for an anonymous launch (a flood costs no KMS money); the session's own data
  // key is generated at the callback, once the EHR has issued a code.
  const secrets: TransactionSecrets = {
    v: 1,
    sessionId,
    codeVerifier: pkce.verifier,
    nonce,
    launch,
    scope,
    redirectUri: authorizeRequest.redirectUri,
  };
  await deps.store.putTransaction({
    key,
    iss: issuer.iss,
    sessionKey: sesKey,
    bindingHash: bindingSecret === undefined ? UNBOUND : bindingHash(bindingSecret),
    endpoints: smart.endpoints,
    wrappedKey: new Uint8Array(0),
    sealed: sealJson(transactionSealKey(config, state), secrets, key, random),
    createdAt: now,
    expiresAt: now + config.session.transactionMinutes * 60,
  });

  const authorizeForm = method === 'POST' ? buildAuthorizeForm(authorizeRequest) : undefined;
  return { authorizeUrl, authorizeForm, bindingSecret, mode, issuer };
}

export interface CallbackResult {
  readonly sessionId: string;
  /** `{app.url}#session={id}`. */
  readonly appUrl: string;
  readonly bindingSecret: string | undefined;
  /** Who signed in, for the audit trail and metrics: never a token or id. */
  readonly signedIn?: {
    readonly iss: string;
    readonly clientId: string;
    readonly fhirUser: string | undefined;
    readonly patient: string | undefined;
    readonly launchMode: 'ehr' | 'standalone';
  };
}

/** The parameters of a sign-in response (`GET /callback`), each present at most once. */
interface CallbackParams {
  readonly state: string;
  readonly code: string | undefined;
  readonly error: string | undefined;
  readonly iss: string | undefined;
}

function readCallbackParams(query: Query): CallbackParams {
  const state = singleParam(query, 'state', 512, 'CALLBACK_INVALID');
  const code = singleParam(query, 'code', 4096, 'CALLBACK_INVALID');
  const error = singleParam(query, 'error', 256, 'CALLBACK_INVALID');
  const iss = singleParam(query, 'iss', 2048, 'CALLBACK_INVALID');
  if (state === undefined) throw new SmartError('CALLBACK_INVALID', 'the sign-in response has no "state"');
  if (code === undefined && error === undefined) throw new SmartError('CALLBACK_INVALID', 'the sign-in response has neither "code" nor "error"');
  return { state, code, error, iss };
}

/**
 * Consumes the pending launch named by `state`. The binding is checked by the consuming write itself:
 * a callback from another browser (or from someone who only learnt the `state`) leaves the pending
 * launch intact for its own browser.
 */
async function takeTransaction(state: string, cookieSecret: string | undefined, deps: CoreDeps): Promise<TransactionRecord> {
  const cookieBinding = validBindingSecret(cookieSecret);
  const acceptable = cookieBinding === undefined ? [UNBOUND] : [bindingHash(cookieBinding), UNBOUND];
  const taken = await deps.store.takeTransaction(transactionKey(state), Math.floor(deps.clock.now() / 1000), acceptable);
  if (taken.outcome === 'absent') throw new SmartError('STATE_UNKNOWN', '"state" does not match a pending launch (already used, expired, or never issued)');
  if (taken.outcome === 'not-bound') {
    throw new SmartError('BROWSER_MISMATCH', 'the sign-in was started in another browser, or its cookie was blocked', { retryUrl: restartUrl(deps.config.publicUrl, taken.iss) });
  }
  return taken.record;
}

/** RFC 9207 §2.4: `iss` is the issuer recorded for this launch, and required where advertised; then the EHR's `error`, if any. */
function checkCallbackAnswer(txn: TransactionRecord, params: CallbackParams, retry: string): void {
  const expectedIssuer = txn.endpoints.issuer;
  if (params.iss !== undefined && expectedIssuer !== undefined && params.iss !== expectedIssuer) {
    throw new SmartError('ISSUER_MISMATCH', '"iss" of the sign-in response is not the issuer this launch used', { retryUrl: retry });
  }
  if (params.iss === undefined && txn.endpoints.issParameterSupported === true) {
    throw new SmartError('ISSUER_MISMATCH', 'the sign-in response lacks "iss" although the EHR advertises it', { retryUrl: retry });
  }
  if (params.error !== undefined) {
    const safeError = /^[\x20-\x7e]{1,64}$/.test(params.error) ? params.error : 'invalid';
    if (safeError === 'access_denied') {
      throw new SmartError('AUTHORIZATION_DENIED', 'access was not granted at the EHR', { retryUrl: retry, details: { oauthError: safeError } });
    }
    throw new SmartError('AUTHORIZATION_FAILED', `the EHR answered the sign-in request with "${safeError}"`, {
      retryUrl: retry,
      details: { oauthError: safeError },
    });
  }
}

/** A refusal of a sign-in step, re-thrown with the launch's restart URL; everything else about it (hint, details, Retry-After) kept. */
function withRetryUrl(retry: string): (error: unknown) => never {
  return (error) => {
    if (!(error instanceof SmartError)) throw error;
    throw new SmartError(error.code, error.message, {
      cause: error.cause,
      hint: error.hint,
      details: error.details ?? {},
      retryUrl: retry,
      ...(error.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: error.retryAfterSeconds }),
    });
  };
}

/** Redeems the authorization code with PKCE at the token endpoint (SMART-TOKEN-01). */
async function redeemCode(deps: CoreDeps, issuer: IssuerConfig, txn: TransactionRecord, secrets: TransactionSecrets, code: string): Promise<TokenResponse> {
  const request = await clientAuthenticationFor(deps, issuer).formRequest(txn.endpoints.tokenEndpoint, {
    grant_type: 'authorization_code',
    code,
    redirect_uri: secrets.redirectUri,
    code_verifier: secrets.codeVerifier,
  });
  return callTokenEndpoint(deps.http, request, undefined, deps.clock);
}

/** The `fhirUser` of a verified id_token (invariant 5); none without an id_token. */
async function verifiedFhirUser(deps: CoreDeps, issuer: IssuerConfig, txn: TransactionRecord, secrets: TransactionSecrets, tokens: TokenResponse): Promise<string | undefined> {
  if (tokens.id_token === undefined) return undefined;
  const claims = await verifyIdToken(deps.http, tokens.id_token, {
    issuer: txn.endpoints.issuer,
    jwksUri: txn.endpoints.jwksUri,
    clientId: issuer.clientId,
    nonce: secrets.nonce,
    now: deps.clock.now(),
  }, deps.jwks, deps.clock);
  return claims.fhirUser;
}

/** The new session's secrets: the tokens, their lifetime, the granted scope and the launch context. */
function sessionSecretsOf(tokens: TokenResponse, secrets: TransactionSecrets, fhirUser: string | undefined, now: number): SessionSecrets {
  const expiresIn = tokens.expires_in ?? DEFAULT_EXPIRES_IN_SECONDS;
  return {
    v: 1,
    accessToken: tokens.access_token,
    refreshToken: tokens.refresh_token,
    idToken: tokens.id_token,
    accessTokenExpiresAt: now + expiresIn * 1000,
    obtainedAt: now,
    // RFC 6749 §5.1: an absent scope means the requested scope was granted as asked.
    scope: tokens.scope ?? secrets.scope,
    launchMode: secrets.launch === undefined ? 'standalone' : 'ehr',
    context: {
      patient: tokens.patient,
      encounter: tokens.encounter,
      fhirContext: tokens.fhirContext,
      need_patient_banner: tokens.need_patient_banner,
      smart_style_url: tokens.smart_style_url,
      intent: tokens.intent,
      tenant: tokens.tenant,
      fhirUser,
    },
  };
}

/**
 * Stores the session once the launch's patient was read through the new grant, so a launch whose
 * patient cannot be read ends here on a clear page instead of in an app that renders nothing. The
 * session's data key (`dataKey`, generated since the code was redeemed) is awaited alongside that read.
 */
async function storeSession(deps: CoreDeps, txn: TransactionRecord, sessionId: string, session: SessionSecrets, dataKey: Promise<DataKey>, retry: string): Promise<void> {
  const { config, clock, random } = deps;
  const createdAt = Math.floor(clock.now() / 1000);
  const record: SessionRecord = {
    key: txn.sessionKey,
    iss: txn.iss,
    bindingHash: txn.bindingHash,
    endpoints: txn.endpoints,
    wrappedKey: new Uint8Array(0), // the data key's, below
    sealed: new Uint8Array(0), // sealed below, once the patient check has run
    createdAt,
    expiresAt: sessionExpiresAt(config, createdAt, session.accessTokenExpiresAt),
    revision: 1,
  };
  // The patient read never renews the token nor seals anything, so it needs no data key: the EHR
  // round trip and the key-ring call run side by side (an empty key would fail loudly if used).
  const access = verifyPatientAccess({ sessionId, record, secrets: session, dataKey: new Uint8Array(0) }, deps).catch(withRetryUrl(retry));
  const [checked, key] = await Promise.all([access, dataKey]);
  const verified: SessionSecrets = { ...session, context: { ...session.context, patientAccess: checked.status } };
  await deps.store.putSession({ ...record, wrappedKey: key.wrapped, sealed: sealJson(key.plaintext, verified, txn.sessionKey, random) });
}

/**
 * Starts fetching the issuer's key set into the container's JWKS cache while the code is redeemed,
 * when an id_token is expected (OpenID was asked for) and discovery named the key set: verification
 * then finds it cached or in flight (one fetch, shared) instead of a second round trip after the
 * token answer. Only a head start: a failed fetch is dropped here (and never cached), and
 * verification fetches again as it always did.
 */
function prefetchIssuerKeys(deps: CoreDeps, txn: TransactionRecord, secrets: TransactionSecrets): void {
  const { jwksUri, issuer } = txn.endpoints;
  if (deps.jwks === undefined || secrets.nonce === undefined || jwksUri === undefined || issuer === undefined) return;
  deps.jwks.keys(deps.http, jwksUri, deps.clock.now(), deps.clock).catch(() => undefined);
}

/**
 * `GET /callback`: consumes the transaction named by `state` (once), checks that the same browser
 * finishes the flow, checks RFC 9207 `iss`, handles `error` answers, redeems the code, verifies the
 * id_token and stores the new session. Nothing is stored unless every check passed.
 * @see https://hl7.org/fhir/smart-app-launch/STU2.2/app-launch.html#step-5-access-token
 */
export async function completeCallback(query: Query, cookieSecret: string | undefined, deps: CoreDeps): Promise<CallbackResult> {
  const { config } = deps;
  const params = readCallbackParams(query);
  const txn = await takeTransaction(params.state, cookieSecret, deps);
  const retry = restartUrl(config.publicUrl, txn.iss);
  checkCallbackAnswer(txn, params, retry);

  const issuer = issuerOf(config, txn.iss);
  if (!issuer) throw new SmartError('ISSUER_NOT_ALLOWED', 'the issuer of this launch is no longer configured');
  const secrets = openJson(TransactionSecretsSchema, transactionSealKey(config, params.state), txn.sealed, txn.key);

  prefetchIssuerKeys(deps, txn, secrets);
  const tokens = await redeemCode(deps, issuer, txn, secrets, params.code as string).catch(withRetryUrl(retry));
  // The session's data key: the one key-ring call of a sign-in (invariant 6: its context names the
  // record), asked for only once the EHR redeemed the code (a bogus callback costs no KMS call), and
  // generated while the id_token is verified and the patient read. Awaited in `storeSession`; a
  // failure there, or none at all if an earlier check refuses the sign-in first.
  const dataKey = deps.keyRing.generateDataKey(encryptionContext(config, txn.sessionKey));
  dataKey.catch(() => undefined);
  const fhirUser = await verifiedFhirUser(deps, issuer, txn, secrets, tokens);
  const session = sessionSecretsOf(tokens, secrets, fhirUser, deps.clock.now());
  await storeSession(deps, txn, secrets.sessionId, session, dataKey, retry);

  const appUrl = `${config.app.url}#session=${secrets.sessionId}`;
  const signedIn = { iss: txn.iss, clientId: issuer.clientId, fhirUser, patient: tokens.patient, launchMode: session.launchMode };
  return { sessionId: secrets.sessionId, appUrl, bindingSecret: validBindingSecret(cookieSecret), signedIn };
}
