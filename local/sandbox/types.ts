/** Public types of the sandbox EHR; re-exported by index.ts, which is the module to import. */

import type { SigningKey } from './auth/signing-key.js';

export interface SandboxClient {
  clientId: string;
  clientAuth: 'none' | 'client_secret_basic' | 'private_key_jwt';
  /** Required for client_secret_basic. */
  clientSecret?: string;
  /**
   * Required for private_key_jwt: the client's JWKS URL (for smart-launch, `{apiUrl}/.well-known/jwks.json`).
   * The sandbox fetches it when it first verifies an assertion and again once its Cache-Control max-age (at least 60 s) ran out.
   */
  jwksUri?: string;
  /** private_key_jwt: the only assertion algorithm accepted (`token_endpoint_auth_signing_alg`); default: RS384 or ES384. */
  signingAlg?: 'RS384' | 'ES384';
  redirectUris: string[];
}

export interface SandboxOptions {
  /** 0 or absent = ephemeral. */
  port?: number;
  /** Default '127.0.0.1'. */
  host?: string;
  clients: SandboxClient[];
  /** The app's SMART launch URL (e.g. http://localhost:3000/launch), used by the EHR page buttons and the portal link. */
  launchUrl?: string;
  /** Default 300. */
  accessTokenTtlSeconds?: number;
  /**
   * The app's own launch page (an SDK app, e.g. http://localhost:3000/app/), opened with `iss` and
   * `launch` by the "frame whose sign-in refuses framing" launch: the app then signs in in a popup.
   */
  appLaunchUrl?: string;
  /**
   * The time (epoch ms) at which the FHIR server checks an access token's expiry; default the system
   * clock. Tests move it forward to expire tokens instead of waiting (tokens are still issued on
   * oidc-provider's own clock).
   */
  now?: () => number;
  /**
   * The key its id_tokens and JWT access tokens are signed with (published in its JWKS); default a
   * fresh RS256 key per start. Tests hand in a pooled key instead of paying for an RSA key generation.
   */
  signingKey?: SigningKey;
}

export interface SandboxPatient {
  id: string;
  name: string;
  birthDate: string;
}

export type IdTokenFault = 'wrong-aud' | 'wrong-nonce' | 'wrong-iss' | 'expired' | 'bad-signature';

/** Token endpoint error a test can switch on (`faults.tokenEndpoint`); see `TokenEndpointFault`. */
export interface TokenEndpointStatusFault {
  /** 500/503 answer `{ error: 'temporarily_unavailable' }`, 429 answers `{ error: 'slow_down' }`. */
  status: 500 | 503 | 429;
  /** Sent as `Retry-After`; 429 always sends one (default 1). */
  retryAfterSeconds?: number;
  /** Only requests with one of these `grant_type`s are affected (default: all). */
  grantTypes?: string[];
  /** Only the next `times` affected requests, then the fault clears itself (default: until cleared). */
  times?: number;
}

/** Token endpoint slowness (`faults.tokenEndpoint`): wait, then answer normally. */
export interface TokenEndpointDelayFault {
  delayMs: number;
  grantTypes?: string[];
  times?: number;
}

export type TokenEndpointFault = TokenEndpointStatusFault | TokenEndpointDelayFault;

/**
 * Token endpoint hold (`faults.tokenEndpointHold`, in process only: not settable over `/admin`):
 * requests of `grantTypes` wait in front of oidc-provider until `until` settles, then are handled
 * normally. Lets a test keep a token call in flight exactly as long as it needs, without a timer.
 */
export interface TokenEndpointHold {
  readonly until: Promise<unknown>;
  /** Only requests with one of these `grant_type`s are held (default: all). */
  readonly grantTypes?: readonly string[] | undefined;
  /** Called as each held request arrives (before it waits). */
  readonly onHeld?: ((grantType: string) => void) | undefined;
}

export interface SandboxFaults {
  /** Tamper the id_token of the next token responses (re-signed with the real key unless 'bad-signature'). */
  idToken?: IdTokenFault | undefined;
  /** Lifetime (seconds, positive integer) of access tokens issued from now on; overrides the start option. */
  accessTokenTtlSeconds?: number | undefined;
  /**
   * The token endpoint answers an error status, or waits first. A faulted error answer touches nothing:
   * the code or refresh token presented stays valid, so a retry can succeed.
   */
  tokenEndpoint?: TokenEndpointFault | undefined;
  /** Token requests wait until the test lets them go (see `TokenEndpointHold`). */
  tokenEndpointHold?: TokenEndpointHold | undefined;
  /** The token endpoint answers every request 401 `{ error: 'invalid_client' }` (nothing is consumed). */
  invalidClient?: boolean | undefined;
  /** The token endpoint answers 200 with a JSON body without `access_token` (nothing is consumed). */
  malformedTokenResponse?: boolean | undefined;
  /**
   * FHIR requests that need a token are answered 401 (`invalid_token`) whatever token they carry:
   * `'once'` for the next one only (the switch then clears itself), `'always'` until cleared.
   */
  fhir401?: 'once' | 'always' | undefined;
  /** FHIR requests that need a token wait this long (ms, at most 600000) before being handled; a client that gives up gets nothing. */
  fhirDelayMs?: number | undefined;
  /** FHIR answers to requests that need a token break off: the head and half the body are sent, then the connection is destroyed. */
  fhirDropConnection?: boolean | undefined;
  /**
   * FHIR requests that need a token get exactly this answer instead of the real one (a hostile or
   * broken EHR: active content, hostile headers, garbage bodies). Checked after `fhir401`.
   */
  fhirAnswer?: FhirAnswerFault | undefined;
}

/** A canned FHIR answer (`faults.fhirAnswer`): status, headers and body as sent on the wire. */
export interface FhirAnswerFault {
  readonly status: number;
  readonly headers?: Readonly<Record<string, string>> | undefined;
  /** The body as text (UTF-8), or `base64:` followed by base64 bytes. */
  readonly body?: string | undefined;
  /** Only requests whose path (after the FHIR base) starts with this are answered so; default all. */
  readonly pathPrefix?: string | undefined;
}

/**
 * Switches that make the sandbox behave like EHRs real deployments meet (see README "Quirks"). Each is
 * off unless `true`; they apply to the next requests.
 */
export interface SandboxQuirks {
  /** Discovery lists only `plain` in code_challenge_methods_supported (no S256). */
  noS256?: boolean | undefined;
  /** SMART v1 only: discovery advertises `permission-v1` (not v2) and v1 scopes; the AS refuses v2 resource scopes (`invalid_scope`). */
  v1Only?: boolean | undefined;
  /** No revocation endpoint in discovery (neither the well-known file nor the CapabilityStatement). */
  noRevocation?: boolean | undefined;
  /** Discovery endpoints relative to the FHIR base (`/oauth/auth`, `../oauth/token`), as some legacy servers publish them. */
  relativeEndpoints?: boolean | undefined;
  /** No `.well-known/smart-configuration` (404); the CapabilityStatement's oauth-uris extension is still served at `/fhir/metadata`. */
  noWellKnown?: boolean | undefined;
  /** No OpenID configuration at the authorization server (`/oauth/.well-known/openid-configuration` answers 404): with `noWellKnown`, a SMART v1 EHR whose OpenID issuer cannot be found. */
  noOpenidConfiguration?: boolean | undefined;
  /** Grants less than asked: no `offline_access` (so no refresh token), and Patient access only among the resource scopes. */
  narrowScopes?: boolean | undefined;
  /** No refresh token, whatever the scope. */
  noRefreshToken?: boolean | undefined;
  /** Token responses carry no `patient` or `encounter` (the access token still confines access to the launch patient). */
  noPatientContext?: boolean | undefined;
  /** Patient `dana-nodata` exists (EHR page, EHR launches, FHIR reads): a chart with no encounters, conditions or observations. */
  emptyPatient?: boolean | undefined;
  /** Advertise `end_session_endpoint` (RP-Initiated Logout) in the SMART configuration. */
  endSession?: boolean | undefined;
}

export interface SandboxStats {
  /** Token endpoint POSTs by grant_type (`unknown` when the body had none), faulted ones included. */
  tokenRequests: Record<string, number>;
  /** Token endpoint answers by grant_type, then HTTP status: `{ refresh_token: { '200': 1, '503': 2 } }`. */
  tokenRequestsAnswered: Record<string, Record<string, number>>;
  /** Times a rotated (already used) refresh token was presented again, revoking its grant. */
  refreshReuseDetected: number;
  /** Revocation endpoint (RFC 7009) POSTs. */
  revocations: number;
  /** Revocation endpoint POSTs by the `token_type_hint` sent (`none` without one). */
  revocationsByTokenType: Record<string, number>;
}

/** What the authorize step of one EHR launch simulates (the sandbox EHR page's launch options). */
export type AuthorizeOutcome = 'invalid_client' | 'invalid_redirect' | 'invalid_scope' | 'access_denied';

/** Per-launch options of the sandbox EHR page, for app teams testing the unhappy paths. */
export interface LaunchOptions {
  /** The authorize step fails this way: an error page at the EHR (client, redirect) or an error sent back to the app (scope, user cancels). */
  authorizeOutcome?: AuthorizeOutcome;
  /** The clinician sees the requested scopes and may untick some: the grant is narrowed. */
  consent?: boolean;
  /** Access tokens of this launch expire after this many seconds (tokens that expire mid-session). */
  accessTokenTtlSeconds?: number;
  /** The EHR's sign-in pages of this launch refuse to load in a frame (X-Frame-Options DENY, frame-ancestors 'none'). */
  refuseFraming?: boolean;
}

export interface LaunchContext {
  patient: string;
  encounter?: string;
  options?: LaunchOptions;
}

export interface Sandbox {
  /** Calls of the end-session endpoint (`endSession` quirk), in order. */
  endSessionCalls?: readonly import('./auth/backchannel-logout.js').EndSessionCall[];
  /** Origin, e.g. http://127.0.0.1:41234. */
  url: string;
  /** `${url}/fhir`: the SMART `iss`. */
  fhirBaseUrl: string;
  /** The OAuth issuer, `${url}/oauth`. */
  issuer: string;
  patients: SandboxPatient[];
  practitioner: { id: string; name: string };
  /** Creates an EHR launch id bound to that context (what the EHR would pass as `launch`). */
  createLaunch(context: LaunchContext): string;
  /** Mutable switches for tests (set a field, set it back to undefined or call `clearFaults()`). */
  faults: SandboxFaults;
  /** Counters for tests; the same object for the sandbox's whole life (`resetStats()` zeroes it in place). */
  stats: SandboxStats;
  /** Zeroes every counter of `stats` in place. */
  resetStats(): void;
  /** Removes every fault of `faults` in place (`idToken` included). */
  clearFaults(): void;
  /** Quirk switches (set a field to `true`; `clearQuirks()` turns all off). */
  quirks: SandboxQuirks;
  /** Turns every quirk off, in place. */
  clearQuirks(): void;
  /**
   * Revokes the whole grant behind a JWT access token, as an administrator or the patient revoking
   * the app's access would: its refresh tokens then get `invalid_grant`, its access tokens 401 at
   * `/fhir`. Rejects when the token is not one this sandbox issued.
   */
  revokeGrantForAccessToken(accessToken: string): Promise<void>;
  /** The same, found by a refresh token of the grant (current or already rotated). */
  revokeGrantForRefreshToken(refreshToken: string): Promise<void>;
  /** The same for either kind of token. */
  revokeGrantOf(token: string): Promise<void>;
  close(): Promise<void>;
}
