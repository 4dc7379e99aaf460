import { z } from 'zod';
import { SmartError } from './errors.js';
import { postForm, UPSTREAM_TIMEOUT_MS, type FormRequest } from './ehr/http.js';
import type { Clock, HttpClient } from './ports.js';

/** A FHIR logical id (FHIR R4 `id` datatype), so context values can never smuggle a path. */
const FhirId = z.string().regex(/^[A-Za-z0-9\-.]{1,64}$/);

const FhirContextItem = z.union([
  z.string(),
  z
    .object({
      reference: z.string().optional(),
      canonical: z.string().optional(),
      identifier: z.record(z.string(), z.unknown()).optional(),
      type: z.string().optional(),
      role: z.string().min(1).optional(),
    })
    .refine((item) => item.reference !== undefined || item.canonical !== undefined || item.identifier !== undefined, {
      message: 'each fhirContext item needs reference, canonical or identifier',
    }),
]);

/**
 * The longest access-token lifetime taken from an EHR: 24 hours. SMART access tokens live minutes to
 * an hour; a larger `expires_in` (up to 2^53-1, or digits beyond any float) is clamped to this, so
 * an EHR's number can never overflow a date, switch off proactive refresh or outlast the idle
 * timeout by more than a day. Zero, negative, fractional and non-numeric values are refused
 * (TOKEN_RESPONSE_INVALID).
 */
export const MAX_EXPIRES_IN_SECONDS = 24 * 60 * 60;

const ExpiresIn = z.preprocess(
  (value) => {
    const number = typeof value === 'string' && /^\d{1,400}$/.test(value) ? Number(value) : value;
    return typeof number === 'number' && number > MAX_EXPIRES_IN_SECONDS && (Number.isInteger(number) || number === Number.POSITIVE_INFINITY) ? MAX_EXPIRES_IN_SECONDS : number;
  },
  z.number().int().positive(),
);

/**
 * A token response (RFC 6749 §5.1, SMART-TOKEN-03, SMART-CTX-01..05). Unknown members are dropped
 * (SMART-CTX-05); `token_type` is compared case-insensitively (SMART-TOKEN-04).
 */
export const TokenResponseSchema = z.object({
  access_token: z.string().min(1),
  token_type: z.string().refine((t) => t.toLowerCase() === 'bearer', 'token_type must be "Bearer"'),
  expires_in: ExpiresIn.optional(),
  scope: z.string().optional(),
  refresh_token: z.string().min(1).optional(),
  id_token: z.string().min(1).optional(),
  patient: FhirId.optional(),
  encounter: FhirId.optional(),
  fhirContext: z.array(FhirContextItem).optional(),
  need_patient_banner: z.boolean().optional(),
  smart_style_url: z.url().optional(),
  intent: z.string().optional(),
  tenant: z.string().optional(),
});
export type TokenResponse = z.infer<typeof TokenResponseSchema>;

/** Access tokens without `expires_in` are assumed short-lived (SMART-TOKEN-05). */
export const DEFAULT_EXPIRES_IN_SECONDS = 300;

/** `Retry-After` as delay-seconds (RFC 9110 §10.2.3), capped at 5 minutes; the HTTP-date form is ignored. */
function retryAfter(value: string | null): number | undefined {
  const trimmed = value?.trim();
  return trimmed !== undefined && /^\d{1,6}$/.test(trimmed) ? Math.min(Number(trimmed), 300) : undefined;
}

const OAuthErrorSchema = z.object({ error: z.string(), error_description: z.string().optional() });

/**
 * Maps a token endpoint answer (RFC 6749 §5.2, SMART-TOKEN-11): `invalid_client` is a configuration
 * problem, other 4xx errors refuse this grant, 5xx/429 are the EHR's fault.
 */
export async function parseTokenResponse(response: Response): Promise<TokenResponse> {
  if (response.status === 401) {
    // RFC 6749 §5.2: client authentication failed, whatever the body says (often only WWW-Authenticate).
    await response.body?.cancel();
    throw new SmartError('CLIENT_AUTH_FAILED', 'the token endpoint rejected the client credentials', { details: { status: 401 } });
  }
  let body: unknown;
  try {
    body = await response.json();
  } catch (cause) {
    if (response.status >= 500 || response.status === 429) {
      throw new SmartError('TOKEN_ENDPOINT_UNAVAILABLE', `the token endpoint answered HTTP ${response.status}`, {
        cause,
        details: { status: response.status },
        retryAfterSeconds: retryAfter(response.headers.get('retry-after')),
      });
    }
    throw new SmartError('TOKEN_RESPONSE_INVALID', 'the token endpoint did not answer JSON', { cause });
  }
  if (response.status >= 500 || response.status === 429) {
    throw new SmartError('TOKEN_ENDPOINT_UNAVAILABLE', `the token endpoint answered HTTP ${response.status}`, {
      details: { status: response.status },
      retryAfterSeconds: retryAfter(response.headers.get('retry-after')),
    });
  }
  if (!response.ok) {
    const error = OAuthErrorSchema.safeParse(body);
    const oauthError = error.success ? error.data.error.slice(0, 64) : 'unknown';
    if (oauthError === 'invalid_client') {
      throw new SmartError('CLIENT_AUTH_FAILED', 'the token endpoint rejected the client credentials', { details: { oauthError } });
    }
    throw new SmartError('TOKEN_REQUEST_REJECTED', `the token endpoint refused the grant (${oauthError})`, { details: { oauthError } });
  }
  const parsed = TokenResponseSchema.safeParse(body);
  if (!parsed.success) {
    const field = parsed.error.issues[0]?.path.join('.') || 'body';
    throw new SmartError('TOKEN_RESPONSE_INVALID', `token response field "${field}" is missing or invalid`, { details: { field } });
  }
  return parsed.data;
}

/** Sends a token request and parses the answer; network failures and timeouts are the EHR's fault. */
export async function callTokenEndpoint(http: HttpClient, request: FormRequest, timeoutMs = UPSTREAM_TIMEOUT_MS, clock?: Clock): Promise<TokenResponse> {
  let response: Response;
  try {
    response = await postForm(http, request, timeoutMs, clock);
  } catch (cause) {
    throw new SmartError('TOKEN_ENDPOINT_UNAVAILABLE', 'the token endpoint could not be reached', { cause });
  }
  return parseTokenResponse(response);
}
