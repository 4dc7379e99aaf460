#!/usr/bin/env node
// The `smart-launch` command of this package (`npx smart-launch doctor --config customers/acme.json`).
// The commands are TypeScript, run through tsx: no build step. The dispatch is `binMain` in main.ts.
import { register } from 'tsx/esm/api';

register();

const { binMain } = await import('./main.ts');
process.exitCode = await binMain(process.argv.slice(2), {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
});
