import type { CoreDeps } from '../deps.js';
import { SmartError } from '../errors.js';
import { issuerOf } from '../issuers.js';
import { proxyOptionsOf } from '../../config/schema.js';
import { decideScopes, parseGrantedScopes } from '../scopes.js';
import type { OpenSession } from '../session.js';
import { forwardFhirRequest, keepSession } from './forward.js';
import { FHIR_ID } from './interactions.js';
import type { ProxyResponse } from './responses.js';

export type PatientAccess =
  | { readonly status: 'verified'; readonly patient: string }
  /** Nothing to check (no patient in context), or the granted scopes do not include reading Patient. */
  | { readonly status: 'not-checked'; readonly reason: 'no-patient' | 'no-patient-scope' };

/**
 * At sign-in, reads the launch's Patient once through the proxy's own rules to confirm it exists and
 * the grant reaches it (SMART-CTX-01). Called by the callback once the session is open.
 * - `verified`: the EHR answered the Patient with that id.
 * - `not-checked`: the launch names no patient, or the granted scopes cannot read Patient (an app
 *   with only `patient/Observation.rs` can still work; the EHR decides on each request).
 * - throws `PATIENT_NOT_ACCESSIBLE` (403) when the EHR refuses or does not know the patient (401,
 *   403, 404, 410 or another 4xx, or a 200 that is not that Patient); `UPSTREAM_UNAVAILABLE` /
 *   `UPSTREAM_TIMEOUT` when the EHR cannot be reached or fails (5xx).
 * The access token is used as it is (no renewal): it was issued moments ago.
 */
export async function verifyPatientAccess(session: OpenSession, deps: CoreDeps): Promise<PatientAccess> {
  const patient = session.secrets.context.patient;
  if (patient === undefined) return { status: 'not-checked', reason: 'no-patient' };
  if (!FHIR_ID.test(patient)) {
    throw new SmartError('PATIENT_NOT_ACCESSIBLE', 'the launch names a patient whose id is not a FHIR id');
  }
  const options = proxyOptionsOf(issuerOf(deps.config, session.record.iss));
  if (options.enforceScopes) {
    const decision = decideScopes(parseGrantedScopes(session.secrets.scope), { resourceType: 'Patient', permission: 'r', params: [] }, true);
    if (!decision.allowed) return { status: 'not-checked', reason: 'no-patient-scope' };
  }
  let response: ProxyResponse;
  try {
    response = await forwardFhirRequest(
      session,
      { method: 'GET', rawPath: `Patient/${patient}`, query: {}, headers: { accept: 'application/fhir+json' } },
      deps,
      { refresh: keepSession, maxResponseBytes: 8 * 1024 * 1024 },
    );
  } catch (cause) {
    if (cause instanceof SmartError && (cause.code === 'UPSTREAM_UNAUTHORIZED' || cause.code === 'RESPONSE_TOO_LARGE')) {
      throw new SmartError('PATIENT_NOT_ACCESSIBLE', 'the FHIR server did not let this sign-in read the launch\'s patient', { cause });
    }
    throw cause;
  }
  if (response.status >= 500) {
    throw new SmartError('UPSTREAM_UNAVAILABLE', `the FHIR server answered ${response.status} when reading the launch's patient`, { details: { upstreamStatus: response.status } });
  }
  if (response.status !== 200) {
    throw new SmartError('PATIENT_NOT_ACCESSIBLE', `the FHIR server answered ${response.status} when reading the launch's patient`, { details: { upstreamStatus: response.status } });
  }
  let resource: { resourceType?: unknown; id?: unknown } | undefined;
  try {
    resource = JSON.parse(Buffer.from(response.body).toString('utf8')) as { resourceType?: unknown; id?: unknown };
  } catch {
    resource = undefined;
  }
  if (resource?.resourceType !== 'Patient' || resource.id !== patient) {
    throw new SmartError('PATIENT_NOT_ACCESSIBLE', 'the FHIR server did not answer the launch\'s patient with that Patient');
  }
  return { status: 'verified', patient };
}
