import { parseArgs } from 'node:util';
import { ConfigError } from '../shared/config/schema.js';
import { startLocalStack } from './stack.js';

const USAGE = `Usage: npm start [-- options]

  (no options)         the API on http://localhost:3000 with the bundled sandbox EHR on :3001
  --config FILE        serve the API for this customer config file (its EHRs, no sandbox)
  --port N             API port (default 3000)
  --sandbox            also start the bundled sandbox EHR when --config is given
  --sandbox-port N     sandbox EHR port (default 3001)
  --data DIR           local data folder: session store and keys (default .data)
  --help               this text
`;

function port(value: string | undefined, fallback: number, flag: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    process.stderr.write(`${flag} must be a port number (0-65535), got "${value}"\n`);
    process.exit(2);
  }
  return n;
}

async function main(): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        config: { type: 'string' },
        port: { type: 'string' },
        sandbox: { type: 'boolean' },
        'sandbox-port': { type: 'string' },
        data: { type: 'string' },
        help: { type: 'boolean' },
      },
      strict: true,
    }));
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n\n${USAGE}`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const stack = await startLocalStack({
    port: port(values.port, 3000, '--port'),
    dataDir: values.data ?? '.data',
    configPath: values.config,
    sandbox: values.config === undefined ? true : values.sandbox === true,
    sandboxPort: port(values['sandbox-port'], 3001, '--sandbox-port'),
  });
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
  process.stdout.write(`${lines.join('\n')}\n\nPress Ctrl+C to stop.\n`);
  const stop = () => {
    void stack.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    process.stderr.write(`${error.message}\n\nNothing was started. Fix the problems above and run again.\n`);
  } else {
    process.stderr.write(`smart-launch could not start: ${(error as Error).message}\n`);
  }
  process.exit(1);
});
