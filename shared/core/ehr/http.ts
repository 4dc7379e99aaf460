import { timeoutSignal } from '../clock.js';
import { SmartError, type ErrorCode } from '../errors.js';
import type { Clock, HttpClient } from '../ports.js';

/*
 * Calls to the EHR's OAuth and discovery endpoints: one timeout, redirects never followed (only the
 * allow-listed URL is ever contacted), and failures mapped to the caller's error codes.
 */

/** Time allowed for any single call to an EHR endpoint. */
export const UPSTREAM_TIMEOUT_MS = 10_000;

/** Reads JSON from an upstream URL, mapping network and HTTP failures to the given error codes. */
export async function fetchJson(
  http: HttpClient,
  url: string,
  codes: { unavailable: ErrorCode; invalid: ErrorCode },
  what: string,
  clock?: Clock,
): Promise<unknown> {
  let response: Response;
  try {
    response = await http(url, { headers: { accept: 'application/json' }, redirect: 'manual', signal: timeoutSignal(clock, UPSTREAM_TIMEOUT_MS) });
  } catch (cause) {
    throw new SmartError(codes.unavailable, `${what} could not be fetched`, { cause });
  }
  if (!response.ok) {
    throw new SmartError(codes.unavailable, `${what} answered HTTP ${response.status}`, { details: { status: response.status } });
  }
  try {
    return await response.json();
  } catch (cause) {
    throw new SmartError(codes.invalid, `${what} is not valid JSON`, { cause });
  }
}

/** A form POST to an EHR endpoint (token, revocation), built by a `ClientAuthentication` (client-auth.ts). */
export interface FormRequest {
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/** Sends a form POST with the upstream timeout (on the clock port when given); network failures and timeouts throw as they are. */
export function postForm(http: HttpClient, request: FormRequest, timeoutMs = UPSTREAM_TIMEOUT_MS, clock?: Clock): Promise<Response> {
  return http(request.url, {
    method: 'POST',
    headers: request.headers,
    body: request.body,
    redirect: 'manual',
    signal: timeoutSignal(clock, timeoutMs),
  });
}
