import { describe, expect, it } from 'vitest';
import { matchRoute } from '../../shared/http/routes.js';

/** The resource and path parameters of every route a path matches, in table order. */
const matched = (path: string) => matchRoute(path).map(({ route, pathParameters }) => `${route.method} ${route.resource} ${JSON.stringify(pathParameters)}`);

describe('matchRoute (API Gateway resource matching, run by the local runner)', () => {
  it('matches a path to its resources, with their path parameters', () => {
    expect(matched('/launch')).toEqual(['GET /launch {}']);
    expect(matched('/sessions/abc/refresh')).toEqual(['POST /sessions/{id}/refresh {"id":"abc"}', 'OPTIONS /sessions/{id}/refresh {"id":"abc"}']);
    expect(matched('/sessions/abc/fhir/Patient/1')).toEqual(['ANY /sessions/{id}/fhir/{proxy+} {"id":"abc","proxy":"Patient/1"}']);
  });

  it('ignores one trailing slash as API Gateway does, which a greedy {proxy+} keeps', () => {
    // FHIR clients POST a batch to `{fhirBaseUrl}` or `{fhirBaseUrl}/` alike.
    expect(matched('/sessions/abc/fhir/')).toEqual(['POST /sessions/{id}/fhir {"id":"abc"}', 'OPTIONS /sessions/{id}/fhir {"id":"abc"}']);
    expect(matched('/launch/')).toEqual(['GET /launch {}']);
    expect(matched('/sessions/abc/')).toEqual(['GET /sessions/{id} {"id":"abc"}', 'OPTIONS /sessions/{id} {"id":"abc"}']);
    expect(matched('/sessions/abc/fhir/Patient/1/')).toEqual(['ANY /sessions/{id}/fhir/{proxy+} {"id":"abc","proxy":"Patient/1/"}']);
  });

  it('matches nothing for two trailing slashes, an unknown path or a parameter spanning segments', () => {
    expect(matched('/launch//')).toEqual([]);
    expect(matched('/sessions/abc//')).toEqual([]);
    expect(matched('/nope')).toEqual([]);
    expect(matched('/sessions/a/b')).toEqual([]);
    expect(matched('/sessions//refresh')).toEqual([]);
  });
});
