import type { IncomingMessage, ServerResponse } from 'node:http';
import type Provider from 'oidc-provider';
import type { Directory, LaunchStore } from '../directory.js';
import { accessTokenTtl } from '../faults.js';
import { SandboxAdapterStore } from '../oidc-adapter.js';
import type { SandboxClient, SandboxFaults, SandboxQuirks, SandboxStats } from '../types.js';
import type { SigningKey } from './signing-key.js';

/*
 * The state the authorization server's modules share. It is created once per sandbox
 * (createAuthState) and handed to each module explicitly: provider configuration, authorize,
 * interaction, token endpoint (faults, response decoration) and grant administration.
 */

/** Non-resource scopes the authorization server knows (oidc-provider drops unknown ones silently). */
export const STATIC_SCOPES = [
  'openid',
  'fhirUser',
  'profile',
  'launch',
  'launch/patient',
  'launch/encounter',
  'offline_access',
  'online_access',
] as const;
export const STATIC_SCOPE_SET: ReadonlySet<string> = new Set(STATIC_SCOPES);

/** oidc-provider's token route below the issuer (its default `routes.token`). */
export const TOKEN_ROUTE = '/token';
/** oidc-provider's authorization route below the issuer (its default `routes.authorization`). */
export const AUTHORIZATION_ROUTE = '/auth';
/** oidc-provider's own limit for urlencoded bodies (lib/shared/selective_body.js). */
export const MAX_TOKEN_BODY_BYTES = 56 * 1024;

export interface AuthServerOptions {
  readonly origin: string;
  readonly issuer: string;
  readonly fhirBaseUrl: string;
  readonly clients: readonly SandboxClient[];
  readonly accessTokenTtlSeconds: number;
  readonly directory: Directory;
  readonly launches: LaunchStore;
  readonly faults: SandboxFaults;
  readonly stats: SandboxStats;
  readonly signingKey: SigningKey;
  readonly tenant: string;
  readonly smartStyleUrl: string;
  /** Quirk switches (see quirks.ts); read on every request. */
  readonly quirks?: SandboxQuirks;
  /** The FHIR server's clock for access token expiry (SandboxOptions.now); default the system clock. */
  readonly now?: (() => number) | undefined;
}

type LaunchType = 'ehr' | 'standalone';

/** What the sandbox remembers about a grant (oidc-provider's Grant has no room for launch context). */
export interface GrantContext {
  readonly launchType: LaunchType;
  /** Relative reference of the signed-in user, e.g. `Practitioner/erin-example`. */
  readonly user: string;
  readonly patient: string | undefined;
  readonly encounter: string | undefined;
  readonly fhirContext: readonly { reference: string }[];
  /** Which refresh scope the client asked for (oidc-provider strips offline_access before we see it). */
  readonly refresh: 'offline_access' | 'online_access' | undefined;
  /** The launch's own access-token lifetime (launch option), else the sandbox-wide one. */
  readonly accessTokenTtlSeconds?: number | undefined;
}

export interface SandboxAccount {
  readonly accountId: string;
  readonly resourceType: 'Practitioner' | 'Patient';
  readonly id: string;
  readonly name: string;
}

export interface AuthState {
  readonly options: AuthServerOptions;
  readonly quirks: SandboxQuirks;
  /** Path of the issuer URL (`/oauth`), under which oidc-provider is mounted. */
  readonly issuerPath: string;
  readonly accounts: ReadonlyMap<string, SandboxAccount>;
  readonly practitionerAccount: SandboxAccount;
  /** Launch context per grant id. */
  readonly grantContexts: Map<string, GrantContext>;
  /** Refresh scope per interaction uid, captured from the raw authorization request. */
  readonly requestedRefresh: Map<string, { refresh: GrantContext['refresh']; at: number }>;
  /** Access-token jti -> grant, so the FHIR server can refuse tokens of revoked grants. */
  readonly tokenGrants: Map<string, { grantId: string; exp: number }>;
  readonly revokedGrants: Set<string>;
  readonly adapterStore: SandboxAdapterStore;
  /** Read on every issue, so faults.accessTokenTtlSeconds applies to the next token (code or refresh). */
  currentAccessTokenTtl(): number;
}

/** The state plus the oidc-provider instance built from it and its request handler. */
export interface AuthContext extends AuthState {
  readonly provider: Provider;
  /** oidc-provider's koa callback, created after the sandbox's middleware was added. */
  readonly providerCallback: (req: IncomingMessage, res: ServerResponse) => Promise<void>;
}

export function createAuthState(options: AuthServerOptions): AuthState {
  const { directory } = options;
  const accounts = new Map<string, SandboxAccount>();
  const practitionerAccount: SandboxAccount = {
    accountId: `practitioner-${directory.practitioner.id}`,
    resourceType: 'Practitioner',
    id: directory.practitioner.id,
    name: directory.practitioner.name,
  };
  accounts.set(practitionerAccount.accountId, practitionerAccount);
  for (const patient of directory.patients) {
    const account: SandboxAccount = { accountId: `patient-${patient.id}`, resourceType: 'Patient', id: patient.id, name: patient.name };
    accounts.set(account.accountId, account);
  }
  return {
    options,
    quirks: options.quirks ?? {},
    issuerPath: new URL(options.issuer).pathname,
    accounts,
    practitionerAccount,
    grantContexts: new Map(),
    requestedRefresh: new Map(),
    tokenGrants: new Map(),
    revokedGrants: new Set(),
    adapterStore: new SandboxAdapterStore(),
    currentAccessTokenTtl: () => accessTokenTtl(options.faults, options.accessTokenTtlSeconds),
  };
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function splitScope(scope: unknown): string[] {
  return typeof scope === 'string' ? scope.split(' ').filter((s) => s !== '') : [];
}
