#!/usr/bin/env node
// The `smart-launch` command of this package (`npx smart-launch doctor --config customers/acme.json`).
// The commands are TypeScript, run through tsx: no build step.
import { register } from 'tsx/esm/api';

register();

const USAGE = `Usage: smart-launch <command> [options]

Commands:
  doctor --config FILE [--mode aws|local] [--launch] [--json]
      check every EHR of a customer config against what the config relies on
  sessions end (--issuer ISS | --fhir-user REF | --all) [--config FILE] [--mode local|aws] [--dry-run]
      end sessions: revoke at the EHR where offered, delete, audit
  audit export --from TIME --to TIME [--mode local|aws]
      the audit trail of a time range as FHIR R4 AuditEvent NDJSON, validated

Run "smart-launch doctor --help" for the options of a command.
`;

const [command, ...args] = process.argv.slice(2);
if (command === 'doctor') {
  const { doctorMain } = await import('./doctor.ts');
  process.exitCode = await doctorMain(args, {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
  });
} else if (command === 'sessions' || command === 'audit') {
  const { sessionsMain, auditMain } = await import('./ops.ts');
  const io = { stdout: (text) => process.stdout.write(text), stderr: (text) => process.stderr.write(text) };
  process.exitCode = await (command === 'sessions' ? sessionsMain : auditMain)(args, io);
} else if (command === undefined || command === '--help' || command === 'help') {
  process.stdout.write(USAGE);
} else {
  process.stderr.write(`unknown command "${command}"\n\n${USAGE}`);
  process.exitCode = 2;
}
