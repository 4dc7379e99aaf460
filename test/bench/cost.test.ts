import { describe, expect, it } from 'vitest';
import { costModel, costTable, PRICES } from '../../bench/cost.js';

/**
 * The bench's cost model (bench/cost.ts) prices the proxied traffic as shipped (the proxy's session
 * cache on) and, beside it, with the cache off (one store read per request, the worst case). What is
 * checked here is the arithmetic and the labels from fixed inputs, not any measured figure.
 */
const inputs = {
  proxyCpuMs: 2,
  signInCpuMs: 30,
  signInCalls: { GetItem: 1, PutItem: 2, DeleteItem: 1, GenerateDataKey: 1 },
  proxiedCalls: { GetItem: 0.01 },
  signInEhrCalls: 2,
  logBytesPerRequest: 600,
};

describe('the bench cost model', () => {
  it('states that its per-request line is the product as shipped, session cache on', () => {
    const model = costModel(inputs);
    expect(model.perMillionProxied.basis).toMatch(/as shipped.*cache on/);
    expect(model.perMillionProxied.dynamo).toBeCloseTo(0.01 * PRICES.dynamoReadPerMillionUnits, 4);
    expect('perMillionProxiedCacheOff' in model).toBe(false);
    expect(costTable(model).split('\n')).toHaveLength(5);
  });

  it('gives the cache-off line from its own CPU and calls: one GetItem per request, more duration for its wait', () => {
    const model = costModel({ ...inputs, cacheOff: { proxyCpuMs: 3, proxiedCalls: { GetItem: 1 } } });
    if (!('perMillionProxiedCacheOff' in model) || model.perMillionProxiedCacheOff === undefined) throw new Error('no cache-off line');
    const off = model.perMillionProxiedCacheOff;
    expect(off.basis).toMatch(/cache off/);
    expect(off.dynamo).toBeCloseTo(PRICES.dynamoReadPerMillionUnits, 4);
    expect(off.kms).toBe(0);
    expect(off.lambdaDuration).toBeGreaterThan(model.perMillionProxied.lambdaDuration);
    expect(off.apiGateway).toBe(model.perMillionProxied.apiGateway);
    const rows = costTable(model).split('\n');
    expect(rows).toHaveLength(6);
    expect(rows[2]).toContain('as shipped: session cache on');
    expect(rows[3]).toContain('session cache off');
    expect(rows[3]).toContain(`**$${off.total.toFixed(2)}**`);
  });
});
