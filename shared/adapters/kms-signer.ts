import { createPublicKey } from 'node:crypto';
import { GetPublicKeyCommand, SignCommand, type KMSClient, type SigningAlgorithmSpec } from '@aws-sdk/client-kms';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { publishableJwks } from '../core/client-assertion.js';
import { SmartError } from '../core/errors.js';
import type { AssertionSigningKey, ClientAssertionAlg, ClientSigner, PublicJwk, ReadablePublicJwks } from '../core/ports.js';

/** How each assertion algorithm signs in KMS (AWS-06). */
export const KMS_SIGNING: Readonly<Record<ClientAssertionAlg, { readonly algorithm: SigningAlgorithmSpec; readonly keySpecs: readonly string[] }>> = {
  RS384: { algorithm: 'RSASSA_PKCS1_V1_5_SHA_384', keySpecs: ['RSA_2048', 'RSA_3072', 'RSA_4096'] },
  ES384: { algorithm: 'ECDSA_SHA_384', keySpecs: ['ECC_NIST_P384'] },
};

/** P-384 field elements are 48 octets: r and s each, in the 96-byte JOSE signature. */
const P384_COORDINATE_BYTES = 48;

function malformed(why: string): SmartError {
  return new SmartError('KEYRING_UNAVAILABLE', `the key service returned a malformed ECDSA signature (${why})`, {
    details: { operation: 'Sign' },
  });
}

/** Reads one DER length (X.690 §8.1.3: short form, or long form of one or two octets) at `offset`. */
function readLength(der: Uint8Array, offset: number): { length: number; next: number } {
  const first = der[offset];
  if (first === undefined) throw malformed('truncated length');
  if (first < 0x80) return { length: first, next: offset + 1 };
  const octets = first & 0x7f;
  if (octets === 0 || octets > 2) throw malformed('unsupported length form');
  let length = 0;
  for (let i = 1; i <= octets; i += 1) {
    const octet = der[offset + i];
    if (octet === undefined) throw malformed('truncated length');
    length = length * 256 + octet;
  }
  if (length < 0x80) throw malformed('non-minimal length');
  return { length, next: offset + 1 + octets };
}

/** One DER INTEGER at `offset`, as `size` big-endian octets (leading sign/pad octets removed, left-padded). */
function readInteger(der: Uint8Array, offset: number, size: number): { value: Uint8Array; next: number } {
  if (der[offset] !== 0x02) throw malformed('expected INTEGER');
  const { length, next } = readLength(der, offset + 1);
  if (length === 0 || next + length > der.length) throw malformed('INTEGER length');
  let bytes = der.subarray(next, next + length);
  if ((bytes[0] as number) & 0x80) throw malformed('negative INTEGER');
  // A leading 0x00 is only there to keep a value with its high bit set positive.
  while (bytes.length > 1 && bytes[0] === 0x00) bytes = bytes.subarray(1);
  if (bytes.length > size) throw malformed('INTEGER longer than the curve order');
  const value = new Uint8Array(size);
  value.set(bytes, size - bytes.length);
  return { value, next: next + length };
}

/**
 * KMS answers ECDSA signatures DER-encoded (`ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`,
 * RFC 3279 §2.2.3); JWS needs `r || s`, each left-padded to the coordinate size (RFC 7518 §3.4).
 * DER integers drop leading zero octets and add a 0x00 when the high bit is set, so r and s arrive
 * as anything from 1 to size+1 octets.
 */
export function derToJoseSignature(der: Uint8Array, size = P384_COORDINATE_BYTES): Uint8Array {
  if (der[0] !== 0x30) throw malformed('expected SEQUENCE');
  const { length, next } = readLength(der, 1);
  if (next + length !== der.length) throw malformed('SEQUENCE length');
  const r = readInteger(der, next, size);
  const s = readInteger(der, r.next, size);
  if (s.next !== der.length) throw malformed('trailing data');
  const out = new Uint8Array(size * 2);
  out.set(r.value, 0);
  out.set(s.value, size);
  return out;
}

export interface KmsSignerOptions {
  readonly client: KMSClient;
  /** Key id or ARN of the asymmetric key that signs each algorithm now. */
  readonly current: Readonly<Partial<Record<ClientAssertionAlg, string>>>;
  /** Keys published in the JWKS but not used to sign yet: the successors, during a rotation. */
  readonly next?: readonly string[];
}

interface KmsPublicKey {
  readonly keyId: string;
  readonly alg: ClientAssertionAlg;
  readonly jwk: PublicJwk;
}

function algOfKeySpec(keySpec: string | undefined): ClientAssertionAlg | undefined {
  return (Object.keys(KMS_SIGNING) as ClientAssertionAlg[]).find((alg) => KMS_SIGNING[alg].keySpecs.includes(keySpec ?? ''));
}

function kmsError(operation: string, error: unknown): SmartError {
  if (error instanceof SmartError) return error;
  const name = error instanceof Error ? error.name : 'unknown';
  return new SmartError('KEYRING_UNAVAILABLE', 'the client assertion key could not be used', {
    cause: error,
    details: { operation, awsError: name },
  });
}

/**
 * `ClientSigner` on asymmetric KMS keys (AWS-06, SMART-CAUTH-08): the private keys never leave KMS.
 * RS384 signs `RSASSA_PKCS1_V1_5_SHA_384` with an RSA key, ES384 `ECDSA_SHA_384` with an
 * `ECC_NIST_P384` key, both over the raw JWS signing input (`MessageType: RAW`, so KMS hashes it).
 * Public keys come from `GetPublicKey` once per key per container; `kid` is the RFC 7638 thumbprint
 * of the public JWK, so it is the same in every container and across deployments.
 *
 * Rotation: the JWKS publishes every configured key (`current` and `next`); only `current` signs.
 * Add the successor as `next`, wait until the EHRs have re-fetched the JWKS, then make it `current`.
 */
export class KmsSigner implements ClientSigner {
  readonly #client: KMSClient;
  readonly #current: Readonly<Partial<Record<ClientAssertionAlg, string>>>;
  readonly #next: readonly string[];
  readonly #keys = new Map<string, Promise<KmsPublicKey>>();

  constructor(options: KmsSignerOptions) {
    this.#client = options.client;
    this.#current = { ...options.current };
    this.#next = [...(options.next ?? [])];
  }

  /** Every key id this signer publishes, current ones first. */
  get keyIds(): string[] {
    return [...new Set([...Object.values(this.#current), ...this.#next])];
  }

  async publicJwks(): Promise<{ keys: PublicJwk[] }> {
    const keys = await Promise.all(this.keyIds.map((keyId) => this.#publicKey(keyId)));
    return publishableJwks(keys.map((key) => key.jwk));
  }

  async readablePublicJwks(): Promise<ReadablePublicJwks> {
    const ids = this.keyIds;
    const results = await Promise.allSettled(ids.map((keyId) => this.#publicKey(keyId)));
    const keys: PublicJwk[] = [];
    const unreadable: { keyId: string; error: unknown }[] = [];
    results.forEach((result, index) => {
      if (result.status === 'fulfilled') keys.push(result.value.jwk);
      else unreadable.push({ keyId: ids[index] as string, error: result.reason });
    });
    return { keys: publishableJwks(keys).keys, unreadable };
  }

  async signingKey(alg: ClientAssertionAlg): Promise<AssertionSigningKey> {
    const keyId = this.#current[alg];
    if (keyId === undefined) {
      throw new SmartError('CLIENT_AUTH_FAILED', `no ${alg} signing key is configured`, {
        hint: `Deploy the stack with an issuer whose "signingAlg" is ${alg}: it creates the KMS key and sets its id on the functions.`,
      });
    }
    const key = await this.#publicKey(keyId);
    if (key.alg !== alg) {
      throw new SmartError('KEYRING_UNAVAILABLE', `the configured ${alg} signing key is a ${key.alg} key`, { details: { operation: 'GetPublicKey' } });
    }
    return {
      kid: key.jwk.kid,
      sign: async (signingInput) => {
        let signature: Uint8Array | undefined;
        try {
          const output = await this.#client.send(
            new SignCommand({ KeyId: keyId, Message: signingInput, MessageType: 'RAW', SigningAlgorithm: KMS_SIGNING[alg].algorithm }),
          );
          signature = output.Signature;
        } catch (error) {
          throw kmsError('Sign', error);
        }
        if (signature === undefined || signature.length === 0) {
          throw new SmartError('KEYRING_UNAVAILABLE', 'the key service returned no signature', { details: { operation: 'Sign' } });
        }
        return alg === 'ES384' ? derToJoseSignature(signature) : new Uint8Array(signature);
      },
    };
  }

  #publicKey(keyId: string): Promise<KmsPublicKey> {
    let pending = this.#keys.get(keyId);
    if (!pending) {
      pending = this.#fetchPublicKey(keyId);
      // A failure (throttling, a missing grant) is not cached: the next request asks again.
      pending.catch(() => this.#keys.delete(keyId));
      this.#keys.set(keyId, pending);
    }
    return pending;
  }

  async #fetchPublicKey(keyId: string): Promise<KmsPublicKey> {
    let output;
    try {
      output = await this.#client.send(new GetPublicKeyCommand({ KeyId: keyId }));
    } catch (error) {
      throw kmsError('GetPublicKey', error);
    }
    const alg = algOfKeySpec(output.KeySpec);
    if (output.KeyUsage !== 'SIGN_VERIFY' || alg === undefined || output.PublicKey === undefined) {
      throw new SmartError('KEYRING_UNAVAILABLE', 'a configured client assertion key is not an RSA or P-384 signing key', {
        details: { operation: 'GetPublicKey', keySpec: output.KeySpec ?? 'none', keyUsage: output.KeyUsage ?? 'none' },
      });
    }
    if (output.SigningAlgorithms !== undefined && !output.SigningAlgorithms.includes(KMS_SIGNING[alg].algorithm)) {
      throw new SmartError('KEYRING_UNAVAILABLE', `a configured client assertion key does not offer ${KMS_SIGNING[alg].algorithm}`, {
        details: { operation: 'GetPublicKey' },
      });
    }
    const exported = createPublicKey({ key: Buffer.from(output.PublicKey), format: 'der', type: 'spki' }).export({ format: 'jwk' }) as JWK;
    const kid = await calculateJwkThumbprint(exported, 'sha256');
    return { keyId, alg, jwk: { ...(exported as PublicJwk), kid, alg, use: 'sig' } };
  }
}
