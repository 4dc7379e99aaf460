import * as z from '../config/zod.js';
import { builtOnFirstUse } from './lazy.js';

/*
 * The EHR's token response, as the product accepts it (the request that obtains it is in
 * ehr/token-endpoint.ts). Depends on nothing but zod, so the record schemas can build on it.
 */

/** A FHIR logical id (FHIR R4 `id` datatype), so context values can never smuggle a path. */
export const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const FhirId = builtOnFirstUse(() =>
  z.string().check(z.regex(FHIR_ID)),
);

const FhirContextItem = builtOnFirstUse(() =>
  z.union([
    z.string(),
    z
      .object({
        reference: z.optional(z.string()),
        canonical: z.optional(z.string()),
        identifier: z.optional(z.record(z.string(), z.unknown())),
        type: z.optional(z.string()),
        role: z.optional(z.string().check(z.minLength(1))),
      })
      .check(
        z.refine((item) => item.reference !== undefined || item.canonical !== undefined || item.identifier !== undefined, {
          message: 'each fhirContext item needs reference, canonical or identifier',
        }),
      ),
  ]),
);

/**
 * The longest access-token lifetime taken from an EHR: 24 hours. SMART access tokens live minutes to
 * an hour; a larger `expires_in` (up to 2^53-1, or digits beyond any float) is clamped to this, so
 * an EHR's number can never overflow a date, switch off proactive refresh or outlast the idle
 * timeout by more than a day. Zero, negative, fractional and non-numeric values are refused
 * (TOKEN_RESPONSE_INVALID).
 */
export const MAX_EXPIRES_IN_SECONDS = 24 * 60 * 60;

const ExpiresIn = builtOnFirstUse(() =>
  // What `preprocess` is: a transform piped into the schema.
  z.pipe(
    z.transform((value: unknown) => {
      const number = typeof value === 'string' && /^\d{1,400}$/.test(value) ? Number(value) : value;
      return typeof number === 'number' && number > MAX_EXPIRES_IN_SECONDS && (Number.isInteger(number) || number === Number.POSITIVE_INFINITY) ? MAX_EXPIRES_IN_SECONDS : number;
    }),
    z.number().check(z.int(), z.gt(0)),
  ),
);

/**
 * A token response (RFC 6749 §5.1, SMART-TOKEN-03, SMART-CTX-01..05). Unknown members are dropped
 * (SMART-CTX-05); `token_type` is compared case-insensitively (SMART-TOKEN-04).
 */
export const TokenResponseSchema = builtOnFirstUse(() =>
  z.object({
    access_token: z.string().check(z.minLength(1)),
    token_type: z.string().check(z.refine((t) => t.toLowerCase() === 'bearer', 'token_type must be "Bearer"')),
    expires_in: z.optional(ExpiresIn),
    scope: z.optional(z.string()),
    refresh_token: z.optional(z.string().check(z.minLength(1))),
    id_token: z.optional(z.string().check(z.minLength(1))),
    patient: z.optional(FhirId),
    encounter: z.optional(FhirId),
    fhirContext: z.optional(z.array(FhirContextItem)),
    need_patient_banner: z.optional(z.boolean()),
    smart_style_url: z.optional(z.url()),
    intent: z.optional(z.string()),
    tenant: z.optional(z.string()),
  }),
);
export type TokenResponse = z.infer<typeof TokenResponseSchema>;

/** Access tokens without `expires_in` are assumed short-lived (SMART-TOKEN-05). */
export const DEFAULT_EXPIRES_IN_SECONDS = 300;
