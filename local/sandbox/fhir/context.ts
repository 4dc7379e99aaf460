import type { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import type { CapabilityStatement } from '@medplum/fhirtypes';
import type { VerifiedAccessToken } from '../auth/grants.js';
import type { PatientCompartment } from '../fhir-definitions.js';
import type { SandboxFaults } from '../types.js';

/*
 * What the FHIR server's modules share: the options it was started with, the repository and router,
 * the patient compartment and the queue that runs writes one at a time. Created once per server
 * (createFhirContext) and handed to each module explicitly.
 */

export interface FhirServerOptions {
  readonly fhirBaseUrl: string;
  readonly repo: MemoryRepository;
  readonly router: FhirRouter;
  readonly compartment: PatientCompartment;
  readonly verifyAccessToken: (token: string) => Promise<VerifiedAccessToken>;
  /** Served at `/metadata`; a function is asked on every request (the sandbox's quirks shape it). */
  readonly capabilityStatement: CapabilityStatement | (() => CapabilityStatement);
  /** `fhir401`, `fhirDelayMs` and `fhirDropConnection` are read from here on every request. */
  readonly faults?: SandboxFaults;
  /** The bytes of a Binary, by id: the repository holds Binaries without `data` (see data.ts). */
  readonly binaryContent?: (id: string) => Buffer | undefined;
}

/**
 * Writes run one at a time, so a check (If-Match, the compartment) and the write it guards see the
 * same version of a resource.
 */
export class WriteQueue {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(work, work);
    this.#tail = run.catch(() => undefined);
    return run;
  }
}

export interface FhirContext {
  readonly options: FhirServerOptions;
  readonly fhirBaseUrl: string;
  /** Path of the FHIR base URL (`/fhir`). */
  readonly fhirBasePath: string;
  readonly repo: MemoryRepository;
  readonly router: FhirRouter;
  readonly compartment: PatientCompartment;
  readonly writeQueue: WriteQueue;
}

export function createFhirContext(options: FhirServerOptions): FhirContext {
  const { fhirBaseUrl, repo, router, compartment } = options;
  return { options, fhirBaseUrl, fhirBasePath: new URL(fhirBaseUrl).pathname, repo, router, compartment, writeQueue: new WriteQueue() };
}
