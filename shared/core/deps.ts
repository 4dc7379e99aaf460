import type { Config, ConfigMode, IssuerConfig } from '../config/schema.js';
import type { Clock, HttpClient, KeyRing, Random, SessionStore } from './ports.js';

/** Where the client secret of an issuer comes from (the config file locally, Secrets Manager in AWS). */
export interface ClientSecrets {
  get(issuer: IssuerConfig): Promise<string | undefined>;
}

/** Everything the core flows need, passed in by the handlers' wiring. */
export interface CoreDeps {
  readonly config: Config;
  readonly mode: ConfigMode;
  readonly store: SessionStore;
  readonly keyRing: KeyRing;
  readonly http: HttpClient;
  readonly clock: Clock;
  readonly random: Random;
  readonly clientSecrets: ClientSecrets;
}
