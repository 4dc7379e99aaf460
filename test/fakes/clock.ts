import type { Clock, SessionStore } from '../../shared/core/ports.js';

/** 2026-01-15T12:00:00Z: a fixed, whole-second start so epoch-second arithmetic in tests is exact. */
export const T0 = Date.UTC(2026, 0, 15, 12, 0, 0);

/** A clock that only moves when a test says so. */
export class FixedClock implements Clock {
  #now: number;
  #timers: Array<{ readonly at: number; readonly controller: AbortController }> = [];

  constructor(start: number = T0) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  advance(ms: number): void {
    this.#now += ms;
    this.#fire();
  }

  /** Waiting moves the clock forward at once, then yields so other pending work can run. */
  async sleep(ms: number): Promise<void> {
    this.advance(ms);
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  /** Aborts with a `TimeoutError`, as `AbortSignal.timeout` does, once the clock has moved `ms` forward. */
  timeout(ms: number): AbortSignal {
    const controller = new AbortController();
    this.#timers.push({ at: this.#now + ms, controller });
    return controller.signal;
  }

  /** Timeouts started and not yet fired. */
  get pendingTimeouts(): number {
    return this.#timers.length;
  }

  #fire(): void {
    const due = this.#timers.filter((timer) => timer.at <= this.#now);
    this.#timers = this.#timers.filter((timer) => timer.at > this.#now);
    for (const { controller } of due) controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError'));
  }

  /** Epoch seconds, as the store ports expect them. */
  nowSeconds(): number {
    return Math.floor(this.#now / 1000);
  }
}

/**
 * Real time plus an offset, for tests against a running stack: it tells the time like the system
 * clock, but while `skipWaits` is on, a wait moves the offset forward at once instead of sleeping
 * (a lease left by a crashed invocation expires without the test waiting for it). Time never goes
 * back: turning `skipWaits` off keeps the offset gained.
 */
export class SkippingClock implements Clock {
  #offset = 0;
  skipWaits = false;

  now(): number {
    return Date.now() + this.#offset;
  }

  async sleep(ms: number): Promise<void> {
    if (!this.skipWaits) {
      await new Promise<void>((resolve) => setTimeout(resolve, ms));
      return;
    }
    this.#offset += ms;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/**
 * Real time (plus what the test added) until `hold()`; from then on a clock that only the test moves
 * (`advance`). Lease expiry, waiters' deadlines and EHR call timeouts are all measured on the clock
 * port, so while held, however slow a loaded machine is, none of them can fire on its own: only the
 * test's `advance` makes time pass. A wait (a refresh waiter's backoff) never moves the clock: it ends
 * at the next `wake()` (call it whenever what waiters wait for may have changed) or after `ms` of
 * real time as a fallback pace, whichever comes first.
 */
export class HeldClock implements Clock {
  #offset = 0;
  #held: number | undefined;
  #sleepers = new Set<() => void>();
  #timers: Array<{ readonly at: number; readonly controller: AbortController }> = [];

  now(): number {
    return this.#held ?? Date.now() + this.#offset;
  }

  /** Stops time where it is now. */
  hold(): void {
    this.#held = this.now();
  }

  advance(ms: number): void {
    if (this.#held === undefined) this.#offset += ms;
    else this.#held += ms;
    const now = this.now();
    const due = this.#timers.filter((timer) => timer.at <= now);
    this.#timers = this.#timers.filter((timer) => timer.at > now);
    for (const { controller } of due) controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError'));
  }

  /** Ends every wait in progress (their callers look again at once). */
  wake(): void {
    const sleepers = [...this.#sleepers];
    this.#sleepers.clear();
    for (const resolve of sleepers) resolve();
  }

  sleep(ms: number): Promise<void> {
    if (this.#held === undefined) return new Promise((resolve) => setTimeout(resolve, ms));
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#sleepers.add(done);
    });
  }

  /** Aborts with a `TimeoutError`, as `AbortSignal.timeout` does, once `advance` has moved the clock `ms` forward. */
  timeout(ms: number): AbortSignal {
    const controller = new AbortController();
    this.#timers.push({ at: this.now() + ms, controller });
    const armed = this.#armedWaiters.filter((waiter) => waiter.ms === ms);
    this.#armedWaiters = this.#armedWaiters.filter((waiter) => waiter.ms !== ms);
    for (const waiter of armed) waiter.resolve();
    return controller.signal;
  }

  #armedWaiters: Array<{ readonly ms: number; readonly resolve: () => void }> = [];

  /** Resolves when the code under test next starts a timeout of `ms` (it has armed that deadline). */
  nextTimeout(ms: number): Promise<void> {
    return new Promise((resolve) => this.#armedWaiters.push({ ms, resolve }));
  }
}

/**
 * The store, telling `wake` after every write that ends a refresh (stored, given back, or the session
 * ended): with a `HeldClock`, refresh waiters then look again at once instead of after their backoff.
 */
export function wakingOnRefreshEnd(store: SessionStore, wake: () => void): SessionStore {
  const ending = new Set<PropertyKey>(['completeRefresh', 'releaseRefreshLease', 'endSessionHoldingLease', 'deleteSession']);
  return new Proxy(store, {
    get(target, name) {
      const value: unknown = Reflect.get(target, name, target);
      if (typeof value !== 'function') return value;
      const call = (value as (...args: unknown[]) => unknown).bind(target);
      if (!ending.has(name)) return call;
      return async (...args: unknown[]) => {
        try {
          return await call(...args);
        } finally {
          wake();
        }
      };
    },
  });
}
