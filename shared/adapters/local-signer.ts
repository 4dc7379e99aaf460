import { createPrivateKey, createPublicKey, generateKeyPair, sign, type KeyObject } from 'node:crypto';
import { chmod, link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { calculateJwkThumbprint, type JWK } from 'jose';
import * as z from '../config/zod.js';
import { KEY_TYPE_OF, publishableJwks } from '../core/client-assertion.js';
import { SmartError } from '../core/errors.js';
import type { AssertionSigningKey, ClientAssertionAlg, ClientSigner, PublicJwk, Random } from '../core/ports.js';

export const SIGNING_KEYS_FILE = 'signing-keys.json';

/** RSA size of the local RS384 key: the same as the deployed KMS key (RSA_3072). */
const RSA_MODULUS_BITS = 3072;

const generate = promisify(generateKeyPair);

const StoredKeySchema = z.object({
  alg: z.enum(['RS384', 'ES384']),
  /** `current` signs and is published; `next` is only published (a successor, for rotation drills). */
  status: z.enum(['current', 'next']),
  privateJwk: z.looseObject({ kty: z.string(), d: z.string() }),
});
const KeyFileSchema = z.object({ v: z.literal(1), keys: z.array(StoredKeySchema).check(z.minLength(1)) });
type KeyFile = z.infer<typeof KeyFileSchema>;

interface LoadedKey {
  readonly alg: ClientAssertionAlg;
  readonly status: 'current' | 'next';
  readonly privateKey: KeyObject;
  readonly jwk: PublicJwk;
}

async function newKey(alg: ClientAssertionAlg): Promise<KeyFile['keys'][number]> {
  const { privateKey } =
    alg === 'RS384'
      ? await generate('rsa', { modulusLength: RSA_MODULUS_BITS, publicExponent: 0x10001 })
      : await generate('ec', { namedCurve: 'P-384' });
  return { alg, status: 'current', privateJwk: privateKey.export({ format: 'jwk' }) as KeyFile['keys'][number]['privateJwk'] };
}

async function loadKey(stored: KeyFile['keys'][number], path: string): Promise<LoadedKey> {
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: stored.privateJwk as JsonWebKeyInput['key'], format: 'jwk' });
  } catch (cause) {
    throw corrupt(path, cause);
  }
  const expected = KEY_TYPE_OF[stored.alg];
  const publicJwk = createPublicKey(privateKey).export({ format: 'jwk' }) as JWK;
  if (publicJwk.kty !== expected.kty || (expected.crv !== undefined && publicJwk.crv !== expected.crv)) throw corrupt(path);
  const kid = await calculateJwkThumbprint(publicJwk, 'sha256');
  return { alg: stored.alg, status: stored.status, privateKey, jwk: { ...(publicJwk as PublicJwk), kid, alg: stored.alg, use: 'sig' } };
}

type JsonWebKeyInput = Extract<Parameters<typeof createPrivateKey>[0], { format: 'jwk' }>;

function corrupt(path: string, cause?: unknown): SmartError {
  return new SmartError('INTERNAL', `local signing key file ${path} is not valid`, {
    cause,
    hint: `Delete ${SIGNING_KEYS_FILE} from the data folder to generate new keys; EHRs that verify through the JWKS URL pick them up on their next fetch.`,
  });
}

/**
 * `ClientSigner` for local runs: an RS384 (RSA 3072) and an ES384 (P-384) key, generated on first use
 * into `{dataDir}/signing-keys.json` (mode 0600) and read back on later runs, so the JWKS the sandbox
 * (or a real EHR's test instance) fetched stays valid across restarts. Keys are created lazily: a
 * local run that never uses `private_key_jwt` pays nothing for them.
 */
export class LocalSigner implements ClientSigner {
  readonly #dataDir: string;
  readonly #random: Random;
  #keys: Promise<LoadedKey[]> | undefined;

  constructor(dataDir: string, random: Random) {
    this.#dataDir = dataDir;
    this.#random = random;
  }

  get path(): string {
    return join(this.#dataDir, SIGNING_KEYS_FILE);
  }

  async publicJwks(): Promise<{ keys: PublicJwk[] }> {
    return publishableJwks((await this.#load()).map((key) => key.jwk));
  }

  async signingKey(alg: ClientAssertionAlg): Promise<AssertionSigningKey> {
    const key = (await this.#load()).find((candidate) => candidate.alg === alg && candidate.status === 'current');
    if (!key) throw new SmartError('CLIENT_AUTH_FAILED', `${this.path} has no current ${alg} key`);
    return {
      kid: key.jwk.kid,
      // RS384: RSASSA-PKCS1-v1_5 with SHA-384 (node's default RSA padding); ES384: r || s, not DER.
      sign: async (signingInput) =>
        new Uint8Array(sign('sha384', signingInput, alg === 'ES384' ? { key: key.privateKey, dsaEncoding: 'ieee-p1363' } : key.privateKey)),
    };
  }

  #load(): Promise<LoadedKey[]> {
    if (!this.#keys) {
      this.#keys = this.#loadOrCreate();
      this.#keys.catch(() => {
        this.#keys = undefined;
      });
    }
    return this.#keys;
  }

  async #loadOrCreate(): Promise<LoadedKey[]> {
    const path = this.path;
    await mkdir(this.#dataDir, { recursive: true, mode: 0o700 });
    let text = await readIfExists(path);
    if (text === undefined) {
      const file: KeyFile = { v: 1, keys: [await newKey('RS384'), await newKey('ES384')] };
      text = await writeOnce(path, `${JSON.stringify(file, null, 2)}\n`, this.#random);
    }
    let parsed: KeyFile;
    try {
      parsed = KeyFileSchema.parse(JSON.parse(text));
    } catch (cause) {
      throw corrupt(path, cause);
    }
    return Promise.all(parsed.keys.map((key) => loadKey(key, path)));
  }
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/**
 * Writes the file under a unique name, then links it into place: `link` fails if the name exists, so
 * two processes starting together agree on one set of keys and nobody reads a half-written file.
 * Answers the text that ended up in place (ours, or the winner's).
 */
async function writeOnce(path: string, text: string, random: Random): Promise<string> {
  const temp = `${path}.${process.pid}.${Buffer.from(random.bytes(6)).toString('hex')}.tmp`;
  await writeFile(temp, text, { mode: 0o600, flag: 'wx' });
  try {
    await chmod(temp, 0o600);
    await link(temp, path);
    return text;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return readFile(path, 'utf8');
    throw error;
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}
