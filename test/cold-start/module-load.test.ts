import { describe, expect, it, vi } from 'vitest';
import { builtOnFirstUse } from '../../shared/core/lazy.js';

/*
 * Cold start: a Lambda function pays for every zod schema its modules construct at load, even those
 * its first request never uses (bench/cold-start.ts measures module load). The schemas of the core,
 * the session store and the audit record are built on first use instead. zod itself is real here:
 * the test only counts how often its builders are called while the modules load.
 */
const built = vi.hoisted(() => ({ count: 0 }));

vi.mock('zod/mini', async (importOriginal) => {
  const real = await importOriginal<Record<string, unknown>>();
  const counted: Record<string, unknown> = { ...real };
  for (const name of ['object', 'strictObject', 'string', 'url', 'array', 'union', 'pipe', 'transform', 'literal', 'enum', 'number', 'boolean', 'record', 'instanceof']) {
    const builder = real[name] as (...args: unknown[]) => unknown;
    counted[name] = (...args: unknown[]) => {
      built.count += 1;
      return builder(...args);
    };
  }
  return counted;
});

describe('module load builds no schema the first request may not need', () => {
  it('loading the sign-in, session store and audit modules constructs no zod schema', async () => {
    await import('../../shared/core/token.js');
    await import('../../shared/core/records.js');
    await import('../../shared/core/discovery.js');
    await import('../../shared/core/handoff.js');
    await import('../../shared/core/ehr/token-endpoint.js');
    await import('../../shared/adapters/dynamo-session-store.js');
    await import('../../shared/audit/record.js');

    expect(built.count).toBe(0);
  });

  it('a schema is built at its first use, once, and then behaves as itself', async () => {
    const { TransactionSecretsSchema } = await import('../../shared/core/records.js');
    const before = built.count;

    expect(TransactionSecretsSchema.safeParse({ v: 2 }).success).toBe(false);
    const afterFirst = built.count;
    expect(TransactionSecretsSchema.safeParse({ v: 1 }).success).toBe(false);

    expect(afterFirst).toBeGreaterThan(before);
    expect(built.count).toBe(afterFirst);
  });

  it('builtOnFirstUse runs its builder only when the value is first read', () => {
    let runs = 0;
    const value = builtOnFirstUse(() => {
      runs += 1;
      return { answer: 42, list: [1, 2] };
    });

    expect(runs).toBe(0);
    expect(value.answer).toBe(42);
    expect('list' in value).toBe(true);
    value.answer = 43;
    expect(value.answer).toBe(43);
    expect(runs).toBe(1);
  });
});
