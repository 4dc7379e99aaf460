import { SmartError } from './errors.js';

/**
 * SMART scope syntax v1 ↔ v2 (SMART-SCOPE-01/02), for EHRs that accept only one of them (Epic apps pin
 * a "SMART Scope Version" at registration; SMART v1 servers know nothing of `.rs`). Pure: no I/O.
 *
 * - v1 → v2 is exact: `.read` = `.rs`, `.write` = `.cud`, `.*` = `.cruds`.
 * - v2 → v1 is exact for `.rs`, `.cud` and `.cruds`. Other permission sets have no v1 form and get
 *   the smallest v1 scope that covers them (`.r` → `.read`, `.crud` → `.*`), reported as broadened.
 *   Granular scopes (`patient/Observation.rs?category=…`) exist only in v2 and are refused: dropping
 *   the constraint would ask for far more than the customer configured.
 * - Every other token (`launch`, `openid`, extension scopes, malformed resource scopes) is left alone.
 *
 * @see https://hl7.org/fhir/smart-app-launch/STU2.2/scopes-and-launch-context.html
 */

export type ScopeSyntax = 'v1' | 'v2';
/** The `scopeSyntax` setting of an issuer: a syntax, or `auto` (decided from discovery). */
export type ScopeSyntaxSetting = 'auto' | ScopeSyntax;

export interface ScopeRewrite {
  /** The scope to send, space-separated, duplicates removed, order kept. */
  readonly scope: string;
  /** Tokens that were rewritten, `from` → `to`. */
  readonly rewritten: ReadonlyArray<{ readonly from: string; readonly to: string }>;
  /** Configured tokens whose v1 form asks for more than they did (no exact v1 equivalent). */
  readonly broadened: readonly string[];
}

const URI_PREFIX = 'http://smarthealthit.org/fhir/scopes/';
const RESOURCE_SCOPE = /^((?:patient|user|system)\/(?:\*|[A-Z][A-Za-z]{0,63}))\.([A-Za-z*]+)(\?.*)?$/;
const V2_PERMISSIONS = /^(?=.)c?r?u?d?s?$/;
const V1_TO_V2: Readonly<Record<string, string>> = { read: 'rs', write: 'cud', '*': 'cruds' };

function rewriteToken(token: string, syntax: ScopeSyntax): { to: string; broadened: boolean } {
  const prefix = token.startsWith(URI_PREFIX) ? URI_PREFIX : '';
  const match = RESOURCE_SCOPE.exec(token.slice(prefix.length));
  if (!match) return { to: token, broadened: false };
  const [, subject, access = '', query] = match;
  if (syntax === 'v2') {
    const v2 = V1_TO_V2[access];
    return { to: v2 === undefined || query !== undefined ? token : `${prefix}${subject}.${v2}`, broadened: false };
  }
  if (!V2_PERMISSIONS.test(access)) return { to: token, broadened: false };
  if (query !== undefined) {
    throw new SmartError('SCOPE_NOT_EXPRESSIBLE', `the granular scope "${token.slice(0, 200)}" has no SMART v1 form`, {
      details: { scope: token.slice(0, 200) },
    });
  }
  const reads = ['r', 's'].filter((p) => access.includes(p)).length;
  const writes = ['c', 'u', 'd'].filter((p) => access.includes(p)).length;
  const v1 = reads > 0 && writes > 0 ? '*' : reads > 0 ? 'read' : 'write';
  const exact = v1 === '*' ? access === 'cruds' : v1 === 'read' ? reads === 2 : writes === 3;
  return { to: `${prefix}${subject}.${v1}`, broadened: !exact };
}

/**
 * Rewrites the resource scopes of `scope` into `syntax`. Throws `SCOPE_NOT_EXPRESSIBLE` for a granular
 * scope when `syntax` is v1.
 */
export function rewriteScopes(scope: string, syntax: ScopeSyntax): ScopeRewrite {
  const out: string[] = [];
  const rewritten: Array<{ from: string; to: string }> = [];
  const broadened: string[] = [];
  for (const token of scope.split(' ').filter(Boolean)) {
    const result = rewriteToken(token, syntax);
    if (result.to !== token) rewritten.push({ from: token, to: result.to });
    if (result.broadened) broadened.push(token);
    if (!out.includes(result.to)) out.push(result.to);
  }
  return { scope: out.join(' '), rewritten, broadened };
}

/**
 * The syntax to send to an EHR, or `undefined` to send the scope as configured. `auto` follows the
 * `permission-v1` / `permission-v2` capabilities (SMART-DISC-08) when exactly one is advertised.
 */
export function effectiveScopeSyntax(setting: ScopeSyntaxSetting | undefined, capabilities: readonly string[]): ScopeSyntax | undefined {
  if (setting === 'v1' || setting === 'v2') return setting;
  const v1 = capabilities.includes('permission-v1');
  const v2 = capabilities.includes('permission-v2');
  if (v1 && !v2) return 'v1';
  if (v2 && !v1) return 'v2';
  return undefined;
}
