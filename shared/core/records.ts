import * as z from 'zod';
import { TokenResponseSchema } from './token.js';
import { builtOnFirstUse } from './lazy.js';

/*
 * The stored records: what a transaction and a session row hold, and the secrets sealed inside
 * them. Types and schemas only (how records are keyed and sealed is in sealed-records.ts), so the
 * ports and every adapter can speak of records without depending on the core's machinery.
 */

/** Opaque ids and cookie values: 32 random octets, base64url. */
export const OPAQUE_ID = /^[A-Za-z0-9_-]{43}$/;

/** Stored in place of a binding hash when the customer turned browser binding off. */
export const UNBOUND = 'unbound';

/** Endpoints of the authorization server, as discovered when the launch started (SMART-DISC-09). */
export interface AuthServerEndpoints {
  readonly authorizationEndpoint: string;
  readonly tokenEndpoint: string;
  /** The AS `issuer` from discovery, when it published one (RFC 9207 / OIDC). */
  readonly issuer?: string | undefined;
  readonly jwksUri?: string | undefined;
  readonly revocationEndpoint?: string | undefined;
  /** OpenID Connect RP-Initiated Logout's `end_session_endpoint`, when discovery published a usable one. */
  readonly endSessionEndpoint?: string | undefined;
  /** Discovery said `authorization_response_iss_parameter_supported: true` (RFC 9207). */
  readonly issParameterSupported?: boolean | undefined;
}

/** What every stored record has: its key, the launch's issuer and browser binding, and its sealed secrets. */
export interface StoredRecord {
  readonly key: string;
  /** The exact `iss` (FHIR base URL) of the launch. */
  readonly iss: string;
  /** Hash of the browser-binding cookie value of the browser the record is bound to. */
  readonly bindingHash: string;
  readonly endpoints: AuthServerEndpoints;
  readonly wrappedKey: Uint8Array;
  readonly sealed: Uint8Array;
  /** Epoch seconds. */
  readonly createdAt: number;
  /** Epoch seconds; also the DynamoDB TTL attribute. */
  readonly expiresAt: number;
}

/**
 * A pending authorization (one per launch). Stored under `txn#<hash of state>`, consumed exactly
 * once by the callback. Secrets (PKCE verifier, nonce, session id, launch) are inside `sealed`.
 */
export interface TransactionRecord extends StoredRecord {
  /** `ses#<hash of session id>` of the session this launch will create. */
  readonly sessionKey: string;
}

/** A signed-in launch. Stored under `ses#<hash of session id>`; tokens and context are inside `sealed`. */
export interface SessionRecord extends StoredRecord {
  /** Incremented on every rewrite; conditional updates compare it. */
  readonly revision: number;
  /** Epoch milliseconds until which a refresh lease is held, when one is. */
  readonly leaseUntil?: number | undefined;
}

/** Secrets of a pending launch, sealed inside the transaction record. */
export const TransactionSecretsSchema = builtOnFirstUse(() =>
  z.object({
    v: z.literal(1),
    sessionId: z.string().regex(OPAQUE_ID),
    codeVerifier: z.string().min(43).max(128),
    nonce: z.string().optional(),
    launch: z.string().optional(),
    scope: z.string(),
    redirectUri: z.string(),
  }),
);
export type TransactionSecrets = z.infer<typeof TransactionSecretsSchema>;

export const LaunchContextSchema = builtOnFirstUse(() =>
  TokenResponseSchema.pick({
    patient: true,
    encounter: true,
    fhirContext: true,
    need_patient_banner: true,
    smart_style_url: true,
    intent: true,
    tenant: true,
  }).extend({
    fhirUser: z.string().optional(),
    /** Whether sign-in read the launch's patient through the grant ('verified'), or had no patient or scope to check. */
    patientAccess: z.enum(['verified', 'not-checked']).optional(),
  }),
);
export type LaunchContext = z.infer<typeof LaunchContextSchema>;

/** Tokens and launch context of a session, sealed inside the session record. */
export const SessionSecretsSchema = builtOnFirstUse(() =>
  z.object({
    v: z.literal(1),
    accessToken: z.string(),
    refreshToken: z.string().optional(),
    idToken: z.string().optional(),
    /** Epoch milliseconds. */
    accessTokenExpiresAt: z.number(),
    /** Epoch milliseconds when the current access token was obtained. */
    obtainedAt: z.number().optional(),
    scope: z.string(),
    launchMode: z.enum(['ehr', 'standalone']),
    context: LaunchContextSchema,
  }),
);
export type SessionSecrets = z.infer<typeof SessionSecretsSchema>;
