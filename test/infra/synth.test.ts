import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App } from 'aws-cdk-lib';
import { CfnGuardValidator } from '@cdklabs/cdk-validator-cfnguard';
import { afterAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../infra/constructs/smart-launch.js';
import { GUARD_DISABLED_RULES, guardValidator } from '../../infra/nag.js';
import { offlineEnv, SAMPLE_TEMPLATE, sharedSynth } from './shared-synth.js';

/**
 * The real thing: `npx cdk synth --quiet` of the sample customer through the CLI and cdk.json, with
 * esbuild bundling, cdk-nag, the template checks and cfn-guard, offline and without AWS credentials.
 * Slow, so it runs once per test run (shared-synth.ts) and the deploy rehearsal loads the same bundles.
 * The tests that read the synth's output live here, after the one that runs (or awaits) it: this
 * worker waits for the synth anyway, and no other file sits idle waiting for it.
 */

const scratch = mkdtempSync(join(tmpdir(), 'smart-launch-synth-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function run(command: string, args: string[], env: NodeJS.ProcessEnv): { status: number | null; output: string } {
  const result = spawnSync(command, args, { cwd: PROJECT_ROOT, env, encoding: 'utf8', timeout: 170_000 });
  return { status: result.status, output: `${result.stdout}\n${result.stderr}` };
}

describe('cdk synth (CLI, bundling, offline)', () => {
  it('synthesizes the sample customer with bundled ESM functions and no warning', async () => {
    // Act
    const { outdir: out, status, output } = await sharedSynth();
    // Assert
    expect(status, output).toBe(0);
    const templateFile = join(out, SAMPLE_TEMPLATE);
    expect(existsSync(templateFile)).toBe(true);
    const template = JSON.parse(readFileSync(templateFile, 'utf8')) as { Resources: Record<string, { Type: string; Properties: Record<string, unknown> }> };
    const functions = Object.values(template.Resources).filter((r) => r.Type === 'AWS::Lambda::Function');
    expect(functions).toHaveLength(4);
    const assets = readdirSync(out).filter((name) => name.startsWith('asset.'));
    expect(assets).toHaveLength(4);
    for (const asset of assets) {
      const files = readdirSync(join(out, asset)).sort();
      // The handler and its map, and the chunks only `import()` loads (code splitting: the tracer).
      expect(files.filter((name) => name.startsWith('index.'))).toEqual(['index.mjs', 'index.mjs.map']);
      for (const name of files.filter((f) => !f.startsWith('index.'))) expect(name).toMatch(/^chunk-[A-Z0-9]+\.mjs(\.map)?$/);
      const bundle = readFileSync(join(out, asset, 'index.mjs'), 'utf8');
      expect(bundle.startsWith("import { createRequire as __smartLaunchCreateRequire } from 'node:module';")).toBe(true);
      expect(bundle.length).toBeLessThan(1_000_000);
      // The SDK comes from the runtime: imported, not bundled. The JWKS function (SMART-REG-04)
      // needs KMS only, so its bundle does not load the DynamoDB client at all.
      if (bundle.includes('smart-launch-jwks')) {
        expect(bundle).toMatch(/from\s*"@aws-sdk\/client-kms"/);
        expect(bundle).not.toMatch(/@aws-sdk\/client-dynamodb/);
        continue;
      }
      expect(bundle).toMatch(/from\s*"@aws-sdk\/client-dynamodb"/);
    }
    expect(output).not.toMatch(/WARNING|deprecated|W2531/i);
    expect(output).not.toContain('Synthesis finished with errors');
  }, 320_000);

  it('fails with every problem of an invalid customer file listed', () => {
    // Arrange
    const dir = join(scratch, 'customers');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    writeFileSync(
      join(dir, 'bad.json'),
      JSON.stringify({
        customer: 'bad',
        publicUrl: 'http://smart.bad.example',
        app: { url: 'https://app.bad.example/' },
        issuers: [{ iss: 'https://ehr.bad.example/fhir', clientId: 'a', clientAuth: 'client_secret_basic', clientSecret: 'hunter2', scope: 'launch' }],
      }),
    );
    // Act: the app itself (what `cdk synth` runs, under the same tsx loader), without the CLI or npx around it.
    const { status, output } = run(process.execPath, ['--import', 'tsx', 'infra/app.ts'], offlineEnv({ SMART_LAUNCH_CUSTOMERS_DIR: dir }));
    // Assert
    expect(status).not.toBe(0);
    expect(output).toContain('customer files are invalid:');
    expect(output).toContain('$.publicUrl: publicUrl must use https in a deployed stack');
    expect(output).toContain('$.issuers[0].clientSecret: in a deployed stack clientSecret must be a Secrets Manager secret ARN');
    expect(output).not.toContain('hunter2');
  }, 60_000);
});

describe('cfn-guard (Control Tower proactive controls) at synth', () => {
  /**
   * The run's one real `cdk synth` (shared-synth.ts) ran cfn-guard with every control but the
   * disabled ones and passed (its status is asserted): the sample passes every other control. Here
   * only the disabled controls run on that same template, through the validator's own `validate`,
   * and each must find something, so each is disabled for a reason the template really has.
   */
  async function disabledRuleFindings(): Promise<string[]> {
    const synth = await sharedSynth();
    expect(synth.status, synth.output).toBe(0);
    const rules = join(PROJECT_ROOT, 'node_modules', '@cdklabs', 'cdk-validator-cfnguard', 'rules', 'control-tower', 'cfn-guard');
    const folder: Record<string, string> = { apigateway: 'apigateway', lambda: 'lambda', kms: 'keymanagementservice' };
    const report = new CfnGuardValidator({
      controlTowerRulesEnabled: false,
      rules: Object.keys(GUARD_DISABLED_RULES).map((rule) => join(rules, folder[rule.split('-')[1]!]!, `${rule}.guard`)),
    }).validate({ templatePaths: [join(synth.outdir, SAMPLE_TEMPLATE)], appConstruct: new App() });
    // Each violation names its control as "[CT.XXX.PR.N]" in its description, as the synth report does.
    return [...new Set(report.violations.flatMap((v) => [...JSON.stringify(v).matchAll(/\[(CT\.[A-Z0-9.]+)\]/g)].map((m) => m[1]!)))].sort();
  }

  it('runs offline and finds exactly the rules disabled with a reason, nothing else (on the shared synth)', async () => {
    expect(await disabledRuleFindings()).toEqual(Object.keys(GUARD_DISABLED_RULES).map((r) => r.toUpperCase().replace(/-/g, '.')).sort());
    for (const reason of Object.values(GUARD_DISABLED_RULES)) expect(reason.length).toBeGreaterThan(60);
    expect(guardValidator().name).toBe(new CfnGuardValidator().name);
  }, 320_000);
});
