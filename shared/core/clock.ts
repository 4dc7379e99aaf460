import type { Clock } from './ports.js';

/**
 * An abort signal for a call to the EHR that fires after `ms` on the given clock, so deadlines
 * follow the clock port like every other time in the core (tests move time instead of waiting).
 */
export function timeoutSignal(clock: Clock | undefined, ms: number): AbortSignal {
  return clock?.timeout ? clock.timeout(ms) : AbortSignal.timeout(ms);
}
