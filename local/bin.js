#!/usr/bin/env node
// The `smart-launch` command of this package (`npx smart-launch doctor --config customers/acme.json`).
// The commands are TypeScript, run through tsx: no build step.
import { register } from 'tsx/esm/api';

register();

const USAGE = `Usage: smart-launch <command> [options]

Commands:
  doctor --config FILE [--mode aws|local] [--launch] [--json]
      check every EHR of a customer config against what the config relies on

Run "smart-launch doctor --help" for the options of a command.
`;

const [command, ...args] = process.argv.slice(2);
if (command === 'doctor') {
  const { doctorMain } = await import('./doctor.ts');
  process.exitCode = await doctorMain(args, {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
  });
} else if (command === undefined || command === '--help' || command === 'help') {
  process.stdout.write(USAGE);
} else {
  process.stderr.write(`unknown command "${command}"\n\n${USAGE}`);
  process.exitCode = 2;
}
