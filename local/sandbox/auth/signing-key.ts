import { randomBytes } from 'node:crypto';
import { exportJWK, generateKeyPair } from 'jose';
import type { CryptoKey, JWK as JoseJWK } from 'jose';

/** The algorithm of the sandbox's id_tokens and JWT access tokens. */
export const SIGNING_ALG = 'RS256';

export interface SigningKey {
  readonly privateKey: CryptoKey;
  readonly privateJwk: JoseJWK;
  readonly publicJwk: JoseJWK;
  readonly kid: string;
}

/** A fresh RS256 key per sandbox start (RS256 is what SMART requires servers to support for id_tokens). */
export async function generateSigningKey(): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(SIGNING_ALG, { extractable: true, modulusLength: 2048 });
  const kid = `sandbox-${randomBytes(6).toString('base64url')}`;
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: SIGNING_ALG, use: 'sig' };
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: SIGNING_ALG, use: 'sig' };
  return { privateKey, privateJwk, publicJwk, kid };
}
