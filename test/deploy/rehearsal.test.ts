import { spawnSync } from 'node:child_process';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi, type MockInstance } from 'vitest';
import { startLocalDynamo, type LocalDynamo } from '../../local/dynamo-local.js';
import { SAMPLE_TEMPLATE, sharedSynth } from '../infra/shared-synth.js';
import { FakeEhr } from '../fakes/fake-ehr.js';
import { deniedRequests, unusedActions, type PolicyStatement, type RecordedRequest } from './iam.js';
import { startLoopbackAws, type LoopbackAws } from './loopback-aws.js';

/**
 * Deploy rehearsal: the bundles `cdk synth` writes (not the TypeScript sources), each loaded as the
 * Lambda runtime loads `index.mjs`, with the environment variables, timeout and memory of its
 * function in the synthesized template, invoked with events shaped as API Gateway REST (payload v1)
 * sends them (stage prefix in `requestContext.path`, `multiValueHeaders`, cookies, base64 bodies)
 * and, for the FHIR proxy, through `awslambda.streamifyResponse` with the prelude and the 8-NUL
 * delimiter parsed as API Gateway parses them. The AWS SDK inside the bundles talks to loopback
 * servers through the `AWS_ENDPOINT_URL_*` variables (dynalite for DynamoDB), and every request it
 * makes is recorded and evaluated against that function's role policies in the same template.
 */

/** The project folder (not imported from infra/: that would load aws-cdk-lib into this process for one path). */
const PROJECT_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const REGION = 'us-east-1';
const ACCOUNT = '000000000000';

type Resource = { Type: string; Properties?: Record<string, unknown>; Metadata?: Record<string, unknown> };
type Template = { Resources: Record<string, Resource> };

let outdir: string;
let template: Template;
let dynamo: LocalDynamo;
let recorder: Server;
let recorderUrl: string;
const recorded: RecordedRequest[] = [];
let currentFn = '';
let dataDir: string;
let secretArn = '';
/** The sample's first EHR, which the rehearsal serves on loopback (same client auth, same secret ARN). */
let sampleIssuer = { iss: '', clientId: '' };
let ehr: FakeEhr;
let ehrServer: Server;
let aws: LoopbackAws;
const CLIENT_SECRET = 'rehearsal-client-secret-0123456789abcdef';

/**
 * A self-signed certificate for 127.0.0.1 (the EHR must be https: a deployed config refuses http),
 * on a P-256 key: generated in a few milliseconds where an RSA 2048 key takes a few hundred.
 */
function selfSignedCertificate(dir: string): { key: Buffer; cert: Buffer } {
  const key = join(dir, 'ehr.key');
  const cert = join(dir, 'ehr.crt');
  const result = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`openssl failed: ${result.stderr}`);
  return { key: readFileSync(key), cert: readFileSync(cert) };
}

/** The fake EHR (discovery, authorize, token, JWKS, FHIR) served over https on loopback, in real time. */
async function startHttpsEhr(dir: string): Promise<void> {
  let handle: ((url: string, init: RequestInit) => Promise<Response>) | undefined;
  ehrServer = createHttpsServer(selfSignedCertificate(dir), (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : String(v)]));
      const body = chunks.length > 0 ? Buffer.concat(chunks).toString('utf8') : undefined;
      void handle!(`https://127.0.0.1:${(ehrServer.address() as { port: number }).port}${req.url}`, { method: req.method!, headers, ...(body ? { body } : {}) }).then(async (answer) => {
        const bytes = Buffer.from(await answer.arrayBuffer());
        res.writeHead(answer.status, Object.fromEntries(answer.headers.entries()));
        res.end(bytes);
      });
    });
  }) as unknown as Server;
  await new Promise<void>((done) => ehrServer.listen(0, '127.0.0.1', done));
  const port = (ehrServer.address() as { port: number }).port;
  ehr = await FakeEhr.create({
    clock: { now: () => Date.now(), sleep: (ms: number) => new Promise((r) => setTimeout(r, ms)) },
    fhirBase: `https://127.0.0.1:${port}/fhir/r4`,
    clientSecret: CLIENT_SECRET,
  });
  const fhir = ehr.fhirAnswer;
  // A Binary larger than Lambda's 6 MB buffered limit, for the streaming proxy.
  ehr.fhirAnswer = (url, request) =>
    url.pathname.endsWith('/Binary/big') ? new Response(BIG, { headers: { 'content-type': 'application/pdf' } }) : fhir(url, request);
  handle = ehr.http;
}

const BIG = new Uint8Array(7 * 1024 * 1024).map((_, i) => i % 251);

/** CloudFormation intrinsics as a deployment in REGION/ACCOUNT would resolve them. */
function resolve(value: unknown): unknown {
  if (typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) return value.map(resolve);
  const object = value as Record<string, unknown>;
  if ('Ref' in object) {
    const ref = String(object.Ref);
    const pseudo: Record<string, string> = { 'AWS::Partition': 'aws', 'AWS::Region': REGION, 'AWS::AccountId': ACCOUNT, 'AWS::URLSuffix': 'amazonaws.com' };
    if (pseudo[ref]) return pseudo[ref];
    const resource = template.Resources[ref];
    if (resource?.Type === 'AWS::DynamoDB::Table') return dynamo.tableName;
    if (resource?.Type === 'AWS::KMS::Key') return ref.toLowerCase();
    return `ref-${ref}`;
  }
  if ('Fn::GetAtt' in object) {
    const [id, attribute] = object['Fn::GetAtt'] as [string, string];
    const resource = template.Resources[id];
    if (attribute === 'Arn' && resource?.Type === 'AWS::DynamoDB::Table') return `arn:aws:dynamodb:${REGION}:${ACCOUNT}:table/${dynamo.tableName}`;
    if (attribute === 'Arn' && resource?.Type === 'AWS::KMS::Key') return `arn:aws:kms:${REGION}:${ACCOUNT}:key/${id.toLowerCase()}`;
    if (attribute === 'Arn' && resource?.Type === 'AWS::Logs::LogGroup') return `arn:aws:logs:${REGION}:${ACCOUNT}:log-group:${id}:*`;
    return `getatt-${id}-${attribute}`;
  }
  if ('Fn::Join' in object) {
    const [separator, parts] = object['Fn::Join'] as [string, unknown[]];
    return parts.map((part) => String(resolve(part))).join(separator);
  }
  return Object.fromEntries(Object.entries(object).map(([k, v]) => [k, resolve(v)]));
}

interface DeployedFunction {
  readonly name: string;
  readonly bundle: string;
  readonly environment: Record<string, string>;
  readonly timeoutSeconds: number;
  readonly memoryMb: number;
  readonly statements: PolicyStatement[];
}

/**
 * The synthesized config with its first EHR moved to the loopback one: the only change made to what
 * the template holds (the sample's EHR host does not exist; its client auth and secret ARN stay).
 */
function movedToLoopbackEhr(environment: Record<string, string>): Record<string, string> {
  const json = environment.SMART_LAUNCH_CONFIG;
  if (json === undefined) return environment;
  const config = JSON.parse(json) as { issuers: Array<{ iss: string; clientId: string }> };
  const first = config.issuers.find((i) => i.iss === sampleIssuer.iss && i.clientId === sampleIssuer.clientId);
  if (!first) throw new Error('the synthesized config does not hold the sample customer\'s first EHR');
  first.iss = ehr.fhirBase;
  first.clientId = ehr.clientId;
  return { ...environment, SMART_LAUNCH_CONFIG: JSON.stringify(config) };
}

function deployedFunctions(): Map<string, DeployedFunction> {
  const out = new Map<string, DeployedFunction>();
  for (const [, fn] of Object.entries(template.Resources).filter(([, r]) => r.Type === 'AWS::Lambda::Function')) {
    const p = fn.Properties!;
    const environment = movedToLoopbackEhr(resolve((p.Environment as { Variables: Record<string, unknown> }).Variables) as Record<string, string>);
    const name = environment.POWERTOOLS_SERVICE_NAME!.replace(/^smart-launch-/, '');
    const roleId = (p.Role as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0];
    const statements = Object.values(template.Resources)
      .filter((r) => r.Type === 'AWS::IAM::ManagedPolicy' && JSON.stringify(r.Properties!.Roles).includes(`"${roleId}"`))
      .flatMap((r) => (resolve((r.Properties!.PolicyDocument as { Statement: unknown[] }).Statement) as PolicyStatement[]));
    out.set(name, {
      name,
      bundle: join(outdir, String(fn.Metadata!['aws:asset:path']), 'index.mjs'),
      environment,
      timeoutSeconds: p.Timeout as number,
      memoryMb: p.MemorySize as number,
      statements,
    });
  }
  return out;
}

/** A Lambda context: the function's own timeout, counted down in real time. */
function contextFor(fn: DeployedFunction) {
  const end = Date.now() + fn.timeoutSeconds * 1000;
  return {
    functionName: `smart-launch-${fn.name}`,
    memoryLimitInMB: String(fn.memoryMb),
    awsRequestId: `rehearsal-${Math.random().toString(36).slice(2)}`,
    getRemainingTimeInMillis: () => Math.max(0, end - Date.now()),
  };
}

/** An API Gateway REST (payload v1) proxy event, as the `prod` stage sends it. */
function restEvent(input: { method: string; resource: string; path: string; pathParameters?: Record<string, string>; query?: Record<string, string[]>; headers?: Record<string, string[]>; body?: Buffer }) {
  const headers = { Host: ['abc123.execute-api.us-east-1.amazonaws.com'], 'User-Agent': ['rehearsal'], 'X-Forwarded-Proto': ['https'], ...input.headers };
  const query = input.query ?? {};
  return {
    resource: input.resource,
    path: input.path,
    httpMethod: input.method,
    headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, v.at(-1)!])),
    multiValueHeaders: headers,
    queryStringParameters: Object.keys(query).length ? Object.fromEntries(Object.entries(query).map(([k, v]) => [k, v.at(-1)!])) : null,
    multiValueQueryStringParameters: Object.keys(query).length ? query : null,
    pathParameters: input.pathParameters ?? null,
    stageVariables: null,
    // The catch-all binary media type: every request body arrives base64-encoded.
    body: input.body ? input.body.toString('base64') : null,
    isBase64Encoded: input.body !== undefined,
    requestContext: {
      accountId: ACCOUNT,
      apiId: 'abc123',
      stage: 'prod',
      path: `/prod${input.path}`,
      resourcePath: input.resource,
      httpMethod: input.method,
      requestId: `req-${Math.random().toString(36).slice(2)}`,
      requestTimeEpoch: Date.now(),
      protocol: 'HTTP/1.1',
      identity: { sourceIp: '203.0.113.7', userAgent: 'rehearsal' },
      domainName: 'abc123.execute-api.us-east-1.amazonaws.com',
    },
  };
}

/** The runtime's response stream as API Gateway reads it: prelude JSON, 8 NUL bytes, body. */
class ResponseStream extends Writable {
  readonly chunks: Buffer[] = [];
  contentType = '';
  setContentType(type: string): void {
    this.contentType = type;
  }
  override _write(chunk: Buffer, _e: BufferEncoding, callback: () => void): void {
    this.chunks.push(Buffer.from(chunk));
    callback();
  }
  parsed(): { prelude: { statusCode: number; headers: Record<string, string> }; body: Buffer } {
    const all = Buffer.concat(this.chunks);
    const end = all.indexOf(Buffer.alloc(8));
    if (end < 0 || end > 16 * 1024) throw new Error('no prelude within the first 16 KB');
    return { prelude: JSON.parse(all.subarray(0, end).toString('utf8')), body: all.subarray(end + 8) };
  }
}

/** `awslambda` as the Node.js runtime defines it for streaming handlers. */
const awslambda = {
  streamifyResponse: <T>(handler: T): T => {
    (handler as { [key: symbol]: string })[Symbol.for('aws.lambda.runtime.handler.streaming')] = 'response';
    return handler;
  },
  HttpResponseStream: {
    from(stream: ResponseStream & { _onBeforeFirstWrite?: unknown }, prelude: unknown) {
      stream.setContentType('application/vnd.awslambda.http-integration-response');
      const write = stream.write.bind(stream);
      let first = true;
      stream.write = ((chunk: unknown, ...rest: unknown[]) => {
        if (first) {
          first = false;
          write(JSON.stringify(prelude));
          write(Buffer.alloc(8));
        }
        return (write as (c: unknown, ...r: unknown[]) => boolean)(chunk, ...rest);
      }) as typeof stream.write;
      return stream;
    },
  },
};

type Buffered = (event: unknown, context: unknown) => Promise<{ statusCode: number; headers?: Record<string, string>; body: string; isBase64Encoded?: boolean }>;
type Streaming = (event: unknown, stream: ResponseStream, context: unknown) => Promise<void>;

const loaded = new Map<string, unknown>();

/** Loads a function's bundle with its environment, as a fresh Lambda container would. */
async function handlerOf(fn: DeployedFunction): Promise<unknown> {
  const cached = loaded.get(fn.name);
  if (cached) return cached;
  for (const [name, value] of Object.entries(fn.environment)) process.env[name] = value;
  const module = (await import(`${pathToFileURL(fn.bundle).href}?fn=${fn.name}`)) as { handler: unknown };
  loaded.set(fn.name, module.handler);
  return module.handler;
}

async function invoke(fn: DeployedFunction, event: unknown) {
  currentFn = fn.name;
  const handler = (await handlerOf(fn)) as Buffered;
  return handler(event, contextFor(fn));
}

/**
 * Cold starts of bundles, one after the other, in one worker thread whose V8 heap is bounded
 * (`resourceLimits.maxOldGenerationSizeMb`), each imported under its own function's environment (the
 * worker's is reset to the runner's plus that function's before each import): resolves with the heap
 * held after each import (every bundle loaded so far stays loaded), rejects when the bound is
 * exceeded (ERR_WORKER_OUT_OF_MEMORY). One worker, not one per bundle: each worker boots Node and
 * loads the AWS SDK anew, about half a second of CPU per bundle.
 */
function coldStarts(fns: readonly DeployedFunction[], heapMb: number): Promise<number[]> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    globalThis.awslambda = { streamifyResponse: (h) => h, HttpResponseStream: { from: (s) => s } };
    const base = { ...process.env };
    (async () => {
      const heapUsedMb = [];
      for (const { url, environment } of workerData) {
        for (const name of Object.keys(process.env)) if (!(name in base)) delete process.env[name];
        Object.assign(process.env, base, environment);
        const m = await import(url);
        if (typeof m.handler !== 'function') throw new Error('no handler export in ' + url);
        heapUsedMb.push(process.memoryUsage().heapUsed / 2 ** 20);
      }
      parentPort.postMessage(heapUsedMb);
    })();`;
  const workerData = fns.map((fn) => ({ url: pathToFileURL(fn.bundle).href, environment: fn.environment }));
  return new Promise((done, fail) => {
    const worker = new Worker(code, { eval: true, workerData, env: { ...process.env }, resourceLimits: { maxOldGenerationSizeMb: heapMb } });
    worker.once('message', (heapUsedMb: number[]) => void worker.terminate().then(() => done(heapUsedMb)));
    worker.once('error', fail);
  });
}

let functions: Map<string, DeployedFunction>;
const savedEnv = { ...process.env };

/**
 * The bundles publish their metrics as a Lambda function does, EMF documents on stdout: read here
 * (and checked below) instead of printed among the test output. Everything else passes through.
 */
const emf: Array<Record<string, unknown>> = [];
let stdoutSpy: MockInstance | undefined;
function captureEmf(): void {
  const write = process.stdout.write.bind(process.stdout) as (...args: unknown[]) => boolean;
  stdoutSpy = vi.spyOn(process.stdout, 'write').mockImplementation(((chunk: string | Uint8Array, ...rest: unknown[]) => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    if (!text.includes('"_aws"')) return write(chunk, ...rest);
    for (const line of text.split('\n')) if (line.includes('"_aws"')) emf.push(JSON.parse(line) as Record<string, unknown>);
    (rest.find((arg) => typeof arg === 'function') as (() => void) | undefined)?.();
    return true;
  }) as typeof process.stdout.write);
}

beforeAll(async () => {
  // The run's one `cdk synth` of the sample customer through the CLI (bundling, cdk-nag, template
  // checks, cfn-guard), shared with test/infra/synth.test.ts: started (or joined) first, awaited once
  // the servers below, which need only the customer file, are up.
  const synthesized = sharedSynth();
  dataDir = mkdtempSync(join(tmpdir(), 'smart-launch-rehearsal-data-'));
  await startHttpsEhr(dataDir);
  const sample = JSON.parse(readFileSync(join(PROJECT_ROOT, 'customers', 'example.json'), 'utf8')) as { issuers: Array<Record<string, unknown>> };
  sampleIssuer = { iss: String(sample.issuers[0]!.iss), clientId: String(sample.issuers[0]!.clientId) };
  secretArn = String(sample.issuers[0]!.clientSecret);
  aws = await startLoopbackAws({ record: (r) => recorded.push({ ...r, fn: currentFn }), secrets: { [secretArn]: CLIENT_SECRET } });

  dynamo = await startLocalDynamo({ dataDir });
  // Records every DynamoDB request the bundles make (action, table, leading key), then forwards it.
  recorder = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const target = String(req.headers['x-amz-target'] ?? '');
      const input = JSON.parse(body.toString('utf8') || '{}') as { TableName?: string; Key?: { pk?: { S?: string } }; Item?: { pk?: { S?: string } } };
      const key = input.Key?.pk?.S ?? input.Item?.pk?.S;
      recorded.push({
        fn: currentFn,
        action: `dynamodb:${target.split('.')[1]}`,
        resource: `arn:aws:dynamodb:${REGION}:${ACCOUNT}:table/${input.TableName}`,
        context: key === undefined ? {} : { 'dynamodb:LeadingKeys': [key] },
      });
      const upstream = new URL(dynamo.endpoint);
      const forward = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 500, answer.headers);
        answer.pipe(res);
      });
      forward.end(body);
    });
  });
  await new Promise<void>((done) => recorder.listen(0, '127.0.0.1', done));
  const address = recorder.address() as { port: number };
  recorderUrl = `http://127.0.0.1:${address.port}`;

  const synth = await synthesized;
  if (synth.status !== 0) throw new Error(`cdk synth failed:\n${synth.output}`);
  outdir = synth.outdir;
  template = JSON.parse(readFileSync(join(outdir, SAMPLE_TEMPLATE), 'utf8')) as Template;

  Object.assign(process.env, {
    AWS_REGION: REGION,
    AWS_ACCESS_KEY_ID: 'AKIAREHEARSAL',
    AWS_SECRET_ACCESS_KEY: 'rehearsal-secret',
    AWS_ENDPOINT_URL_DYNAMODB: recorderUrl,
    AWS_ENDPOINT_URL_KMS: aws.kmsUrl,
    AWS_ENDPOINT_URL_SECRETS_MANAGER: aws.secretsUrl,
    // The loopback EHR's certificate is self-signed; only this process talks to it.
    NODE_TLS_REJECT_UNAUTHORIZED: '0',
    AWS_EC2_METADATA_DISABLED: 'true',
  });
  (globalThis as { awslambda?: unknown }).awslambda = awslambda;
  functions = deployedFunctions();
  captureEmf();
}, 320_000);

afterAll(async () => {
  stdoutSpy?.mockRestore();
  delete (globalThis as { awslambda?: unknown }).awslambda;
  for (const name of Object.keys(process.env)) if (!(name in savedEnv)) delete process.env[name];
  Object.assign(process.env, savedEnv);
  await new Promise<void>((done) => recorder?.close(() => done()));
  await dynamo?.close();
  await aws?.close();
  await new Promise<void>((done) => { ehrServer?.closeAllConnections(); ehrServer?.close(() => done()); });
  rmSync(dataDir, { recursive: true, force: true });
});

const SESSION = 'r'.repeat(43);

describe('deploy rehearsal: the synthesized bundles, in a Lambda-like runtime', () => {
  it('takes every function\'s environment, timeout and memory from the template and loads its bundle', () => {
    expect([...functions.keys()].sort()).toEqual(['fhir-proxy', 'jwks', 'launch', 'sessions']);
    for (const fn of functions.values()) {
      expect(fn.bundle, fn.name).toMatch(/asset\.[0-9a-f]+\/index\.mjs$/);
      expect(fn.timeoutSeconds).toBeGreaterThanOrEqual(30);
      expect(fn.memoryMb).toBeGreaterThanOrEqual(256);
    }
  });

  // Memory: the flows below run in this process (one heap for the four functions and the runner), so
  // MemorySize bounds only the cold starts, in a worker. Running every flow in a bounded worker would
  // move the streaming response, the Lambda context and the per-function attribution of the recorded
  // AWS calls across a thread boundary; the 7 MB answer is streamed, never held whole, which the
  // streaming test shows by its shape rather than by a heap bound. The four cold starts share one
  // worker bounded by the smallest MemorySize: what they hold together fits it, so each bundle fits
  // its own function's memory.
  it('cold-starts every bundle in a worker whose heap is bounded by the smallest function\'s MemorySize', async () => {
    const all = [...functions.values()];
    const smallest = Math.min(...all.map((fn) => fn.memoryMb));
    const heapUsedMb = await coldStarts(all, smallest);
    expect(heapUsedMb).toHaveLength(all.length);
    all.forEach((fn, i) => expect(heapUsedMb[i], fn.name).toBeLessThan(smallest));
    // The bound is real: the same cold start within 2 MB of heap dies.
    await expect(coldStarts([functions.get('launch')!], 2)).rejects.toMatchObject({ code: 'ERR_WORKER_OUT_OF_MEMORY' });
  }, 120_000);

  it('launch: refuses an issuer the config does not name with its HTML error page, before any AWS call', async () => {
    const launch = functions.get('launch')!;
    const before = recorded.length;
    const result = await invoke(launch, restEvent({ method: 'GET', resource: '/launch', path: '/launch', query: { iss: ['https://unknown.example/fhir'], launch: ['x'] } }));
    expect(result.statusCode).toBe(403);
    expect(result.headers?.['content-type'] ?? result.headers?.['Content-Type']).toMatch(/text\/html/);
    expect(recorded.length).toBe(before);
  });

  it('sessions: reads the session record through the real SDK and answers 401 SESSION_NOT_OPEN as JSON', async () => {
    const sessions = functions.get('sessions')!;
    const result = await invoke(
      sessions,
      restEvent({
        method: 'GET',
        resource: '/sessions/{id}',
        path: `/sessions/${SESSION}`,
        pathParameters: { id: SESSION },
        headers: { Cookie: [`__Host-smart-launch=${'b'.repeat(43)}`], Origin: ['https://app.example-health.org'] },
      }),
    );
    expect(result.statusCode, result.body).toBe(401);
    expect(JSON.parse(result.body).error.code).toBe('SESSION_NOT_OPEN');
    expect(result.headers?.['access-control-allow-origin']).toBe('https://app.example-health.org');
    expect(recorded.filter((r) => r.fn === 'sessions').map((r) => r.action)).toEqual(['dynamodb:GetItem']);
  });

  it('fhir-proxy: streams a FHIR OperationOutcome through the prelude, from a base64 form body', async () => {
    const proxy = functions.get('fhir-proxy')!;
    currentFn = proxy.name;
    const handler = (await handlerOf(proxy)) as Streaming;
    const stream = new ResponseStream();
    await handler(
      restEvent({
        method: 'POST',
        resource: '/sessions/{id}/fhir/{proxy+}',
        path: `/sessions/${SESSION}/fhir/Patient/_search`,
        pathParameters: { id: SESSION, proxy: 'Patient/_search' },
        headers: { 'Content-Type': ['application/x-www-form-urlencoded'], Cookie: [`__Host-smart-launch=${'b'.repeat(43)}`] },
        body: Buffer.from('name=smith'),
      }),
      stream,
      contextFor(proxy),
    );
    expect(stream.contentType).toBe('application/vnd.awslambda.http-integration-response');
    const { prelude, body } = stream.parsed();
    expect(prelude.statusCode).toBe(401);
    expect(prelude.headers['content-type']).toMatch(/application\/fhir\+json/);
    expect(JSON.parse(body.toString('utf8'))).toMatchObject({ resourceType: 'OperationOutcome' });
  });

  it('jwks: answers the (empty, no private_key_jwt) key set with no AWS call', async () => {
    const jwks = functions.get('jwks')!;
    const result = await invoke(jwks, restEvent({ method: 'GET', resource: '/.well-known/jwks.json', path: '/.well-known/jwks.json' }));
    expect(result.statusCode).toBe(200);
    expect(JSON.parse(result.body)).toEqual({ keys: [] });
    expect(recorded.filter((r) => r.fn === 'jwks')).toEqual([]);
  });

  const flow = { sessionId: '', cookie: '' };

  it('runs a whole EHR launch: /launch, the EHR\'s authorize step, /callback (KMS data key, client secret, token, id_token)', async () => {
    const launch = functions.get('launch')!;
    const started = await invoke(launch, restEvent({ method: 'GET', resource: '/launch', path: '/launch', query: { iss: [ehr.fhirBase], launch: ['launch-ctx-rehearsal-0123456789'] } }));
    expect(started.statusCode, started.body).toBe(302);
    const setCookie = (started as { multiValueHeaders?: Record<string, string[]> }).multiValueHeaders?.['set-cookie'] ?? [];
    flow.cookie = setCookie.map((c) => c.split(';')[0]!).find((c) => c.startsWith('__Host-smart-launch='))!;
    expect(flow.cookie).toBeDefined();
    const authorization = ehr.authorize(String(started.headers!.location ?? started.headers!.Location));
    const done = await invoke(launch, restEvent({ method: 'GET', resource: '/callback', path: '/callback', query: authorization.callbackQuery, headers: { Cookie: [flow.cookie] } }));
    expect(done.statusCode, done.body).toBe(302);
    const location = String(done.headers!.location ?? done.headers!.Location);
    expect(location.startsWith('https://app.example-health.org/')).toBe(true);
    flow.sessionId = location.split('#session=')[1]!;
    expect(flow.sessionId).toMatch(/^[A-Za-z0-9_-]{20,}$/);
    expect(recorded.filter((r) => r.fn === 'launch').map((r) => r.action)).toEqual(
      expect.arrayContaining(['kms:GenerateDataKey', 'dynamodb:PutItem', 'dynamodb:DeleteItem', 'secretsmanager:GetSecretValue']),
    );
    // The launch and the callback were counted, in the template's metric namespace (the one its alarms read).
    const namespace = functions.get('jwks')!.environment.SMART_LAUNCH_METRIC_NAMESPACE;
    expect(namespace).toBeDefined();
    expect(emf).toEqual(expect.arrayContaining([
      expect.objectContaining({ Launches: 1, Mode: 'ehr', Issuer: ehr.fhirBase, _aws: expect.objectContaining({ CloudWatchMetrics: [expect.objectContaining({ Namespace: namespace })] }) }),
      expect.objectContaining({ Callbacks: 1, Outcome: 'success', Issuer: ehr.fhirBase }),
    ]));
  });

  it('reads the session, then a FHIR answer over 6 MB streamed whole through the prelude', async () => {
    const session = await invoke(functions.get('sessions')!, restEvent({ method: 'GET', resource: '/sessions/{id}', path: `/sessions/${flow.sessionId}`, pathParameters: { id: flow.sessionId }, headers: { Cookie: [flow.cookie] } }));
    expect(session.statusCode, session.body).toBe(200);
    expect(session.body).not.toContain('access_token');
    const proxy = functions.get('fhir-proxy')!;
    currentFn = proxy.name;
    const handler = (await handlerOf(proxy)) as Streaming;
    const stream = new ResponseStream();
    await handler(
      restEvent({ method: 'GET', resource: '/sessions/{id}/fhir/{proxy+}', path: `/sessions/${flow.sessionId}/fhir/Binary/big`, pathParameters: { id: flow.sessionId, proxy: 'Binary/big' }, headers: { Cookie: [flow.cookie], Accept: ['application/pdf'] } }),
      stream,
      contextFor(proxy),
    );
    const { prelude, body } = stream.parsed();
    expect(prelude.statusCode).toBe(200);
    expect(body.length).toBe(BIG.length);
    expect(Buffer.compare(body, Buffer.from(BIG))).toBe(0);
  });

  it('refreshes (lease, token endpoint with the client secret, re-seal) and logs out', async () => {
    const sessions = functions.get('sessions')!;
    const event = (action: string) =>
      restEvent({ method: 'POST', resource: `/sessions/{id}/${action}`, path: `/sessions/${flow.sessionId}/${action}`, pathParameters: { id: flow.sessionId }, headers: { Cookie: [flow.cookie], Origin: ['https://app.example-health.org'] } });
    // The EHR's refresh grant: the issued refresh token, from the client authenticated with its secret.
    const refreshCalls: string[] = [];
    ehr.tokenAnswer = ({ headers, form }) => {
      refreshCalls.push(String(form.get('grant_type')));
      const basic = `Basic ${Buffer.from(`${ehr.clientId}:${CLIENT_SECRET}`).toString('base64')}`;
      if (headers.authorization !== basic) return new Response(JSON.stringify({ error: 'invalid_client' }), { status: 401 });
      if (form.get('grant_type') !== 'refresh_token' || !ehr.issued.refreshTokens.includes(String(form.get('refresh_token')))) {
        return new Response(JSON.stringify({ error: 'invalid_grant' }), { status: 400, headers: { 'content-type': 'application/json' } });
      }
      return new Response(JSON.stringify({ access_token: 'at-refreshed-0123456789', token_type: 'Bearer', expires_in: 3600, refresh_token: 'rt-rotated-0123456789' }), {
        headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
      });
    };
    const refreshed = await invoke(sessions, event('refresh'));
    expect(refreshed.statusCode, refreshed.body).toBe(200);
    expect(refreshCalls).toEqual(['refresh_token']);
    expect(recorded.filter((r) => r.fn === 'sessions').map((r) => r.action)).toEqual(expect.arrayContaining(['dynamodb:UpdateItem', 'kms:Decrypt', 'secretsmanager:GetSecretValue']));
    const out = await invoke(sessions, event('logout'));
    expect(out.statusCode, out.body).toBe(200);
    expect(recorded.filter((r) => r.fn === 'sessions').map((r) => r.action)).toContain('dynamodb:DeleteItem');
    const after = await invoke(sessions, restEvent({ method: 'GET', resource: '/sessions/{id}', path: `/sessions/${flow.sessionId}`, pathParameters: { id: flow.sessionId }, headers: { Cookie: [flow.cookie] } }));
    expect(after.statusCode).toBe(401);
  });

  it('every AWS request the rehearsal made is allowed by that function\'s role policy in the template', () => {
    expect(recorded.length).toBeGreaterThan(0);
    expect(recorded.every((r) => r.fn !== '')).toBe(true);
    expect(deniedRequests(recorded, (fn) => functions.get(fn)!.statements)).toEqual([]);
  });

  it('fails the evaluation when a grant is removed from the policy', () => {
    const withoutGetItem = (fn: string) =>
      functions.get(fn)!.statements.map((s) => ({ ...s, Action: (Array.isArray(s.Action) ? s.Action : [s.Action]).filter((a) => a !== 'dynamodb:GetItem') }));
    expect(deniedRequests(recorded, withoutGetItem)).not.toEqual([]);
    // And a leading key outside the granted prefixes is denied too.
    const foreign = recorded.filter((r) => r.action === 'dynamodb:GetItem').map((r) => ({ ...r, context: { 'dynamodb:LeadingKeys': ['txn#foreign'] } }));
    expect(deniedRequests(foreign, (fn) => functions.get(fn)!.statements)).toHaveLength(foreign.length);
    // And the token key under another customer's encryption context.
    const kms = recorded.filter((r) => r.action === 'kms:GenerateDataKey');
    expect(kms.length).toBeGreaterThan(0);
    const otherCustomer = kms.map((r) => ({ ...r, context: { ...r.context, 'kms:EncryptionContext:customer': 'someone-else' } }));
    expect(deniedRequests(otherCustomer, (fn) => functions.get(fn)!.statements)).toHaveLength(otherCustomer.length);
  });

  it('lists the granted actions this rehearsal did not use (each justified in infra/README.md)', () => {
    const unused = unusedActions(recorded, (fn) => functions.get(fn)!.statements, [...functions.keys()]);
    const readme = readFileSync(join(PROJECT_ROOT, 'infra', 'README.md'), 'utf8');
    console.info(`granted but not used by the rehearsal: ${JSON.stringify(unused)}`);
    for (const [fn, actions] of Object.entries(unused)) {
      for (const action of actions) expect(readme, `${fn}: ${action}`).toContain(`\`${action}\``);
    }
  });
});
