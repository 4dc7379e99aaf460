import { randomBytes } from 'node:crypto';
import type { Clock, HttpClient, Random } from '../core/ports.js';

/** The wall clock; the only place outside tests where the core's time comes from. */
export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/** The OS CSPRNG. Returns a plain copy: Node may hand out views into a shared pool. */
export const cryptoRandom: Random = {
  bytes: (length) => new Uint8Array(randomBytes(length)),
};

/** Looks up the global `fetch` on each call, so a test or the local runner may replace it later. */
export const fetchHttpClient: HttpClient = (url, init) => fetch(url, init);
