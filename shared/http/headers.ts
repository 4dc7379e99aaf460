/*
 * Header names are case-insensitive (RFC 9110 section 5.1) and API Gateway passes them on as the
 * client spelled them. Every lookup and every map of headers goes through the one key below, so a
 * header is found however it was written.
 */

/** The key a header is known by: its lower-case name. */
export function headerKey(name: string): string {
  return name.toLowerCase();
}

/** What the request headers of an API Gateway (payload v1) event look like. */
export interface EventHeaders {
  readonly headers?: Readonly<Record<string, string | undefined>> | null;
  readonly multiValueHeaders?: Readonly<Record<string, readonly string[] | undefined>> | null;
}

/**
 * Request headers by lower-case name, repeated ones as lists: `multiValueHeaders` when API Gateway
 * sent any, else the single-value `headers`.
 */
export function requestHeaders(event: EventHeaders): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [name, values] of Object.entries(event.multiValueHeaders ?? {})) {
    if (values && values.length > 0) (out[headerKey(name)] ??= []).push(...values);
  }
  if (Object.keys(out).length === 0) {
    for (const [name, value] of Object.entries(event.headers ?? {})) if (value !== undefined) (out[headerKey(name)] ??= []).push(value);
  }
  return out;
}

/** One request header from the single-value `headers`, looked up case-insensitively. */
export function singleHeader(headers: EventHeaders['headers'], name: string): string | undefined {
  const wanted = headerKey(name);
  for (const [key, value] of Object.entries(headers ?? {})) {
    if (headerKey(key) === wanted && value !== undefined) return value;
  }
  return undefined;
}

/** All values of one request header from `multiValueHeaders`, looked up case-insensitively. */
export function multiValueHeader(headers: EventHeaders['multiValueHeaders'], name: string): string[] {
  const wanted = headerKey(name);
  return Object.entries(headers ?? {})
    .filter(([key]) => headerKey(key) === wanted)
    .flatMap(([, values]) => values ?? []);
}

/**
 * Response headers (a payload v1 result or a streaming prelude) by lower-case name, as Node's
 * `writeHead` takes them: single values as strings, `multiValueHeaders` as lists, a list winning
 * over a single value of the same name.
 */
export function responseHeaders(
  headers: Readonly<Record<string, unknown>> | undefined,
  multiValueHeaders: Readonly<Record<string, readonly unknown[]>> | undefined,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers ?? {})) out[headerKey(name)] = String(value);
  for (const [name, values] of Object.entries(multiValueHeaders ?? {})) out[headerKey(name)] = values.map(String);
  return out;
}
