import type { MiddlewareObj } from '@middy/core';
import type { Logger } from '@aws-lambda-powertools/logger';
import { operationOutcomeOf, SmartError, toSmartError } from '../core/errors.js';
import { mappedFrames } from '../runtime/stack-frames.js';
import { correlationIdOf, type ApiEvent, type ApiResult } from './api-event.js';
import { escapeHtml, htmlResponse, jsonResponse, BASE_HEADERS } from './responses.js';

/** How a route group answers errors: browser pages, JSON for the app, OperationOutcome for FHIR clients. */
export type ErrorFormat = 'html' | 'json' | 'fhir';

function page(error: SmartError, correlationId: string): string {
  const retry = error.retryUrl
    ? `<p><a class="button" href="${escapeHtml(error.retryUrl)}">Start again</a></p>`
    : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Sign-in could not be completed</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#1f2933}
h1{font-size:1.4rem}.hint{background:#f0f4f8;padding:.75rem 1rem;border-radius:6px}code{font-size:.9em}
.button{display:inline-block;background:#2563eb;color:#fff;padding:.5rem 1rem;border-radius:6px;text-decoration:none}
.meta{color:#52606d;font-size:.85rem}</style></head>
<body><main>
<h1>Sign-in could not be completed</h1>
<p>${escapeHtml(error.message.charAt(0).toUpperCase() + error.message.slice(1))}.</p>
<p class="hint">${escapeHtml(error.hint)}</p>
${retry}
<p class="meta">Error code <code>${escapeHtml(error.code)}</code> · correlation id <code>${escapeHtml(correlationId)}</code></p>
</main></body></html>
`;
}

/** A FHIR OperationOutcome for the proxy (FHIR R4 §3.1.0.6). */
export function operationOutcome(error: SmartError, correlationId: string): Record<string, unknown> {
  return operationOutcomeOf(error, `${error.message} (correlation id ${correlationId})`);
}

export function renderError(error: SmartError, format: ErrorFormat, correlationId: string): ApiResult {
  const headers: Record<string, string> = { 'x-correlation-id': correlationId };
  if (error.retryAfterSeconds !== undefined) headers['retry-after'] = String(error.retryAfterSeconds);
  switch (format) {
    case 'html':
      return htmlResponse(error.status, page(error, correlationId), headers);
    case 'fhir':
      return {
        statusCode: error.status,
        headers: { ...BASE_HEADERS, 'content-type': 'application/fhir+json; charset=utf-8', ...headers },
        body: JSON.stringify(operationOutcome(error, correlationId)),
      };
    case 'json':
      return jsonResponse(
        error.status,
        { error: { code: error.code, message: error.message, hint: error.hint, correlationId } },
        headers,
      );
  }
}

/**
 * What the log line says of an error's cause. An unexpected error's (`INTERNAL`, a bug) also carries
 * where it was thrown: its stack's frames in the TypeScript sources (`mappedFrames`: function names
 * and file positions only, never the stack's message line). Refusals (known codes) carry none.
 */
function describeCause(cause: unknown, internal: boolean): Record<string, unknown> | undefined {
  if (cause === undefined) return undefined;
  if (cause instanceof SmartError) return { code: cause.code, message: cause.message };
  if (cause instanceof Error) {
    const described = { name: cause.name, message: cause.message.slice(0, 300) };
    return internal ? { ...described, frames: mappedFrames(cause) } : described;
  }
  return { type: typeof cause };
}

/**
 * The one place errors become responses. Registered right after the request-context middleware so its
 * `onError` runs after every inner middleware's. Unknown errors become `INTERNAL` with a fixed message.
 */
export function errorResponse(format: ErrorFormat, logger: Logger): MiddlewareObj<ApiEvent, ApiResult> {
  return {
    onError: async (request) => {
      const error = toSmartError(request.error);
      const entry = {
        code: error.code,
        status: error.status,
        reason: error.message,
        ...(error.details ? { details: error.details } : {}),
        ...(error.cause !== undefined ? { cause: describeCause(error.cause, error.code === 'INTERNAL') } : {}),
      };
      if (error.status >= 500) logger.error('request failed', entry);
      else logger.warn('request refused', entry);
      request.response = renderError(error, format, correlationIdOf(request.event));
    },
  };
}

/** What a route adds to its request's one completion line: a message of its own and its fields. */
const completions = new WeakMap<ApiEvent, { message: string; fields: Record<string, unknown> }>();

/**
 * Names the line that ends this request (instead of `request completed`) and adds fields to it, so a
 * request that succeeds writes one log line, not a line of its own and then a completion line.
 */
export function noteCompletion(event: ApiEvent, message: string, fields: Record<string, unknown>): void {
  completions.set(event, { message, fields });
}

/**
 * Binds the request's correlation id to every log line and to the `x-correlation-id` answer header;
 * a successful request ends with one line, `request completed` (or the route's own, `noteCompletion`).
 */
export function requestContext(logger: Logger, route: string): MiddlewareObj<ApiEvent, ApiResult> {
  return {
    before: async (request) => {
      logger.resetKeys();
      // One append for the three keys (what `setCorrelationId` appends, then route and method, in that order).
      logger.appendKeys({ correlation_id: correlationIdOf(request.event), route, method: request.event.httpMethod });
    },
    after: async (request) => {
      if (request.response) {
        request.response.headers = { ...request.response.headers, 'x-correlation-id': correlationIdOf(request.event) };
        const completion = completions.get(request.event);
        logger.info(completion?.message ?? 'request completed', { status: request.response.statusCode, ...completion?.fields });
      }
    },
  };
}
