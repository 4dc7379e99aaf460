/**
 * The HTTP contract (docs/design.md §2): one table used by the CDK API and by the local runner, so both
 * serve exactly the same routes with the same function behind each.
 */
export type FunctionName = 'launch' | 'sessions' | 'fhir-proxy' | 'jwks';

export interface Route {
  readonly method: 'GET' | 'POST' | 'OPTIONS' | 'ANY';
  /** API Gateway resource path. */
  readonly resource: string;
  readonly fn: FunctionName;
}

export const ROUTES: readonly Route[] = [
  { method: 'GET', resource: '/launch', fn: 'launch' },
  { method: 'GET', resource: '/callback', fn: 'launch' },
  { method: 'GET', resource: '/sessions/{id}', fn: 'sessions' },
  { method: 'POST', resource: '/sessions/{id}/refresh', fn: 'sessions' },
  { method: 'POST', resource: '/sessions/{id}/logout', fn: 'sessions' },
  // Popup sign-in hand-off to an app in an EHR frame (see shared/core/handoff.ts).
  { method: 'POST', resource: '/sessions/{id}/handoff', fn: 'sessions' },
  { method: 'POST', resource: '/sessions/{id}/handoff/redeem', fn: 'sessions' },
  // CORS preflights of an app served from another origin (answered by the handlers' CORS middleware).
  { method: 'OPTIONS', resource: '/sessions/{id}', fn: 'sessions' },
  { method: 'OPTIONS', resource: '/sessions/{id}/refresh', fn: 'sessions' },
  { method: 'OPTIONS', resource: '/sessions/{id}/logout', fn: 'sessions' },
  { method: 'OPTIONS', resource: '/sessions/{id}/handoff', fn: 'sessions' },
  { method: 'OPTIONS', resource: '/sessions/{id}/handoff/redeem', fn: 'sessions' },
  { method: 'ANY', resource: '/sessions/{id}/fhir/{proxy+}', fn: 'fhir-proxy' },
  // Batch and transaction Bundles, POSTed to the FHIR base itself (shared/core/proxy/bundle-requests.ts).
  { method: 'POST', resource: '/sessions/{id}/fhir', fn: 'fhir-proxy' },
  { method: 'OPTIONS', resource: '/sessions/{id}/fhir', fn: 'fhir-proxy' },
  // OpenID Connect Back-Channel Logout: the EHR's OpenID provider ends sessions (backchannel_logout_uri).
  { method: 'POST', resource: '/backchannel-logout', fn: 'sessions' },
  // The client's public keys, for EHRs that verify private_key_jwt assertions (SMART-REG-03/04).
  { method: 'GET', resource: '/.well-known/jwks.json', fn: 'jwks' },
];

export interface RouteMatch {
  readonly route: Route;
  readonly pathParameters: Record<string, string>;
}

/** Each resource template as a regular expression, compiled once (not on every request). */
let compiled: Array<{ route: Route; pattern: RegExp }> | undefined;

/**
 * Matches a raw request path against the resource templates, as API Gateway does: a REST API routes
 * `/a/b/` to the resource `/a/b` as well, so one trailing slash is ignored (FHIR clients POST a batch
 * to `{fhirBaseUrl}` or `{fhirBaseUrl}/` alike).
 */
export function matchRoute(path: string): Array<RouteMatch> {
  compiled ??= ROUTES.map((route) => ({
    route,
    pattern: new RegExp(
      `^${route.resource
        .split('/')
        .map((part) => {
          if (part.endsWith('+}')) return `(?<${part.slice(1, -2)}>.+)`;
          if (part.startsWith('{')) return `(?<${part.slice(1, -1)}>[^/]+)`;
          return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
        })
        .join('/')}/?$`,
    ),
  }));
  const matches: RouteMatch[] = [];
  for (const { route, pattern } of compiled) {
    // One optional trailing slash in the pattern itself: a greedy `{proxy+}` still keeps it (it is
    // tried first), every other parameter stops at a slash, so one pass decides.
    const found = pattern.exec(path);
    if (found) matches.push({ route, pathParameters: { ...(found.groups ?? {}) } });
  }
  return matches;
}
