import 'aws-sdk-client-mock-vitest/extend';
import { afterEach, expect } from 'vitest';
import { allCustomMatcher } from 'aws-sdk-client-mock-vitest';

expect.extend(allCustomMatcher);
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
// Structured logs go to stdout; keep test output readable unless a test captures them.
process.env.POWERTOOLS_LOG_LEVEL ??= 'SILENT';
process.env.LOG_LEVEL ??= 'SILENT';

/*
 * Metrics (EMF documents, `{"_aws": ...}`) never reach the suite's stdout: a test that makes a handler
 * publish them captures and reads them (as test/ops/metrics.test.ts does), or hands the handler a
 * counter of its own. One that does neither fails here, naming what it printed. Installed once per
 * worker; a test's own spy on stdout sees the documents before this check does.
 */
const EMF_GUARD = Symbol.for('smart-launch.test.emf-on-stdout');
const stdout = process.stdout as typeof process.stdout & { [EMF_GUARD]?: string[] };
if (stdout[EMF_GUARD] === undefined) {
  const printed: string[] = [];
  stdout[EMF_GUARD] = printed;
  const write = stdout.write.bind(stdout) as (...args: unknown[]) => boolean;
  stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    if (!text.includes('"_aws"')) return write(chunk, ...rest);
    printed.push(...text.split('\n').filter((line) => line.includes('"_aws"')));
    const done = rest.find((arg) => typeof arg === 'function') as (() => void) | undefined;
    done?.();
    return true;
  }) as typeof stdout.write;
}
afterEach(() => {
  const printed = stdout[EMF_GUARD]!.splice(0);
  if (printed.length > 0) throw new Error(`this test wrote EMF metrics to stdout; capture them or pass the handler a counter:\n${printed.join('\n')}`);
});
