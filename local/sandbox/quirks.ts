import type { CapabilityStatement, Patient } from '@medplum/fhirtypes';
import type { MemoryRepository } from '@medplum/fhir-router';
import { z } from 'zod';
import type { Directory } from './directory.js';
import { isResourceScope, parseResourceScope } from './scopes.js';
import type { SandboxPatient, SandboxQuirks } from './types.js';

/*
 * Quirk switches: make the sandbox behave like the servers real deployments meet (SMART v1 servers,
 * EHRs without PKCE S256 or revocation, narrow grants, launches without patient context...). Like
 * `faults`, `quirks` is a plain object that lives as long as the sandbox and is changed in place; a
 * switch applies to the next requests. See README "Quirks".
 */

export function clearQuirks(quirks: SandboxQuirks): void {
  for (const key of Object.keys(quirks) as (keyof SandboxQuirks)[]) {
    delete quirks[key];
  }
}

/** Body of `POST /admin/quirks`: each key set replaces that switch, `false` or `null` turns it off. */
export const QuirksPatchSchema = z.strictObject({
  noS256: z.boolean().nullable().optional(),
  v1Only: z.boolean().nullable().optional(),
  noRevocation: z.boolean().nullable().optional(),
  relativeEndpoints: z.boolean().nullable().optional(),
  noWellKnown: z.boolean().nullable().optional(),
  noOpenidConfiguration: z.boolean().nullable().optional(),
  narrowScopes: z.boolean().nullable().optional(),
  noRefreshToken: z.boolean().nullable().optional(),
  noPatientContext: z.boolean().nullable().optional(),
  emptyPatient: z.boolean().nullable().optional(),
  endSession: z.boolean().nullable().optional(),
});
export type QuirksPatch = z.infer<typeof QuirksPatchSchema>;

/** Merges a validated patch into `quirks` in place; an empty patch clears every switch. */
export function applyQuirksPatch(quirks: SandboxQuirks, patch: QuirksPatch): void {
  const entries = Object.entries(patch) as [keyof SandboxQuirks, boolean | null | undefined][];
  if (entries.length === 0) {
    clearQuirks(quirks);
    return;
  }
  for (const [key, value] of entries) {
    if (value === true) {
      quirks[key] = true;
    } else {
      delete quirks[key];
    }
  }
}

/** v2 → v1 for what the sandbox advertises in `scopes_supported` under `v1Only`. */
const V1_OF: Readonly<Record<string, string>> = { rs: 'read', cud: 'write', cruds: '*' };

/** A SMART v2 resource scope (`.rs`, `.cruds`, granular): what a `v1Only` server refuses. */
export function isV2ResourceScope(scope: string): boolean {
  const parsed = parseResourceScope(scope);
  return parsed !== undefined && !/\.(read|write|\*)$/.test(scope);
}

/** An endpoint as a legacy server would publish it: relative to the FHIR base `fhirBaseUrl`. */
function relative(url: string, fhirBaseUrl: string, style: 'path' | 'dots'): string {
  const target = new URL(url);
  if (style === 'path') {
    return `${target.pathname}${target.search}`;
  }
  // `../oauth/token` against `${origin}/fhir/` (the base as a directory).
  const baseDepth = new URL(`${fhirBaseUrl.replace(/\/+$/, '')}/`).pathname.split('/').length - 2;
  return `${'../'.repeat(baseDepth)}${target.pathname.slice(1)}${target.search}`;
}

/**
 * `.well-known/smart-configuration` as the quirks in force shape it; `undefined` when `noWellKnown`
 * (the file is then absent: 404).
 */
export function quirkedSmartConfiguration(
  base: Readonly<Record<string, unknown>>,
  quirks: SandboxQuirks,
  fhirBaseUrl: string,
): Record<string, unknown> | undefined {
  if (quirks.noWellKnown === true) {
    return undefined;
  }
  const doc: Record<string, unknown> = { ...base };
  if (quirks.noS256 === true) {
    doc.code_challenge_methods_supported = ['plain'];
  }
  if (quirks.noRevocation === true) {
    delete doc.revocation_endpoint;
  }
  if (quirks.endSession === true) {
    doc.end_session_endpoint = new URL('/end-session', fhirBaseUrl).href;
  }
  if (quirks.v1Only === true) {
    doc.capabilities = (doc.capabilities as string[]).filter((c) => c !== 'permission-v2');
    doc.scopes_supported = [
      ...new Set(
        (doc.scopes_supported as string[]).map((s) => {
          const match = /^(.*)\.(rs|cud|cruds)$/.exec(s);
          return match ? `${match[1]}.${V1_OF[match[2] ?? ''] ?? match[2]}` : s;
        }),
      ),
    ];
  }
  if (quirks.relativeEndpoints === true) {
    for (const [field, style] of [
      ['authorization_endpoint', 'path'],
      ['token_endpoint', 'dots'],
      ['revocation_endpoint', 'dots'],
      ['introspection_endpoint', 'path'],
      ['jwks_uri', 'dots'],
    ] as const) {
      if (typeof doc[field] === 'string') {
        doc[field] = relative(doc[field], fhirBaseUrl, style);
      }
    }
  }
  return doc;
}

/** `/metadata` with the oauth-uris extension shaped by `noRevocation` and `relativeEndpoints`. */
export function quirkedCapabilityStatement(base: CapabilityStatement, quirks: SandboxQuirks, fhirBaseUrl: string): CapabilityStatement {
  if (quirks.noRevocation !== true && quirks.relativeEndpoints !== true) {
    return base;
  }
  const copy = structuredClone(base);
  for (const rest of copy.rest ?? []) {
    for (const extension of rest.security?.extension ?? []) {
      extension.extension = (extension.extension ?? [])
        .filter((sub) => !(quirks.noRevocation === true && sub.url === 'revoke'))
        .map((sub) =>
          quirks.relativeEndpoints === true && sub.valueUri !== undefined ? { ...sub, valueUri: relative(sub.valueUri, fhirBaseUrl, 'dots') } : sub,
        );
    }
  }
  return copy;
}

/**
 * `narrowScopes`: what the sandbox grants instead of the resource scopes asked for, as a patient who
 * shares less would: Patient access only (`patient/*.rs` becomes `patient/Patient.rs`; other types are
 * dropped). The refresh scopes are dropped by the caller.
 */
export function narrowResourceScopes(scopes: readonly string[]): string[] {
  const out = new Set<string>();
  for (const scope of scopes) {
    const parsed = parseResourceScope(scope);
    if (parsed === undefined || parsed.query !== undefined) {
      continue;
    }
    if (parsed.resourceType === '*' || parsed.resourceType === 'Patient') {
      const narrowed = scope.replace(/^(patient|user|system)\/\*\./, '$1/Patient.');
      if (isResourceScope(narrowed)) {
        out.add(narrowed);
      }
    }
  }
  return [...out];
}

/** The patient of `emptyPatient`: a chart with no encounters, conditions or observations. */
export const EMPTY_PATIENT: Patient & { id: string } = {
  resourceType: 'Patient',
  id: 'dana-nodata',
  meta: { versionId: '1', lastUpdated: '2025-07-01T00:00:00.000Z' },
  active: true,
  name: [{ use: 'official', family: 'Nodata', given: ['Dana'] }],
  gender: 'female',
  birthDate: '1990-01-01',
};
const EMPTY_PATIENT_ENTRY: SandboxPatient = { id: EMPTY_PATIENT.id, name: 'Dana Nodata', birthDate: '1990-01-01' };

/** The directory, plus the empty patient while `emptyPatient` is on (EHR page, EHR launches). */
export function withQuirkPatients(directory: Directory, quirks: SandboxQuirks): Directory {
  return {
    ...directory,
    get patients() {
      return quirks.emptyPatient === true ? [...directory.patients, EMPTY_PATIENT_ENTRY] : directory.patients;
    },
    hasPatient: (id) => directory.hasPatient(id) || (quirks.emptyPatient === true && id === EMPTY_PATIENT.id),
  };
}

/**
 * Keeps the FHIR repository in step with `emptyPatient` (created when on, deleted when off), so the
 * patient exists exactly while the switch is on. Called before each request.
 */
export function createQuirkDataSync(repo: MemoryRepository, quirks: SandboxQuirks): () => Promise<void> {
  let present = false;
  let pending: Promise<void> | undefined;
  const sync = async (): Promise<void> => {
    const wanted = quirks.emptyPatient === true;
    if (wanted === present) {
      return;
    }
    if (wanted) {
      await repo.createResource(EMPTY_PATIENT);
    } else {
      await repo.deleteResource('Patient', EMPTY_PATIENT.id);
    }
    present = wanted;
  };
  return async () => {
    while (pending !== undefined) {
      await pending;
    }
    if ((quirks.emptyPatient === true) === present) {
      return;
    }
    pending = sync().finally(() => {
      pending = undefined;
    });
    await pending;
  };
}
