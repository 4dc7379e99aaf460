import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import type { Query } from '../core/query.js';
import { multiValueHeader, singleHeader } from './headers.js';

/** API Gateway REST API (payload v1) events: the same shape in AWS and from the local runner. */
export type ApiEvent = APIGatewayProxyEvent;
export type ApiResult = APIGatewayProxyResult;

export function queryOf(event: ApiEvent): Query {
  return event.multiValueQueryStringParameters ?? {};
}

/** A request header, looked up case-insensitively. */
export function headerOf(event: ApiEvent, name: string): string | undefined {
  return singleHeader(event.headers, name);
}

/** The value of one cookie from the `Cookie` header(s); `undefined` when absent or ambiguous. */
export function cookieOf(event: ApiEvent, name: string): string | undefined {
  const headers = multiValueHeader(event.multiValueHeaders, 'cookie');
  const single = headerOf(event, 'cookie');
  if (headers.length === 0 && single !== undefined) headers.push(single);
  const found: string[] = [];
  for (const header of headers) {
    for (const part of header.split(';')) {
      const index = part.indexOf('=');
      if (index < 0) continue;
      if (part.slice(0, index).trim() === name) found.push(part.slice(index + 1).trim());
    }
  }
  return found.length === 1 ? found[0] : undefined;
}

export function correlationIdOf(event: ApiEvent): string {
  return event.requestContext?.requestId ?? 'unknown';
}
