import { KMSClient } from '@aws-sdk/client-kms';
import { KmsSigner } from '../adapters/kms-signer.js';
import { ENV } from '../config/env.js';
import { tracer } from '../ops/tracing.js';

function optional(name: string): string | undefined {
  const value = process.env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

let signer: KmsSigner | null | undefined;

/**
 * The client assertion signer of a deployed stack, built once per container from the key ids the
 * CDK construct sets (`ENV.signingKeyRs384`, `ENV.signingKeyEs384`: the keys that sign now;
 * `ENV.signingKeysNext`: successors that are only published); `undefined` when the stack has no
 * assertion key (no issuer uses `private_key_jwt`). Public keys are fetched once per key per container.
 * Its own module, so the JWKS function loads the KMS client only (no DynamoDB, no Secrets Manager).
 */
export function awsSigner(): KmsSigner | undefined {
  if (signer === undefined) {
    const rs384 = optional(ENV.signingKeyRs384);
    const es384 = optional(ENV.signingKeyEs384);
    const next = (optional(ENV.signingKeysNext) ?? '')
      .split(',')
      .map((id) => id.trim())
      .filter((id) => id !== '');
    signer =
      rs384 === undefined && es384 === undefined && next.length === 0
        ? null
        : new KmsSigner({
            client: tracer.captureAWSv3Client(new KMSClient({})),
            current: { ...(rs384 ? { RS384: rs384 } : {}), ...(es384 ? { ES384: es384 } : {}) },
            next,
          });
  }
  return signer ?? undefined;
}

/** Forgets the container's signer (tests that change the environment). */
export function resetAwsSigner(): void {
  signer = undefined;
}
