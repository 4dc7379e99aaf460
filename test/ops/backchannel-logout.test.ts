import { describe, expect, it } from 'vitest';
import { BACKCHANNEL_LOGOUT_EVENT } from '../../shared/core/backchannel-logout.js';
import type { CoreDeps } from '../../shared/core/deps.js';
import { DiscoveryCache } from '../../shared/core/discovery.js';
import { openSession } from '../../shared/core/session.js';
import { backchannelLogout, LOGOUT_DISCOVERY_RETRY_MS, type BackchannelLogoutLog } from '../../shared/ops/backchannel-logout.js';
import { FixedClock } from '../fakes/clock.js';
import { deps as testDeps } from '../fakes/deps.js';
import { FakeEhr, json } from '../fakes/fake-ehr.js';
import { harness, signIn } from '../fakes/launch-flow.js';
import { MemoryKeyRing } from '../fakes/memory-key-ring.js';
import { sessionStoreOnLocalTable } from '../fixtures/local-table.js';

/*
 * Carrying out a back-channel logout: the token's validation, the issuers' discovery, the jti's
 * replay memory and the sessions it ends, on a real (dynalite) table and the fake EHR.
 */

const localStore = sessionStoreOnLocalTable('bcl-ops');

/** Collects what the receiver reports, by level. */
function collectingLog() {
  const entries: Array<{ level: 'warn' | 'error'; message: string; attributes: Record<string, unknown> }> = [];
  const log: BackchannelLogoutLog = {
    warn: (message, attributes) => entries.push({ level: 'warn', message, attributes }),
    error: (message, attributes) => entries.push({ level: 'error', message, attributes }),
  };
  return { entries, log };
}

const store = localStore;

describe('backchannelLogout (ops): the receiver of an EHR\'s logout tokens', () => {
  it('JWT-shaped tokens cost an EHR whose discovery fails one request per 30 s, not one per token', async () => {
    // Arrange
    const clock = new FixedClock();
    const ehr = await FakeEhr.create({ clock });
    const deps = { ...testDeps({ clock, http: ehr.http }), discovery: new DiscoveryCache(), store: store() };
    ehr.discoveryAnswer = () => json({ error: 'down' }, 500);
    const forged = `${Buffer.from('{"alg":"RS256","kid":"x"}').toString('base64url')}.${Buffer.from('{"iss":"https://op.example"}').toString('base64url')}.c2ln`;
    const discoveries = () => ehr.requests.filter((request) => request.url.endsWith('/.well-known/smart-configuration')).length;
    const { entries, log } = collectingLog();

    // Act + Assert
    for (let i = 0; i < 5; i++) {
      await expect(backchannelLogout(forged, deps, { operationId: 'op-1', log })).resolves.toMatchObject({ outcome: 'refused', check: 'iss' });
    }
    expect(discoveries()).toBe(1);
    expect(entries).toEqual([{ level: 'warn', message: 'back-channel logout: discovery of an issuer failed', attributes: { iss: ehr.fhirBase, code: expect.any(String) } }]);

    clock.advance(LOGOUT_DISCOVERY_RETRY_MS);
    await expect(backchannelLogout(forged, deps, { operationId: 'op-2', log })).resolves.toMatchObject({ outcome: 'refused' });
    expect(discoveries()).toBe(2);
  });

  it('a store that cannot remember logout tokens nor find sessions is STORE_UNAVAILABLE, before any request to the EHR', async () => {
    // Arrange: the in-memory store has neither rememberOnce nor scanSessions.
    const h = await harness();
    const token = await h.ehr.signIdToken({ jti: 'no-store-1', events: { [BACKCHANNEL_LOGOUT_EVENT]: {} }, exp: undefined });

    // Act + Assert
    await expect(backchannelLogout(token, h.deps, { operationId: 'op-1', log: collectingLog().log })).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    expect(h.ehr.requests).toEqual([]);
  });

  it('ends the matching session and says by which claim; the same token again is refused as a replay', async () => {
    // Arrange
    const sessions = store();
    const h = await harness({ deps: { store: sessions as never } });
    const { callback, launch } = await signIn(h);
    const deps: CoreDeps = { ...h.deps, store: sessions };
    const token = await h.ehr.signIdToken({ jti: 'ended-1', events: { [BACKCHANNEL_LOGOUT_EVENT]: {} }, exp: undefined, fhirUser: undefined });
    const { entries, log } = collectingLog();

    // Act
    const outcome = await backchannelLogout(token, deps, { operationId: 'op-1', log });

    // Assert
    expect(outcome).toEqual({ outcome: 'ended', issuer: h.ehr.issuer, by: 'sub', ended: 1 });
    await expect(openSession(callback.sessionId, launch.bindingSecret, deps)).rejects.toMatchObject({ code: 'SESSION_NOT_OPEN' });
    await expect(backchannelLogout(token, deps, { operationId: 'op-2', log })).resolves.toMatchObject({ outcome: 'refused', check: 'jti' });
    expect(entries).toEqual([]);
  });

  it('a sign-out that could not be carried out is LOGOUT_INCOMPLETE with the session left as it was, and the EHR\'s retry of the same token then ends it', async () => {
    // Arrange: a session in the table, and a receiver whose key ring cannot open it (KMS failing for this container).
    const sessions = store();
    const h = await harness({ deps: { store: sessions as never } });
    const { callback, launch } = await signIn(h);
    const deps: CoreDeps = { ...h.deps, store: sessions };
    const token = await h.ehr.signIdToken({ jti: 'retried-1', events: { [BACKCHANNEL_LOGOUT_EVENT]: {} }, exp: undefined, fhirUser: undefined });
    const { entries, log } = collectingLog();

    // Act: the first delivery fails to open the session.
    const failed = backchannelLogout(token, { ...deps, keyRing: new MemoryKeyRing() }, { operationId: 'op-1', log });

    // Assert: an error (the EHR would otherwise believe the user signed out), logged, and the session is still there.
    await expect(failed).rejects.toMatchObject({ code: 'LOGOUT_INCOMPLETE', details: { failedSessions: 1 } });
    expect(entries).toMatchObject([{ level: 'error', message: 'back-channel logout: sessions could not be ended', attributes: { issuer: h.ehr.issuer, ended: 0 } }]);
    await expect(openSession(callback.sessionId, launch.bindingSecret, deps)).resolves.toBeDefined();

    // Act: the EHR sends the same token again, and this time the session opens.
    const retried = await backchannelLogout(token, deps, { operationId: 'op-2', log });

    // Assert: accepted (not refused as a replay), and the session is ended; a third delivery is a replay.
    expect(retried).toMatchObject({ outcome: 'ended', ended: 1 });
    await expect(openSession(callback.sessionId, launch.bindingSecret, deps)).rejects.toMatchObject({ code: 'SESSION_NOT_OPEN' });
    await expect(backchannelLogout(token, deps, { operationId: 'op-3', log })).resolves.toMatchObject({ outcome: 'refused', check: 'jti' });
  });
});
