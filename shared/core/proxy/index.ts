/*
 * The FHIR proxy's public surface. Its rules live in focused modules: `paths` (invariant 7),
 * `interactions` (the table of path shapes), `requests` (headers and bodies), `confinement`
 * (scopes and patient), `responses` (rewriting and hardening), `forward` (the exchange with the
 * EHR, token renewal on by default) and `patient-access` (the sign-in check).
 */
export { forwardBundleRequest, isBundleRequest, MAX_BUNDLE_ENTRIES } from './bundle-requests.js';
export { checkProxyRequest, forwardFhirRequest, keepSession, type CheckedProxyRequest, type ForwardOptions, type SessionRefresher } from './forward.js';
export { classifyInteraction, PROXY_METHODS, type FhirInteraction, type InteractionKind } from './interactions.js';
export { encodeFhirQuery, resolveProxyTarget } from './paths.js';
export { verifyPatientAccess, type PatientAccess } from './patient-access.js';
export { FORWARDED_REQUEST_HEADERS, type ProxyRequest } from './requests.js';
export { isActiveContentType, neutralisingHeaders, PROXY_CACHE_CONTROL, PROXY_CSP, rewriteBundleUrls, rewriteLocation, type ProxyResponse } from './responses.js';
