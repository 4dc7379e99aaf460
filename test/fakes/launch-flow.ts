import { completeCallback, startLaunch, type CallbackResult, type LaunchResult } from '../../shared/core/launch.js';
import type { Query } from '../../shared/core/query.js';
import { FixedClock } from './clock.js';
import { deps, sampleConfig, type TestDeps, type TestDepsOptions } from './deps.js';
import { FakeEhr, query, type AuthorizeOptions, type AuthorizeOutcome, type FakeEhrOptions } from './fake-ehr.js';

export interface Harness {
  readonly ehr: FakeEhr;
  readonly deps: TestDeps;
}

/** A fake EHR and `CoreDeps` wired to it (same clock), with the sample config unless told otherwise. */
export async function harness(
  options: { config?: unknown; ehr?: Omit<FakeEhrOptions, 'clock'>; deps?: Omit<TestDepsOptions, 'config' | 'http' | 'clock'> } = {},
): Promise<Harness> {
  const clock = new FixedClock();
  const ehr = await FakeEhr.create({ clock, ...options.ehr });
  return { ehr, deps: deps({ ...options.deps, config: options.config ?? sampleConfig(), http: ehr.http, clock }) };
}

/** The launch query of an EHR launch from the fake EHR. */
export function ehrLaunchQuery(ehr: FakeEhr, launch = 'launch-ctx-xyz-0123456789'): Query {
  return query(['iss', ehr.fhirBase], ['launch', launch]);
}

export interface SignIn {
  readonly launch: LaunchResult;
  readonly authorization: AuthorizeOutcome;
  readonly callback: CallbackResult;
}

/** `startLaunch` → the EHR's authorize step → `completeCallback`, in the same browser (cookie). */
export async function signIn(
  h: Harness,
  options: { launchQuery?: Query; cookie?: string; authorize?: AuthorizeOptions } = {},
): Promise<SignIn> {
  const launch = await startLaunch(options.launchQuery ?? ehrLaunchQuery(h.ehr), options.cookie, h.deps);
  const authorization = h.ehr.authorize(launch.authorizeUrl, options.authorize);
  const callback = await completeCallback(authorization.callbackQuery, launch.bindingSecret, h.deps);
  return { launch, authorization, callback };
}
