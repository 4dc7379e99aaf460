import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/**
 * Scripts the demo app loads besides its own files: the browser SDK, built from `sdk/` on first
 * request (the same esbuild bundle as `npm run build:sdk`, kept in memory), and fhirclient.js's own
 * browser build for the fhirclient.js bridge page.
 */
const SDK_ENTRIES: Readonly<Record<string, string>> = {
  'sdk/index.js': fileURLToPath(new URL('../sdk/index.ts', import.meta.url)),
  'sdk/fhirclient.js': fileURLToPath(new URL('../sdk/fhirclient.ts', import.meta.url)),
};

const built = new Map<string, Promise<string>>();

async function bundle(entry: string): Promise<string> {
  // esbuild is a development dependency: only the local runner serves the demo app.
  const { build } = await import('esbuild');
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    write: false,
    logLevel: 'silent',
    plugins: [
      {
        name: 'core-external',
        setup(b) {
          // The bridge imports the core at run time, as in the published build.
          if (!entry.endsWith('index.ts')) b.onResolve({ filter: /^\.\/index\.js$/ }, () => ({ path: './index.js', external: true }));
        },
      },
    ],
  });
  return result.outputFiles[0]?.text ?? '';
}

/** The script at `relative` under the app path, when it is one of these; `undefined` otherwise. */
export async function sdkAsset(relative: string): Promise<string | undefined> {
  const entry = SDK_ENTRIES[relative];
  if (entry !== undefined) {
    let text = built.get(relative);
    if (!text) {
      text = bundle(entry);
      built.set(relative, text);
      text.catch(() => built.delete(relative));
    }
    return text;
  }
  if (relative === 'vendor/fhir-client.js') {
    const require = createRequire(import.meta.url);
    return readFile(require.resolve('fhirclient/build/fhir-client.pure.min.js'), 'utf8');
  }
  return undefined;
}
