/**
 * The sequential waits of a sign-in: every call the API makes to the EHR, the session store, the key
 * ring and the secret store is recorded with its start and end, each delayed by the same simulated
 * network latency (so a call that waits for another's answer starts after it ended, whatever the
 * local adapters' own speed), and attributed to the API request it served. Calls that overlap form
 * one step; the steps of a request are its sequential round trips.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { CoreDeps } from '../shared/core/deps.js';

export interface Wait {
  readonly label: string;
  readonly start: number;
  readonly end: number;
}

/** The API request a wait served, by path. */
export interface ApiRequest {
  readonly name: string;
  readonly start: number;
  end: number;
}

type MutableDeps = { -readonly [K in keyof CoreDeps]: CoreDeps[K] };

function ehrLabel(url: string): string {
  const path = new URL(url).pathname;
  if (path.endsWith('/.well-known/smart-configuration')) return 'discovery';
  if (path.endsWith('/.well-known/openid-configuration')) return 'OpenID configuration';
  if (path.endsWith('/metadata')) return 'CapabilityStatement';
  if (/jwks/i.test(path)) return 'JWKS';
  if (/token$/i.test(path)) return 'token';
  const resource = /\/([A-Z][A-Za-z]+)(\/[^/]+)?$/.exec(path)?.[1];
  return resource === undefined ? `EHR ${path}` : `FHIR ${resource}`;
}

const STORE_LABELS: Record<string, string> = {
  putTransaction: 'DynamoDB PutItem',
  takeTransaction: 'DynamoDB DeleteItem',
  putSession: 'DynamoDB PutItem',
  getSession: 'DynamoDB GetItem',
};

/**
 * Wraps the adapters of `deps` (the local stack's, shared by its handlers) so each call is recorded
 * and delayed by `latencyMs` (secret reads only when `secretsCached` is false: a cold container);
 * `restore` puts them back.
 */
export function recordWaits(deps: CoreDeps, latencyMs: number, options: { readonly secretsCached: boolean }): { readonly waits: Wait[]; restore(): void } {
  const target = deps as MutableDeps;
  const waits: Wait[] = [];
  const timed = async <T>(label: string, call: () => Promise<T>): Promise<T> => {
    const start = performance.now();
    try {
      await sleep(latencyMs);
      return await call();
    } finally {
      waits.push({ label, start, end: performance.now() });
    }
  };
  const wrap = <T extends object>(object: T, label: (method: string) => string | undefined): T =>
    new Proxy(object, {
      get(inner, property) {
        const value = Reflect.get(inner, property) as unknown;
        const name = typeof property === 'string' ? label(property) : undefined;
        if (typeof value !== 'function' || name === undefined) return value;
        return (...args: unknown[]) => timed(name, () => (value as (...a: unknown[]) => Promise<unknown>).apply(inner, args));
      },
    });
  const original = { http: deps.http, store: deps.store, keyRing: deps.keyRing, clientSecrets: deps.clientSecrets };
  target.http = (url, init) => timed(ehrLabel(url), () => original.http(url, init));
  target.store = wrap(original.store, (method) => STORE_LABELS[method] ?? `DynamoDB ${method}`);
  target.keyRing = wrap(original.keyRing, (method) => (method === 'generateDataKey' ? 'KMS GenerateDataKey' : method === 'decryptDataKey' ? 'KMS Decrypt' : undefined));
  // The local secrets come from the configuration; in AWS they are read once per container.
  if (!options.secretsCached) target.clientSecrets = wrap(original.clientSecrets, () => 'Secrets Manager');
  return {
    waits,
    restore() {
      Object.assign(target, original);
    },
  };
}

/** Records the API requests a server answers (start to close), named by `name(path)`. */
export function recordApiRequests(track: { track(req: IncomingMessage, res: ServerResponse): void }, name: (path: string) => string): { readonly requests: ApiRequest[]; restore(): void } {
  const requests: ApiRequest[] = [];
  const original = track.track;
  track.track = function (req, res) {
    const request: ApiRequest = { name: name(new URL(req.url ?? '/', 'http://api').pathname), start: performance.now(), end: Infinity };
    requests.push(request);
    res.once('close', () => (request.end = performance.now()));
    original.call(this, req, res);
  };
  return {
    requests,
    restore() {
      track.track = original;
    },
  };
}

/**
 * The waits as sequential steps: a wait's step is one more than the latest step among the waits that
 * had ended before it started (it may have needed their answers); waits of one step ran side by side.
 * The number of steps is the longest chain of calls each started after the previous one's answer.
 */
export function sequentialSteps(waits: readonly Wait[]): string[][] {
  const sorted = [...waits].sort((a, b) => a.start - b.start);
  const depth: number[] = [];
  const steps: string[][] = [];
  sorted.forEach((wait, i) => {
    let d = 0;
    for (let j = 0; j < i; j++) if (sorted[j]!.end <= wait.start) d = Math.max(d, depth[j]! + 1);
    depth.push(d);
    (steps[d] ??= []).push(wait.label);
  });
  return steps;
}

/** Per API request (in order), its steps written `a ‖ b` for calls side by side, and the total. */
export function stepsByRequest(requests: readonly ApiRequest[], waits: readonly Wait[]): { readonly total: number; readonly requests: Record<string, { readonly count: number; readonly steps: string[] }> } {
  const result: Record<string, { count: number; steps: string[] }> = {};
  let total = 0;
  for (const request of requests) {
    const mine = waits.filter((wait) => wait.start >= request.start && wait.start <= request.end);
    const steps = sequentialSteps(mine).map((labels) => labels.join(' ‖ '));
    result[request.name] = { count: steps.length, steps };
    total += steps.length;
  }
  return { total, requests: result };
}
