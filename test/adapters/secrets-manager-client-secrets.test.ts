import 'aws-sdk-client-mock-vitest/extend';
import {
  GetSecretValueCommand,
  InternalServiceError,
  ResourceNotFoundException,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { SecretsManagerClientSecrets } from '../../shared/adapters/secrets-manager-client-secrets.js';
import type { IssuerConfig } from '../../shared/config/schema.js';
import { caught } from '../fakes/caught.js';

const SECRET_ARN = 'arn:aws:secretsmanager:us-east-1:111111111111:secret:smart-launch/ehr-client-AbCdEf';
const OTHER_ARN = 'arn:aws:secretsmanager:us-east-1:111111111111:secret:smart-launch/other-client-GhIjKl';
const metadata = { $metadata: {} };

/** Only `clientSecret` is read by the adapter; the rest of the issuer does not matter here. */
const issuer = (clientSecret?: string) => (clientSecret === undefined ? {} : { clientSecret }) as IssuerConfig;

/** A throttled call, as the SDK reports it once its own retries are spent. */
const throttled = () => Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException', $metadata: { httpStatusCode: 400 } });

describe('SecretsManagerClientSecrets', () => {
  const client = new SecretsManagerClient({ region: 'us-east-1' });
  const secrets = mockClient(client);
  let adapter: SecretsManagerClientSecrets;

  beforeEach(() => {
    secrets.reset();
    adapter = new SecretsManagerClientSecrets(client);
  });

  it('asks for exactly the secret the issuer names, by its ARN, and answers its string', async () => {
    // Arrange
    secrets.on(GetSecretValueCommand).resolves({ SecretString: 's3cret-value', ...metadata });

    // Act
    const secret = await adapter.get(issuer(SECRET_ARN));

    // Assert
    expect(secret).toBe('s3cret-value');
    expect(secrets).toHaveReceivedCommandTimes(GetSecretValueCommand, 1);
    expect(secrets.commandCalls(GetSecretValueCommand)[0]!.args[0].input).toStrictEqual({ SecretId: SECRET_ARN });
  });

  it('makes no call for an issuer without a client secret', async () => {
    // Act
    const secret = await adapter.get(issuer());

    // Assert
    expect(secret).toBeUndefined();
    expect(secrets).toHaveReceivedCommandTimes(GetSecretValueCommand, 0);
  });

  it('reads each secret once per container, concurrent callers included, and keeps secrets apart', async () => {
    // Arrange
    secrets.on(GetSecretValueCommand, { SecretId: SECRET_ARN }).resolves({ SecretString: 'first', ...metadata });
    secrets.on(GetSecretValueCommand, { SecretId: OTHER_ARN }).resolves({ SecretString: 'second', ...metadata });

    // Act
    const answers = await Promise.all([adapter.get(issuer(SECRET_ARN)), adapter.get(issuer(SECRET_ARN)), adapter.get(issuer(OTHER_ARN))]);
    const later = await adapter.get(issuer(SECRET_ARN));

    // Assert
    expect([...answers, later]).toEqual(['first', 'first', 'second', 'first']);
    expect(secrets).toHaveReceivedCommandTimes(GetSecretValueCommand, 2);
  });

  it.each([
    ['throttled', throttled],
    ['down (InternalServiceError)', () => new InternalServiceError({ message: 'internal', ...metadata })],
    ['unreachable (network error)', () => Object.assign(new Error('connect ETIMEDOUT'), { name: 'TimeoutError' })],
  ])('answers 503 SECRETS_UNAVAILABLE when Secrets Manager is %s, keeping the cause (invariant 9)', async (_, error) => {
    // Arrange
    const fault = error();
    secrets.on(GetSecretValueCommand).rejects(fault);

    // Act
    const failure = await caught(adapter.get(issuer(SECRET_ARN)));

    // Assert
    expect([failure.status, failure.code, failure.issueType]).toEqual([503, 'SECRETS_UNAVAILABLE', 'transient']);
    expect(failure.message).toBe('the client secret could not be read');
    expect(failure.cause).toBe(fault);
  });

  it('names a missing secret: a 503 whose cause is the ResourceNotFoundException and whose hint sends the administrator to the secret', async () => {
    // Arrange
    const missing = new ResourceNotFoundException({ message: "Secrets Manager can't find the specified secret.", ...metadata });
    secrets.on(GetSecretValueCommand).rejects(missing);

    // Act
    const failure = await caught(adapter.get(issuer(SECRET_ARN)));

    // Assert
    expect([failure.status, failure.code]).toEqual([503, 'SECRETS_UNAVAILABLE']);
    expect(failure.cause).toBe(missing);
    expect(failure.hint).toMatch(/administrator should check the secret/);
  });

  it('refuses an empty secret with CLIENT_AUTH_FAILED (502) instead of sending an empty credential', async () => {
    // Arrange
    secrets.on(GetSecretValueCommand).resolves({ SecretBinary: new Uint8Array([1, 2]), ...metadata });

    // Act
    const failure = await caught(adapter.get(issuer(SECRET_ARN)));

    // Assert
    expect([failure.status, failure.code]).toEqual([502, 'CLIENT_AUTH_FAILED']);
    expect(failure.message).toBe('the client secret in Secrets Manager is empty');
  });

  it('does not keep a failure: the next request reads the secret again and succeeds', async () => {
    // Arrange
    secrets.on(GetSecretValueCommand).rejectsOnce(throttled()).resolves({ SecretString: 'after-the-fault', ...metadata });

    // Act
    const failure = await caught(adapter.get(issuer(SECRET_ARN)));
    const secret = await adapter.get(issuer(SECRET_ARN));

    // Assert
    expect(failure.code).toBe('SECRETS_UNAVAILABLE');
    expect(secret).toBe('after-the-fault');
    expect(secrets).toHaveReceivedCommandTimes(GetSecretValueCommand, 2);
  });
});
