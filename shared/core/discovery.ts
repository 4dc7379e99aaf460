import { z } from 'zod';
import type { ConfigMode } from '../config/schema.js';
import { SmartError, type ErrorCode } from './errors.js';
import type { AuthServerEndpoints, HttpClient } from './ports.js';

/** `{iss}/.well-known/smart-configuration`, appended even when the base has a path (SMART-DISC-01). */
export function smartConfigurationUrl(iss: string): string {
  return `${iss.replace(/\/+$/, '')}/.well-known/smart-configuration`;
}

const stringList = z.array(z.string());

/** The fields of `.well-known/smart-configuration` we rely on (SMART-DISC-02/03); others are ignored. */
const SmartConfigurationSchema = z.object({
  issuer: z.string().optional(),
  jwks_uri: z.string().optional(),
  authorization_endpoint: z.string({ error: 'authorization_endpoint is required for launches' }),
  token_endpoint: z.string({ error: 'token_endpoint is required' }),
  revocation_endpoint: z.string().optional(),
  grant_types_supported: stringList,
  capabilities: stringList,
  code_challenge_methods_supported: stringList,
  token_endpoint_auth_methods_supported: stringList.optional(),
  scopes_supported: stringList.optional(),
  authorization_response_iss_parameter_supported: z.boolean().optional(),
});

export interface SmartConfiguration {
  readonly endpoints: AuthServerEndpoints;
  readonly capabilities: readonly string[];
  readonly tokenEndpointAuthMethods: readonly string[] | undefined;
}

function checkEndpoint(value: string, field: string, mode: ConfigMode): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new SmartError('DISCOVERY_INVALID', `"${field}" in the SMART configuration is not an absolute URL`);
  }
  const loopback = url.hostname === 'localhost' || url.hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(url.hostname);
  if (url.protocol !== 'https:' && !(mode === 'local' && url.protocol === 'http:' && loopback)) {
    throw new SmartError('DISCOVERY_INVALID', `"${field}" in the SMART configuration must use https`);
  }
  return url.href;
}

/**
 * Validates a SMART configuration document: required fields present and typed, PKCE S256 advertised
 * (fail closed, SMART-DISC-04), endpoints absolute and https (loopback http in local runs).
 */
export function parseSmartConfiguration(document: unknown, mode: ConfigMode): SmartConfiguration {
  const parsed = SmartConfigurationSchema.safeParse(document);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    const field = first?.path.join('.') || 'document';
    throw new SmartError('DISCOVERY_INVALID', `SMART configuration field "${field}" is missing or has the wrong type`, {
      details: { field },
    });
  }
  const doc = parsed.data;
  // SMART-DISC-02: `issuer` and `jwks_uri` are required when the server offers OpenID Connect sign-in.
  if (doc.capabilities.includes('sso-openid-connect')) {
    for (const field of ['issuer', 'jwks_uri'] as const) {
      if (doc[field] === undefined) {
        throw new SmartError('DISCOVERY_INVALID', `SMART configuration field "${field}" is required with the sso-openid-connect capability`, {
          details: { field },
        });
      }
    }
  }
  if (!doc.code_challenge_methods_supported.includes('S256')) {
    throw new SmartError('PKCE_UNSUPPORTED', 'the SMART configuration does not list "S256" in code_challenge_methods_supported');
  }
  return {
    endpoints: {
      authorizationEndpoint: checkEndpoint(doc.authorization_endpoint, 'authorization_endpoint', mode),
      tokenEndpoint: checkEndpoint(doc.token_endpoint, 'token_endpoint', mode),
      issuer: doc.issuer,
      jwksUri: doc.jwks_uri === undefined ? undefined : checkEndpoint(doc.jwks_uri, 'jwks_uri', mode),
      revocationEndpoint:
        doc.revocation_endpoint === undefined ? undefined : checkEndpoint(doc.revocation_endpoint, 'revocation_endpoint', mode),
      issParameterSupported: doc.authorization_response_iss_parameter_supported === true,
    },
    capabilities: doc.capabilities,
    tokenEndpointAuthMethods: doc.token_endpoint_auth_methods_supported,
  };
}

/** Time allowed for any single call to an EHR endpoint. */
export const UPSTREAM_TIMEOUT_MS = 10_000;

/** Reads JSON from an upstream URL, mapping network and HTTP failures to the given error codes. */
export async function fetchJson(
  http: HttpClient,
  url: string,
  codes: { unavailable: ErrorCode; invalid: ErrorCode },
  what: string,
): Promise<unknown> {
  let response: Response;
  try {
    // Redirects are not followed: only the allow-listed URL is ever contacted.
    response = await http(url, { headers: { accept: 'application/json' }, redirect: 'manual', signal: AbortSignal.timeout(UPSTREAM_TIMEOUT_MS) });
  } catch (cause) {
    throw new SmartError(codes.unavailable, `${what} could not be fetched`, { cause });
  }
  if (!response.ok) {
    throw new SmartError(codes.unavailable, `${what} answered HTTP ${response.status}`, { details: { status: response.status } });
  }
  try {
    return await response.json();
  } catch (cause) {
    throw new SmartError(codes.invalid, `${what} is not valid JSON`, { cause });
  }
}

/** Fetches and validates `{iss}/.well-known/smart-configuration`. Call only with an allow-listed `iss`. */
export async function discover(http: HttpClient, iss: string, mode: ConfigMode): Promise<SmartConfiguration> {
  const document = await fetchJson(
    http,
    smartConfigurationUrl(iss),
    { unavailable: 'DISCOVERY_UNAVAILABLE', invalid: 'DISCOVERY_INVALID' },
    'the SMART configuration',
  );
  return parseSmartConfiguration(document, mode);
}
