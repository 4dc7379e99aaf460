import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { CloudWatchLogsClient } from '@aws-sdk/client-cloudwatch-logs';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { KMSClient } from '@aws-sdk/client-kms';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { CachingKeyRing } from '../shared/adapters/caching-key-ring.js';
import { CloudWatchAuditSink } from '../shared/adapters/cloudwatch-audit-sink.js';
import { DynamoSessionStore } from '../shared/adapters/dynamo-session-store.js';
import { FileAuditSink } from '../shared/adapters/file-audit-sink.js';
import { KmsKeyRing } from '../shared/adapters/kms-key-ring.js';
import { LocalKeyRing } from '../shared/adapters/local-key-ring.js';
import { LocalSigner } from '../shared/adapters/local-signer.js';
import { cryptoRandom, fetchHttpClient, systemClock } from '../shared/adapters/system.js';
import { toAuditEvent } from '../shared/audit/audit-event.js';
import type { AuditSink, AuditSource } from '../shared/audit/record.js';
import { parseDeployableConfigText } from '../shared/config/cookie-site.js';
import { ENV } from '../shared/config/env.js';
import { ConfigError, parseConfig, parseConfigText, type Config } from '../shared/config/schema.js';
import type { CoreDeps } from '../shared/core/deps.js';
import { SmartError } from '../shared/core/errors.js';
import { endSessions, type SessionSelector } from '../shared/ops/end-sessions.js';
import { SecretsManagerClientSecrets } from '../shared/adapters/secrets-manager-client-secrets.js';
import { awsSigner } from '../shared/runtime/aws-signer.js';
import { connectLocalDynamo } from '../local/dynamo-local.js';
import { fhirR4Problems } from './fhir-validate.js';
import { sampleConfig } from '../local/stack.js';

export interface OpsIo {
  stdout(text: string): void;
  stderr(text: string): void;
}

const SESSIONS_USAGE = `Usage: smart-launch sessions end (--issuer ISS | --fhir-user REF | --all) [options]

Ends sessions: revokes each at its EHR where the EHR offers revocation, deletes it, and writes a
"session-end" audit record (cause "operator") for each.

  --issuer ISS          sessions of this issuer (its FHIR base URL, exactly as configured)
  --fhir-user REF       sessions of this user: the fhirUser claim, absolute or relative (Practitioner/123)
  --all                 every session
  --config FILE         the customer config (local default: the embedded sample on ports 3000/3001)
  --mode local|aws      local: the data folder's store and keys (default); aws: the deployed stack
  --data DIR            local data folder (default .data)
  --table NAME          aws: the session table (default $${ENV.tableName})
  --kms-key ARN         aws: the session KMS key (default $${ENV.kmsKeyId})
  --audit-log-group N   aws: the audit log group (default $${ENV.auditLogGroup})
  --dry-run             count the sessions that would end; change nothing
  --concurrency N       sessions worked on at once (default 16)
  --json                print the report as JSON
`;

const AUDIT_USAGE = `Usage: smart-launch audit export --from TIME --to TIME [options]

Writes the audit records of [from, to) as FHIR R4 AuditEvent NDJSON to stdout, each one validated
against the FHIR R4 definitions (an invalid one stops the export with exit code 1).

  --from TIME           ISO 8601 instant (inclusive), e.g. 2026-01-31T00:00:00Z
  --to TIME             ISO 8601 instant (exclusive)
  --mode local|aws      local: {data}/audit.ndjson (default); aws: the audit log group
  --data DIR            local data folder (default .data)
  --audit-log-group N   aws: the audit log group (default $${ENV.auditLogGroup})
`;

type Mode = 'local' | 'aws';

function modeOf(value: string | undefined): Mode {
  if (value === undefined || value === 'local') return 'local';
  if (value === 'aws') return 'aws';
  throw new UsageError(`--mode must be local or aws, got "${value}"`);
}

class UsageError extends Error {}

function required(value: string | undefined, what: string): string {
  if (value === undefined || value === '') throw new UsageError(`${what} is required`);
  return value;
}

function cloudWatchAudit(logGroup: string | undefined, stream: string): CloudWatchAuditSink | undefined {
  const name = logGroup ?? process.env[ENV.auditLogGroup];
  if (name === undefined || name === '') return undefined;
  return new CloudWatchAuditSink({ client: new CloudWatchLogsClient({}), logGroupName: name, logStreamName: stream });
}

interface Wired {
  readonly deps: CoreDeps;
  readonly store: DynamoSessionStore;
  close(): Promise<void>;
}

async function wire(values: Record<string, string | boolean | undefined>, mode: Mode, operationId: string): Promise<Wired> {
  const configPath = values.config as string | undefined;
  if (mode === 'aws') {
    const config = parseDeployableConfigText(await readFile(required(configPath, '--config FILE (with --mode aws)'), 'utf8'), configPath as string);
    const table = required((values.table as string | undefined) ?? process.env[ENV.tableName], `--table NAME (or $${ENV.tableName})`);
    const keyId = required((values['kms-key'] as string | undefined) ?? process.env[ENV.kmsKeyId], `--kms-key ARN (or $${ENV.kmsKeyId})`);
    const store = new DynamoSessionStore({ client: new DynamoDBClient({}), tableName: table });
    const audit = cloudWatchAudit(values['audit-log-group'] as string | undefined, `operator/${new Date().toISOString().slice(0, 10)}/${operationId}`);
    const deps: CoreDeps = {
      config,
      mode: 'aws',
      store,
      keyRing: new CachingKeyRing(new KmsKeyRing({ client: new KMSClient({}), keyId }), systemClock),
      http: fetchHttpClient,
      clock: systemClock,
      random: cryptoRandom,
      clientSecrets: new SecretsManagerClientSecrets(new SecretsManagerClient({})),
      signer: awsSigner(),
      audit,
    };
    return { deps, store, close: async () => undefined };
  }
  const dataDir = resolve((values.data as string | undefined) ?? '.data');
  const config: Config =
    configPath === undefined
      ? parseConfig(sampleConfig('http://localhost:3000', 'http://127.0.0.1:3001/fhir'), 'local', '(embedded sample)')
      : parseConfigText(await readFile(configPath, 'utf8'), 'local', configPath);
  const dynamo = await connectLocalDynamo(dataDir);
  const store = new DynamoSessionStore({ client: dynamo.client, tableName: dynamo.tableName });
  const deps: CoreDeps = {
    config,
    mode: 'local',
    store,
    keyRing: await LocalKeyRing.open(dataDir, cryptoRandom),
    http: fetchHttpClient,
    clock: systemClock,
    random: cryptoRandom,
    clientSecrets: { get: async (issuer) => issuer.clientSecret ?? process.env.SMART_LAUNCH_CLIENT_SECRET },
    signer: new LocalSigner(dataDir, cryptoRandom),
    audit: new FileAuditSink(dataDir),
  };
  return { deps, store, close: () => dynamo.close() };
}

function failure(error: unknown, io: OpsIo, usage: string): number {
  if (error instanceof UsageError || String((error as { code?: unknown }).code ?? '').startsWith('ERR_PARSE_ARGS')) {
    io.stderr(`${(error as Error).message}\n\n${usage}`);
    return 2;
  }
  if (error instanceof ConfigError) {
    io.stderr(`${error.message}\n`);
    return 2;
  }
  if (error instanceof SmartError) {
    io.stderr(`${error.code}: ${error.message}. ${error.hint}\n`);
    return 1;
  }
  io.stderr(`${(error as Error).message}\n`);
  return 1;
}

/** `smart-launch sessions end …` */
export async function sessionsMain(argv: readonly string[], io: OpsIo): Promise<number> {
  try {
    const [sub, ...rest] = argv;
    if (sub === undefined || sub === '--help' || sub === 'help') {
      io.stdout(SESSIONS_USAGE);
      return sub === undefined ? 2 : 0;
    }
    if (sub !== 'end') throw new UsageError(`unknown sessions command "${sub}"`);
    const { values } = parseArgs({
      args: rest,
      options: {
        issuer: { type: 'string' },
        'fhir-user': { type: 'string' },
        all: { type: 'boolean' },
        config: { type: 'string' },
        mode: { type: 'string' },
        data: { type: 'string' },
        table: { type: 'string' },
        'kms-key': { type: 'string' },
        'audit-log-group': { type: 'string' },
        'dry-run': { type: 'boolean' },
        concurrency: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean' },
      },
      strict: true,
    });
    if (values.help) {
      io.stdout(SESSIONS_USAGE);
      return 0;
    }
    const chosen = [values.issuer !== undefined, values['fhir-user'] !== undefined, values.all === true].filter(Boolean).length;
    if (chosen !== 1) throw new UsageError('give exactly one of --issuer, --fhir-user, --all');
    const selector: SessionSelector =
      values.issuer !== undefined
        ? { kind: 'issuer', iss: values.issuer }
        : values['fhir-user'] !== undefined
          ? { kind: 'fhir-user', fhirUser: values['fhir-user'] }
          : { kind: 'all' };
    const concurrency = values.concurrency === undefined ? 16 : Number(values.concurrency);
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 256) throw new UsageError('--concurrency must be an integer from 1 to 256');
    const mode = modeOf(values.mode);
    const operationId = `operator-${randomUUID()}`;
    const wired = await wire(values, mode, operationId);
    try {
      if (selector.kind === 'issuer' && !wired.deps.config.issuers.some((issuer) => issuer.iss === selector.iss)) {
        io.stderr(`note: ${selector.iss} is not an issuer of this config; its sessions are ended without revocation at the EHR\n`);
      }
      const report = await endSessions(wired.store, wired.deps, { selector, dryRun: values['dry-run'] === true, concurrency, operationId });
      if (values.json) {
        io.stdout(`${JSON.stringify({ operationId, dryRun: values['dry-run'] === true, ...report })}\n`);
      } else {
        const failed = Object.entries(report.failed).map(([code, n]) => `${n} ${code}`).join(', ');
        io.stdout(
          values['dry-run']
            ? `${report.matched} session(s) would end (${report.scanned} scanned)\n`
            : `${report.ended} session(s) ended (${report.scanned} scanned, ${report.matched} matched); revocation at the EHR: ` +
                `${report.revocation.revoked} revoked, ${report.revocation.failed} failed, ${report.revocation['not-offered']} not offered` +
                `${failed ? `; not ended: ${failed}` : ''}\naudit correlation id ${operationId}\n`,
        );
      }
      return Object.keys(report.failed).length > 0 ? 1 : 0;
    } finally {
      await wired.close();
    }
  } catch (error) {
    return failure(error, io, SESSIONS_USAGE);
  }
}

function instant(value: string | undefined, flag: string): number {
  const text = required(value, `${flag} TIME`);
  const ms = /^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2}))?$/.test(text) ? Date.parse(text) : Number.NaN;
  if (Number.isNaN(ms)) throw new UsageError(`${flag} must be an ISO 8601 date or instant, got "${text}"`);
  return ms;
}

/** `smart-launch audit export …` */
export async function auditMain(argv: readonly string[], io: OpsIo): Promise<number> {
  try {
    const [sub, ...rest] = argv;
    if (sub === undefined || sub === '--help' || sub === 'help') {
      io.stdout(AUDIT_USAGE);
      return sub === undefined ? 2 : 0;
    }
    if (sub !== 'export') throw new UsageError(`unknown audit command "${sub}"`);
    const { values } = parseArgs({
      args: rest,
      options: {
        from: { type: 'string' },
        to: { type: 'string' },
        mode: { type: 'string' },
        data: { type: 'string' },
        'audit-log-group': { type: 'string' },
        help: { type: 'boolean' },
      },
      strict: true,
    });
    if (values.help) {
      io.stdout(AUDIT_USAGE);
      return 0;
    }
    const from = instant(values.from, '--from');
    const to = instant(values.to, '--to');
    if (to <= from) throw new UsageError('--to must be later than --from');
    const mode = modeOf(values.mode);
    let source: AuditSource & AuditSink;
    if (mode === 'aws') {
      const sink = cloudWatchAudit(values['audit-log-group'], 'export');
      if (!sink) throw new UsageError(`--audit-log-group NAME (or $${ENV.auditLogGroup}) is required with --mode aws`);
      source = sink;
    } else {
      source = new FileAuditSink(resolve(values.data ?? '.data'));
    }
    const records = [];
    for await (const record of source.read(from, to)) records.push(record);
    // CloudWatch interleaves streams: order by time, stably.
    records.sort((a, b) => a.time.localeCompare(b.time));
    let lines = '';
    for (const record of records) {
      const event = toAuditEvent(record);
      const problems = fhirR4Problems(event);
      if (problems.length > 0) {
        io.stderr(`audit record ${record.correlationId} (${record.time}) is not a valid AuditEvent: ${problems.join('; ')}\n`);
        return 1;
      }
      lines += `${JSON.stringify(event)}\n`;
    }
    io.stdout(lines);
    io.stderr(`${records.length} AuditEvent(s) from ${new Date(from).toISOString()} to ${new Date(to).toISOString()}, all valid FHIR R4\n`);
    return 0;
  } catch (error) {
    return failure(error, io, AUDIT_USAGE);
  }
}
