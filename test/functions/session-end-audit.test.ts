import { describe, expect, it } from 'vitest';
import { createFhirProxyHandler } from '../../functions/fhir-proxy/handler.js';
import { createSessionsHandler } from '../../functions/sessions/handler.js';
import type { AuditRecord } from '../../shared/audit/record.js';
import { auditedRefresher, noteAudit, recordsOf, sessionFacts } from '../../shared/audit/trail.js';
import { ensureFreshSession } from '../../shared/core/refresh.js';
import { openSession } from '../../shared/core/session.js';
import type { CoreDeps } from '../../shared/core/deps.js';
import type { HttpClient } from '../../shared/core/ports.js';
import { BINDING_COOKIE } from '../../shared/http/cookies.js';
import type { MetricPoint } from '../../shared/ops/metric-points.js';
import { metricPoints } from '../../shared/ops/metrics.js';
import { apiEvent, lambdaContext } from '../fixtures/api-event.js';
import { json } from '../fakes/fake-ehr.js';
import { harness, signIn } from '../fakes/launch-flow.js';
import { caught } from '../fakes/caught.js';

/**
 * A refresh the EHR refuses ends the session: the audit trail holds exactly one `session-end` for it
 * (cause `refresh-rejected`), and `SessionEnds` counts it once, whichever of the audit hooks saw the
 * refusal (the refresher a route runs its renewal through, and the route's own outcome).
 */
describe('the session end of a refused refresh is recorded once', () => {
  it('a refresh route whose renewal runs through the audited refresher records one session-end, and counts one SessionEnds', async () => {
    // Arrange: a signed-in session whose refresh token the EHR no longer accepts.
    const h = await harness();
    const { callback, launch } = await signIn(h);
    const session = await openSession(callback.sessionId, launch.bindingSecret, h.deps);
    h.ehr.tokenAnswer = () => json({ error: 'invalid_grant', error_description: 'revoked' }, 400);
    const event = apiEvent({ resource: '/sessions/{id}/refresh', path: `/sessions/${callback.sessionId}/refresh`, method: 'POST', pathParameters: { id: callback.sessionId } });
    noteAudit(event, sessionFacts(h.deps, session));

    // Act: the renewal is refused, through the audited refresher; the route answers that refusal.
    const error = await caught(auditedRefresher(event, ensureFreshSession)(session, h.deps, { force: true }));
    const records = recordsOf(event, 'refresh', 401, 'REFRESH_REJECTED', 'acme', h.deps.clock.now());
    const points = metricPoints({ group: 'sessions', event, config: h.deps.config, status: 401, error });

    // Assert
    expect(error).toMatchObject({ code: 'SESSION_NOT_OPEN', details: { notOpen: 'refresh-refused' } });
    expect(records.filter((record) => record.action === 'session-end')).toMatchObject([{ cause: 'refresh-rejected', code: 'REFRESH_REJECTED' }]);
    expect(points.filter((point) => point.name === 'SessionEnds')).toEqual([{ name: 'SessionEnds', dimensions: { Issuer: h.ehr.fhirBase, Cause: 'refresh-rejected' }, value: 1, unit: 'Count' }]);
  });

  it('a refresh route that renews directly still records its one session-end', async () => {
    // Arrange
    const h = await harness();
    const { callback } = await signIn(h);
    const event = apiEvent({ resource: '/sessions/{id}/refresh', path: `/sessions/${callback.sessionId}/refresh`, method: 'POST', pathParameters: { id: callback.sessionId } });

    // Act
    const records = recordsOf(event, 'refresh', 401, 'REFRESH_REJECTED', 'acme', h.deps.clock.now());

    // Assert
    expect(records.map((record) => record.action)).toEqual(['session-end', 'refresh']);
  });

  it('several requests waiting on one refresh the EHR refuses: one session-end in the audit trail and one SessionEnds, from the request that refreshed', async () => {
    // Arrange: an expired access token, and an EHR that answers the one refresh once every request is waiting on it.
    const h = await harness();
    const { callback, launch } = await signIn(h);
    let answer!: () => void;
    const answered = new Promise<void>((resolve) => (answer = resolve));
    h.ehr.tokenAnswer = async () => {
      await answered;
      return json({ error: 'invalid_grant', error_description: 'revoked' }, 400);
    };
    // The fake EHR's answers honour the request's abort signal, as fetch does.
    const http: HttpClient = (url, init) =>
      new Promise((resolve, reject) => {
        init?.signal?.addEventListener('abort', () => reject(init.signal!.reason));
        h.ehr.http(url, init).then(resolve, reject);
      });
    const records: AuditRecord[] = [];
    const points: MetricPoint[] = [];
    const deps: CoreDeps = { ...h.deps, http, audit: { write: async (written) => void records.push(...written) }, metrics: { publish: (published) => void points.push(...published) } };
    h.deps.clock.advance(3_600_000);
    const cookies = { [BINDING_COOKIE]: launch.bindingSecret! };
    const request = (resource: string, path: string, requestId: string, method = 'GET') => {
      const base = apiEvent({ resource, path: `/sessions/${callback.sessionId}/${path}`, method, pathParameters: { id: callback.sessionId, proxy: path.replace(/^fhir\//, '') }, cookies });
      return { ...base, requestContext: { ...base.requestContext, requestId } };
    };
    const sessions = createSessionsHandler(async () => deps);
    const proxy = createFhirProxyHandler(async () => deps);

    // Act: a renewal and two proxied reads at once; the EHR answers once all three are under way.
    const answers = Promise.all([
      sessions(request('/sessions/{id}/refresh', 'refresh', 'renew-1', 'POST'), lambdaContext),
      proxy(request('/sessions/{id}/fhir/{proxy+}', 'fhir/Patient/123', 'read-1'), lambdaContext),
      proxy(request('/sessions/{id}/fhir/{proxy+}', 'fhir/Patient/123', 'read-2'), lambdaContext),
    ]);
    for (let tick = 0; tick < 3; tick++) await new Promise((resolve) => setImmediate(resolve));
    answer();
    const statuses = (await answers).map((result) => result.statusCode);

    // Assert: one refresh reached the EHR; every request was told to sign in again; one session end.
    expect(h.ehr.requests.filter((call) => call.body?.includes('grant_type=refresh_token'))).toHaveLength(1);
    expect(statuses).toEqual([401, 401, 401]);
    expect(records.filter((record) => record.action === 'session-end')).toMatchObject([{ cause: 'refresh-rejected', correlationId: 'renew-1' }]);
    expect(points.filter((point) => point.name === 'SessionEnds')).toHaveLength(1);
  });
});
