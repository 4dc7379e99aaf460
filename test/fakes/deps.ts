import { cryptoRandom } from '../../shared/adapters/system.js';
import { parseConfig, type Config, type ConfigMode } from '../../shared/config/schema.js';
import type { CoreDeps } from '../../shared/core/deps.js';
import type { ClientSecrets, HttpClient, Random } from '../../shared/core/ports.js';
import { FixedClock } from './clock.js';
import { EHR_CLIENT_ID, EHR_CLIENT_SECRET, EHR_FHIR_BASE } from './fake-ehr.js';
import { MemoryKeyRing } from './memory-key-ring.js';
import { MemorySessionStore } from './memory-store.js';

export const PUBLIC_URL = 'https://smart.acme.example';
export const APP_URL = 'https://app.acme.example/';

/** One confidential issuer at the fake EHR, as a customer would write it (before parsing). */
export function sampleIssuer(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    iss: EHR_FHIR_BASE,
    clientId: EHR_CLIENT_ID,
    clientAuth: 'client_secret_basic',
    clientSecret: EHR_CLIENT_SECRET,
    scope: 'launch openid fhirUser patient/*.rs offline_access',
    default: true,
    ...overrides,
  };
}

/** A valid raw config (the JSON file's content); top-level members may be overridden. */
export function sampleConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    customer: 'acme-health',
    publicUrl: PUBLIC_URL,
    app: { url: APP_URL },
    issuers: [sampleIssuer()],
    ...overrides,
  };
}

/** `ClientSecrets` as in local runs: the secret straight from the config file. */
export const configClientSecrets: ClientSecrets = {
  get: async (issuer) => issuer.clientSecret,
};

/** `CoreDeps` whose parts are the in-memory fakes, typed as such so tests can inspect them. */
export interface TestDeps extends CoreDeps {
  readonly store: MemorySessionStore;
  readonly keyRing: MemoryKeyRing;
  readonly clock: FixedClock;
}

export interface TestDepsOptions {
  /** A raw config, parsed with `parseConfig(..., 'local')`; `sampleConfig()` by default. */
  readonly config?: unknown;
  /** The mode the core runs in (discovery's https rule); `local` by default. */
  readonly mode?: ConfigMode;
  /** Usually `FakeEhr.http`; by default every request fails like a network error. */
  readonly http?: HttpClient;
  readonly clock?: FixedClock;
  readonly store?: MemorySessionStore;
  readonly keyRing?: MemoryKeyRing;
  readonly random?: Random;
  readonly clientSecrets?: ClientSecrets;
}

export const unreachable: HttpClient = async (url) => {
  throw new TypeError(`fetch failed (no network in unit tests): ${url}`);
};

export function deps(options: TestDepsOptions = {}): TestDeps {
  const config: Config = parseConfig(options.config ?? sampleConfig(), 'local', '(test)');
  return {
    config,
    mode: options.mode ?? 'local',
    store: options.store ?? new MemorySessionStore(),
    keyRing: options.keyRing ?? new MemoryKeyRing(),
    http: options.http ?? unreachable,
    clock: options.clock ?? new FixedClock(),
    random: options.random ?? cryptoRandom,
    clientSecrets: options.clientSecrets ?? configClientSecrets,
  };
}
