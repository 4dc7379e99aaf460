import * as z from '../../config/zod.js';
import { SmartError } from '../errors.js';
import type { Clock, HttpClient } from '../ports.js';
import { TokenResponseSchema, type TokenResponse } from '../token.js';
import { postForm, UPSTREAM_TIMEOUT_MS, type FormRequest } from './http.js';
import { builtOnFirstUse } from '../lazy.js';

/*
 * Calls to the EHR's token endpoint: the authorization-code exchange and each refresh. The request
 * comes authenticated from a `ClientAuthentication` (client-auth.ts); the answer is mapped here.
 */

/** `Retry-After` as delay-seconds (RFC 9110 §10.2.3), capped at 5 minutes; the HTTP-date form is ignored. */
function retryAfter(value: string | null): number | undefined {
  const trimmed = value?.trim();
  return trimmed !== undefined && /^\d{1,6}$/.test(trimmed) ? Math.min(Number(trimmed), 300) : undefined;
}

const OAuthErrorSchema = builtOnFirstUse(() =>
  z.object({ error: z.string(), error_description: z.optional(z.string()) }),
);

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
