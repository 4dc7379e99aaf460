import type { ProxyOptions } from '../../config/schema.js';
import { SmartError } from '../errors.js';
import { decideScopes, otherPatientTarget, parseGrantedScopes, type GrantedScopes } from '../scopes.js';
import type { OpenSession } from '../session.js';
import type { FhirInteraction } from './interactions.js';
import { boundedMemo } from '../memo.js';

/**
 * Granted scopes parsed once per distinct scope string: a session's scope is the same on every
 * request it proxies, and the parsed value is only read.
 */
const grantedScopesOf: (scope: string) => GrantedScopes = boundedMemo(256, parseGrantedScopes);

/**
 * Scopes and patient confinement (SMART-SCOPE-07, BFF-16): the granted scopes must permit the
 * interaction (when the issuer enforces them), and a patient-level session may not name another
 * patient in its path or search parameters (when the issuer confines to the patient).
 * `params` are the query's and a form body's parameters together.
 */
export function checkScopesAndPatient(
  session: OpenSession,
  interaction: FhirInteraction,
  params: ReadonlyArray<readonly [string, string]>,
  options: ProxyOptions,
): void {
  const patient = session.secrets.context.patient;
  let patientLevel: boolean;
  if (options.enforceScopes && interaction.permission !== undefined) {
    const granted = grantedScopesOf(session.secrets.scope);
    const decision = decideScopes(granted, { resourceType: interaction.resourceType, permission: interaction.permission, params }, patient !== undefined);
    if (!decision.allowed) {
      throw new SmartError('SCOPE_INSUFFICIENT', `the granted scopes do not permit this request: ${decision.reason}`, {
        hint: `The session needs the scope ${decision.missing}, which the EHR did not grant at sign-in. Ask for it in the issuer's "scope" and sign in again.`,
        details: { missingScope: decision.missing },
      });
    }
    patientLevel = decision.patientLevel;
  } else {
    const granted = grantedScopesOf(session.secrets.scope).resource;
    patientLevel = granted.length > 0 && granted.every((s) => s.level === 'patient');
  }
  if (options.confineToPatient && patient !== undefined && patientLevel && interaction.permission !== undefined) {
    const other = otherPatientTarget({ pathType: interaction.pathType, pathId: interaction.pathId, params }, patient, session.record.iss);
    if (other !== undefined) {
      throw new SmartError('PATIENT_MISMATCH', `this session is for one patient, and ${other}`);
    }
  }
}
