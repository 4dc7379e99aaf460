/**
 * The `smart-launch` command (`cli/bin.js` runs it through tsx): dispatches to a command and answers
 * the process exit code, writing only through `io`, so it also runs in-process.
 */

export interface BinIo {
  stdout(text: string): void;
  stderr(text: string): void;
}

export const USAGE = `Usage: smart-launch <command> [options]

Commands:
  doctor --config FILE [--mode aws|local] [--launch] [--sign-in [--no-open] [--redirect-uri URI]] [--json]
      check every EHR of a customer config against what the config relies on; --sign-in also signs
      in for real and reports the grant, launch context, refresh token, id_token and proxied reads
  sessions end (--issuer ISS | --fhir-user REF | --all) [--config FILE] [--mode local|aws] [--dry-run]
      end sessions: revoke at the EHR where offered, delete, audit
  audit export --from TIME --to TIME [--mode local|aws]
      the audit trail of a time range as FHIR R4 AuditEvent NDJSON, validated

Run "smart-launch doctor --help" for the options of a command.
`;

export async function binMain(argv: readonly string[], io: BinIo): Promise<number> {
  const [command, ...args] = argv;
  if (command === 'doctor') {
    const { doctorMain } = await import('./doctor.js');
    return doctorMain(args, io);
  }
  if (command === 'sessions' || command === 'audit') {
    const { sessionsMain, auditMain } = await import('./ops.js');
    return (command === 'sessions' ? sessionsMain : auditMain)(args, io);
  }
  if (command === undefined || command === '--help' || command === 'help') {
    io.stdout(USAGE);
    return 0;
  }
  io.stderr(`unknown command "${command}"\n\n${USAGE}`);
  return 2;
}
