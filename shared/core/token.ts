import * as z from 'zod';
import { builtOnFirstUse } from './lazy.js';

/*
 * The EHR's token response, as the product accepts it (the request that obtains it is in
 * ehr/token-endpoint.ts). Depends on nothing but zod, so the record schemas can build on it.
 */

/** A FHIR logical id (FHIR R4 `id` datatype), so context values can never smuggle a path. */
export const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const FhirId = builtOnFirstUse(() =>
  z.string().regex(FHIR_ID),
);

const FhirContextItem = builtOnFirstUse(() =>
  z.union([
    z.string(),
    z
      .object({
        reference: z.string().optional(),
        canonical: z.string().optional(),
        identifier: z.record(z.string(), z.unknown()).optional(),
        type: z.string().optional(),
        role: z.string().min(1).optional(),
      })
      .refine((item) => item.reference !== undefined || item.canonical !== undefined || item.identifier !== undefined, {
        message: 'each fhirContext item needs reference, canonical or identifier',
      }),
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
  z.preprocess(
    (value) => {
      const number = typeof value === 'string' && /^\d{1,400}$/.test(value) ? Number(value) : value;
      return typeof number === 'number' && number > MAX_EXPIRES_IN_SECONDS && (Number.isInteger(number) || number === Number.POSITIVE_INFINITY) ? MAX_EXPIRES_IN_SECONDS : number;
    },
    z.number().int().positive(),
  ),
);

/**
 * A token response (RFC 6749 §5.1, SMART-TOKEN-03, SMART-CTX-01..05). Unknown members are dropped
 * (SMART-CTX-05); `token_type` is compared case-insensitively (SMART-TOKEN-04).
 */
export const TokenResponseSchema = builtOnFirstUse(() =>
  z.object({
    access_token: z.string().min(1),
    token_type: z.string().refine((t) => t.toLowerCase() === 'bearer', 'token_type must be "Bearer"'),
    expires_in: ExpiresIn.optional(),
    scope: z.string().optional(),
    refresh_token: z.string().min(1).optional(),
    id_token: z.string().min(1).optional(),
    patient: FhirId.optional(),
    encounter: FhirId.optional(),
    fhirContext: z.array(FhirContextItem).optional(),
    need_patient_banner: z.boolean().optional(),
    smart_style_url: z.url().optional(),
    intent: z.string().optional(),
    tenant: z.string().optional(),
  }),
);
export type TokenResponse = z.infer<typeof TokenResponseSchema>;

/** Access tokens without `expires_in` are assumed short-lived (SMART-TOKEN-05). */
export const DEFAULT_EXPIRES_IN_SECONDS = 300;
