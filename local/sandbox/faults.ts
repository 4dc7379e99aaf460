import { z } from 'zod';
import type { SandboxFaults, SandboxStats, TokenEndpointFault } from './types.js';

/*
 * Fault switches and counters shared by the authorization server (which reads and counts) and the
 * Sandbox object and admin endpoint (which set and reset). Both objects live as long as the sandbox
 * and are only ever changed in place, so a reference taken by a test stays current.
 */

export function createStats(): SandboxStats {
  return { tokenRequests: {}, tokenRequestsAnswered: {}, refreshReuseDetected: 0, revocations: 0, revocationsByTokenType: {} };
}

export function resetStats(stats: SandboxStats): void {
  for (const record of [stats.tokenRequests, stats.tokenRequestsAnswered, stats.revocationsByTokenType]) {
    for (const key of Object.keys(record)) {
      delete record[key];
    }
  }
  stats.refreshReuseDetected = 0;
  stats.revocations = 0;
}

/** A deep copy (what the admin endpoint serves; also handy for before/after comparisons in tests). */
export function snapshotStats(stats: SandboxStats): SandboxStats {
  return structuredClone(stats);
}

export function clearFaults(faults: SandboxFaults): void {
  for (const key of Object.keys(faults) as (keyof SandboxFaults)[]) {
    delete faults[key];
  }
}

/** Counts one token endpoint request and its answer. */
export function countTokenRequest(stats: SandboxStats, grantType: string, status: number): void {
  stats.tokenRequests[grantType] = (stats.tokenRequests[grantType] ?? 0) + 1;
  const answered = (stats.tokenRequestsAnswered[grantType] ??= {});
  answered[String(status)] = (answered[String(status)] ?? 0) + 1;
}

/** True when some fault needs the sandbox to look at a token request before oidc-provider does. */
export function tokenEndpointFaulted(faults: SandboxFaults): boolean {
  return faults.invalidClient === true || faults.malformedTokenResponse === true || faults.tokenEndpoint !== undefined || faults.tokenEndpointHold !== undefined;
}

export type TokenFaultAction =
  | { readonly kind: 'answer'; readonly status: number; readonly body: Record<string, unknown>; readonly headers: Record<string, string> }
  | { readonly kind: 'delay'; readonly ms: number }
  | { readonly kind: 'none' };

const DEFAULT_RETRY_AFTER_SECONDS = 1;

/**
 * Applies `faults.tokenEndpoint` budgets: how many requests each fault object has affected. A fault
 * clears itself (`faults.tokenEndpoint = undefined`) once its `times` are used up, and the same object
 * can be set again later for another `times` (the count restarts).
 */
export class TokenEndpointFaultCounter {
  #used = new WeakMap<TokenEndpointFault, number>();

  /** What `faults.tokenEndpoint` does to a request of `grantType`; counts it against `times`. */
  take(faults: SandboxFaults, grantType: string): TokenFaultAction {
    const fault = faults.tokenEndpoint;
    if (fault === undefined) {
      return { kind: 'none' };
    }
    const parsed = TokenEndpointFaultSchema.safeParse(fault);
    if (!parsed.success) {
      throw new TypeError(`faults.tokenEndpoint is not a valid fault: ${z.prettifyError(parsed.error)}`);
    }
    if (fault.grantTypes !== undefined && !fault.grantTypes.includes(grantType)) {
      return { kind: 'none' };
    }
    if (fault.times !== undefined) {
      const used = (this.#used.get(fault) ?? 0) + 1;
      if (used >= fault.times) {
        this.#used.delete(fault);
        faults.tokenEndpoint = undefined;
      } else {
        this.#used.set(fault, used);
      }
    }
    if ('delayMs' in fault) {
      return { kind: 'delay', ms: fault.delayMs };
    }
    const headers: Record<string, string> = {};
    const retryAfter = fault.retryAfterSeconds ?? (fault.status === 429 ? DEFAULT_RETRY_AFTER_SECONDS : undefined);
    if (retryAfter !== undefined) {
      headers['Retry-After'] = String(retryAfter);
    }
    const body =
      fault.status === 429
        ? { error: 'slow_down', error_description: `too many token requests, retry in ${retryAfter ?? DEFAULT_RETRY_AFTER_SECONDS} s (sandbox fault)` }
        : { error: 'temporarily_unavailable', error_description: `the token endpoint is unavailable (sandbox fault ${fault.status})` };
    return { kind: 'answer', status: fault.status, body, headers };
  }
}

const GrantTypesSchema = z.array(z.string().min(1));
const TimesSchema = z.number().int().positive();

export const TokenEndpointFaultSchema = z.union([
  z.strictObject({
    status: z.literal([500, 503, 429]),
    retryAfterSeconds: z.number().int().nonnegative().optional(),
    grantTypes: GrantTypesSchema.optional(),
    times: TimesSchema.optional(),
  }),
  z.strictObject({
    delayMs: z.number().int().nonnegative().max(10 * 60 * 1000),
    grantTypes: GrantTypesSchema.optional(),
    times: TimesSchema.optional(),
  }),
]);

/** Body of `POST /admin/faults`: each key set replaces that fault, `null` removes it. */
export const FaultsPatchSchema = z.strictObject({
  idToken: z.enum(['wrong-aud', 'wrong-nonce', 'wrong-iss', 'expired', 'bad-signature']).nullable().optional(),
  accessTokenTtlSeconds: z.number().int().positive().nullable().optional(),
  tokenEndpoint: TokenEndpointFaultSchema.nullable().optional(),
  invalidClient: z.boolean().nullable().optional(),
  malformedTokenResponse: z.boolean().nullable().optional(),
  fhir401: z.enum(['once', 'always']).nullable().optional(),
  fhirDelayMs: z.number().int().nonnegative().max(10 * 60 * 1000).nullable().optional(),
  fhirDropConnection: z.boolean().nullable().optional(),
  fhirAnswer: z
    .strictObject({
      status: z.number().int().min(200).max(599),
      headers: z.record(z.string(), z.string()).optional(),
      body: z.string().max(8 * 1024 * 1024).optional(),
      pathPrefix: z.string().max(2048).optional(),
    })
    .nullable()
    .optional(),
});
export type FaultsPatch = z.infer<typeof FaultsPatchSchema>;

/** Merges a validated patch into `faults` in place; an empty patch clears every fault. */
export function applyFaultsPatch(faults: SandboxFaults, patch: FaultsPatch): void {
  const entries = Object.entries(patch) as [keyof SandboxFaults, unknown][];
  if (entries.length === 0) {
    clearFaults(faults);
    return;
  }
  for (const [key, value] of entries) {
    if (value === null || value === undefined) {
      delete faults[key];
    } else {
      Object.assign(faults, { [key]: value });
    }
  }
}

/** The access token lifetime in force: the live fault if set, else the start option. */
export function accessTokenTtl(faults: SandboxFaults, startOption: number): number {
  const live = faults.accessTokenTtlSeconds;
  if (live === undefined) {
    return startOption;
  }
  if (!Number.isInteger(live) || live <= 0) {
    throw new TypeError(`faults.accessTokenTtlSeconds must be a positive integer, got ${String(live)}`);
  }
  return live;
}
