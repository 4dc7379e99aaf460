import * as apigw from 'aws-cdk-lib/aws-apigateway';
import { Duration } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { bufferedHandler, handler } from '../../functions/fhir-proxy/handler.js';
import { isStreamingHandler } from '../../shared/http/streaming.js';
import { RESPONSE_TRANSFER_MODE } from '../../infra/constructs/launch-api.js';
import type { FunctionName } from '../../shared/http/routes.js';
import { SmartLaunchStack } from '../../infra/stacks/smart-launch-stack.js';
import { acmeHealthStack, awsConfig, resourcesOf, testApp } from './helpers.js';

/*
 * FHIR answers over 6 MB in AWS: the proxy route is a REST API integration in STREAM mode invoking a
 * response-streaming handler.
 */

interface Method {
  readonly route: string;
  readonly fn: FunctionName;
  readonly integration: { Type: string; Uri: unknown; ResponseTransferMode?: string; TimeoutInMillis?: number };
}

function methodsOf(template: Template): Method[] {
  const functions = new Map<string, FunctionName>();
  for (const [id, fn] of Object.entries(resourcesOf(template, 'AWS::Lambda::Function'))) {
    const variables = (fn.Properties?.Environment as { Variables: Record<string, string> }).Variables;
    functions.set(id, variables.POWERTOOLS_SERVICE_NAME!.replace(/^smart-launch-/, '') as FunctionName);
  }
  return Object.values(resourcesOf(template, 'AWS::ApiGateway::Method')).map((m) => {
    const p = m.Properties!;
    const integration = p.Integration as Method['integration'];
    const uri = JSON.stringify(integration.Uri);
    const fn = [...functions].find(([id]) => uri.includes(`"${id}"`))![1];
    return { route: `${String(p.HttpMethod)} ${String(p.OperationName)}`, fn, integration };
  });
}

function synth(api: Record<string, unknown> = {}): Template {
  const app = testApp();
  const stack = new SmartLaunchStack(app, 'SmartLaunch-acme-health', { config: awsConfig('acme-health'), smartLaunch: { api } });
  return Template.fromStack(stack);
}

let template: Template;
beforeAll(() => {
  // synth() with no API prop: the default stack, shared with the other files that read it (helpers.ts).
  template = acmeHealthStack().template;
});

describe('FHIR proxy response streaming in the deployed design', () => {
  it('integrates the FHIR proxy in STREAM mode through response-streaming-invocations', () => {
    const proxy = methodsOf(template).filter((m) => m.fn === 'fhir-proxy');
    // ANY on {proxy+}, and POST (batch/transaction) and OPTIONS (CORS preflight) on the FHIR base.
    expect(proxy).toHaveLength(3);
    for (const { integration } of proxy) {
      expect(integration.Type).toBe('AWS_PROXY');
      expect(integration.ResponseTransferMode).toBe('STREAM');
      expect(JSON.stringify(integration.Uri)).toContain('/2021-11-15/functions/');
      expect(JSON.stringify(integration.Uri)).toContain('/response-streaming-invocations');
    }
  });

  it('leaves the sign-in and session routes buffered (their answers are small pages and JSON)', () => {
    for (const method of methodsOf(template).filter((m) => m.fn !== 'fhir-proxy')) {
      expect(method.integration.ResponseTransferMode, method.route).toBeUndefined();
      expect(JSON.stringify(method.integration.Uri), method.route).toContain('/2015-03-31/functions/');
    }
    for (const [fn, mode] of Object.entries(RESPONSE_TRANSFER_MODE)) expect(mode, fn).toBe(fn === 'fhir-proxy' ? 'STREAM' : 'BUFFERED');
  });

  it('lets API Gateway invoke the proxy with lambda:InvokeFunction, which covers InvokeWithResponseStream', () => {
    const permissions = Object.values(resourcesOf(template, 'AWS::Lambda::Permission')).map((p) => p.Properties!);
    expect(permissions.length).toBeGreaterThan(0);
    for (const permission of permissions) {
      expect(permission.Action).toBe('lambda:InvokeFunction');
      expect(permission.Principal).toBe('apigateway.amazonaws.com');
    }
  });

  it('deploys the streaming handler as index.handler; the buffered one is bufferedHandler', () => {
    const proxyFunctions = Object.values(resourcesOf(template, 'AWS::Lambda::Function')).filter(
      (fn) => (fn.Properties?.Environment as { Variables: Record<string, string> }).Variables.POWERTOOLS_SERVICE_NAME === 'smart-launch-fhir-proxy',
    );
    expect(proxyFunctions.map((fn) => fn.Properties!.Handler)).toEqual(['index.handler']);
    expect(isStreamingHandler(handler)).toBe(true);
    expect(isStreamingHandler(bufferedHandler)).toBe(false);
  });

  it('keeps STREAM when the stack sets an integration timeout, and honours an explicit BUFFERED', () => {
    const timed = methodsOf(synth({ integrations: { 'fhir-proxy': { timeout: Duration.seconds(28) } } })).find((m) => m.fn === 'fhir-proxy')!;
    const buffered = methodsOf(synth({ integrations: { 'fhir-proxy': { responseTransferMode: apigw.ResponseTransferMode.BUFFERED } } })).find(
      (m) => m.fn === 'fhir-proxy',
    )!;

    expect(timed.integration).toMatchObject({ ResponseTransferMode: 'STREAM', TimeoutInMillis: 28_000 });
    expect(buffered.integration.ResponseTransferMode).toBe('BUFFERED');
    expect(JSON.stringify(buffered.integration.Uri)).toContain('/2015-03-31/functions/');
  });
});
