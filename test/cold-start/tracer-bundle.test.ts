import { execFile } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { build, type Metafile } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUNDLE_ALIASES, functionBundleOptions, unmapDependencyChunks } from '../../infra/constructs/smart-function-defaults.js';

/*
 * Cold start: the bundles leave out what the tracer loads and never runs (`BUNDLE_ALIASES`: semver,
 * imported only by the X-Ray SDK's AWS SDK v2 patcher) and ship the tracer's chunk without a map
 * (`unmapDependencyChunks`). test/ops/tracing.test.ts runs the tracer from source; here it runs
 * bundled exactly as the functions are, in a fresh process with the environment Lambda sets for
 * active tracing, so a piece the bundle cuts that tracing needs fails this file.
 */
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
// Inside the project, so the bundle's `@aws-sdk/*` imports resolve from node_modules as the runtime's do.
const scratch = mkdtempSync(join(root, 'node_modules', '.tracer-bundle-'));
const SECRET = 'Zx9SessionLikeValue';

let metafile: Metafile;
let unmapped: string[];
let daemon: Socket;
let ehr: Server;
let aws: Server;
const datagrams: string[] = [];
const segments = () => datagrams.map((datagram) => JSON.parse(datagram.slice(datagram.indexOf('\n') + 1)) as Record<string, unknown>);

const listen = async (server: Server) => {
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
};

beforeAll(async () => {
  metafile = (await build({ ...functionBundleOptions(join(root, 'test/cold-start/fixtures/traced-entry.ts'), root, 'node22'), outdir: scratch, logLevel: 'error' })).metafile!;
  unmapped = unmapDependencyChunks(metafile, root);
  daemon = createSocket('udp4');
  daemon.on('message', (message) => datagrams.push(message.toString('utf8')));
  await new Promise<void>((done) => daemon.bind(0, '127.0.0.1', done));
  ehr = createServer((_request, response) => response.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
  // DynamoDB's JSON protocol: an empty GetItem answer (no item).
  aws = createServer((request, response) => {
    request.resume();
    request.on('end', () => response.writeHead(200, { 'content-type': 'application/x-amz-json-1.0' }).end('{}'));
  });
}, 60_000);
afterAll(() => {
  daemon?.close();
  ehr?.close();
  aws?.close();
  rmSync(scratch, { recursive: true, force: true });
});

describe('the tracer, bundled as the functions bundle it', () => {
  it('leaves semver out, whose only importer is the X-Ray SDK v2 patcher', () => {
    const standIn = relative(root, BUNDLE_ALIASES.semver!);
    expect(Object.keys(metafile.inputs).filter((input) => /(^|\/)node_modules\/semver\//.test(input))).toEqual([]);
    const importers = Object.entries(metafile.inputs)
      .filter(([, input]) => input.imports.some((imported) => imported.path === standIn))
      .map(([file]) => file.replace(/^.*node_modules\//, ''));
    expect(importers).toEqual(['aws-xray-sdk-core/dist/lib/patchers/aws_p.js']);
  });

  it('ships the chunk of the tracer without a map, and the entry with one', () => {
    const tracerChunk = Object.entries(metafile.outputs).find(([, output]) => Object.keys(output.inputs).some((input) => input.includes('node_modules/aws-xray-sdk-core/')));
    expect(tracerChunk?.[0]).toMatch(/chunk-\w+\.mjs$/);
    expect(unmapped).toContain(tracerChunk![0]);
    expect(unmapped.some((file) => file.endsWith('index.mjs'))).toBe(false);
  });

  it('traces the handler, an EHR call and a DynamoDB call, with nothing sensitive, in Lambda with active tracing', async () => {
    const [ehrUrl, awsUrl] = [await listen(ehr), await listen(aws)];
    const clean = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(AWS_|POWERTOOLS_|_X_AMZN|LAMBDA_|_HANDLER)/.test(name)));
    const requestId = 'bundled-trace-request';
    const script = `const m = await import(${JSON.stringify(join(scratch, 'index.mjs'))}); process.stdout.write(String(await m.run(${JSON.stringify(ehrUrl)}, ${JSON.stringify(awsUrl)}, ${JSON.stringify(requestId)})));`;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
      cwd: scratch,
      env: {
        ...clean,
        // What the Lambda runtime sets for a function with active tracing.
        AWS_REGION: 'us-east-1',
        AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs22.x',
        LAMBDA_TASK_ROOT: '/var/task',
        AWS_LAMBDA_FUNCTION_NAME: 'smart-launch-test',
        _HANDLER: 'index.handler',
        AWS_XRAY_DAEMON_ADDRESS: `127.0.0.1:${(daemon.address() as { port: number }).port}`,
        AWS_XRAY_CONTEXT_MISSING: 'IGNORE_ERROR',
        _X_AMZN_TRACE_ID: 'Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1',
        LOG_LEVEL: 'SILENT',
      },
    });
    expect(stdout).toBe('true');
    // The child has ended: every datagram it sent is here or on its way over loopback.
    for (let i = 0; i < 100 && segments().filter((s) => ['## index.handler', 'DynamoDB'].includes(s.name as string) || String(s.name).startsWith('EHR ')).length < 3; i++) {
      await new Promise((done) => setTimeout(done, 10));
    }
    const byName = (name: string) => segments().find((s) => s.name === name);
    expect(byName(`EHR ${new URL(ehrUrl).host}`)).toMatchObject({ namespace: 'remote', annotations: { ehr_host: new URL(ehrUrl).host, method: 'GET', status: 200 } });
    expect(byName('DynamoDB')).toMatchObject({ namespace: 'aws', aws: { operation: 'GetItem', table_name: 'smart-launch-trace' } });
    expect(byName('## index.handler')).toMatchObject({ annotations: { correlation_id: requestId, Service: 'smart-launch' } });
    expect(datagrams.join('\n')).not.toContain(SECRET);
  }, 60_000);
});
