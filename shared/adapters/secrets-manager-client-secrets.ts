import { GetSecretValueCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { IssuerConfig } from '../config/schema.js';
import type { ClientSecrets } from '../core/ports.js';
import { SmartError } from '../core/errors.js';

/** Client secrets from Secrets Manager, fetched once per container and kept in memory. */
export class SecretsManagerClientSecrets implements ClientSecrets {
  readonly #cache = new Map<string, Promise<string>>();

  constructor(private readonly client: SecretsManagerClient) {}

  get(issuer: IssuerConfig): Promise<string | undefined> {
    const arn = issuer.clientSecret;
    if (arn === undefined) return Promise.resolve(undefined);
    let pending = this.#cache.get(arn);
    if (!pending) {
      pending = this.client
        .send(new GetSecretValueCommand({ SecretId: arn }))
        .then((out) => {
          if (!out.SecretString) throw new SmartError('CLIENT_AUTH_FAILED', 'the client secret in Secrets Manager is empty');
          return out.SecretString;
        })
        .catch((cause: unknown) => {
          this.#cache.delete(arn);
          throw cause instanceof SmartError ? cause : new SmartError('SECRETS_UNAVAILABLE', 'the client secret could not be read', { cause });
        });
      this.#cache.set(arn, pending);
    }
    return pending;
  }
}
