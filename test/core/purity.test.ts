import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The core stays pure (docs/design.md §3): no AWS SDK, no environment, no wall clock or global
 * randomness, no direct network access. Time, randomness and HTTP come in through the ports.
 */
const CORE = join(process.cwd(), 'shared', 'core');
const FORBIDDEN: Array<[RegExp, string]> = [
  [/from '@aws-sdk\//, 'an AWS SDK import'],
  [/from '@aws-lambda-powertools\//, 'a Lambda runtime import'],
  [/process\.env/, 'the environment'],
  [/Date\.now\(\)|new Date\(\)/, 'the wall clock'],
  [/Math\.random\(|randomBytes\(|randomUUID\(|getRandomValues\(/, 'global randomness'],
  [/(^|[^.\w#])fetch\(/m, 'a direct network call'],
  [/from '\.\.\/(adapters|runtime|http)\//, 'an adapter, runtime or HTTP module'],
];

describe('shared/core purity (docs/design.md §3)', () => {
  it('imports no AWS SDK and reads no environment, clock, randomness or network except through ports', async () => {
    const files = (await readdir(CORE)).filter((name) => name.endsWith('.ts'));
    expect(files.length).toBeGreaterThan(10);
    const violations: string[] = [];
    for (const file of files) {
      const source = (await readFile(join(CORE, file), 'utf8'))
        .split('\n')
        .filter((line) => !/^\s*(\/\/|\*|\/\*\*)/.test(line))
        .join('\n');
      for (const [pattern, what] of FORBIDDEN) if (pattern.test(source)) violations.push(`${file}: ${what}`);
    }
    expect(violations).toEqual([]);
  });
});
