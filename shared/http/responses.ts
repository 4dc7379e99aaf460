import { createHash } from 'node:crypto';
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

/** The one script of the authorize-by-POST page: submits its form. Allowed by hash, nothing else runs. */
const AUTO_SUBMIT_SCRIPT = "document.getElementById('authorize').submit();";
const AUTO_SUBMIT_HASH = `sha256-${createHash('sha256').update(AUTO_SUBMIT_SCRIPT).digest('base64')}`;
/**
 * The page's CSP: only the hashed script; no `form-action`, because browsers also apply it to the
 * redirects that follow the submission (the EHR's sign-in pages, then our callback).
 */
const FORM_POST_CSP = `default-src 'none'; script-src '${AUTO_SUBMIT_HASH}'; style-src 'unsafe-inline'; base-uri 'none'`;

/**
 * A page that sends the browser to `action` by POST with `fields` (SMART-AUTHZ-10: authorization
 * requests too long for a URL): an auto-submitting form, CSP-safe (one script allowed by its hash), and
 * a button for browsers without JavaScript. Every value is escaped.
 */
export function formPostResponse(action: string, fields: ReadonlyArray<readonly [string, string]>, cookies: readonly string[] = []): ApiResult {
  const inputs = fields.map(([name, value]) => `<input type="hidden" name="${escapeHtml(name)}" value="${escapeHtml(value)}">`).join('\n');
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Signing in…</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#1f2933}</style></head>
<body><main>
<form id="authorize" method="post" action="${escapeHtml(action)}">
${inputs}
<p>Continuing to the EHR sign-in…</p>
<noscript><p>JavaScript is off: press the button to continue.</p></noscript>
<button type="submit">Continue</button>
</form>
<script>${AUTO_SUBMIT_SCRIPT}</script>
</main></body></html>
`;
  const response = htmlResponse(200, html, { 'content-security-policy': FORM_POST_CSP });
  return cookies.length > 0 ? { ...response, multiValueHeaders: { 'set-cookie': [...cookies] } } : response;
}
