import { base64url, decodeJwt } from 'jose';
import type { IssuerConfig } from '../config/schema.js';
import { signingAlgOf } from '../config/signing-algs.js';
import { randomToken } from './crypto.js';
import { SmartError, safeList } from './errors.js';
import type { ClientAssertionAlg, ClientSigner, PublicJwk, Random } from './ports.js';

/**
 * `private_key_jwt` client assertions (RFC 7523 §2.2, SMART App Launch "client-confidential-asymmetric").
 * Pure: the key lives behind the `ClientSigner` port, time and randomness are passed in.
 * @see https://hl7.org/fhir/smart-app-launch/STU2.2/client-confidential-asymmetric.html
 */

/** `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2, SMART-CAUTH-04). */
export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/**
 * Lifetime of one assertion: SMART allows at most 5 minutes; two leave room for a server clock that
 * runs ahead or behind without making a leaked assertion useful for long (AWS-08: 60-240 s).
 */
export const ASSERTION_LIFETIME_SECONDS = 120;

/** The JWK key type and curve each assertion algorithm signs with. */
export const KEY_TYPE_OF: Readonly<Record<ClientAssertionAlg, { readonly kty: 'RSA' | 'EC'; readonly crv?: 'P-384' }>> = {
  RS384: { kty: 'RSA' },
  ES384: { kty: 'EC', crv: 'P-384' },
};

/** An ES384 signature in JOSE form is `r || s`, 48 octets each (RFC 7518 §3.4). */
export const ES384_SIGNATURE_BYTES = 96;
/** RSA keys shorter than 2048 bits are refused by SMART servers (and by us). */
const MIN_RSA_SIGNATURE_BYTES = 256;

export interface ClientAssertionInput {
  /** `iss` and `sub`: the client id registered at the EHR. */
  readonly clientId: string;
  /** `aud`: the exact URL the assertion will be POSTed to, and nowhere else (SMART-CAUTH-06/07). */
  readonly audience: string;
  readonly alg: ClientAssertionAlg;
  /** Epoch milliseconds. */
  readonly now: number;
}

const encodeJson = (value: unknown) => base64url.encode(JSON.stringify(value));

/**
 * Builds and signs one client assertion: header `alg`, `kid`, `typ: "JWT"` (SMART-CAUTH-05); claims
 * `iss` = `sub` = client id, `aud` = the endpoint, `iat`, `exp` = `iat` + 120 s and a fresh 256-bit
 * `jti` (SMART-CAUTH-06). Every call makes a new one: an assertion is never sent twice.
 */
export async function createClientAssertion(signer: ClientSigner, input: ClientAssertionInput, random: Random): Promise<string> {
  const key = await signer.signingKey(input.alg);
  const iat = Math.floor(input.now / 1000);
  const header = { alg: input.alg, kid: key.kid, typ: 'JWT' };
  const claims = {
    iss: input.clientId,
    sub: input.clientId,
    aud: input.audience,
    jti: randomToken(random),
    iat,
    exp: iat + ASSERTION_LIFETIME_SECONDS,
  };
  const signingInput = `${encodeJson(header)}.${encodeJson(claims)}`;
  const signature = await key.sign(new TextEncoder().encode(signingInput));
  const plausible = input.alg === 'ES384' ? signature.length === ES384_SIGNATURE_BYTES : signature.length >= MIN_RSA_SIGNATURE_BYTES;
  if (!plausible) {
    // A DER-encoded ECDSA signature (what KMS answers) would be refused by every server: say so here.
    throw new SmartError('KEYRING_UNAVAILABLE', `the signer returned a ${signature.length}-byte ${input.alg} signature, not a JOSE one`, {
      details: { alg: input.alg, bytes: signature.length },
    });
  }
  return `${signingInput}.${base64url.encode(signature)}`;
}

/** The `aud` of an assertion we made (no signature check: it is ours, about to be sent). */
export function assertionAudience(assertion: string): unknown {
  try {
    return decodeJwt(assertion).aud;
  } catch {
    return undefined;
  }
}

/** Printable, short values of a discovery list, safe to quote in a message. */
/** What a launch knows from discovery about the EHR's client authentication (SMART-DISC-03). */
export interface DiscoveredClientAuth {
  readonly tokenEndpointAuthMethods: readonly string[] | undefined;
  /** `token_endpoint_auth_signing_alg_values_supported`, when the EHR published it. */
  readonly tokenEndpointAuthSigningAlgs?: readonly string[] | undefined;
}

/**
 * SMART-CAUTH-09: a `private_key_jwt` issuer whose discovery lists the assertion algorithms it
 * accepts must list ours, or every token request would fail with `invalid_client` after the
 * clinician signed in. Refused before the authorize redirect, with the fix in the hint. An EHR that
 * publishes no list is trusted to accept RS384/ES384 (SMART servers support at least one of them).
 */
export function checkSigningAlgSupported(issuer: IssuerConfig, discovered: DiscoveredClientAuth): void {
  if (issuer.clientAuth !== 'private_key_jwt') return;
  const advertised = discovered.tokenEndpointAuthSigningAlgs;
  if (advertised === undefined) return;
  const alg = signingAlgOf(issuer);
  if (advertised.includes(alg)) return;
  const usable = advertised.filter((candidate): candidate is ClientAssertionAlg => candidate === 'RS384' || candidate === 'ES384');
  throw new SmartError('CLIENT_AUTH_FAILED', `the EHR does not accept ${alg} client assertions (it lists ${safeList(advertised)})`, {
    hint:
      usable.length > 0
        ? `Set "signingAlg": "${usable[0]}" for this issuer in the configuration and register the JWKS URL at the EHR with that algorithm.`
        : 'The EHR accepts neither RS384 nor ES384 client assertions; register the app as a client_secret_basic client instead.',
    details: { alg },
  });
}

/** The public members of a JWK, by key type: exactly what a JWKS may carry (SMART-REG-04). */
const PUBLIC_MEMBERS: Readonly<Record<string, readonly string[]>> = {
  RSA: ['n', 'e'],
  EC: ['crv', 'x', 'y'],
};

/**
 * A JWKS fit to publish: per key `kty`, `kid`, `alg`, `use` and the bare public members only (never
 * `d`, `p`, `q`, `dp`, `dq`, `qi`, `oth` or `k`), at most one key per `kid` (SMART-REG-04).
 */
export function publishableJwks(keys: readonly PublicJwk[]): { keys: PublicJwk[] } {
  const seen = new Set<string>();
  const out: PublicJwk[] = [];
  for (const key of keys) {
    const members = PUBLIC_MEMBERS[key.kty];
    if (members === undefined || typeof key.kid !== 'string' || key.kid === '' || seen.has(key.kid)) continue;
    seen.add(key.kid);
    const jwk: Record<string, string> = { kty: key.kty, kid: key.kid };
    if (key.alg !== undefined) jwk.alg = key.alg;
    jwk.use = 'sig';
    for (const member of members) {
      const value = (key as unknown as Record<string, unknown>)[member];
      if (typeof value === 'string') jwk[member] = value;
    }
    out.push(jwk as unknown as PublicJwk);
  }
  return { keys: out };
}
