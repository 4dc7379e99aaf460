import type { MiddlewareObj } from '@middy/core';
import type { Config } from '../config/schema.js';
import { headerOf, type ApiEvent, type ApiResult } from './api-event.js';
import { BASE_HEADERS } from './responses.js';

/** Request headers a FHIR client or the app may send cross-origin (the proxy forwards these). */
const ALLOWED_HEADERS = 'accept, content-type, prefer, if-match, if-none-match, if-modified-since, if-none-exist';
/** Response headers the app's scripts may read. */
const EXPOSED_HEADERS = 'location, content-location, etag, last-modified, retry-after, x-correlation-id';
const ALLOWED_METHODS = 'GET, POST, PUT, PATCH, DELETE';

/**
 * The one origin allowed to call the session routes with credentials: the app's, when it is not
 * served from the API's own origin (BFF-06: explicit origin, never `*` with credentials).
 */
export function allowedOrigin(config: Config, event: ApiEvent): string | undefined {
  const origin = headerOf(event, 'origin');
  if (origin === undefined) return undefined;
  const app = new URL(config.app.url).origin;
  return origin === app && app !== new URL(config.publicUrl).origin ? app : undefined;
}

function corsHeaders(origin: string): Record<string, string> {
  return {
    'access-control-allow-origin': origin,
    'access-control-allow-credentials': 'true',
    'access-control-expose-headers': EXPOSED_HEADERS,
    vary: 'Origin',
  };
}

/**
 * CORS for the app's calls to `/sessions/{id}/…` when the app lives on another origin: answers the
 * preflight itself, and adds the allow headers to every answer (errors included) for that origin
 * only. Other origins get no CORS headers, so browsers keep their responses from scripts.
 */
export function cors(getConfig: () => Promise<Config>): MiddlewareObj<ApiEvent, ApiResult> {
  const decorate = async (request: { event: ApiEvent; response: ApiResult | undefined | null }) => {
    if (!request.response) return;
    const origin = allowedOrigin(await getConfig(), request.event);
    const vary = { vary: 'Origin' };
    request.response.headers = { ...request.response.headers, ...(origin ? corsHeaders(origin) : vary) };
  };
  return {
    before: async (request) => {
      if (request.event.httpMethod !== 'OPTIONS') return undefined;
      const origin = allowedOrigin(await getConfig(), request.event);
      const headers: Record<string, string> = { ...BASE_HEADERS, vary: 'Origin' };
      if (origin) {
        Object.assign(headers, corsHeaders(origin), {
          'access-control-allow-methods': ALLOWED_METHODS,
          'access-control-allow-headers': ALLOWED_HEADERS,
          'access-control-max-age': '600',
        });
      }
      return { statusCode: 204, headers, body: '' };
    },
    after: decorate,
    onError: decorate,
  };
}
