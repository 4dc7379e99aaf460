/**
 * One typed error model. Every failure the product can report has a stable upper-snake `code`
 * listed in `ERRORS`, with its HTTP status, FHIR IssueType and a hint that says what to do.
 * Messages never contain tokens, codes, cookies, session ids or patient identifiers.
 */

/** FHIR IssueType values used in OperationOutcome answers. */
export type IssueType =
  | 'invalid'
  | 'security'
  | 'login'
  | 'expired'
  | 'forbidden'
  | 'not-found'
  | 'not-supported'
  | 'exception'
  | 'timeout'
  | 'transient'
  | 'throttled'
  | 'too-costly';

interface ErrorSpec {
  readonly status: number;
  readonly issueType: IssueType;
  readonly hint: string;
}

const RELAUNCH = 'Open the app again from the EHR, or start a new sign-in.';

export const ERRORS = {
  // Request shape
  INVALID_REQUEST: { status: 400, issueType: 'invalid', hint: 'Check the request parameters against the API documentation.' },
  ROUTE_NOT_FOUND: { status: 404, issueType: 'not-found', hint: 'Check the URL; see the routes table in the README.' },
  METHOD_NOT_ALLOWED: { status: 405, issueType: 'not-supported', hint: 'Use one of the methods this route accepts.' },

  // Launch
  LAUNCH_MISSING_ISS: { status: 400, issueType: 'invalid', hint: 'An EHR launch must carry both "iss" and "launch"; open the app from the EHR again.' },
  ISSUER_NOT_ALLOWED: { status: 403, issueType: 'security', hint: 'This EHR is not configured for this customer. Ask the administrator to add the exact "iss" to the issuers list.' },
  NO_DEFAULT_ISSUER: { status: 400, issueType: 'invalid', hint: 'Add "iss" to the launch link, or mark one issuer as "default": true in the configuration.' },
  DISCOVERY_UNAVAILABLE: { status: 502, issueType: 'transient', hint: 'The EHR did not answer its SMART configuration request. Try again in a moment; if it persists, contact the EHR administrator.' },
  DISCOVERY_INVALID: { status: 502, issueType: 'exception', hint: 'The EHR published a SMART configuration this app cannot use. Contact the EHR administrator with the correlation id.' },
  PKCE_UNSUPPORTED: { status: 502, issueType: 'not-supported', hint: 'The EHR does not advertise PKCE S256 (code_challenge_methods_supported); it must before this app can sign in.' },
  CLIENT_AUTH_UNSUPPORTED: { status: 502, issueType: 'not-supported', hint: 'The EHR does not offer the client authentication this issuer is configured with. Set the issuer\'s "clientAuth" to a method the EHR lists in token_endpoint_auth_methods_supported (and register the app that way), or ask the EHR to enable it.' },
  LAUNCH_MODE_UNSUPPORTED: { status: 502, issueType: 'not-supported', hint: 'The EHR does not advertise this kind of launch (capabilities "launch-ehr" / "launch-standalone"). Launch the app the way the EHR supports, or ask the EHR administrator to enable it.' },
  OPENID_UNSUPPORTED: { status: 502, issueType: 'not-supported', hint: 'The scope asks for "openid" but the EHR publishes no OpenID issuer and JWKS to verify the id_token with (for a SMART v1 EHR: none was found at its authorization server, see docs/hardening.md). Set the issuer\'s "openidIssuer" to the EHR\'s OpenID Connect issuer, or remove "openid" and "fhirUser" from its "scope".' },
  AUTHORIZE_POST_UNSUPPORTED: { status: 502, issueType: 'not-supported', hint: 'The issuer\'s "authorizeMethod" is "POST" but the EHR does not advertise the "authorize-post" capability. Set "authorizeMethod" to "auto" or "GET", or shorten the scope.' },
  SCOPE_NOT_EXPRESSIBLE: { status: 502, issueType: 'not-supported', hint: 'The EHR speaks SMART v1 scopes only (or "scopeSyntax" is "v1"), and v1 has no granular (query-qualified) scopes. Remove the "?…" constraints from the issuer\'s "scope", or set "scopeSyntax" to "v2" if the EHR accepts v2 scopes.' },

  // Callback
  CALLBACK_INVALID: { status: 400, issueType: 'invalid', hint: 'The sign-in response was incomplete. Start the launch again.' },
  STATE_UNKNOWN: { status: 400, issueType: 'expired', hint: 'This sign-in link was already used or has expired. Start the launch again.' },
  BROWSER_MISMATCH: { status: 403, issueType: 'security', hint: 'Finish the sign-in in the same browser that started it (and allow cookies for this site).' },
  ISSUER_MISMATCH: { status: 400, issueType: 'security', hint: 'The sign-in response came from a different authorization server than the one the launch used. Start the launch again.' },
  AUTHORIZATION_DENIED: { status: 403, issueType: 'forbidden', hint: 'Access was not granted at the EHR. Start the launch again and approve access to continue.' },
  AUTHORIZATION_FAILED: { status: 400, issueType: 'login', hint: 'The EHR refused the sign-in request. Start the launch again; if it persists, contact the administrator with the correlation id.' },
  TOKEN_REQUEST_REJECTED: { status: 400, issueType: 'login', hint: 'The EHR refused to issue tokens for this sign-in. Start the launch again.' },
  CLIENT_AUTH_FAILED: { status: 502, issueType: 'security', hint: 'The EHR rejected this app\'s client credentials. The administrator must check the client id and secret or key registration.' },
  TOKEN_ENDPOINT_UNAVAILABLE: { status: 502, issueType: 'transient', hint: 'The EHR token service did not answer. Try again in a moment.' },
  TOKEN_RESPONSE_INVALID: { status: 502, issueType: 'exception', hint: 'The EHR answered with a token response this app cannot use. Contact the administrator with the correlation id.' },
  ID_TOKEN_INVALID: { status: 401, issueType: 'security', hint: 'The identity token from the EHR failed verification. Start the launch again; if it persists, contact the administrator.' },

  // Back-channel logout (OpenID Connect Back-Channel Logout 1.0): answered as `400 invalid_request`.
  LOGOUT_TOKEN_INVALID: { status: 400, issueType: 'security', hint: 'The EHR sent a logout_token this service cannot accept (signature, iss, aud, iat, events, sid/sub, nonce or a replayed jti). Check the EHR\'s back-channel logout registration: backchannel_logout_uri {publicUrl}/backchannel-logout and the client id of this issuer.' },

  // Sessions
  SESSION_ID_MALFORMED: { status: 400, issueType: 'invalid', hint: 'Use the session id exactly as delivered in the app URL fragment.' },
  /**
   * The one answer for "sign in again" on every `/sessions/{id}/…` route: unknown, expired, logged
   * out, ended by a refused refresh or while the request was in flight, token expired without a
   * refresh token, no or wrong cookie. Same status, code, message and hint whatever the reason, so an
   * app has one signal and an outsider learns nothing about which ids are live (the reason is logged).
   */
  SESSION_NOT_OPEN: { status: 401, issueType: 'login', hint: 'No session with this id is open in this browser: it ended, expired, was refused by the EHR, or belongs to another browser (or the session cookie was blocked). ' + RELAUNCH },
  REFRESH_NOT_AVAILABLE: { status: 409, issueType: 'not-supported', hint: 'The EHR issued no refresh token for this session; sign in again when the access token expires.' },
  REFRESH_UNAVAILABLE: { status: 503, issueType: 'transient', hint: 'The EHR token service is unavailable; the session is intact. Retry after the number of seconds in Retry-After.' },
  REFRESH_BUSY: { status: 503, issueType: 'transient', hint: 'Another request is renewing this session\'s tokens; the session is intact. Retry after the number of seconds in Retry-After.' },
  HANDOFF_REJECTED: { status: 401, issueType: 'login', hint: 'The sign-in window\'s hand-off did not complete (used, expired, or not for this session). Sign in again from the app.' },
  VAULT_INTEGRITY: { status: 401, issueType: 'security', hint: 'The stored session could not be opened. ' + RELAUNCH },

  // FHIR proxy
  PROXY_PATH_REJECTED: { status: 400, issueType: 'security', hint: 'Use a relative FHIR path under the session\'s fhirBaseUrl, without "..", "//", backslashes or encoded separators.' },
  UPSTREAM_UNAVAILABLE: { status: 502, issueType: 'transient', hint: 'The FHIR server did not answer. Try again in a moment.' },
  UPSTREAM_TIMEOUT: { status: 504, issueType: 'timeout', hint: 'The FHIR server took too long to answer. Try again, or narrow the request.' },
  PROXY_REQUEST_INVALID: { status: 400, issueType: 'invalid', hint: 'Send a FHIR RESTful request (read, vread, search, history, $operation; writes where enabled) with well-formed headers and body.' },
  REQUEST_TOO_LARGE: { status: 413, issueType: 'too-costly', hint: 'Send a smaller request body; the limit is proxy.maxRequestKilobytes of the issuer in the configuration.' },
  MEDIA_TYPE_UNSUPPORTED: { status: 415, issueType: 'not-supported', hint: 'Send the body with a Content-Type the interaction accepts (application/x-www-form-urlencoded for _search, a FHIR or JSON type for resources).' },
  WRITES_DISABLED: { status: 405, issueType: 'not-supported', hint: 'This EHR connection is read-only: create, update, patch and delete are forwarded only when the issuer\'s "writes" option enables them in the configuration.' },
  SCOPE_INSUFFICIENT: { status: 403, issueType: 'forbidden', hint: 'The access granted at sign-in does not cover this request. Ask for the missing scope in the issuer\'s "scope" and sign in again.' },
  PATIENT_MISMATCH: { status: 403, issueType: 'forbidden', hint: 'This session is for one patient; requests for another patient are refused. Launch the app for that patient instead.' },
  PATIENT_NOT_ACCESSIBLE: { status: 403, issueType: 'forbidden', hint: 'The EHR did not let this sign-in read the patient of the launch. Launch again, or ask the EHR administrator to check the app\'s access to this patient.' },
  UPSTREAM_UNAUTHORIZED: { status: 401, issueType: 'login', hint: 'The EHR no longer accepts this session\'s access token. ' + RELAUNCH },
  BUNDLE_TOO_LARGE: { status: 413, issueType: 'too-costly', hint: 'Send a batch or transaction of at most 200 entries; split a larger one into several batches (a transaction cannot be split without losing its all-or-nothing guarantee).' },
  RESPONSE_TOO_LARGE: { status: 502, issueType: 'too-costly', hint: 'The FHIR server\'s answer is larger than this proxy can deliver whole. Narrow the request (_count, _elements, a smaller Binary), or raise proxy.maxResponseMegabytes.' },

  // Dependencies
  STORE_UNAVAILABLE: { status: 503, issueType: 'transient', hint: 'Session storage is unavailable. Try again in a moment; no session was lost.' },
  SECRETS_UNAVAILABLE: { status: 503, issueType: 'transient', hint: 'The client secret could not be read. Try again in a moment; the administrator should check the secret and its permissions.' },
  KEYRING_UNAVAILABLE: { status: 503, issueType: 'transient', hint: 'The key service is unavailable. Try again in a moment; no session was lost.' },
  LOGOUT_INCOMPLETE: { status: 503, issueType: 'transient', hint: 'A back-channel logout matched sessions that could not be ended (the key service or session storage failed); they are left as they were. The EHR may send the same logout_token again.' },

  INTERNAL: { status: 500, issueType: 'exception', hint: 'An unexpected error occurred. Contact the administrator with the correlation id.' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/**
 * The most characters of a message, hint or detail value that reach a log line or an answer: some
 * quote what a client or an EHR sent, and a 3 MB `resourceType` must not become a 3 MB log line.
 */
export const MAX_ERROR_TEXT = 512;

/** `value` cut to `max` characters (marked with "…"), control characters replaced: safe to quote in a message. */
export function bounded(value: string, max = 64): string {
  const clean = value.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, '?');
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

function boundedDetails(details: Record<string, string | number | boolean> | undefined): Readonly<Record<string, string | number | boolean>> | undefined {
  if (details === undefined) return undefined;
  const out: Record<string, string | number | boolean> = {};
  for (const [name, value] of Object.entries(details).slice(0, 32)) out[bounded(name, 64)] = typeof value === 'string' ? bounded(value, MAX_ERROR_TEXT) : value;
  return out;
}

export class SmartError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly issueType: IssueType;
  readonly hint: string;
  /** Extra, non-secret facts safe to log (never tokens, ids or PHI). */
  readonly details: Readonly<Record<string, string | number | boolean>> | undefined;
  /** Where a person can start over (shown as a button on error pages), when known. */
  readonly retryUrl: string | undefined;
  /** Seconds after which the same request may succeed (sent as `Retry-After`). */
  readonly retryAfterSeconds: number | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options: {
      cause?: unknown;
      hint?: string;
      details?: Record<string, string | number | boolean>;
      retryUrl?: string;
      retryAfterSeconds?: number;
    } = {},
  ) {
    super(bounded(message, MAX_ERROR_TEXT), options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SmartError';
    this.code = code;
    const spec: ErrorSpec = ERRORS[code];
    this.status = spec.status;
    this.issueType = spec.issueType;
    this.hint = options.hint === undefined ? spec.hint : bounded(options.hint, MAX_ERROR_TEXT);
    this.details = boundedDetails(options.details);
    this.retryUrl = options.retryUrl;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}

export function isSmartError(value: unknown): value is SmartError {
  return value instanceof SmartError;
}

/** Wraps anything thrown into a `SmartError`; unknown errors become `INTERNAL` with a fixed message. */
export function toSmartError(value: unknown): SmartError {
  if (isSmartError(value)) return value;
  return new SmartError('INTERNAL', 'an unexpected error occurred', { cause: value });
}

/**
 * Values an EHR advertised (algorithms, methods, capabilities), made safe to quote in a message:
 * printable tokens only, at most 12, each at most 64 characters.
 */
export function safeList(values: readonly string[] | undefined): string {
  const safe = (values ?? []).filter((v) => /^[\x21-\x7e]{1,64}$/.test(v)).slice(0, 12);
  return safe.length === 0 ? '(none)' : safe.join(', ');
}

/**
 * A FHIR OperationOutcome for a refusal (FHIR R4 §3.1.0.6): its issue type, our code under
 * `urn:smart-launch:error` with the hint, and `diagnostics` (the message unless given).
 */
export function operationOutcomeOf(error: SmartError, diagnostics: string = error.message): Record<string, unknown> {
  return {
    resourceType: 'OperationOutcome',
    issue: [
      {
        severity: 'error',
        code: error.issueType,
        details: { coding: [{ system: 'urn:smart-launch:error', code: error.code }], text: error.hint },
        diagnostics,
      },
    ],
  };
}
