import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildSdk, DIST, type SdkBuild } from '../../sdk/build.js';

/** The published SDK: what `npm run build:sdk` writes and package.json `exports` points at. */
let build: SdkBuild;
beforeAll(async () => {
  build = await buildSdk();
}, 120_000);

describe('the browser SDK package', () => {
  it('builds ES modules and declarations for both entries', async () => {
    for (const file of ['index.js', 'index.d.ts', 'fhirclient.js', 'fhirclient.d.ts']) {
      expect((await readFile(join(DIST, file), 'utf8')).length).toBeGreaterThan(200);
    }
    const types = await readFile(join(DIST, 'index.d.ts'), 'utf8');
    expect(types).toMatch(/export declare function ready\(options\?: SmartLaunchOptions\): Promise<SmartSession>/);
    expect(await readFile(join(DIST, 'fhirclient.d.ts'), 'utf8')).toMatch(/export declare function ready<C extends FhirclientClient>/);
  });

  it('has no runtime dependencies: the core imports nothing, the bridge only the core', async () => {
    const core = await readFile(join(DIST, 'index.js'), 'utf8');
    expect(core).not.toMatch(/^\s*import\s/m);
    expect(core).not.toMatch(/\brequire\(/);
    const bridge = await readFile(join(DIST, 'fhirclient.js'), 'utf8');
    expect([...bridge.matchAll(/^import .* from "([^"]+)";$/gm)].map((m) => m[1])).toEqual(['./index.js']);
    expect(bridge).not.toContain('fhirclient/lib');
  });

  it('resolves through package.json exports as smart-launch/sdk and smart-launch/sdk/fhirclient', async () => {
    const sdk = (await import('smart-launch/sdk' as string)) as Record<string, unknown>;
    expect(Object.keys(sdk).sort()).toEqual(['SessionEndedError', 'SignInRequiredError', 'SmartLaunchError', 'SmartSession', 'ready', 'signInWithPopup']);
    const bridge = (await import('smart-launch/sdk/fhirclient' as string)) as Record<string, unknown>;
    expect(Object.keys(bridge).sort()).toEqual(['ready', 'sessionOf', 'toFhirclient']);
  });

  it('is as small as the README says (minified + gzipped)', async () => {
    const readme = await readFile(join(process.cwd(), 'README.md'), 'utf8');
    const stated = readme.match(/`smart-launch\/sdk` is ([\d.]+) kB minified and gzipped/)?.[1];
    expect(stated).toBeDefined();
    expect(Math.abs(Number(stated) * 1000 - build.gzipBytes.index)).toBeLessThan(300);
    expect(build.gzipBytes.index).toBeLessThan(6000);
    expect(build.gzipBytes.fhirclient).toBeLessThan(1500);
  });
});
