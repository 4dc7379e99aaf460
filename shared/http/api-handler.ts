import middy, { type MiddlewareObj } from '@middy/core';
import type { Logger } from '@aws-lambda-powertools/logger';
import type { Context } from 'aws-lambda';
import type { Config } from '../config/schema.js';
import type { ApiEvent, ApiResult } from './api-event.js';
import { cors } from './cors.js';
import { errorResponse, requestContext, type ErrorFormat } from './error-response.js';

/**
 * The middy stack every route group shares: correlation id, CORS for the app's origin (routes the
 * app calls from its scripts), then the one error mapping, then the handler. Middy runs `onError`
 * in reverse order, so CORS decorates the response the error mapping produced.
 */
export function apiHandler(
  route: string,
  format: ErrorFormat,
  logger: Logger,
  handle: (event: ApiEvent, context: Context) => Promise<ApiResult>,
  options: { corsConfig?: () => Promise<Config>; observe?: readonly MiddlewareObj<ApiEvent, ApiResult>[] } = {},
) {
  const stack = middy<ApiEvent, ApiResult>().use(requestContext(logger, route));
  // Audit and metrics: outside the error mapping, so they see the status every request was answered.
  for (const middleware of options.observe ?? []) stack.use(middleware);
  if (options.corsConfig) stack.use(cors(options.corsConfig));
  return stack.use(errorResponse(format, logger)).handler(handle);
}
