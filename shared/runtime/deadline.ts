import type { Context } from 'aws-lambda';
import type { CoreDeps } from '../core/deps.js';
import type { ApiEvent } from '../http/api-event.js';
import { ENV } from '../config/env.js';

/**
 * The time one invocation may spend on its upstream calls. Two clocks run: Lambda's (the function
 * timeout, `context.getRemainingTimeInMillis()`) and API Gateway's (the integration timeout, counted
 * from `requestContext.requestTimeEpoch`; for a streaming integration, until the first byte). Every
 * EHR call of the invocation is aborted a margin before the earlier of the two, so the handler still
 * answers itself (504 UPSTREAM_TIMEOUT, 503 REFRESH_UNAVAILABLE with the refresh lease released)
 * instead of Lambda cutting it off (a bare 502/500, a lease left held) or API Gateway answering 504.
 */

/** Kept back from the deadline: the lease release (one UpdateItem), the error answer and its log line. */
export const DEADLINE_MARGIN_MS = 2_000;

/** API Gateway's integration timeout when the environment does not say (the REST API default). */
export const DEFAULT_INTEGRATION_TIMEOUT_MS = 29_000;

export function integrationTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  const value = Number(env[ENV.integrationTimeoutMs]);
  return Number.isInteger(value) && value > 0 ? value : DEFAULT_INTEGRATION_TIMEOUT_MS;
}

/** The epoch millisecond by which this invocation's upstream calls must be over. */
export function invocationDeadline(
  event: Pick<ApiEvent, 'requestContext'>,
  context: Pick<Context, 'getRemainingTimeInMillis'> | undefined,
  nowMs: number,
  gatewayTimeoutMs = integrationTimeoutMs(),
): number {
  const lambdaEnd = context?.getRemainingTimeInMillis ? nowMs + context.getRemainingTimeInMillis() : Number.POSITIVE_INFINITY;
  const started = event.requestContext?.requestTimeEpoch;
  const gatewayEnd = (typeof started === 'number' && started > 0 && started <= nowMs ? started : nowMs) + gatewayTimeoutMs;
  return Math.min(lambdaEnd, gatewayEnd) - DEADLINE_MARGIN_MS;
}

function timeoutError(): Error {
  const error = new Error('the invocation deadline passed before the upstream call');
  error.name = 'TimeoutError';
  return error;
}

/** What `AbortSignal.timeout` aborts with. */
function timeoutReason(): DOMException {
  return new DOMException('The operation was aborted due to timeout', 'TimeoutError');
}

/** The deps of one invocation bounded by its deadline, and the release of the timers they armed. */
export interface DeadlineScope {
  readonly deps: CoreDeps;
  /**
   * Clears every timer the scope's signals still hold: call it once nothing of the invocation uses
   * `deps` any more (the EHR answer is read whole); its signals then never fire.
   */
  release(): void;
}

/**
 * The same deps with an HTTP client whose every request is aborted at `deadlineMs` (as well as by
 * its own signal): the core's own per-call timeouts stay, the invocation's deadline bounds them all.
 * Wall-clock time on purpose: Lambda's and API Gateway's clocks are real, whatever `deps.clock` is.
 *
 * With the wall clock (no `clock.timeout` of its own), the core's timeouts are made here already
 * bounded by the deadline: `clock.timeout(ms)` is one signal that fires after `min(ms, left)`, and a
 * request carrying such a signal needs no second timer and no `AbortSignal.any` (one signal per EHR
 * call instead of three). A test clock's own timeouts are combined with the deadline as before.
 *
 * Each signal is an `AbortController` with one unreferenced timer (aborting with the `TimeoutError`
 * `AbortSignal.timeout` uses), which `release()` clears when the invocation is done with the EHR:
 * an `AbortSignal.timeout` per call stays armed in the timer list (behind a weak reference and a
 * finalizer) until it fires, long after a proxied read has been answered.
 */
export function deadlineScope(deps: CoreDeps, deadlineMs: number): DeadlineScope {
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const signalAfter = (ms: number): AbortSignal => {
    const controller = new AbortController();
    const timer = setTimeout(() => {
      timers.delete(timer);
      controller.abort(timeoutReason());
    }, ms);
    timer.unref();
    timers.add(timer);
    return controller.signal;
  };
  const release = () => {
    for (const timer of timers) clearTimeout(timer);
    timers.clear();
  };
  return { deps: bounded(deps, deadlineMs, signalAfter), release };
}

/**
 * `deadlineScope` for an invocation that does not say when it is done: each call's signal is an
 * `AbortSignal.timeout` (collected once unused, its timer left to fire).
 */
export function withDeadline(deps: CoreDeps, deadlineMs: number): CoreDeps {
  return bounded(deps, deadlineMs, (ms) => AbortSignal.timeout(ms));
}

function bounded(deps: CoreDeps, deadlineMs: number, signalAfter: (ms: number) => AbortSignal): CoreDeps {
  const ours = new WeakSet<AbortSignal>();
  const http: CoreDeps['http'] = (url, init) => {
    const left = deadlineMs - Date.now();
    if (left <= 0) return Promise.reject(timeoutError());
    if (init?.signal && ours.has(init.signal)) return deps.http(url, init);
    const deadline = signalAfter(left);
    const signal = init?.signal ? AbortSignal.any([init.signal, deadline]) : deadline;
    return deps.http(url, { ...init, signal });
  };
  if (deps.clock.timeout) return { ...deps, http };
  // Delegates by call, not by spreading: a clock may be a class instance whose methods live on its prototype.
  const inner = deps.clock;
  const clock: CoreDeps['clock'] = {
    now: () => inner.now(),
    sleep: (ms) => inner.sleep(ms),
    timeout: (ms) => {
      const signal = signalAfter(Math.max(0, Math.min(ms, deadlineMs - Date.now())));
      ours.add(signal);
      return signal;
    },
  };
  return { ...deps, clock, http };
}
