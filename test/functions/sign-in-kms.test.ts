import { DecryptCommand, GenerateDataKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { createFhirProxyHandler } from '../../functions/fhir-proxy/handler.js';
import { createLaunchHandler } from '../../functions/launch/handler.js';
import { createSessionsHandler } from '../../functions/sessions/handler.js';
import { KmsKeyRing } from '../../shared/adapters/kms-key-ring.js';
import { BINDING_COOKIE } from '../../shared/http/cookies.js';
import { harness, ehrLaunchQuery } from '../fakes/launch-flow.js';
import { deps as testDeps } from '../fakes/deps.js';
import { behaveLikeKms, KMS_KEY_ID } from '../fakes/fake-kms.js';
import { apiEvent, lambdaContext, setCookieValue } from '../fixtures/api-event.js';

const kms = new KMSClient({ region: 'us-east-1' });
const kmsMock = mockClient(kms);


beforeEach(() => {
  kmsMock.reset();
  behaveLikeKms(kmsMock);
});

describe('KMS calls of a sign-in through the handlers (aws-sdk-client-mock)', () => {
  it('makes no KMS call for an anonymous launch and exactly one GenerateDataKey at the callback, with the encryption context naming the session record (invariant 6)', async () => {
    // Arrange
    const h = await harness();
    const deps = { ...testDeps({ http: h.ehr.http, clock: h.deps.clock }), keyRing: new KmsKeyRing({ client: kms, keyId: KMS_KEY_ID }) };
    const getDeps = () => Promise.resolve(deps);
    const launchHandler = createLaunchHandler(getDeps);
    const query = ehrLaunchQuery(h.ehr) as Record<string, string[]>;

    // Act: launch
    const launched = await launchHandler(apiEvent({ resource: '/launch', path: '/launch', query }), lambdaContext);

    // Assert: an anonymous launch costs KMS nothing (a flood costs no KMS money)
    expect(launched.statusCode).toBe(302);
    expect(kmsMock).toHaveReceivedCommandTimes(GenerateDataKeyCommand, 0);
    expect(kmsMock).toHaveReceivedCommandTimes(DecryptCommand, 0);
    const [txn] = deps.store.transactions();

    // Act: the EHR redirects back
    const binding = setCookieValue(launched.multiValueHeaders?.['set-cookie'], BINDING_COOKIE)!;
    const authorization = h.ehr.authorize(String(launched.headers!.location));
    const callback = await launchHandler(
      apiEvent({ resource: '/callback', path: '/callback', query: authorization.callbackQuery as Record<string, string[]>, cookies: { [BINDING_COOKIE]: binding } }),
      lambdaContext,
    );

    // Assert: one data key per sign-in, for the session record the launch named; no Decrypt
    expect(callback.statusCode).toBe(302);
    expect(kmsMock).toHaveReceivedCommandTimes(GenerateDataKeyCommand, 1);
    expect(kmsMock).toHaveReceivedCommandTimes(DecryptCommand, 0);
    const generate = kmsMock.commandCalls(GenerateDataKeyCommand)[0]!.args[0].input;
    expect(generate).toStrictEqual({
      KeyId: KMS_KEY_ID,
      KeySpec: 'AES_256',
      EncryptionContext: { service: 'smart-launch', customer: deps.config.customer, session: expect.stringMatching(/^ses#[A-Za-z0-9_-]{43}$/) },
    });
    expect(generate.EncryptionContext?.session).toBe(txn!.sessionKey);

    // Act: the app reads its context and a FHIR resource
    const sessionId = String(callback.headers!.location).split('#session=')[1]!;
    const cookies = { [BINDING_COOKIE]: binding };
    const view = await createSessionsHandler(getDeps)(
      apiEvent({ resource: '/sessions/{id}', path: `/sessions/${sessionId}`, pathParameters: { id: sessionId }, cookies }),
      lambdaContext,
    );
    expect(view.statusCode).toBe(200);
    expect(kmsMock).toHaveReceivedCommandTimes(GenerateDataKeyCommand, 1);
    const contexts = kmsMock.commandCalls(DecryptCommand).map((c) => c.args[0].input.EncryptionContext);
    expect(new Set(contexts.map((c) => JSON.stringify(c)))).toEqual(new Set([JSON.stringify(generate.EncryptionContext)]));
  });

  it('refuses a session whose wrapped key was copied from another session: KMS is asked with the other context and says no (invariant 6)', async () => {
    const h = await harness();
    const deps = { ...testDeps({ http: h.ehr.http, clock: h.deps.clock }), keyRing: new KmsKeyRing({ client: kms, keyId: KMS_KEY_ID }) };
    const getDeps = () => Promise.resolve(deps);
    const launchHandler = createLaunchHandler(getDeps);
    const signIn = async () => {
      const launched = await launchHandler(apiEvent({ resource: '/launch', path: '/launch', query: ehrLaunchQuery(h.ehr) as Record<string, string[]> }), lambdaContext);
      const binding = setCookieValue(launched.multiValueHeaders?.['set-cookie'], BINDING_COOKIE)!;
      const authorization = h.ehr.authorize(String(launched.headers!.location));
      const callback = await launchHandler(
        apiEvent({ resource: '/callback', path: '/callback', query: authorization.callbackQuery as Record<string, string[]>, cookies: { [BINDING_COOKIE]: binding } }),
        lambdaContext,
      );
      return { sessionId: String(callback.headers!.location).split('#session=')[1]!, binding };
    };
    const victim = await signIn();
    const attacker = await signIn();
    const [victimRecord, attackerRecord] = deps.store.sessions();
    // Overwrite the attacker's record with the victim's sealed tokens and wrapped key.
    deps.store.replace({ ...attackerRecord!, wrappedKey: victimRecord!.wrappedKey, sealed: victimRecord!.sealed });
    expect(victim.sessionId).not.toBe(attacker.sessionId);

    const result = await createFhirProxyHandler(getDeps)(
      apiEvent({
        resource: '/sessions/{id}/fhir/{proxy+}',
        path: `/sessions/${attacker.sessionId}/fhir/Patient/1`,
        pathParameters: { id: attacker.sessionId, proxy: 'Patient/1' },
        cookies: { [BINDING_COOKIE]: attacker.binding },
      }),
      lambdaContext,
    );

    expect(result.statusCode).toBe(401);
    expect(JSON.parse(result.body)).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ code: 'security', details: { coding: [{ code: 'VAULT_INTEGRITY' }] } }] });
  });
});
