import { App, Stack, Validations } from 'aws-cdk-lib';
import type { PolicyValidationPluginReport } from 'aws-cdk-lib';
import { describe, expect, it } from 'vitest';
import { SmartLaunch } from '../../infra/constructs/smart-launch.js';
import { addNagChecks, nagPacks, REASONS } from '../../infra/nag.js';
import { SmartLaunchStack } from '../../infra/stacks/smart-launch-stack.js';
import { awsConfig, sampleCustomerStack, testApp } from './helpers.js';

function findings(app: App): string[] {
  app.synth();
  return nagPacks(app).flatMap((pack) =>
    (pack.validateScope(app) as PolicyValidationPluginReport).violations.flatMap((v) =>
      v.violatingResources.map((r) => `${v.severity} ${v.ruleName} ${r.constructPath ?? ''}`),
    ),
  );
}

describe('cdk-nag (AwsSolutions + HIPAA Security, v3)', () => {
  it('finds nothing unacknowledged in the sample customer stack', () => {
    // Arrange: built once per worker, shared with the files that read its template (helpers.ts).
    const { app } = sampleCustomerStack();
    // Act + Assert
    expect(findings(app)).toEqual([]);
  });

  it('finds nothing with a WAF ACL, reserved concurrency and the account logging role, and needs fewer acknowledgments', () => {
    // Arrange
    const app = testApp();
    const stack = new SmartLaunchStack(app, 'SmartLaunch-acme', {
      // On the execute-api host the app is on another site: no browser binding (see the cookie-site rules).
      config: awsConfig('acme', { publicUrl: 'https://abc123.execute-api.us-east-1.amazonaws.com/prod', cookie: { browserBinding: false } }),
      smartLaunch: {
        api: { webAclArn: 'arn:aws:wafv2:us-east-1:111111111111:regional/webacl/acme/1', createCloudWatchRole: true },
        functions: { launch: { reservedConcurrency: 5 }, sessions: { reservedConcurrency: 5 }, 'fhir-proxy': { reservedConcurrency: 20 }, jwks: { reservedConcurrency: 2 } },
      },
    });
    // Act
    const result = findings(app);
    // Assert: the rules now pass on their own, so no acknowledgment is recorded for them.
    expect(result).toEqual([]);
    const acknowledged = JSON.stringify(stack.node.findAll().flatMap((c) => c.node.metadata.filter((m) => m.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY)));
    expect(acknowledged).not.toContain('AwsSolutions-APIG3');
    expect(acknowledged).not.toContain('HIPAA.Security-LambdaConcurrency');
    expect(acknowledged).toContain('AmazonAPIGatewayPushToCloudWatchLogs');
  });

  it('reports the findings of an unacknowledged stack, so the checks do run', () => {
    // Arrange: the construct embedded in a plain stack, without `acknowledgeFindings`.
    const app = testApp();
    new SmartLaunch(new Stack(app, 'Plain'), 'SmartLaunch', { config: awsConfig('plain') });
    // Act
    const result = findings(app);
    // Assert
    expect(result).toEqual(expect.arrayContaining([expect.stringContaining('AwsSolutions-APIG4'), expect.stringContaining('HIPAA.Security-LambdaDLQ')]));
  });

  it('fails the synth through the validation plugins only when something is unacknowledged', () => {
    const app = testApp();
    new SmartLaunchStack(app, 'SmartLaunch-acme', { config: awsConfig('acme') });
    addNagChecks(app);
    expect(() => app.synth()).not.toThrow();

    const unacknowledged = testApp();
    new SmartLaunch(new Stack(unacknowledged, 'Plain'), 'SmartLaunch', { config: awsConfig('plain') });
    addNagChecks(unacknowledged);
    expect(() => unacknowledged.synth()).toThrow(/AwsSolutions-APIG4/);
  });

  it('gives every acknowledgment a reason a reviewer can check', () => {
    for (const [rule, reason] of Object.entries(REASONS)) {
      expect(reason.length, rule).toBeGreaterThan(120);
    }
  });
});
