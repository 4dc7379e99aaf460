/**
 * Builds the browser SDK into `sdk/dist/`: ES modules (`index.js`, `fhirclient.js`, readable, with
 * source maps), their `.d.ts` declarations, and minified copies whose gzipped size is reported (the
 * figure in the README). `npm run build:sdk`.
 */
import { execFileSync } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const SDK_DIR = dirname(fileURLToPath(import.meta.url));
export const DIST = join(SDK_DIR, 'dist');
const ENTRIES = ['index', 'fhirclient'] as const;

export interface SdkBuild {
  /** Minified and gzipped bytes per entry (the bridge holds neither the core nor fhirclient itself). */
  readonly gzipBytes: Readonly<Record<(typeof ENTRIES)[number], number>>;
}

export async function buildSdk(): Promise<SdkBuild> {
  await rm(DIST, { recursive: true, force: true });
  const common = { bundle: true, format: 'esm', platform: 'browser', target: 'es2022', logLevel: 'silent' } as const;
  // The bridge imports the core (`./index.js`) at run time: one SDK state per page, one set of classes.
  const coreExternal = {
    name: 'core-external',
    setup(b: { onResolve(o: { filter: RegExp }, f: () => { path: string; external: boolean }): void }) {
      b.onResolve({ filter: /^\.\/index\.js$/ }, () => ({ path: './index.js', external: true }));
    },
  };
  for (const entry of ENTRIES) {
    const plugins = entry === 'index' ? [] : [coreExternal];
    await build({ ...common, plugins, entryPoints: [join(SDK_DIR, `${entry}.ts`)], outfile: join(DIST, `${entry}.js`), sourcemap: true });
    await build({ ...common, plugins, entryPoints: [join(SDK_DIR, `${entry}.ts`)], outfile: join(DIST, `${entry}.min.js`), minify: true });
  }
  const tsc = join(SDK_DIR, '..', 'node_modules', '.bin', 'tsc');
  execFileSync(tsc, ['-p', join(SDK_DIR, 'tsconfig.json')], { stdio: 'inherit' });
  const gzipBytes = { index: 0, fhirclient: 0 };
  for (const entry of ENTRIES) gzipBytes[entry] = gzipSync(await readFile(join(DIST, `${entry}.min.js`)), { level: 9 }).length;
  return { gzipBytes };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { gzipBytes } = await buildSdk();
  for (const [entry, bytes] of Object.entries(gzipBytes)) process.stdout.write(`sdk/dist/${entry}.min.js: ${bytes} bytes minified + gzipped\n`);
}
