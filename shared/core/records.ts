import * as z from '../config/zod.js';
import { FHIR_ID, TokenResponseSchema } from './token.js';
import { builtOnFirstUse } from './lazy.js';
import { boundedMemo } from './memo.js';

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
    sessionId: z.string().check(z.regex(OPAQUE_ID)),
    codeVerifier: z.string().check(z.minLength(43), z.maxLength(128)),
    nonce: z.optional(z.string()),
    launch: z.optional(z.string()),
    scope: z.string(),
    redirectUri: z.string(),
  }),
);
export type TransactionSecrets = z.infer<typeof TransactionSecretsSchema>;

export const LaunchContextSchema = builtOnFirstUse(() =>
  z.extend(
    z.pick(TokenResponseSchema, {
      patient: true,
      encounter: true,
      fhirContext: true,
      need_patient_banner: true,
      smart_style_url: true,
      intent: true,
      tenant: true,
    }),
    {
      fhirUser: z.optional(z.string()),
      /** Whether sign-in read the launch's patient through the grant ('verified'), or had no patient or scope to check. */
      patientAccess: z.optional(z.enum(['verified', 'not-checked'])),
    },
  ),
);
export type LaunchContext = z.infer<typeof LaunchContextSchema>;

/** Tokens and launch context of a session, sealed inside the session record. */
export const SessionSecretsSchema = builtOnFirstUse(() =>
  z.object({
    v: z.literal(1),
    accessToken: z.string(),
    refreshToken: z.optional(z.string()),
    idToken: z.optional(z.string()),
    /** Epoch milliseconds. */
    accessTokenExpiresAt: z.number(),
    /** Epoch milliseconds when the current access token was obtained. */
    obtainedAt: z.optional(z.number()),
    scope: z.string(),
    launchMode: z.enum(['ehr', 'standalone']),
    context: LaunchContextSchema,
  }),
);
export type SessionSecrets = z.infer<typeof SessionSecretsSchema>;

/*
 * The session secrets checked member by member: exactly what `SessionSecretsSchema` accepts, giving
 * the same value (unknown members dropped, members in the schema's order), without running the
 * schema on every proxied request. `undefined` for anything this check does not cover (an
 * `identifier` in `fhirContext`, a member present as `undefined`) or refuses: the schema then
 * decides, with its own error. The one costly member, `smart_style_url`, is checked with the
 * schema's own URL rule once per distinct value.
 */
const StyleUrl = builtOnFirstUse(() => LaunchContextSchema.shape.smart_style_url);
const styleUrlFits = boundedMemo(256, (value) => StyleUrl.safeParse(value).success);

type Members = Record<string, unknown>;
const isMembers = (value: unknown): value is Members => typeof value === 'object' && value !== null && !Array.isArray(value);
/** Absent: `true`; present and what `is` accepts: copied into `out`, `true`; otherwise `false` (the schema decides). */
function optional(from: Members, out: Members, name: string, is: (value: unknown) => boolean): boolean {
  if (!(name in from)) return true;
  const value = from[name];
  if (value === undefined || !is(value)) return false;
  out[name] = value;
  return true;
}
const isString = (value: unknown) => typeof value === 'string';
const isFhirId = (value: unknown) => typeof value === 'string' && FHIR_ID.test(value);
const isNumber = (value: unknown) => typeof value === 'number' && Number.isFinite(value);

function styleUrlOk(value: unknown): boolean {
  return typeof value === 'string' && styleUrlFits(value);
}

function checkedContextItem(item: unknown): unknown {
  if (typeof item === 'string') return item;
  if (!isMembers(item) || 'identifier' in item) return undefined;
  const out: Members = {};
  if (!optional(item, out, 'reference', isString) || !optional(item, out, 'canonical', isString)) return undefined;
  if (!optional(item, out, 'type', isString)) return undefined;
  if (!optional(item, out, 'role', (value) => typeof value === 'string' && value.length >= 1)) return undefined;
  return out.reference !== undefined || out.canonical !== undefined ? out : undefined;
}

function checkedContext(value: unknown): LaunchContext | undefined {
  if (!isMembers(value)) return undefined;
  const out: Members = {};
  if (!optional(value, out, 'patient', isFhirId) || !optional(value, out, 'encounter', isFhirId)) return undefined;
  if ('fhirContext' in value) {
    const items = value.fhirContext;
    if (!Array.isArray(items)) return undefined;
    const checked: unknown[] = [];
    for (const item of items) {
      const one = checkedContextItem(item);
      if (one === undefined) return undefined;
      checked.push(one);
    }
    out.fhirContext = checked;
  }
  if (!optional(value, out, 'need_patient_banner', (v) => typeof v === 'boolean')) return undefined;
  if (!optional(value, out, 'smart_style_url', styleUrlOk)) return undefined;
  if (!optional(value, out, 'intent', isString) || !optional(value, out, 'tenant', isString)) return undefined;
  if (!optional(value, out, 'fhirUser', isString)) return undefined;
  if (!optional(value, out, 'patientAccess', (v) => v === 'verified' || v === 'not-checked')) return undefined;
  return out as LaunchContext;
}

/** The session secrets exactly as `SessionSecretsSchema` gives them, or `undefined`: then the schema decides. */
export function checkedSessionSecrets(value: unknown): SessionSecrets | undefined {
  if (!isMembers(value) || value.v !== 1) return undefined;
  const out: Members = { v: 1 };
  if (typeof value.accessToken !== 'string') return undefined;
  out.accessToken = value.accessToken;
  if (!optional(value, out, 'refreshToken', isString) || !optional(value, out, 'idToken', isString)) return undefined;
  if (!isNumber(value.accessTokenExpiresAt)) return undefined;
  out.accessTokenExpiresAt = value.accessTokenExpiresAt;
  if (!optional(value, out, 'obtainedAt', isNumber)) return undefined;
  if (typeof value.scope !== 'string') return undefined;
  out.scope = value.scope;
  if (value.launchMode !== 'ehr' && value.launchMode !== 'standalone') return undefined;
  out.launchMode = value.launchMode;
  const context = checkedContext(value.context);
  if (context === undefined) return undefined;
  out.context = context;
  return out as SessionSecrets;
}

/** A session opened for a request (`session.ts` `openSession`): its record, its tokens and its data key. */
export interface OpenSession {
  readonly sessionId: string;
  readonly record: SessionRecord;
  readonly secrets: SessionSecrets;
  readonly dataKey: Uint8Array;
  /** A refresh got new tokens but lost its lease before storing them (worth a warning in the log). */
  readonly refreshNotStored?: boolean;
  /** This request waited for another request's refresh and uses the tokens it stored (metrics count the waits). */
  readonly waitedForRefresh?: boolean;
}
