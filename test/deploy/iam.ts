/**
 * A small IAM evaluator for the rehearsal: does any Allow statement of a role's policies grant one
 * recorded request (action, resource ARN, condition context)? Covers what the function policies use:
 * action and resource wildcards (`*`, `?`), StringEquals, StringLike, their ForAllValues: forms, and
 * Null. Anything else in a condition counts as "not granted", so an unknown operator fails loudly.
 */

export interface RecordedRequest {
  readonly fn: string;
  readonly action: string;
  readonly resource: string;
  /** Condition keys as IAM sees them; multi-valued keys (dynamodb:LeadingKeys) as arrays. */
  readonly context: Readonly<Record<string, string | readonly string[]>>;
}

export interface PolicyStatement {
  readonly Sid?: string;
  readonly Effect: string;
  readonly Action: string | string[];
  readonly Resource: string | string[];
  readonly Condition?: Record<string, Record<string, string | string[]>>;
}

function wildcard(pattern: string, value: string, caseInsensitive = false): boolean {
  const regex = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, caseInsensitive ? 'i' : '');
  return regex.test(value);
}

const list = <T>(value: T | T[] | readonly T[]): T[] => (Array.isArray(value) ? [...value] : [value as T]);

function conditionHolds(operator: string, key: string, expected: string[], context: RecordedRequest['context']): boolean {
  const actual = context[key];
  if (operator === 'Null') {
    const absent = actual === undefined;
    return expected.some((e) => (e === 'true') === absent);
  }
  const forAll = operator.startsWith('ForAllValues:');
  const base = operator.replace(/^ForAllValues:/, '');
  const test = base === 'StringEquals' ? (v: string) => expected.includes(v) : base === 'StringLike' ? (v: string) => expected.some((e) => wildcard(e, v)) : undefined;
  if (!test) return false;
  if (forAll) return actual === undefined || list(actual).every(test);
  return actual !== undefined && list(actual).some(test);
}

export function grantingStatement(request: RecordedRequest, statements: readonly PolicyStatement[]): PolicyStatement | undefined {
  return statements.find(
    (s) =>
      s.Effect === 'Allow' &&
      list(s.Action).some((a) => wildcard(a, request.action, true)) &&
      list(s.Resource).some((r) => wildcard(r, request.resource)) &&
      Object.entries(s.Condition ?? {}).every(([operator, keys]) => Object.entries(keys).every(([key, values]) => conditionHolds(operator, key, list(values), request.context))),
  );
}

/** Every request no statement allows, as readable lines (empty: the policy suffices). */
export function deniedRequests(requests: readonly RecordedRequest[], statementsOf: (fn: string) => readonly PolicyStatement[]): string[] {
  return requests.filter((r) => !grantingStatement(r, statementsOf(r.fn))).map((r) => `${r.fn}: ${r.action} on ${r.resource} ${JSON.stringify(r.context)}`);
}

/** Granted actions no recorded request used, per function. */
export function unusedActions(requests: readonly RecordedRequest[], statementsOf: (fn: string) => readonly PolicyStatement[], fns: readonly string[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const fn of fns) {
    const used = new Set(requests.filter((r) => r.fn === fn).map((r) => r.action.toLowerCase()));
    out[fn] = [...new Set(statementsOf(fn).flatMap((s) => list(s.Action)))].filter((a) => !used.has(a.toLowerCase())).sort();
  }
  return out;
}
