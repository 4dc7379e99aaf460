import { randomBytes } from 'node:crypto';
import { displayName } from './data.js';
import type { SandboxData } from './data.js';
import type { LaunchContext, SandboxPatient } from './types.js';

/** People and encounters the EHR side (pages, launches, sign-in) needs to know about. */
export interface Directory {
  readonly practitioner: { readonly id: string; readonly name: string };
  readonly patients: readonly SandboxPatient[];
  hasPatient(id: string): boolean;
  /** Id of the patient's most recent encounter (by period.start). */
  latestEncounter(patientId: string): string | undefined;
  /** Id of the patient an encounter belongs to. */
  encounterPatient(encounterId: string): string | undefined;
  /** Condition addressed at an encounter (its first diagnosis), as `Condition/ID`. */
  encounterFocus(encounterId: string): string | undefined;
}

export function createDirectory(data: SandboxData): Directory {
  const patients = data.patients.map((p) => ({ id: p.id, name: displayName(p), birthDate: p.birthDate ?? '' }));
  const patientIds = new Set(patients.map((p) => p.id));
  const encounterPatient = new Map<string, string>();
  const encounterFocus = new Map<string, string>();
  const latest = new Map<string, { id: string; start: string }>();
  for (const encounter of data.encounters) {
    const patientId = encounter.subject?.reference?.replace(/^Patient\//, '');
    if (!patientId) {
      continue;
    }
    encounterPatient.set(encounter.id, patientId);
    const focus = encounter.diagnosis?.[0]?.condition.reference;
    if (focus) {
      encounterFocus.set(encounter.id, focus);
    }
    const start = encounter.period?.start ?? '';
    const current = latest.get(patientId);
    if (!current || start > current.start) {
      latest.set(patientId, { id: encounter.id, start });
    }
  }
  return {
    practitioner: { id: data.practitioner.id, name: displayName(data.practitioner) },
    patients,
    hasPatient: (id) => patientIds.has(id),
    latestEncounter: (patientId) => latest.get(patientId)?.id,
    encounterPatient: (encounterId) => encounterPatient.get(encounterId),
    encounterFocus: (encounterId) => encounterFocus.get(encounterId),
  };
}

/** How long an EHR launch id stays usable: long enough to click through a login, short like real EHRs. */
export const LAUNCH_TTL_MS = 30 * 60_000;

/**
 * EHR launch ids: random and opaque, bound to a patient (and optionally an encounter) when the EHR
 * creates them, resolved by the authorization server when the app comes back with `launch`.
 * They stay valid until they expire (a reload of the app's launch page must still work).
 */
export class LaunchStore {
  readonly #launches = new Map<string, { context: LaunchContext; expiresAt: number }>();
  readonly #directory: Directory;
  readonly #now: () => number;

  constructor(directory: Directory, now: () => number = Date.now) {
    this.#directory = directory;
    this.#now = now;
  }

  create(context: LaunchContext): string {
    if (!this.#directory.hasPatient(context.patient)) {
      throw new Error(`unknown patient "${context.patient}"`);
    }
    if (context.encounter !== undefined && this.#directory.encounterPatient(context.encounter) !== context.patient) {
      throw new Error(`encounter "${context.encounter}" does not belong to patient "${context.patient}"`);
    }
    this.#prune();
    const id = randomBytes(18).toString('base64url');
    const bound: LaunchContext = {
      patient: context.patient,
      ...(context.encounter === undefined ? {} : { encounter: context.encounter }),
      ...(context.options === undefined ? {} : { options: { ...context.options } }),
    };
    this.#launches.set(id, { context: bound, expiresAt: this.#now() + LAUNCH_TTL_MS });
    return id;
  }

  resolve(id: string): LaunchContext | undefined {
    const entry = this.#launches.get(id);
    if (!entry || entry.expiresAt <= this.#now()) {
      return undefined;
    }
    return entry.context;
  }

  #prune(): void {
    const now = this.#now();
    for (const [id, entry] of this.#launches) {
      if (entry.expiresAt <= now) {
        this.#launches.delete(id);
      }
    }
  }
}
