import type { ApiResult } from './api-event.js';

/**
 * Headers on every answer: nothing here may be cached (SMART-TOKEN-08), referrers never leak codes
 * or session ids (SMART-CB-06), and content types are never sniffed.
 */
export const BASE_HEADERS: Readonly<Record<string, string>> = {
  'cache-control': 'no-store',
  pragma: 'no-cache',
  'referrer-policy': 'no-referrer',
  'x-content-type-options': 'nosniff',
};

/** Error and status pages are self-contained: no scripts, no third-party content. */
const HTML_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self'";

export function jsonResponse(status: number, body: unknown, headers: Record<string, string> = {}): ApiResult {
  return {
    statusCode: status,
    headers: { ...BASE_HEADERS, 'content-type': 'application/json; charset=utf-8', ...headers },
    body: JSON.stringify(body),
  };
}

export function htmlResponse(status: number, html: string, headers: Record<string, string> = {}): ApiResult {
  return {
    statusCode: status,
    headers: { ...BASE_HEADERS, 'content-type': 'text/html; charset=utf-8', 'content-security-policy': HTML_CSP, ...headers },
    body: html,
  };
}

export function redirectResponse(location: string, cookies: readonly string[] = []): ApiResult {
  return {
    statusCode: 302,
    headers: { ...BASE_HEADERS, location },
    ...(cookies.length > 0 ? { multiValueHeaders: { 'set-cookie': [...cookies] } } : {}),
    body: '',
  };
}

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
