import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { ConfigError } from '../shared/config/schema.js';
import { forceLogLevel, LOG_LEVELS, type LogLevelName } from '../shared/http/logger.js';
import { startLocalStack, type LocalStack } from './stack.js';

const USAGE = `Usage: npm start [-- options]

  (no options)         the API on http://localhost:3000 with the bundled sandbox EHR on :3001
  --config FILE        serve the API for this customer config file (its EHRs, no sandbox)
  --port N             API port (default 3000)
  --sandbox            also start the bundled sandbox EHR when --config is given
  --sandbox-port N     sandbox EHR port (default 3001)
  --data DIR           local data folder: session store and keys (default .data)
  --log-level LEVEL    the handlers' JSON log lines on stdout: TRACE, DEBUG, INFO, WARN, ERROR,
                       CRITICAL or SILENT (default: LOG_LEVEL, else INFO)
  --help               this text
`;

/** Where `cliMain` writes, and when the stack it started stops (the process: on SIGINT/SIGTERM). */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  /** Settles when a started stack should close; `cliMain` then closes it and answers 0. */
  readonly stop: Promise<void>;
  /** Told once the stack listens (after the banner is written). */
  started?(stack: LocalStack): void | Promise<void>;
}

class UsageError extends Error {}

function port(value: string | undefined, fallback: number, flag: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`${flag} must be a port number (0-65535), got "${value}"\n`);
  return n;
}

function logLevel(value: string): LogLevelName {
  const level = value.toUpperCase();
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got "${value}"\n`);
  return level as LogLevelName;
}

/**
 * `npm start`: parses the options, starts the local stack, prints what to register with the EHR and
 * serves until `io.stop` settles. Answers the process exit code: 0 (help, or stopped), 1 (nothing
 * started: an invalid config or a failed start), 2 (a usage error).
 */
export async function cliMain(argv: readonly string[], io: CliIo): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        config: { type: 'string' },
        port: { type: 'string' },
        sandbox: { type: 'boolean' },
        'sandbox-port': { type: 'string' },
        data: { type: 'string' },
        'log-level': { type: 'string' },
        help: { type: 'boolean' },
      },
      strict: true,
    }));
  } catch (error) {
    io.stderr(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout(USAGE);
    return 0;
  }
  let stack: LocalStack;
  let restoreLogLevel: (() => void) | undefined;
  try {
    if (values['log-level'] !== undefined) restoreLogLevel = forceLogLevel(logLevel(values['log-level']));
    stack = await startLocalStack({
      port: port(values.port, 3000, '--port'),
      dataDir: values.data ?? '.data',
      configPath: values.config,
      sandbox: values.config === undefined ? true : values.sandbox === true,
      sandboxPort: port(values['sandbox-port'], 3001, '--sandbox-port'),
    });
  } catch (error) {
    restoreLogLevel?.();
    if (error instanceof UsageError) {
      io.stderr(error.message);
      return 2;
    }
    if (error instanceof ConfigError) {
      io.stderr(`${error.message}\n\nNothing was started. Fix the problems above and run again.\n`);
    } else {
      io.stderr(`smart-launch could not start: ${(error as Error).message}\n`);
    }
    return 1;
  }
  const lines = [
    '',
    'smart-launch is running',
    `  API         ${stack.apiUrl}`,
    `  app         ${stack.appUrl}`,
    `  register    launch ${stack.config.publicUrl}/launch · redirect ${stack.config.publicUrl}/callback · JWKS ${stack.config.publicUrl}/.well-known/jwks.json`,
    `  customer    ${stack.config.customer} (${stack.config.issuers.length} issuer${stack.config.issuers.length === 1 ? '' : 's'})`,
  ];
  if (stack.sandbox) {
    lines.push(`  sandbox EHR ${stack.sandbox.url}  (FHIR base ${stack.sandbox.fhirBaseUrl})`, '', `Open ${stack.sandbox.url}/ and press "Launch app" on a patient.`);
  } else {
    lines.push('', `Launch from your EHR with ${stack.apiUrl}/launch?iss=…&launch=…, or open ${stack.apiUrl}/launch for a standalone launch.`);
  }
  io.stdout(`${lines.join('\n')}\n\nPress Ctrl+C to stop.\n`);
  try {
    await io.started?.(stack);
    await io.stop;
  } finally {
    await stack.close();
    restoreLogLevel?.();
  }
  return 0;
}

/** Whether this module runs as the program (`npm start` is `tsx local/cli.ts`) rather than imported. */
function isMain(): boolean {
  try {
    return process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
  } catch {
    return false;
  }
}
if (isMain()) {
  const stop = new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  const code = await cliMain(process.argv.slice(2), {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
    stop,
  });
  process.exit(code);
}
