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
  // No prototype: a header the client names `__proto__` (a valid header name) is one more entry,
  // not the map's prototype or a crash.
  const out = Object.create(null) as Record<string, string[]>;
  const add = (name: string, values: readonly string[]) => {
    const key = headerKey(name);
    const list = out[key];
    if (list === undefined) out[key] = [...values];
    else list.push(...values);
  };
  let any = false;
  const multi = event.multiValueHeaders;
  if (multi) {
    for (const name of Object.keys(multi)) {
      const values = multi[name];
      if (!values || values.length === 0) continue;
      add(name, values);
      any = true;
    }
  }
  const single = event.headers;
  if (!any && single) {
    for (const name of Object.keys(single)) {
      const value = single[name];
      if (value !== undefined) add(name, [value]);
    }
  }
  return out;
}

/** One request header from the single-value `headers`, looked up case-insensitively. */
export function singleHeader(headers: EventHeaders['headers'], name: string): string | undefined {
  if (!headers) return undefined;
  const wanted = headerKey(name);
  for (const key of Object.keys(headers)) {
    const value = headers[key];
    if (value !== undefined && headerKey(key) === wanted) return value;
  }
  return undefined;
}

/** All values of one request header from `multiValueHeaders`, looked up case-insensitively. */
export function multiValueHeader(headers: EventHeaders['multiValueHeaders'], name: string): string[] {
  const out: string[] = [];
  if (!headers) return out;
  const wanted = headerKey(name);
  for (const key of Object.keys(headers)) {
    const values = headers[key];
    if (values && headerKey(key) === wanted) out.push(...values);
  }
  return out;
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
