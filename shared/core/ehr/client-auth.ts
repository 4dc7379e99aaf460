import { signingAlgOf, type IssuerConfig } from '../../config/schema.js';
import { assertionAudience, CLIENT_ASSERTION_TYPE, createClientAssertion } from '../client-assertion.js';
import type { CoreDeps } from '../deps.js';
import { SmartError } from '../errors.js';
import type { FormRequest } from './http.js';

/*
 * Client authentication at the EHR's token and revocation endpoints, as one strategy value per
 * method. The value is chosen once from the issuer's configuration (`clientAuthenticationFor`) and
 * then authenticates every form POST of the grant: the authorization-code exchange, each refresh and
 * the revocation at logout.
 */

/** The client authentication methods an issuer can be configured with. */
export type ClientAuthMethod = IssuerConfig['clientAuth'];

/** One way of proving the client's identity to the EHR. */
export interface ClientAuthentication {
  readonly method: ClientAuthMethod;
  /** The form POST of `params` to `endpoint`, carrying this client's authentication. */
  formRequest(endpoint: string, params: Readonly<Record<string, string>>): Promise<FormRequest>;
}

/** Options every authenticated method shares. */
export interface AuthenticatedClientOptions {
  /** The issuer's `sendClientIdWithAuth` quirk: `client_id` in the body of authenticated requests too. */
  readonly sendClientId?: boolean | undefined;
}

const FORM_HEADERS = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' } as const;

function form(endpoint: string, params: Readonly<Record<string, string>>, extra: { headers?: Record<string, string>; body?: Record<string, string> } = {}): FormRequest {
  const body = new URLSearchParams({ ...params });
  for (const [name, value] of Object.entries(extra.body ?? {})) body.set(name, value);
  return { url: endpoint, headers: { ...FORM_HEADERS, ...extra.headers }, body: body.toString() };
}

/**
 * RFC 6749 §2.3.1 `client_secret_basic`: id and secret are form-urlencoded before base64 (SMART-CAUTH-01/02;
 * identical to the raw form for ids and secrets of unreserved characters).
 */
function basicAuthorization(clientId: string, secret: string): string {
  const encode = (v: string) => encodeURIComponent(v).replace(/%20/g, '+');
  return `Basic ${Buffer.from(`${encode(clientId)}:${encode(secret)}`).toString('base64')}`;
}

/** A public client (`none`, SMART-TOKEN-01): `client_id` in the body, no Authorization header, no secret. */
export function publicClient(clientId: string): ClientAuthentication {
  return {
    method: 'none',
    formRequest: async (endpoint, params) => form(endpoint, params, { body: { client_id: clientId } }),
  };
}

/**
 * `client_secret_basic` (SMART-CAUTH-01): the secret in an HTTP Basic Authorization header and nowhere
 * else; no `client_id` in the body unless the issuer's quirk asks for it. `secret` is read per request
 * (the `ClientSecrets` port caches it); without one the request fails with CLIENT_AUTH_FAILED.
 */
export function clientSecretBasic(
  clientId: string,
  secret: () => Promise<string | undefined>,
  options: AuthenticatedClientOptions = {},
): ClientAuthentication {
  return {
    method: 'client_secret_basic',
    async formRequest(endpoint, params) {
      const value = await secret();
      if (typeof value !== 'string') throw new SmartError('CLIENT_AUTH_FAILED', 'no client secret is available for this issuer');
      return form(endpoint, params, {
        headers: { authorization: basicAuthorization(clientId, value) },
        body: options.sendClientId === true ? { client_id: clientId } : {},
      });
    },
  };
}

/**
 * `private_key_jwt` (SMART client-confidential-asymmetric, SMART-CAUTH-04): `client_assertion_type` and
 * a fresh `client_assertion` in the body, no Authorization header. `assertionFor(endpoint)` makes a new
 * assertion per request (a new `jti`, SMART-CAUTH-06) whose `aud` must be exactly that endpoint: one
 * made for any other URL is never sent (SMART-CAUTH-07).
 */
export function privateKeyJwt(
  clientId: string,
  assertionFor: (audience: string) => Promise<string>,
  options: AuthenticatedClientOptions = {},
): ClientAuthentication {
  return {
    method: 'private_key_jwt',
    async formRequest(endpoint, params) {
      const assertion = await assertionFor(endpoint);
      // Audience injection (SMART-CAUTH-07): an assertion is only ever sent to the URL it names.
      if (assertionAudience(assertion) !== endpoint) {
        throw new SmartError('INTERNAL', 'a client assertion was about to be sent to a URL other than its "aud"');
      }
      return form(endpoint, params, {
        body: {
          client_assertion_type: CLIENT_ASSERTION_TYPE,
          client_assertion: assertion,
          ...(options.sendClientId === true ? { client_id: clientId } : {}),
        },
      });
    },
  };
}

/**
 * The issuer's client authentication, from its configuration: the secret comes from `ClientSecrets`,
 * assertions are signed by the deployment's `ClientSigner` at the clock's time. A `private_key_jwt`
 * issuer without a signer fails each request with CLIENT_AUTH_FAILED and a hint.
 */
export function clientAuthenticationFor(deps: Pick<CoreDeps, 'clientSecrets' | 'signer' | 'clock' | 'random'>, issuer: IssuerConfig): ClientAuthentication {
  const options = { sendClientId: issuer.sendClientIdWithAuth };
  switch (issuer.clientAuth) {
    case 'none':
      return publicClient(issuer.clientId);
    case 'client_secret_basic':
      return clientSecretBasic(issuer.clientId, () => deps.clientSecrets.get(issuer), options);
    case 'private_key_jwt':
      return privateKeyJwt(
        issuer.clientId,
        async (audience) => {
          if (deps.signer === undefined) {
            throw new SmartError('CLIENT_AUTH_FAILED', 'no signing key is configured for private_key_jwt', {
              hint: 'The deployment has no client assertion signing key: redeploy the stack (it creates one when an issuer uses private_key_jwt).',
            });
          }
          return createClientAssertion(deps.signer, { clientId: issuer.clientId, audience, alg: signingAlgOf(issuer), now: deps.clock.now() }, deps.random);
        },
        options,
      );
  }
}
