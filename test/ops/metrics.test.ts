import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { EmfMetrics, OPS_METRICS, metricNamespace } from '../../shared/ops/metrics.js';
import { BrowserClient } from '../integration/browser-client.js';
import { ehrLaunch, sessionIdFrom, startFixture, type Fixture } from '../integration/stack-fixture.js';

interface Emf {
  _aws: { CloudWatchMetrics: Array<{ Namespace: string; Dimensions: string[][]; Metrics: Array<{ Name: string; Unit: string }> }> };
  [key: string]: unknown;
}

let fixture: Fixture;
const lines: string[] = [];

beforeAll(async () => {
  fixture = await startFixture({ metrics: new EmfMetrics(metricNamespace('local-sandbox'), 'smart-launch') });
});
afterAll(async () => {
  await fixture?.close();
});

/** Runs `action` and answers the EMF documents written to stdout meanwhile, as {name, unit, dimensions, value}. */
async function emfOf(action: () => Promise<void>) {
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  });
  lines.length = 0;
  try {
    await action();
  } finally {
    spy.mockRestore();
  }
  return lines
    .flatMap((chunk) => chunk.split('\n'))
    .filter((line) => line.includes('"_aws"'))
    .map((line) => {
      const emf = JSON.parse(line) as Emf;
      const [directive] = emf._aws.CloudWatchMetrics;
      expect(emf._aws.CloudWatchMetrics).toHaveLength(1);
      expect(directive!.Namespace).toBe('SmartLaunch/local-sandbox');
      expect(directive!.Metrics).toHaveLength(1);
      const { Name: name, Unit: unit } = directive!.Metrics[0]!;
      expect(directive!.Dimensions).toHaveLength(1);
      const dimensions = Object.fromEntries(directive!.Dimensions[0]!.map((key) => [key, emf[key]]));
      // The dimension set is exactly the one the dashboard and alarms query.
      expect(directive!.Dimensions[0]).toEqual([...OPS_METRICS[name as keyof typeof OPS_METRICS]]);
      return { name, unit, dimensions, value: emf[name] as number };
    });
}

describe('operational metrics (EMF through Powertools Metrics)', () => {
  it('counts launches, callbacks, token requests, proxied requests, upstream latency and errors, refreshes and session ends per issuer', async () => {
    const sandbox = fixture.stack.sandbox!;
    const Issuer = sandbox.fhirBaseUrl;
    const patient = sandbox.patients[0]!;
    const browser = new BrowserClient();
    let base = '';

    const refused = await emfOf(async () => {
      const page = await browser.fetch(`${fixture.stack.apiUrl}/launch?iss=${encodeURIComponent('https://evil.example/fhir')}&launch=x`);
      expect(page.status).toBeGreaterThanOrEqual(400);
      await page.body?.cancel();
    });
    // An issuer off the allow-list never becomes a dimension value.
    expect(refused).toEqual([{ name: 'LaunchFailures', unit: 'Count', dimensions: { Issuer: 'unknown' }, value: 1 }]);

    const signIn = await emfOf(async () => {
      base = `${fixture.stack.apiUrl}/sessions/${sessionIdFrom(await ehrLaunch(fixture, browser, patient.id))}`;
    });
    expect(signIn).toEqual(
      expect.arrayContaining([
        { name: 'Launches', unit: 'Count', dimensions: { Issuer, Mode: 'ehr' }, value: 1 },
        { name: 'Callbacks', unit: 'Count', dimensions: { Issuer, Outcome: 'success' }, value: 1 },
        { name: 'TokenRequests', unit: 'Count', dimensions: { Issuer, Grant: 'authorization_code', Outcome: 'success' }, value: 1 },
      ]),
    );
    expect(signIn).toHaveLength(3);

    const reads = await emfOf(async () => {
      expect((await browser.call(`${base}/fhir/Patient/${patient.id}`)).status).toBe(200);
      expect((await browser.call(`${base}/fhir/Observation?patient=${patient.id}`)).status).toBe(200);
      sandbox.faults.fhirDropConnection = true;
      expect((await browser.call(`${base}/fhir/Patient/${patient.id}`)).status).toBe(502);
      sandbox.clearFaults();
    });
    expect(reads.filter((p) => p.name === 'ProxyRequests')).toEqual([
      { name: 'ProxyRequests', unit: 'Count', dimensions: { Issuer, Interaction: 'read', StatusClass: '2xx' }, value: 1 },
      { name: 'ProxyRequests', unit: 'Count', dimensions: { Issuer, Interaction: 'search-type', StatusClass: '2xx' }, value: 1 },
      { name: 'ProxyRequests', unit: 'Count', dimensions: { Issuer, Interaction: 'unknown', StatusClass: '5xx' }, value: 1 },
    ]);
    const latency = reads.filter((p) => p.name === 'UpstreamLatency');
    expect(latency).toHaveLength(2);
    for (const point of latency) {
      expect(point).toMatchObject({ unit: 'Milliseconds', dimensions: { Issuer } });
      expect(point.value).toBeGreaterThanOrEqual(0);
    }
    expect(reads.filter((p) => p.name === 'UpstreamErrors')).toEqual([{ name: 'UpstreamErrors', unit: 'Count', dimensions: { Issuer }, value: 1 }]);

    const refresh = await emfOf(async () => {
      expect((await browser.call(`${base}/refresh`, { method: 'POST' })).status).toBe(200);
    });
    expect(refresh).toEqual([
      { name: 'Refreshes', unit: 'Count', dimensions: { Issuer, Outcome: 'success' }, value: 1 },
      { name: 'TokenRequests', unit: 'Count', dimensions: { Issuer, Grant: 'refresh_token', Outcome: 'success' }, value: 1 },
    ]);

    // A storm of refreshes: one token request, every other request joins it (invariant 8).
    sandbox.resetStats();
    const storm = await emfOf(async () => {
      const answers = await Promise.all(Array.from({ length: 6 }, () => browser.call(`${base}/refresh`, { method: 'POST' })));
      expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200, 200]);
    });
    expect(sandbox.stats.tokenRequests.refresh_token).toBe(1);
    expect(storm.filter((p) => p.name === 'TokenRequests')).toEqual([
      { name: 'TokenRequests', unit: 'Count', dimensions: { Issuer, Grant: 'refresh_token', Outcome: 'success' }, value: 1 },
    ]);
    const refreshes = storm.filter((p) => p.name === 'Refreshes').map((p) => p.dimensions.Outcome).sort();
    expect(refreshes).toEqual(['success', 'waited', 'waited', 'waited', 'waited', 'waited']);

    const logout = await emfOf(async () => {
      expect((await browser.call(`${base}/logout`, { method: 'POST' })).status).toBe(200);
    });
    expect(logout).toEqual([{ name: 'SessionEnds', unit: 'Count', dimensions: { Issuer, Cause: 'logout' }, value: 1 }]);
  });
});
