/**
 * The URLs a stack publishes, all derived from the customer's `publicUrl`: what the EHR registers
 * (launch URL, redirect URI, JWKS URL), where a person starts over, and each session's FHIR base.
 * The core, the CDK construct and the local runner build them here and nowhere else, so what a
 * stack outputs is what its handlers answer on (docs/design.md, "The contract").
 */

/** `{publicUrl}/launch`: the launch URL registered with the EHR (EHR and standalone launch). */
export const launchUrl = (publicUrl: string): string => `${publicUrl}/launch`;

/** `{publicUrl}/callback`: the `redirect_uri`, byte for byte the same in the authorize and token requests (SMART-AUTHZ-03). */
export const redirectUri = (publicUrl: string): string => `${publicUrl}/callback`;

/** `{publicUrl}/.well-known/jwks.json`: this client's public keys, for EHRs that verify `private_key_jwt` (SMART-REG-03). */
export const jwksUrl = (publicUrl: string): string => `${publicUrl}/.well-known/jwks.json`;

/** Where a person can start over after a failed callback, when the issuer is known. */
export function restartUrl(publicUrl: string, iss: string | undefined): string {
  return iss === undefined ? launchUrl(publicUrl) : `${launchUrl(publicUrl)}?iss=${encodeURIComponent(iss)}`;
}

/** The public FHIR base of a session: any FHIR client library works against it unchanged. */
export function fhirBaseUrl(config: { readonly publicUrl: string }, sessionId: string): string {
  return `${config.publicUrl}/sessions/${sessionId}/fhir`;
}
