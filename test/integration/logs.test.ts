import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forceLogLevel } from '../../shared/http/logger.js';
import type { Fixture } from './stack-fixture.js';
import { BrowserClient } from './browser-client.js';

const lines: string[] = [];
const write = process.stdout.write.bind(process.stdout);
const writeErr = process.stderr.write.bind(process.stderr);
let fixture: Fixture;
let helpers: typeof import('./stack-fixture.js');
let restoreLogLevel: (() => void) | undefined;

beforeAll(async () => {
  // The handlers' loggers read LOG_LEVEL when their modules load, which in a shared worker may have
  // happened in an earlier file: their level is set here, and put back after.
  restoreLogLevel = forceLogLevel('INFO');
  process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    lines.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stdout.write;
  // Powertools writes WARN and ERROR lines to stderr.
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    lines.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    return (writeErr as (...a: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stderr.write;
  helpers = await import('./stack-fixture.js');
  fixture = await helpers.startFixture();
});
afterAll(async () => {
  process.stdout.write = write;
  process.stderr.write = writeErr;
  restoreLogLevel?.();
  await fixture?.close();
});

function logRecords(): Array<Record<string, unknown>> {
  return lines
    .flatMap((chunk) => chunk.split('\n'))
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((record) => typeof record.service === 'string' && String(record.service).startsWith('smart-launch'));
}

describe('structured logs', () => {
  it('are JSON with a correlation id on every line and hold no token, code, verifier, session id or cookie (invariant 1)', async () => {
    const browser = new BrowserClient();
    const patient = fixture.stack.sandbox!.patients[0]!;
    const sessionId = helpers.sessionIdFrom(await helpers.ehrLaunch(fixture, browser, patient.id));
    const proxied = await browser.call(`${fixture.stack.apiUrl}/sessions/${sessionId}/fhir/Patient/${patient.id}`);
    const refused = await new BrowserClient().navigate(`${fixture.stack.apiUrl}/callback?code=x&state=y`);

    const records = logRecords();
    expect(records.length).toBeGreaterThanOrEqual(4);
    for (const record of records) {
      expect(typeof record.correlation_id, JSON.stringify(record)).toBe('string');
      expect(record.level).toMatch(/^(INFO|WARN|ERROR)$/);
    }
    const correlationId = proxied.response.headers.get('x-correlation-id');
    // One line per proxied request: the forward's facts on the completion line, with the status answered.
    const proxiedLines = records.filter((r) => r.correlation_id === correlationId);
    expect(proxiedLines).toHaveLength(1);
    expect(proxiedLines[0]).toMatchObject({ message: 'fhir request forwarded', status: 200, upstreamStatus: 200, interaction: 'read', resourceType: 'Patient', attempts: 1 });
    expect(refused.body).toContain(String(records.find((r) => r.code === 'STATE_UNKNOWN')?.correlation_id));

    const binding = browser.cookies('localhost').get('__Host-smart-launch')!;
    const text = lines.join('');
    for (const secret of [...fixture.observed.secrets, sessionId, binding, 'local-sandbox-secret', patient.id]) {
      expect(text.includes(secret), 'a log line holds a secret or patient id').toBe(false);
    }
  });
});
