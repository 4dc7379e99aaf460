import { afterEach, describe, expect, it, vi } from 'vitest';
import { cryptoRandom, fetchHttpClient, systemClock } from '../../shared/adapters/system.js';

describe('system adapters', () => {
  afterEach(() => {
    vi.unstubAllGlobals();
  });

  it('systemClock reads the wall clock in epoch milliseconds', () => {
    // Arrange
    const before = Date.now();

    // Act
    const now = systemClock.now();

    // Assert
    expect(now).toBeGreaterThanOrEqual(before);
    expect(now).toBeLessThanOrEqual(Date.now());
  });

  it('cryptoRandom returns plain Uint8Arrays of the asked length that differ between calls', () => {
    // Act
    const a = cryptoRandom.bytes(32);
    const b = cryptoRandom.bytes(32);

    // Assert
    expect(a.constructor).toBe(Uint8Array);
    expect(a).toHaveLength(32);
    expect(a.buffer.byteLength).toBe(32);
    expect(a).not.toEqual(b);
  });

  it('fetchHttpClient calls the global fetch current at call time', async () => {
    // Arrange
    const response = new Response('ok');
    const fetchStub = vi.fn(async () => response);
    vi.stubGlobal('fetch', fetchStub);
    const init = { method: 'POST', body: 'x' };

    // Act
    const answer = await fetchHttpClient('https://ehr.example/token', init);

    // Assert
    expect(answer).toBe(response);
    expect(fetchStub).toHaveBeenCalledExactlyOnceWith('https://ehr.example/token', init);
  });
});
