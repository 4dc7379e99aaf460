import type { IncomingMessage, ServerResponse } from 'node:http';

/** Escapes text for HTML element content and double-quoted attribute values. */
export function escapeHtml(value: string): string {
  return value
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

// The sandbox pages have no scripts and no third-party content; inline styles only.
const HTML_HEADERS: Readonly<Record<string, string>> = {
  'Content-Type': 'text/html; charset=utf-8',
  'Cache-Control': 'no-store',
  'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'",
  'Referrer-Policy': 'no-referrer',
  'X-Content-Type-Options': 'nosniff',
};

export function sendHtml(res: ServerResponse, status: number, html: string, extraHeaders: Readonly<Record<string, string>> = {}): void {
  res.writeHead(status, { ...HTML_HEADERS, ...extraHeaders, 'Content-Length': Buffer.byteLength(html) });
  res.end(html);
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Readonly<Record<string, string>> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
    'X-Content-Type-Options': 'nosniff',
    ...headers,
  });
  res.end(text);
}

export function sendRedirect(res: ServerResponse, location: string, status = 302): void {
  res.writeHead(status, { Location: location, 'Cache-Control': 'no-store', 'Referrer-Policy': 'no-referrer', 'Content-Length': 0 });
  res.end();
}

const MAX_FORM_BYTES = 16 * 1024;

/** Reads a whole request body, refusing more than `limit` bytes. */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buffer = chunk as Buffer;
    size += buffer.length;
    if (size > limit) {
      throw new Error('request body too large');
    }
    chunks.push(buffer);
  }
  return Buffer.concat(chunks);
}

/** Reads a small `application/x-www-form-urlencoded` body (the sandbox's own login form). */
export async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const type = req.headers['content-type'] ?? '';
  if (!type.toLowerCase().startsWith('application/x-www-form-urlencoded')) {
    throw new Error('expected an application/x-www-form-urlencoded body');
  }
  return new URLSearchParams((await readBody(req, MAX_FORM_BYTES)).toString('utf8'));
}

/** A minimal, readable page frame shared by the sandbox's HTML pages. `body` must already be escaped. */
export function page(title: string, body: string): string {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 56rem; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.6rem; margin-bottom: .25rem; }
  .note { color: #555; }
  table { border-collapse: collapse; margin: 1rem 0; width: 100%; }
  th, td { border-bottom: 1px solid #ddd; padding: .5rem; text-align: left; }
  a.button, button { display: inline-block; padding: .35rem .8rem; border: 1px solid #2b5fad; border-radius: 4px;
    background: #2b5fad; color: #fff; text-decoration: none; font: inherit; cursor: pointer; }
  button.secondary { background: #fff; color: #2b5fad; }
  code { background: #f3f3f3; padding: 0 .25rem; }
  form { display: inline; }
  .error { color: #9e2d2d; }
</style>
</head>
<body>
${body}
</body>
</html>
`;
}
