import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { SmartLaunchStack } from '../../infra/stacks/smart-launch-stack.js';
import { SESSION_DEFAULTS } from '../../shared/config/schema.js';
import { ENV } from '../../shared/config/env.js';
import { OPS_METRICS } from '../../shared/ops/metrics.js';
import { acmeHealthStack, awsConfig, resourcesOf, testApp } from '../infra/helpers.js';

const DOCS = join(process.cwd(), 'docs');
const read = (path: string) => readFileSync(join(DOCS, path), 'utf8');
const config = awsConfig('acme-health');
let template: Template;

function synth(cfg = config): Template {
  return Template.fromStack(new SmartLaunchStack(testApp(), `SmartLaunch-${cfg.customer}`, { config: cfg }));
}

beforeAll(() => {
  // synth() of the default config, shared with the other files that read it (helpers.ts).
  template = acmeHealthStack().template;
});

/** The "Checked facts" table of docs/go-live.md as fact → value. */
function checkedFacts(): Map<string, string> {
  const text = read('go-live.md');
  const section = text.slice(text.indexOf('## Checked facts'));
  const facts = new Map<string, string>();
  for (const line of section.split('\n')) {
    const cells = line.split('|').map((c) => c.trim());
    if (cells.length !== 4 || cells[1] === 'fact' || cells[1]!.startsWith('---')) continue;
    facts.set(cells[1]!, cells[2]!.replace(/`/g, ''));
  }
  return facts;
}

describe('docs/go-live.md stays true', () => {
  it('every checked fact matches the synthesized stack and the code', () => {
    const facts = checkedFacts();
    const groups = Object.values(resourcesOf(template, 'AWS::Logs::LogGroup'));
    const audit = groups.find((g) => g.Properties?.LogGroupName === '/smart-launch/acme-health/audit')!;
    const others = groups.filter((g) => g !== audit);
    const aliases = Object.values(resourcesOf(template, 'AWS::KMS::Alias')).map((a) => String(a.Properties?.AliasName).split('/').at(-1));
    const writers = Object.values(resourcesOf(template, 'AWS::Lambda::Function'))
      .map((fn) => (fn.Properties?.Environment as { Variables: Record<string, string> }).Variables)
      .filter((v) => v[ENV.auditLogGroup] !== undefined)
      .map((v) => v.POWERTOOLS_SERVICE_NAME!.replace(/^smart-launch-/, ''));
    const readers = Object.values(resourcesOf(template, 'AWS::IAM::ManagedPolicy')).filter((p) => JSON.stringify(p.Properties).includes('logs:FilterLogEvents'));
    const issuerAlarms = Object.values(resourcesOf(template, 'AWS::CloudWatch::Alarm')).filter((a) => String(a.Properties?.AlarmDescription).endsWith(config.issuers[0]!.iss));
    const table = Object.values(resourcesOf(template, 'AWS::DynamoDB::Table'))[0]!;
    const actual: Record<string, string> = {
      'audit log group': '/smart-launch/{customer}/audit',
      'audit retention days': String(audit.Properties?.RetentionInDays),
      'operational log retention days': [...new Set(others.map((g) => String(g.Properties?.RetentionInDays)))].join(', '),
      'KMS key aliases': aliases.sort().join(', '),
      'audit readers by default': readers.length === 0 ? 'none' : String(readers.length),
      'audit writers': writers.join(', '),
      'session lifetime default minutes': String(SESSION_DEFAULTS.lifetimeMinutes),
      'idle timeout default minutes': String(SESSION_DEFAULTS.idleTimeoutMinutes),
      'transaction lifetime default minutes': String(SESSION_DEFAULTS.transactionMinutes),
      'table point-in-time recovery': JSON.stringify(table.Properties?.PointInTimeRecoverySpecification).includes('true') ? 'on' : 'off',
      'alarms per issuer': String(issuerAlarms.length),
    };
    expect(audit.Properties?.LogGroupName).toBe(facts.get('audit log group')!.replace('{customer}', 'acme-health'));
    expect(Object.fromEntries(facts)).toEqual(actual);
  });

  it('changing an issuer\'s scope or adding an issuer is a deploy of the same code: only configuration and monitoring change', () => {
    const changed = synth(
      awsConfig('acme-health', {
        issuers: [
          ...config.issuers.map((i) => (i.default ? { ...i, scope: 'launch openid fhirUser patient/Patient.rs' } : i)),
          { iss: 'https://third.acme-health.example/fhir', clientId: 'third', clientAuth: 'none', scope: 'launch/patient openid' },
        ],
      }),
    );
    const before = resourcesOf(template, 'AWS::Lambda::Function');
    const after = resourcesOf(changed, 'AWS::Lambda::Function');
    expect(Object.keys(after)).toEqual(Object.keys(before));
    for (const id of Object.keys(before)) {
      const { Environment: _envBefore, ...restBefore } = before[id]!.Properties!;
      const { Environment: _envAfter, ...restAfter } = after[id]!.Properties!;
      expect(restAfter, id).toEqual(restBefore);
    }
    const changedEnv = Object.values(after).filter((fn, index) => JSON.stringify(fn.Properties?.Environment) !== JSON.stringify(Object.values(before)[index]!.Properties?.Environment));
    expect(changedEnv.length).toBeGreaterThan(0);
    // The new issuer gets its two alarms.
    expect(Object.keys(resourcesOf(changed, 'AWS::CloudWatch::Alarm')).length).toBe(Object.keys(resourcesOf(template, 'AWS::CloudWatch::Alarm')).length + 2);
  });
});

describe('docs/operations.md and the runbooks name what exists', () => {
  const runbooks = readdirSync(join(DOCS, 'runbooks')).filter((f) => f.endsWith('.md'));
  const all = [read('operations.md'), read('go-live.md'), ...runbooks.map((f) => read(join('runbooks', f)))].join('\n');

  it('documents every metric the functions publish, with its dimensions', () => {
    const operations = read('operations.md');
    for (const [name, dimensions] of Object.entries(OPS_METRICS)) {
      const row = operations.split('\n').find((line) => line.startsWith(`| \`${name}\` |`));
      expect(row, name).toBeDefined();
      for (const dimension of dimensions) expect(row, `${name} ${dimension}`).toContain(`\`${dimension}\``);
    }
  });

  it('has the seven runbooks, each naming a metric or alarm that exists and a command', () => {
    expect(runbooks.sort()).toEqual(
      ['adding-an-issuer.md', 'ehr-down-or-slow.md', 'ehr-endpoints-changed.md', 'jwks-key-unreadable.md', 'kms-dynamodb-throttling.md', 'secret-or-key-compromised.md', 'token-endpoint-errors.md'].sort(),
    );
    const alarmIds = Object.keys(resourcesOf(template, 'AWS::CloudWatch::Alarm')).map((id) => id.replace(/^SmartLaunchMonitoring/, '').replace(/[0-9A-F]{8}$/, ''));
    const known = [...Object.keys(OPS_METRICS), ...alarmIds.map((id) => id.replace(/^Issuer\d+/, 'Issuer{n}')), 'ThrottledRequests'];
    for (const file of runbooks) {
      const text = read(join('runbooks', file));
      const signal = text.match(/\*\*Shows as\*\*:([\s\S]*?)\n\n/)?.[1] ?? '';
      expect(signal, file).not.toBe('');
      const named = [...signal.matchAll(/`([A-Za-z{}]+)`/g)].map((m) => m[1]!).filter((n) => known.includes(n));
      if (file !== 'secret-or-key-compromised.md') expect(named.length, `${file} names no metric or alarm`).toBeGreaterThan(0);
      else expect(signal).toContain('TokenRequests');
      expect(text, file).toMatch(/npx (smart-launch|cdk) /);
    }
  });

  it('uses only commands and options the CLI has', () => {
    const commands = [...all.matchAll(/npx smart-launch ([a-z]+)(?: ([a-z]+))?/g)].map((m) => `${m[1]}${m[2] && m[1] !== 'doctor' ? ` ${m[2]}` : ''}`);
    expect(commands.length).toBeGreaterThan(10);
    for (const command of commands) expect(['doctor', 'sessions end', 'audit export']).toContain(command);
    const usage = readFileSync(join(process.cwd(), 'cli', 'ops.ts'), 'utf8') + readFileSync(join(process.cwd(), 'cli', 'doctor.ts'), 'utf8');
    for (const option of new Set([...all.matchAll(/npx smart-launch [^\n`]*/g)].flatMap((m) => [...m[0].matchAll(/--([a-z-]+)/g)].map((o) => o[1]!)))) {
      expect(usage, `--${option}`).toContain(`--${option}`);
    }
  });
});
