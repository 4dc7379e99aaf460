import 'aws-sdk-client-mock-vitest/extend';
import { generateKeyPairSync, sign } from 'node:crypto';
import { GetPublicKeyCommand, KMSClient, SignCommand, type SignCommandInput } from '@aws-sdk/client-kms';
import { mockClient } from 'aws-sdk-client-mock';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { beforeEach, describe, expect, it } from 'vitest';
import { createLaunchHandler } from '../../functions/launch/handler.js';
import { createSessionsHandler } from '../../functions/sessions/handler.js';
import { KmsSigner } from '../../shared/adapters/kms-signer.js';
import { CLIENT_ASSERTION_TYPE } from '../../shared/core/client-assertion.js';
import type { CoreDeps } from '../../shared/core/deps.js';
import { BINDING_COOKIE } from '../../shared/http/cookies.js';
import { sampleConfig, sampleIssuer } from '../fakes/deps.js';
import { EHR_CLIENT_ID } from '../fakes/fake-ehr.js';
import { ehrLaunchQuery, harness } from '../fakes/launch-flow.js';
import { apiEvent, lambdaContext, setCookieValue } from '../fixtures/api-event.js';

/**
 * The handlers with the deployed signer (KmsSigner, KMS mocked to behave like KMS: DER ECDSA
 * signatures, SPKI public keys): what a warm container costs in KMS calls, and that the EHR can
 * verify every assertion through the published keys (AWS-06, docs/design.md §5).
 */

const KEY_ARN = 'arn:aws:kms:us-east-1:111111111111:key/0b7e6d1c-0000-4000-8000-0000000000e3';
const ec = generateKeyPairSync('ec', { namedCurve: 'P-384' });
const kms = new KMSClient({ region: 'us-east-1' });
const kmsMock = mockClient(kms);

beforeEach(() => {
  kmsMock.reset();
  kmsMock.on(GetPublicKeyCommand).resolves({
    $metadata: {},
    KeyId: KEY_ARN,
    PublicKey: new Uint8Array(ec.publicKey.export({ format: 'der', type: 'spki' })),
    KeySpec: 'ECC_NIST_P384',
    KeyUsage: 'SIGN_VERIFY',
    SigningAlgorithms: ['ECDSA_SHA_384'],
  });
  kmsMock.on(SignCommand).callsFake((input: SignCommandInput) => ({
    $metadata: {},
    KeyId: KEY_ARN,
    Signature: new Uint8Array(sign('sha384', input.Message as Uint8Array, { key: ec.privateKey, dsaEncoding: 'der' })),
    SigningAlgorithm: 'ECDSA_SHA_384',
  }));
});

describe('private_key_jwt ES384 with KMS through the handlers (AWS-06)', () => {
  it('signs one assertion per token request with one KMS Sign each; GetPublicKey once per warm container', async () => {
    // Arrange: an EHR that verifies assertions with the keys our JWKS publishes.
    const config = sampleConfig({ issuers: [sampleIssuer({ clientAuth: 'private_key_jwt', clientSecret: undefined, signingAlg: 'ES384' })] });
    const h = await harness({ config });
    h.ehr.smartConfiguration.token_endpoint_auth_methods_supported = ['private_key_jwt'];
    h.ehr.smartConfiguration.token_endpoint_auth_signing_alg_values_supported = ['ES384'];
    h.ehr.smartConfiguration.revocation_endpoint = h.ehr.revocationEndpoint;
    const signer = new KmsSigner({ client: kms, current: { ES384: KEY_ARN } });
    const deps: CoreDeps = { ...h.deps, signer };
    const getDeps = () => Promise.resolve(deps);
    kmsMock.resetHistory();
    const jwks = createLocalJWKSet((await signer.publicJwks()) as unknown as Parameters<typeof createLocalJWKSet>[0]);
    const verified: string[] = [];
    h.ehr.clientAuthenticator = async (call, endpoint) => {
      if (call.form.get('client_assertion_type') !== CLIENT_ASSERTION_TYPE) return false;
      await jwtVerify(call.form.get('client_assertion') ?? '', jwks, { algorithms: ['ES384'], audience: endpoint, issuer: EHR_CLIENT_ID, currentDate: new Date(h.deps.clock.now()) });
      verified.push(endpoint);
      return true;
    };

    // Act: two sign-ins and a logout in one warm container.
    const launch = createLaunchHandler(getDeps);
    const signIn = async () => {
      const launched = await launch(apiEvent({ resource: '/launch', path: '/launch', query: ehrLaunchQuery(h.ehr) as Record<string, string[]> }), lambdaContext);
      const binding = setCookieValue(launched.multiValueHeaders?.['set-cookie'], BINDING_COOKIE)!;
      const authorization = h.ehr.authorize(String(launched.headers!.location));
      const callback = await launch(
        apiEvent({ resource: '/callback', path: '/callback', query: authorization.callbackQuery as Record<string, string[]>, cookies: { [BINDING_COOKIE]: binding } }),
        lambdaContext,
      );
      expect(callback.statusCode).toBe(302);
      return { sessionId: String(callback.headers!.location).split('#session=')[1]!, binding };
    };
    await signIn();
    const second = await signIn();
    const logout = await createSessionsHandler(getDeps)(
      apiEvent({
        resource: '/sessions/{id}/logout',
        path: `/sessions/${second.sessionId}/logout`,
        method: 'POST',
        pathParameters: { id: second.sessionId },
        cookies: { [BINDING_COOKIE]: second.binding },
      }),
      lambdaContext,
    );

    // Assert
    expect(JSON.parse(logout.body)).toEqual({ loggedOut: true, revocation: 'revoked' });
    expect(verified).toEqual([h.ehr.tokenEndpoint, h.ehr.tokenEndpoint, h.ehr.revocationEndpoint]);
    expect(kmsMock).toHaveReceivedCommandTimes(SignCommand, 3);
    expect(kmsMock).toHaveReceivedCommandTimes(GetPublicKeyCommand, 1);
    for (const call of kmsMock.commandCalls(SignCommand)) {
      expect(call.args[0].input).toMatchObject({ KeyId: KEY_ARN, MessageType: 'RAW', SigningAlgorithm: 'ECDSA_SHA_384' });
    }
  });
});
