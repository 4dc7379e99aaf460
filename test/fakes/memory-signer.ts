import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { rsa2048 } from '../fixtures/keys.js';
import type { AssertionSigningKey, ClientAssertionAlg, ClientSigner, PublicJwk } from '../../shared/core/ports.js';

interface Key {
  readonly alg: ClientAssertionAlg;
  readonly privateKey: KeyObject;
  readonly jwk: PublicJwk;
}

/** RSA 2048 for speed in unit tests (the adapters use 3072); the pooled test key (test/fixtures/keys.ts), never committed. */
let keys: Promise<Key[]> | undefined;

async function makeKeys(): Promise<Key[]> {
  const rsa = rsa2048();
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const out: Key[] = [];
  for (const [alg, pair] of [['RS384', rsa], ['ES384', ec]] as const) {
    const jwk = pair.publicKey.export({ format: 'jwk' }) as JWK;
    const kid = await calculateJwkThumbprint(jwk, 'sha256');
    out.push({ alg, privateKey: pair.privateKey, jwk: { ...(jwk as PublicJwk), kid, alg, use: 'sig' } });
  }
  return out;
}

/**
 * `ClientSigner` for core tests: one RS384 and one ES384 key in memory. Counts the signatures it made
 * and can be told to answer DER-encoded ECDSA signatures (what KMS returns before conversion).
 */
export class MemorySigner implements ClientSigner {
  signatures = 0;
  /** Answer ES384 signatures DER-encoded instead of `r || s` (a broken adapter). */
  derSignatures = false;

  async publicJwks(): Promise<{ keys: PublicJwk[] }> {
    return { keys: (await (keys ??= makeKeys())).map((key) => key.jwk) };
  }

  async signingKey(alg: ClientAssertionAlg): Promise<AssertionSigningKey> {
    const key = (await (keys ??= makeKeys())).find((candidate) => candidate.alg === alg)!;
    return {
      kid: key.jwk.kid,
      sign: async (input) => {
        this.signatures += 1;
        const options = alg === 'ES384' ? { key: key.privateKey, dsaEncoding: this.derSignatures ? ('der' as const) : ('ieee-p1363' as const) } : key.privateKey;
        return new Uint8Array(sign('sha384', input, options));
      },
    };
  }
}
