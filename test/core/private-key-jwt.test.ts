import { createLocalJWKSet, decodeJwt, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { CLIENT_ASSERTION_TYPE } from '../../shared/core/client-assertion.js';
import { endSession } from '../../shared/core/logout.js';
import type { ClientAssertionAlg } from '../../shared/core/ports.js';
import { ensureFreshSession } from '../../shared/core/refresh.js';
import { openSession } from '../../shared/core/session.js';
import { sampleConfig, sampleIssuer } from '../fakes/deps.js';
import { EHR_CLIENT_ID, json, type TokenCall } from '../fakes/fake-ehr.js';
import { ehrLaunchQuery, harness, signIn, type Harness } from '../fakes/launch-flow.js';
import { MemorySigner } from '../fakes/memory-signer.js';

interface Presented {
  readonly endpoint: string;
  readonly assertion: string;
}

/**
 * A fake EHR that authenticates the client only by a `private_key_jwt` assertion it verifies with
 * the client's published keys: signature, `iss` = `sub` = client id, `aud` = the endpoint the request
 * reached, `exp`, the algorithm, no Basic header, and a `jti` it has not seen before.
 */
async function jwtHarness(alg: ClientAssertionAlg, issuerOverrides: Record<string, unknown> = {}) {
  const signer = new MemorySigner();
  const config = sampleConfig({ issuers: [sampleIssuer({ clientAuth: 'private_key_jwt', clientSecret: undefined, signingAlg: alg, ...issuerOverrides })] });
  const base = await harness({ config });
  const h: Harness = { ehr: base.ehr, deps: { ...base.deps, signer } };
  h.ehr.smartConfiguration.revocation_endpoint = h.ehr.revocationEndpoint;
  h.ehr.smartConfiguration.token_endpoint_auth_methods_supported = ['client_secret_basic', 'private_key_jwt'];
  const presented: Presented[] = [];
  const seen = new Set<string>();
  const jwks = createLocalJWKSet((await signer.publicJwks()) as unknown as Parameters<typeof createLocalJWKSet>[0]);
  const verify = async (call: TokenCall, endpoint: string): Promise<boolean> => {
    const assertion = call.form.get('client_assertion');
    if (call.headers.authorization !== undefined || call.form.get('client_assertion_type') !== CLIENT_ASSERTION_TYPE || assertion === null) return false;
    presented.push({ endpoint, assertion });
    try {
      const { payload } = await jwtVerify(assertion, jwks, {
        algorithms: [alg],
        issuer: EHR_CLIENT_ID,
        subject: EHR_CLIENT_ID,
        audience: endpoint,
        typ: 'JWT',
        currentDate: new Date(h.deps.clock.now()),
      });
      if (typeof payload.jti !== 'string' || seen.has(payload.jti)) return false;
      seen.add(payload.jti);
      return true;
    } catch {
      return false;
    }
  };
  h.ehr.clientAuthenticator = verify;
  return { h, signer, presented, verify };
}

describe('private_key_jwt through the core flows (SMART-CAUTH-04..07)', () => {
  it.each(['RS384', 'ES384'] as const)('%s: code exchange, refresh and revocation each authenticate with a fresh assertion for their own endpoint', async (alg) => {
    // Arrange
    const { h, presented, verify } = await jwtHarness(alg);
    h.ehr.tokenAnswer = async (call) =>
      (await verify(call, h.ehr.tokenEndpoint))
        ? json({ access_token: 'at-2', token_type: 'Bearer', expires_in: 3600, refresh_token: 'rt-2', scope: 'launch openid fhirUser patient/*.rs offline_access' })
        : json({ error: 'invalid_client' }, 401);

    // Act: sign in (code exchange), refresh now, log out (revocation).
    const { callback, launch } = await signIn(h);
    h.deps.clock.advance(1000);
    const session = await openSession(callback.sessionId, launch.bindingSecret, h.deps);
    const refreshed = await ensureFreshSession(session, h.deps, { force: true });
    const outcome = await endSession(refreshed, h.deps);

    // Assert
    expect(refreshed.secrets.accessToken).toBe('at-2');
    expect(outcome).toEqual({ revocation: 'revoked', status: 200 });
    expect(h.ehr.revoked).toEqual(['rt-2']);
    expect(presented.map((p) => p.endpoint)).toEqual([h.ehr.tokenEndpoint, h.ehr.tokenEndpoint, h.ehr.revocationEndpoint]);
    for (const { endpoint, assertion } of presented) {
      expect(decodeJwt(assertion).aud).toBe(endpoint);
    }
    expect(new Set(presented.map((p) => decodeJwt(p.assertion).jti)).size).toBe(3);
    for (const request of [...h.ehr.tokenRequests(), ...h.ehr.requestsTo(h.ehr.revocationEndpoint)]) {
      expect(request.headers.authorization).toBeUndefined();
      expect(new URLSearchParams(request.body).has('client_id')).toBe(false);
    }
  });

  it('sends client_id with every authenticated request when the issuer asks for it (sendClientIdWithAuth)', async () => {
    const { h } = await jwtHarness('RS384', { sendClientIdWithAuth: true });

    await signIn(h);

    expect(new URLSearchParams(h.ehr.tokenRequests()[0]?.body).get('client_id')).toBe(EHR_CLIENT_ID);
  });

  it('answers CLIENT_AUTH_FAILED with a restart link when the EHR refuses the assertion (SMART-TOKEN-11)', async () => {
    const { h } = await jwtHarness('ES384');
    h.ehr.clientAuthenticator = () => false;

    await expect(signIn(h)).rejects.toMatchObject({ code: 'CLIENT_AUTH_FAILED', status: 502, retryUrl: expect.stringContaining('/launch?iss=') });
    expect(h.deps.store.sessions()).toHaveLength(0);
  });

  it('refuses the launch before any redirect when discovery lists the EHR\'s assertion algorithms without ours (SMART-CAUTH-09)', async () => {
    const { h, signer } = await jwtHarness('RS384');
    h.ehr.smartConfiguration.token_endpoint_auth_signing_alg_values_supported = ['ES384'];

    const { startLaunch } = await import('../../shared/core/launch.js');
    await expect(startLaunch(ehrLaunchQuery(h.ehr), undefined, h.deps)).rejects.toMatchObject({
      code: 'CLIENT_AUTH_FAILED',
      message: 'the EHR does not accept RS384 client assertions (it lists ES384)',
      hint: expect.stringContaining('"signingAlg": "ES384"'),
    });
    expect(h.deps.store.transactions()).toHaveLength(0);
    expect(signer.signatures).toBe(0);
  });

  it('launches when discovery lists the configured algorithm (SMART-CAUTH-09)', async () => {
    const { h } = await jwtHarness('ES384');
    h.ehr.smartConfiguration.token_endpoint_auth_signing_alg_values_supported = ['RS256', 'ES384'];

    const { callback } = await signIn(h);

    expect(callback.sessionId).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });
});
