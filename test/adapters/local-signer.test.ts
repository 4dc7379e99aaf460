import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalSigner, SIGNING_KEYS_FILE } from '../../shared/adapters/local-signer.js';
import { cryptoRandom } from '../../shared/adapters/system.js';
import { createClientAssertion } from '../../shared/core/client-assertion.js';
import { seedSigningKeys } from '../fixtures/keys.js';

const TOKEN_URL = 'http://127.0.0.1:3001/oauth/token';
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'smart-launch-signer-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('LocalSigner', () => {
  // Key generation (an RSA 3072 key costs about a second of CPU) is this test's subject, so it runs
  // here only: two signers starting together on an empty data folder, each generating its own keys
  // (the race of two processes starting at once), who must end up with one key set in one file.
  it('generates an RSA 3072 (RS384) and a P-384 (ES384) key on first use into signing-keys.json, mode 0600, one key set when two signers start together (SMART-REG-05)', async () => {
    await expect(stat(join(dir, SIGNING_KEYS_FILE))).rejects.toMatchObject({ code: 'ENOENT' });

    const [a, b] = await Promise.all([new LocalSigner(dir, cryptoRandom).publicJwks(), new LocalSigner(dir, cryptoRandom).publicJwks()]);

    expect(a).toEqual(b);
    const { keys } = a;
    expect((await stat(join(dir, SIGNING_KEYS_FILE))).mode & 0o777).toBe(0o600);
    expect(keys.map((k) => [k.kty, k.alg, k.use])).toEqual([
      ['RSA', 'RS384', 'sig'],
      ['EC', 'ES384', 'sig'],
    ]);
    expect(Buffer.from(keys[0]!.n!, 'base64url').length * 8).toBe(3072);
    expect(keys[1]!.crv).toBe('P-384');
    expect(JSON.stringify(keys)).not.toMatch(/"d":/);
    // What was written reads back after a restart as the very same keys (same kids).
    expect(await new LocalSigner(dir, cryptoRandom).publicJwks()).toEqual({ keys });
  });

  it('reads the same keys back after a restart, so the kid and the published JWKS stay the same', async () => {
    // The key file of an earlier run (pooled keys: generation itself is the first test's subject).
    await seedSigningKeys(dir);
    const first = await new LocalSigner(dir, cryptoRandom).publicJwks();
    const second = await new LocalSigner(dir, cryptoRandom).publicJwks();

    expect(second).toEqual(first);
  });

  it.each(['RS384', 'ES384'] as const)('signs %s assertions that verify with its JWKS, kid = the key\'s thumbprint', async (alg) => {
    await seedSigningKeys(dir);
    const signer = new LocalSigner(dir, cryptoRandom);

    const jwt = await createClientAssertion(signer, { clientId: 'local', audience: TOKEN_URL, alg, now: Date.now() }, cryptoRandom);

    const jwks = await signer.publicJwks();
    expect(decodeProtectedHeader(jwt).kid).toBe(jwks.keys.find((k) => k.alg === alg)!.kid);
    await expect(
      jwtVerify(jwt, createLocalJWKSet(jwks as unknown as Parameters<typeof createLocalJWKSet>[0]), { algorithms: [alg], audience: TOKEN_URL, issuer: 'local', subject: 'local' }),
    ).resolves.toBeDefined();
  });

  it('publishes a "next" key from the file without signing with it (rotation drill)', async () => {
    await seedSigningKeys(dir, 0);
    const signer = new LocalSigner(dir, cryptoRandom);
    await signer.publicJwks();
    const file = JSON.parse(await readFile(join(dir, SIGNING_KEYS_FILE), 'utf8')) as { keys: Array<{ alg: string; status: string; privateJwk: unknown }> };
    const otherDir = await mkdtemp(join(tmpdir(), 'smart-launch-signer-next-'));
    await seedSigningKeys(otherDir, 1);
    const other = new LocalSigner(otherDir, cryptoRandom);
    await other.publicJwks();
    const otherFile = JSON.parse(await readFile(other.path, 'utf8')) as typeof file;
    await rm(otherDir, { recursive: true, force: true });
    file.keys.push({ ...otherFile.keys[1]!, status: 'next' });
    await writeFile(join(dir, SIGNING_KEYS_FILE), JSON.stringify(file));

    const rotated = new LocalSigner(dir, cryptoRandom);
    const { keys } = await rotated.publicJwks();
    const jwt = await createClientAssertion(rotated, { clientId: 'local', audience: TOKEN_URL, alg: 'ES384', now: Date.now() }, cryptoRandom);

    expect(keys).toHaveLength(3);
    expect(decodeProtectedHeader(jwt).kid).toBe(keys[1]!.kid);
    expect(decodeProtectedHeader(jwt).kid).not.toBe(keys[2]!.kid);
  });

  it('refuses a corrupt key file with a hint instead of regenerating keys silently', async () => {
    await writeFile(join(dir, SIGNING_KEYS_FILE), '{"v":1,"keys":[]}');

    await expect(new LocalSigner(dir, cryptoRandom).publicJwks()).rejects.toMatchObject({
      code: 'INTERNAL',
      hint: expect.stringContaining(SIGNING_KEYS_FILE),
    });
  });
});
