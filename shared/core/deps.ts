import type { Config, ConfigMode } from '../config/schema.js';
import type { ClientSecrets, ClientSigner, Clock, HttpClient, KeyRing, Random, SessionStore } from './ports.js';
import type { DiscoveryCache } from './discovery.js';
import type { JwksCache } from './id-token.js';
import type { OpenSessionCache } from './session-cache.js';
import type { AuditSink } from '../audit/record.js';
import type { MetricsSink } from '../ops/metric-points.js';

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
  /**
   * Signs `private_key_jwt` client assertions. Absent where no issuer uses `private_key_jwt` (a
   * token request for such an issuer then fails with `CLIENT_AUTH_FAILED`).
   */
  readonly signer?: ClientSigner | undefined;
  /**
   * Discovery per container, with stale-while-revalidate (SMART-DISC-10). Absent: every launch
   * fetches discovery afresh.
   */
  readonly discovery?: DiscoveryCache | undefined;
  /** Issuers' JWK Sets per container, re-fetched on an unknown `kid`. Absent: fetched per id_token. */
  readonly jwks?: JwksCache | undefined;
  /**
   * Sessions the FHIR proxy opened, kept per container for `session.proxyCacheSeconds`
   * (`session-cache.ts`). Absent: every proxied request reads the store. Only the proxy uses it.
   */
  readonly sessionCache?: OpenSessionCache | undefined;
  /** Where audit records go (a local file, a dedicated CloudWatch Logs group). Absent: no audit trail. */
  readonly audit?: AuditSink | undefined;
  /** Operational metrics per issuer (EMF in Lambda). Absent: none are published. */
  readonly metrics?: MetricsSink | undefined;
}
