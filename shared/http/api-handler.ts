import middy from '@middy/core';
import type { Logger } from '@aws-lambda-powertools/logger';
import type { ApiEvent, ApiResult } from './api-event.js';
import { errorResponse, requestContext, type ErrorFormat } from './error-response.js';

/** The middy stack every route group shares: correlation id, then the one error mapping, then the handler. */
export function apiHandler(
  route: string,
  format: ErrorFormat,
  logger: Logger,
  handle: (event: ApiEvent) => Promise<ApiResult>,
) {
  return middy<ApiEvent, ApiResult>()
    .use(requestContext(logger, route))
    .use(errorResponse(format, logger))
    .handler(handle);
}
