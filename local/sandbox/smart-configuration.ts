import type {
  CapabilityStatement,
  CapabilityStatementRestResource,
  CapabilityStatementRestResourceSearchParam,
  ResourceType,
} from '@medplum/fhirtypes';
import { z } from 'zod';
import { STATIC_SCOPES } from './auth-server.js';
import { WRITABLE_TYPES } from './fhir-server.js';

/** The parts of oidc-provider's own discovery document the SMART metadata is built from. */
export const OidcDiscoverySchema = z.object({
  issuer: z.string(),
  jwks_uri: z.url(),
  authorization_endpoint: z.url(),
  token_endpoint: z.url(),
  revocation_endpoint: z.url(),
  introspection_endpoint: z.url(),
  code_challenge_methods_supported: z.array(z.string()),
  token_endpoint_auth_methods_supported: z.array(z.string()),
  token_endpoint_auth_signing_alg_values_supported: z.array(z.string()).optional(),
  id_token_signing_alg_values_supported: z.array(z.string()),
  authorization_response_iss_parameter_supported: z.boolean().optional(),
});
export type OidcDiscovery = z.infer<typeof OidcDiscoverySchema>;

/** SMART capabilities the sandbox really implements (each is exercised by test/sandbox). */
export const SMART_CAPABILITIES = [
  'launch-ehr',
  'launch-standalone',
  // oidc-provider takes authorization requests by POST as well (OIDC Core §3.1.2.1).
  'authorize-post',
  'client-public',
  'client-confidential-symmetric',
  'client-confidential-asymmetric',
  'context-ehr-patient',
  'context-ehr-encounter',
  'context-standalone-patient',
  'context-banner',
  'context-style',
  'permission-offline',
  'permission-online',
  'permission-patient',
  'permission-user',
  'permission-v2',
  'permission-v1',
  'sso-openid-connect',
] as const;

/**
 * `GET [fhirBase]/.well-known/smart-configuration`. Endpoint URLs come from oidc-provider's discovery
 * so they are the ones it really serves.
 *
 * @see https://hl7.org/fhir/smart-app-launch/STU2.2/conformance.html#using-well-known
 */
export function buildSmartConfiguration(discovery: OidcDiscovery): Record<string, unknown> {
  return {
    issuer: discovery.issuer,
    jwks_uri: discovery.jwks_uri,
    authorization_endpoint: discovery.authorization_endpoint,
    token_endpoint: discovery.token_endpoint,
    revocation_endpoint: discovery.revocation_endpoint,
    introspection_endpoint: discovery.introspection_endpoint,
    grant_types_supported: ['authorization_code', 'refresh_token'],
    response_types_supported: ['code'],
    // oidc-provider only ever supports S256; keep what it says rather than restating it.
    code_challenge_methods_supported: discovery.code_challenge_methods_supported,
    token_endpoint_auth_methods_supported: discovery.token_endpoint_auth_methods_supported,
    // RS384 and ES384 for private_key_jwt (SMART-DISC-03); what oidc-provider accepts, as it says it.
    ...(discovery.token_endpoint_auth_signing_alg_values_supported
      ? { token_endpoint_auth_signing_alg_values_supported: discovery.token_endpoint_auth_signing_alg_values_supported }
      : {}),
    id_token_signing_alg_values_supported: discovery.id_token_signing_alg_values_supported,
    scopes_supported: [
      ...STATIC_SCOPES,
      'patient/*.rs',
      'user/*.rs',
      'patient/*.read',
      'user/*.read',
    ],
    capabilities: [...SMART_CAPABILITIES],
    // oidc-provider adds `iss` to every code response (RFC 9207); test/sandbox checks it arrives.
    authorization_response_iss_parameter_supported: discovery.authorization_response_iss_parameter_supported === true,
  };
}

type ParamType = CapabilityStatementRestResourceSearchParam['type'];

const SEARCH_PARAMS: Readonly<Partial<Record<ResourceType, readonly (readonly [string, ParamType])[]>>> = {
  Patient: [['_id', 'token'], ['name', 'string'], ['birthdate', 'date'], ['identifier', 'token']],
  Encounter: [['_id', 'token'], ['patient', 'reference'], ['subject', 'reference'], ['date', 'date'], ['status', 'token']],
  Condition: [['_id', 'token'], ['patient', 'reference'], ['subject', 'reference'], ['code', 'token'], ['clinical-status', 'token']],
  Observation: [
    ['_id', 'token'],
    ['patient', 'reference'],
    ['subject', 'reference'],
    ['encounter', 'reference'],
    ['category', 'token'],
    ['code', 'token'],
    ['date', 'date'],
  ],
  Practitioner: [['_id', 'token'], ['name', 'string']],
  Organization: [['_id', 'token'], ['name', 'string']],
  DocumentReference: [['_id', 'token'], ['patient', 'reference'], ['subject', 'reference'], ['type', 'token'], ['date', 'date']],
  Binary: [['_id', 'token']],
  Basic: [['_id', 'token'], ['patient', 'reference'], ['subject', 'reference'], ['code', 'token'], ['identifier', 'token']],
};

const WRITES = [{ code: 'create' }, { code: 'update' }, { code: 'patch' }, { code: 'delete' }] as const;

/** `GET [fhirBase]/metadata`: what the sandbox serves, with the SMART oauth-uris extension (SMART v1 discovery). */
export function buildCapabilityStatement(fhirBaseUrl: string, discovery: OidcDiscovery): CapabilityStatement {
  const resource: CapabilityStatementRestResource[] = (Object.keys(SEARCH_PARAMS) as ResourceType[]).map((type) => ({
    type,
    interaction: [
      { code: 'read' },
      { code: 'vread' },
      { code: 'history-instance' },
      { code: 'search-type' },
      ...(WRITABLE_TYPES.has(type) ? WRITES.map((w) => ({ ...w })) : []),
    ],
    ...(WRITABLE_TYPES.has(type) ? { conditionalUpdate: true, conditionalCreate: true } : {}),
    searchParam: (SEARCH_PARAMS[type] ?? []).map(([name, paramType]) => ({ name, type: paramType })),
    ...(type === 'Patient' ? { operation: [{ name: 'everything', definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything' }] } : {}),
  }));
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2025-07-01',
    publisher: 'smart-launch sandbox EHR',
    kind: 'instance',
    software: { name: 'smart-launch sandbox EHR (oidc-provider + @medplum/fhir-router)' },
    implementation: { description: 'Local SMART on FHIR sandbox with synthetic data', url: fhirBaseUrl },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json', 'application/fhir+xml', 'xml'],
    patchFormat: ['application/json-patch+json'],
    rest: [
      {
        mode: 'server',
        security: {
          cors: true,
          service: [
            {
              coding: [
                { system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' },
              ],
            },
          ],
          extension: [
            {
              url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
              extension: [
                { url: 'authorize', valueUri: discovery.authorization_endpoint },
                { url: 'token', valueUri: discovery.token_endpoint },
                { url: 'revoke', valueUri: discovery.revocation_endpoint },
                { url: 'introspect', valueUri: discovery.introspection_endpoint },
              ],
            },
          ],
        },
        resource,
      },
    ],
  };
}
