import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { DynamoSessionStore } from '../shared/adapters/dynamo-session-store.js';
import { CachingKeyRing } from '../shared/adapters/caching-key-ring.js';
import { FileAuditSink } from '../shared/adapters/file-audit-sink.js';
import { LocalKeyRing } from '../shared/adapters/local-key-ring.js';
import { LocalSigner } from '../shared/adapters/local-signer.js';
import { cryptoRandom, fetchHttpClient, systemClock } from '../shared/adapters/system.js';
import { parseConfig, parseConfigText, type Config, type IssuerConfig } from '../shared/config/schema.js';
import type { CoreDeps } from '../shared/core/deps.js';
import { OpenSessionCache } from '../shared/core/session-cache.js';
import { DiscoveryCache } from '../shared/core/discovery.js';
import { JwksCache } from '../shared/core/id-token.js';
import type { Clock, HttpClient } from '../shared/core/ports.js';
import { jwksUrl, launchUrl, redirectUri } from '../shared/core/urls.js';
import type { MetricsSink } from '../shared/ops/metrics.js';
import { createStreamingFhirProxyHandler } from '../functions/fhir-proxy/handler.js';
import { createJwksHandler } from '../functions/jwks/handler.js';
import { createLaunchHandler } from '../functions/launch/handler.js';
import { createSessionsHandler } from '../functions/sessions/handler.js';
import { createRequestListener, RequestsInFlight } from './api-server.js';
import { startLocalDynamo, type LocalDynamo } from './dynamo-local.js';
import type { Sandbox, SandboxClient, SigningKey } from './sandbox/index.js';

export const LOCAL_CLIENT = { clientId: 'smart-launch-local', clientSecret: 'local-sandbox-secret' } as const;
export const LOCAL_PUBLIC_CLIENT = 'smart-launch-public';
/** How long a local run serves discovery without asking the EHR again (deployed stacks: 5 minutes). */
export const LOCAL_DISCOVERY_FRESH_MS = 10_000;
/** A `private_key_jwt` client at the sandbox: it verifies assertions with the keys at this API's JWKS URL. */
export const LOCAL_JWT_CLIENT = 'smart-launch-jwt';

/** `{apiUrl}/.well-known/jwks.json`: where EHRs (and the sandbox) fetch this client's public keys. */
export const jwksUrlOf = jwksUrl;

/** The embedded defaults: one confidential client at the bundled sandbox EHR. */
export function sampleConfig(apiUrl: string, fhirBaseUrl: string): unknown {
  return {
    customer: 'local-sandbox',
    publicUrl: apiUrl,
    app: { url: `${apiUrl}/app/` },
    issuers: [
      {
        iss: fhirBaseUrl,
        clientId: LOCAL_CLIENT.clientId,
        clientAuth: 'client_secret_basic',
        clientSecret: LOCAL_CLIENT.clientSecret,
        scope: 'launch openid fhirUser patient/*.rs offline_access',
        default: true,
      },
    ],
  };
}

export interface LocalStackOptions {
  /** API port; 0 for an ephemeral one. */
  readonly port: number;
  /** The local data folder (store and keys); survives restarts. */
  readonly dataDir: string;
  /** A config file; without one the embedded sample config is used with the sandbox. */
  readonly configPath?: string | undefined;
  /** Builds the config once the ports are known (tests); takes precedence over `configPath`. */
  readonly configure?: ((urls: { apiUrl: string; sandbox: Sandbox | undefined }) => unknown) | undefined;
  /** Start the bundled sandbox EHR: always without a config file, on request with one. */
  readonly sandbox?: boolean | undefined;
  /** Sandbox port; 0 for an ephemeral one. */
  readonly sandboxPort?: number | undefined;
  /** The sandbox's registered clients; by default a confidential and a public client for this API. */
  readonly sandboxClients?: ((apiUrl: string) => SandboxClient[]) | undefined;
  /** Replaces the outbound HTTP client (tests that watch what the API fetches). */
  readonly http?: HttpClient | undefined;
  /** The API's clock (default: the system clock); tests pass one that skips waits instead of sleeping. */
  readonly clock?: Clock | undefined;
  /** Publishes operational metrics (tests read the EMF); local runs publish none by default. */
  readonly metrics?: MetricsSink | undefined;
  /** The sandbox's clock for access token expiry (default: the system clock); tests move it instead of waiting. */
  readonly sandboxClock?: Pick<Clock, 'now'> | undefined;
  /** The sandbox's signing key (default: a fresh one per start); tests pass a pooled key. */
  readonly sandboxSigningKey?: SigningKey | undefined;
  /**
   * Keeps the DynamoDB store in memory instead of on disk under the data folder (tests that never
   * reopen the folder); by default it is on disk, so sessions survive a restart.
   */
  readonly inMemoryStore?: boolean | undefined;
}

export interface LocalStack {
  readonly apiUrl: string;
  readonly appUrl: string;
  readonly config: Config;
  readonly sandbox: Sandbox | undefined;
  readonly dynamo: LocalDynamo;
  readonly deps: CoreDeps;
  /** Requests the API is handling now (tests wait for a whole burst to have arrived). */
  readonly requestsInFlight: RequestsInFlight;
  close(): Promise<void>;
}

function defaultClients(apiUrl: string): SandboxClient[] {
  return [
    { clientId: LOCAL_CLIENT.clientId, clientAuth: 'client_secret_basic', clientSecret: LOCAL_CLIENT.clientSecret, redirectUris: [redirectUri(apiUrl)] },
    { clientId: LOCAL_PUBLIC_CLIENT, clientAuth: 'none', redirectUris: [redirectUri(apiUrl)] },
    { clientId: LOCAL_JWT_CLIENT, clientAuth: 'private_key_jwt', jwksUri: jwksUrlOf(apiUrl), redirectUris: [redirectUri(apiUrl)] },
  ];
}

/**
 * Listens on loopback `port` (0: any free one) and answers the port taken; a port in use fails with
 * `inUseHint`, the way to choose another.
 */
export async function listenOnLoopback(server: Server, port: number, inUseHint = 'choose another with --port N'): Promise<number> {
  server.listen(port, '127.0.0.1');
  await Promise.race([
    once(server, 'listening'),
    once(server, 'error').then(([error]) => {
      const code = (error as NodeJS.ErrnoException).code;
      throw new Error(code === 'EADDRINUSE' ? `port ${port} is already in use; ${inUseHint}` : `could not listen on port ${port}: ${String(error)}`);
    }),
  ]);
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('server has no TCP address');
  return address.port;
}

/** Client secrets of a local run: from the config file, or `SMART_LAUNCH_CLIENT_SECRET` when the file leaves it out. */
const localClientSecrets = {
  get: async (issuer: IssuerConfig) => issuer.clientSecret ?? process.env.SMART_LAUNCH_CLIENT_SECRET,
};

/**
 * The whole local stack in one process: the API (the very same handlers as in Lambda, behind a plain
 * HTTP adapter), dynalite persisted under the data folder, the local key ring, the demo app, and
 * (unless a config file names other EHRs) the bundled sandbox EHR.
 */
export async function startLocalStack(options: LocalStackOptions): Promise<LocalStack> {
  const dataDir = resolve(options.dataDir);
  // A config file is validated before anything listens: nothing starts half-configured.
  const fileConfig =
    options.configure === undefined && options.configPath !== undefined
      ? parseConfigText(await readFile(options.configPath, 'utf8'), 'local', options.configPath)
      : undefined;
  const server = createServer();
  const port = await listenOnLoopback(server, options.port);
  const apiUrl = `http://localhost:${port}`;

  let sandbox: Sandbox | undefined;
  let dynamo: LocalDynamo | undefined;
  try {
    const wantSandbox = options.sandbox ?? (options.configPath === undefined && options.configure === undefined);
    if (wantSandbox) {
      // Loaded on demand: the sandbox (oidc-provider, a FHIR server) is not needed against real EHRs.
      const { startSandbox } = await import('./sandbox/index.js');
      sandbox = await startSandbox({
        port: options.sandboxPort ?? 0,
        clients: (options.sandboxClients ?? defaultClients)(apiUrl),
        launchUrl: launchUrl(apiUrl),
        // The demo app's own launch page (SDK), for frames whose EHR sign-in refuses framing.
        appLaunchUrl: `${apiUrl}/app/`,
        ...(options.sandboxClock === undefined ? {} : { now: options.sandboxClock.now.bind(options.sandboxClock) }),
        ...(options.sandboxSigningKey === undefined ? {} : { signingKey: options.sandboxSigningKey }),
      });
    }
    let config: Config;
    if (options.configure) {
      config = parseConfig(options.configure({ apiUrl, sandbox }), 'local', '(test)');
    } else if (fileConfig) {
      config = fileConfig;
    } else {
      config = parseConfig(sampleConfig(apiUrl, (sandbox as Sandbox).fhirBaseUrl), 'local', '(embedded sample)');
    }

    dynamo = await startLocalDynamo({ dataDir, inMemory: options.inMemoryStore === true });
    // Keys are generated into the data folder on first use (signing-keys.json, mode 0600).
    const signer = new LocalSigner(dataDir, cryptoRandom);
    const audit = new FileAuditSink(dataDir);
    const deps: CoreDeps = {
      config,
      mode: 'local',
      store: new DynamoSessionStore({ client: dynamo.client, tableName: dynamo.tableName }),
      keyRing: new CachingKeyRing(await LocalKeyRing.open(dataDir, cryptoRandom), systemClock),
      http: options.http ?? fetchHttpClient,
      clock: options.clock ?? systemClock,
      random: cryptoRandom,
      clientSecrets: localClientSecrets,
      signer,
      // As in Lambda, but fresh for 10 s only: sandbox switches changed at /admin show at the next launches.
      discovery: new DiscoveryCache({ freshMs: LOCAL_DISCOVERY_FRESH_MS }),
      jwks: new JwksCache(),
      // The audit trail of a local run: {dataDir}/audit.ndjson (`npx smart-launch audit export`).
      audit,
      metrics: options.metrics,
    };
    const getDeps = () => Promise.resolve(deps);
    // The proxy function's own session cache, as in Lambda where it is a container of its own: the
    // sessions handler's logout does not reach it (the same staleness as deployed). Spread per
    // request so what a test or the bench changes on `deps` reaches the proxy too.
    const sessionCache = new OpenSessionCache();
    const getProxyDeps = () => Promise.resolve<CoreDeps>({ ...deps, sessionCache });
    const app = new URL(config.app.url);
    const requestsInFlight = new RequestsInFlight();
    server.on('request', (req, res) => requestsInFlight.track(req, res));
    server.on(
      'request',
      createRequestListener({
        handlers: {
          launch: createLaunchHandler(getDeps),
          sessions: createSessionsHandler(getDeps),
          'fhir-proxy': createStreamingFhirProxyHandler(getProxyDeps),
          jwks: createJwksHandler(async () => signer),
        },
        appPath: app.origin === new URL(config.publicUrl).origin ? app.pathname : undefined,
      }),
    );
    const localDynamo = dynamo;
    return {
      apiUrl,
      appUrl: config.app.url,
      config,
      sandbox,
      dynamo: localDynamo,
      deps,
      requestsInFlight,
      async close() {
        server.closeAllConnections();
        await new Promise<void>((done) => server.close(() => done()));
        await sandbox?.close();
        await localDynamo.close();
        await audit.close();
      },
    };
  } catch (error) {
    server.close();
    await sandbox?.close();
    await dynamo?.close();
    throw error;
  }
}
