import { SmartError, type ErrorCode } from './errors.js';

/** Query parameters as API Gateway delivers them: each name with all its values. */
export type Query = Readonly<Record<string, readonly string[] | undefined>>;

/**
 * One optional query parameter. A repeated parameter is ambiguous (which `state` did the server
 * mean?), so it is refused, as are oversize and control-character values.
 */
export function singleParam(query: Query, name: string, maxLength: number, code: ErrorCode = 'INVALID_REQUEST'): string | undefined {
  const values = query[name];
  if (values === undefined || values.length === 0) return undefined;
  if (values.length > 1) throw new SmartError(code, `"${name}" must appear at most once`);
  const value = values[0] as string;
  if (value.length === 0) throw new SmartError(code, `"${name}" must not be empty`);
  if (value.length > maxLength) throw new SmartError(code, `"${name}" is longer than ${maxLength} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) throw new SmartError(code, `"${name}" contains control characters`);
  return value;
}
