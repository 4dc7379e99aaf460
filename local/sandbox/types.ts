/** Public types of the sandbox EHR; re-exported by index.ts, which is the module to import. */

export interface SandboxClient {
  clientId: string;
  clientAuth: 'none' | 'client_secret_basic';
  /** Required for client_secret_basic. */
  clientSecret?: string;
  redirectUris: string[];
}

export interface SandboxOptions {
  /** 0 or absent = ephemeral. */
  port?: number;
  /** Default '127.0.0.1'. */
  host?: string;
  clients: SandboxClient[];
  /** The app's SMART launch URL (e.g. http://localhost:3000/launch), used by the EHR page buttons and the portal link. */
  launchUrl?: string;
  /** Default 300. */
  accessTokenTtlSeconds?: number;
}

export interface SandboxPatient {
  id: string;
  name: string;
  birthDate: string;
}

export type IdTokenFault = 'wrong-aud' | 'wrong-nonce' | 'wrong-iss' | 'expired' | 'bad-signature';

export interface SandboxFaults {
  /** Tamper the id_token of the next token responses (re-signed with the real key unless 'bad-signature'). */
  idToken?: IdTokenFault | undefined;
}

export interface SandboxStats {
  /** Token endpoint POSTs by grant_type (`unknown` when the body had none). */
  tokenRequests: Record<string, number>;
  /** Revocation endpoint POSTs. */
  revocations: number;
}

export interface LaunchContext {
  patient: string;
  encounter?: string;
}

export interface Sandbox {
  /** Origin, e.g. http://127.0.0.1:41234. */
  url: string;
  /** `${url}/fhir`: the SMART `iss`. */
  fhirBaseUrl: string;
  /** The OAuth issuer, `${url}/oauth`. */
  issuer: string;
  patients: SandboxPatient[];
  practitioner: { id: string; name: string };
  /** Creates an EHR launch id bound to that context (what the EHR would pass as `launch`). */
  createLaunch(context: LaunchContext): string;
  /** Mutable switches for tests. */
  faults: SandboxFaults;
  /** Counters for tests: token endpoint calls by grant_type, revocation calls. */
  stats: SandboxStats;
  close(): Promise<void>;
}
