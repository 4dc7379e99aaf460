import { parseArgs } from 'node:util';

const USAGE = `Usage: npx tsx local/sandbox/cli.ts [options]

  --port <n>             port to listen on (default 3001; 0 = any free port)
  --host <host>          interface to bind (default 127.0.0.1)
  --launch-url <url>     the app's SMART launch URL (e.g. http://localhost:3000/launch)
  --client-id <id>       confidential client id (default smart-launch-local)
  --client-secret <s>    its client secret, client_secret_basic (default local-sandbox-secret)
  --redirect-uri <url>   its redirect URI; repeat for several (default http://localhost:3000/callback)
  --token-ttl <seconds>  access token lifetime (default 300)
  -h, --help             show this help`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '3001' },
      host: { type: 'string', default: '127.0.0.1' },
      'launch-url': { type: 'string' },
      'client-id': { type: 'string', default: 'smart-launch-local' },
      // A fixed, well-known default is fine here: this is a throwaway local sandbox, not a real EHR.
      'client-secret': { type: 'string', default: 'local-sandbox-secret' },
      'redirect-uri': { type: 'string', multiple: true },
      'token-ttl': { type: 'string', default: '300' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const port = Number(values.port);
  const ttl = Number(values['token-ttl']);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new Error(`--port must be an integer between 0 and 65535, got "${values.port}"`);
  }
  if (!Number.isInteger(ttl) || ttl <= 0) {
    throw new Error(`--token-ttl must be a positive integer, got "${values['token-ttl']}"`);
  }
  const redirectUris = values['redirect-uri'] ?? ['http://localhost:3000/callback'];

  const started = performance.now();
  // Imported only now so that --help and argument errors answer without loading oidc-provider
  // (which prints its Node 20 "unsupported runtime" warning on import) and medplum.
  const { startSandbox } = await import('./index.js');
  const sandbox = await startSandbox({
    port,
    host: values.host,
    launchUrl: values['launch-url'],
    accessTokenTtlSeconds: ttl,
    clients: [
      {
        clientId: values['client-id'],
        clientAuth: 'client_secret_basic',
        clientSecret: values['client-secret'],
        redirectUris,
      },
    ],
  });
  const ms = Math.round(performance.now() - started);

  console.log(`Sandbox EHR ready in ${ms} ms`);
  console.log(`  EHR page:    ${sandbox.url}/`);
  console.log(`  FHIR base:   ${sandbox.fhirBaseUrl}   (iss / aud)`);
  console.log(`  OAuth:       ${sandbox.issuer}`);
  console.log(`  Client:      ${values['client-id']} (client_secret_basic), redirect ${redirectUris.join(', ')}`);
  console.log(`  Admin:       ${sandbox.url}/admin/stats, POST ${sandbox.url}/admin/faults   (loopback only)`);
  if (!values['launch-url']) {
    console.log('  No --launch-url given: the EHR page cannot launch an app.');
  }

  const shutdown = (): void => {
    sandbox.close().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(error);
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  console.error(USAGE);
  process.exit(1);
});
