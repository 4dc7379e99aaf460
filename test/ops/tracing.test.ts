import { createSocket, type Socket } from 'node:dgram';
import { createServer, type Server } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startLocalDynamo, type LocalDynamo } from '../../local/dynamo-local.js';
import { apiEvent, lambdaContext } from '../fixtures/api-event.js';
import { deps as testDeps } from '../fakes/deps.js';

/**
 * Traces as Lambda with active tracing sends them: the X-Ray SDK in Lambda mode streams each closed
 * subsegment as UDP to the daemon address; here a loopback socket plays the daemon.
 */
let daemon: Socket;
let ehr: Server;
let ehrUrl = '';
let dynamo: LocalDynamo;
let dataDir: string;
const datagrams: string[] = [];

beforeAll(async () => {
  daemon = createSocket('udp4');
  daemon.on('message', (message) => datagrams.push(message.toString('utf8')));
  await new Promise<void>((done) => daemon.bind(0, '127.0.0.1', done));
  ehr = createServer((request, response) => {
    response.writeHead(request.url?.includes('fail') ? 503 : 200, { 'content-type': 'application/json' }).end('{}');
  });
  await new Promise<void>((done) => ehr.listen(0, '127.0.0.1', done));
  ehrUrl = `http://127.0.0.1:${(ehr.address() as { port: number }).port}`;
  dataDir = await mkdtemp(join(tmpdir(), 'smart-launch-trace-'));
  dynamo = await startLocalDynamo({ dataDir });
  // What the Lambda runtime sets for a function with active tracing.
  vi.stubEnv('AWS_EXECUTION_ENV', 'AWS_Lambda_nodejs22.x');
  vi.stubEnv('LAMBDA_TASK_ROOT', '/var/task');
  vi.stubEnv('AWS_LAMBDA_FUNCTION_NAME', 'smart-launch-test');
  vi.stubEnv('_HANDLER', 'index.handler');
  vi.stubEnv('AWS_XRAY_DAEMON_ADDRESS', `127.0.0.1:${(daemon.address() as { port: number }).port}`);
  vi.stubEnv('AWS_XRAY_CONTEXT_MISSING', 'IGNORE_ERROR');
  vi.stubEnv('_X_AMZN_TRACE_ID', 'Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1');
  vi.resetModules();
});
afterAll(async () => {
  vi.unstubAllEnvs();
  daemon?.close();
  ehr?.close();
  await dynamo?.close();
  await rm(dataDir, { recursive: true, force: true });
});

async function received(predicate: (segment: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
  for (let i = 0; i < 200; i++) {
    for (const datagram of datagrams) {
      const body = datagram.slice(datagram.indexOf('\n') + 1);
      const segment = JSON.parse(body) as Record<string, unknown>;
      if (predicate(segment)) return segment;
    }
    await new Promise((done) => setImmediate(done));
    await new Promise((done) => setTimeout(done, 5));
  }
  throw new Error(`no such segment among ${datagrams.length}: ${datagrams.join('\n').slice(0, 2000)}`);
}

describe('traces (Powertools Tracer, X-Ray)', () => {
  it('records each EHR call with host, method and status only: no path, no query', async () => {
    const { tracedHttp, tracer } = await import('../../shared/ops/tracing.js');
    expect(tracer.isTracingEnabled()).toBe(true);
    const http = tracedHttp(fetch);
    const secret = 'Zx9SessionLikeValue0000000000000000000000000';
    expect((await http(`${ehrUrl}/fhir/Patient/${secret}?code=${secret}`)).status).toBe(200);
    expect((await http(`${ehrUrl}/fail/${secret}`, { method: 'POST' })).status).toBe(503);
    const ok = await received((s) => s.name === `EHR 127.0.0.1:${new URL(ehrUrl).port}` && (s.annotations as Record<string, unknown>)?.status === 200);
    expect(ok).toMatchObject({ namespace: 'remote', annotations: { ehr_host: new URL(ehrUrl).host, method: 'GET', status: 200 } });
    const failed = await received((s) => (s.annotations as Record<string, unknown>)?.status === 503);
    expect(failed).toMatchObject({ fault: true, annotations: { method: 'POST' } });
    expect(datagrams.join('\n')).not.toContain(secret);
  });

  it('records DynamoDB calls of a captured AWS SDK client by operation', async () => {
    const { tracer } = await import('../../shared/ops/tracing.js');
    const client = tracer.captureAWSv3Client(dynamo.client);
    await client.send(new GetItemCommand({ TableName: dynamo.tableName, Key: { pk: { S: 'ses#nothing' } } }));
    const segment = await received((s) => s.name === 'DynamoDB');
    expect(segment).toMatchObject({ namespace: 'aws', aws: { operation: 'GetItem', table_name: dynamo.tableName } });
  });

  it('wraps each request in a handler subsegment annotated with its correlation id', async () => {
    const { createLaunchHandler } = await import('../../functions/launch/handler.js');
    const handler = createLaunchHandler(async () => testDeps());
    const event = apiEvent({ resource: '/launch', path: '/launch', query: { iss: ['https://unknown.example/fhir'], launch: ['x'] } });
    const result = await handler(event, lambdaContext);
    expect(result.statusCode).toBeGreaterThanOrEqual(400);
    const segment = await received((s) => s.name === '## index.handler' && (s.annotations as Record<string, unknown>)?.correlation_id === event.requestContext.requestId);
    expect(segment.annotations).toMatchObject({ correlation_id: event.requestContext.requestId, Service: 'smart-launch' });
  });
});
