import { describe, expect, it } from 'vitest';
import { SingleFlightCache } from '../../shared/core/single-flight-cache.js';

describe('SingleFlightCache', () => {
  it('shares one load among concurrent callers of a key and caches its value with the load time', async () => {
    const cache = new SingleFlightCache<string>();
    let release: (value: string) => void = () => undefined;
    let calls = 0;
    const load = () => {
      calls += 1;
      return new Promise<string>((resolve) => (release = resolve));
    };
    const first = cache.load('k', load, () => 42);
    const second = cache.load('k', load, () => 99);
    release('v');
    await expect(Promise.all([first, second])).resolves.toEqual(['v', 'v']);
    expect(calls).toBe(1);
    expect(cache.loads).toBe(1);
    expect(cache.entry('k')).toEqual({ value: 'v', loadedAt: 42 });
  });

  it('never caches a failed load: the next load of the key starts afresh', async () => {
    const cache = new SingleFlightCache<string>();
    await expect(cache.load('k', () => Promise.reject(new Error('down')), () => 1)).rejects.toThrow('down');
    expect(cache.entry('k')).toBeUndefined();
    await expect(cache.load('k', async () => 'up', () => 2)).resolves.toBe('up');
    expect(cache.loads).toBe(2);
    cache.clear();
    expect(cache.entry('k')).toBeUndefined();
  });
});
