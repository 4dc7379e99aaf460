import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CloudWatchLogsClient, CreateLogStreamCommand, PutLogEventsCommand } from '@aws-sdk/client-cloudwatch-logs';
import { DeleteItemCommand, DynamoDBClient, PutItemCommand, ScanCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { DecryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { sessionsMain } from '../../cli/ops.js';
import { DynamoSessionStore } from '../../shared/adapters/dynamo-session-store.js';
import { cryptoRandom } from '../../shared/adapters/system.js';
import { AuditRecordSchema } from '../../shared/audit/record.js';
import { cookieSiteProblem } from '../../shared/config/cookie-site.js';
import { encryptionContext, sealJson, sessionKey } from '../../shared/core/sealed-records.js';
import type { SessionSecrets } from '../../shared/core/records.js';
import { awsConfig } from '../infra/helpers.js';

/**
 * `sessions end --mode aws`: the calls a deployed stack gets (a filtered Scan, Decrypt under the
 * session's encryption context, DeleteItem, the audit log group), with the AWS clients mocked.
 */
const config = awsConfig('acme-health');
const [ehr, portal] = config.issuers as [(typeof config.issuers)[0], (typeof config.issuers)[0]];
const DATA_KEY = new Uint8Array(32).fill(7);
const KEY_ARN = 'arn:aws:kms:us-east-1:111111111111:key/tokens';
let dir: string;
let configPath: string;

/** A session item exactly as the store writes it (captured from a mocked PutItem). */
async function sessionItem(sessionId: string, iss: string, fhirUser: string): Promise<Record<string, AttributeValue>> {
  const ddb = mockClient(DynamoDBClient);
  ddb.on(PutItemCommand).resolves({});
  const key = sessionKey(sessionId);
  const secrets: SessionSecrets = {
    v: 1,
    accessToken: `at-${sessionId}`,
    refreshToken: `rt-${sessionId}`,
    accessTokenExpiresAt: Date.now() + 300_000,
    scope: 'openid',
    launchMode: 'ehr',
    context: { fhirUser, patient: `p-${sessionId.slice(0, 4)}` },
  };
  const now = Math.floor(Date.now() / 1000);
  await new DynamoSessionStore({ client: new DynamoDBClient({ region: 'us-east-1' }), tableName: 't' }).putSession({
    key,
    iss,
    bindingHash: 'b#x',
    endpoints: { authorizationEndpoint: 'https://ehr.example/authorize', tokenEndpoint: 'https://ehr.example/token' },
    wrappedKey: new Uint8Array([1, 2, 3]),
    sealed: sealJson(DATA_KEY, secrets, key, cryptoRandom),
    createdAt: now,
    expiresAt: now + 3600,
    revision: 1,
  });
  const item = ddb.commandCalls(PutItemCommand)[0]!.args[0].input.Item!;
  ddb.restore();
  return item;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'smart-launch-ops-aws-'));
  configPath = join(dir, 'acme.json');
  await writeFile(configPath, JSON.stringify(config));
  vi.stubEnv('AWS_REGION', 'us-east-1');
});
afterAll(async () => {
  vi.unstubAllEnvs();
  await rm(dir, { recursive: true, force: true });
});

describe('smart-launch sessions end --mode aws', () => {
  it('scans the table, opens each session under its encryption context, deletes exactly the matches and audits them in the audit group', async () => {
    const ids = ['A'.repeat(43), 'B'.repeat(43), 'C'.repeat(43)];
    const items = [
      await sessionItem(ids[0]!, ehr.iss, `${ehr.iss}/Practitioner/7`),
      await sessionItem(ids[1]!, portal.iss, `${portal.iss}/Patient/1`),
      await sessionItem(ids[2]!, ehr.iss, `${ehr.iss}/Practitioner/7`),
    ];
    const ddb = mockClient(DynamoDBClient);
    ddb.on(ScanCommand).resolvesOnce({ Items: items.slice(0, 2), LastEvaluatedKey: { pk: items[1]!.pk! } }).resolvesOnce({ Items: items.slice(2) });
    ddb.on(DeleteItemCommand).resolves({});
    const kms = mockClient(KMSClient);
    kms.on(DecryptCommand).resolves({ Plaintext: DATA_KEY });
    const cw = mockClient(CloudWatchLogsClient);
    cw.on(CreateLogStreamCommand).resolves({});
    cw.on(PutLogEventsCommand).resolves({});
    let out = '';
    const code = await sessionsMain(
      ['end', '--fhir-user', 'Practitioner/7', '--mode', 'aws', '--config', configPath, '--table', 'sessions', '--kms-key', KEY_ARN, '--audit-log-group', '/smart-launch/acme-health/audit', '--json'],
      { stdout: (t) => void (out += t), stderr: (t) => void (out += t) },
    );
    try {
      expect(code, out).toBe(0);
      expect(JSON.parse(out)).toMatchObject({ scanned: 3, matched: 2, ended: 2, revocation: { 'not-offered': 2 } });
      const scans = ddb.commandCalls(ScanCommand).map((c) => c.args[0].input);
      expect(scans).toHaveLength(2);
      expect(scans[0]).toMatchObject({ TableName: 'sessions', FilterExpression: '#kind = :session' });
      expect(scans[0]!.ExclusiveStartKey).toBeUndefined();
      expect(scans[1]).toMatchObject({ TableName: 'sessions', ExclusiveStartKey: { pk: items[1]!.pk } });
      expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 3);
      for (const id of ids) {
        expect(kms).toHaveReceivedCommandWith(DecryptCommand, { KeyId: KEY_ARN, EncryptionContext: encryptionContext(config, sessionKey(id)) });
      }
      expect(ddb.commandCalls(DeleteItemCommand).map((c) => c.args[0].input.Key!.pk!.S).sort()).toEqual([sessionKey(ids[0]!), sessionKey(ids[2]!)].sort());
      expect(cw).toHaveReceivedCommandWith(CreateLogStreamCommand, { logGroupName: '/smart-launch/acme-health/audit' });
      const records = cw.commandCalls(PutLogEventsCommand).flatMap((c) => c.args[0].input.logEvents!.map((e) => AuditRecordSchema.parse(JSON.parse(e.message!))));
      expect(records).toHaveLength(2);
      for (const record of records) {
        expect(record).toMatchObject({ action: 'session-end', cause: 'operator', revocation: 'not-offered', iss: ehr.iss, clientId: ehr.clientId, fhirUser: `${ehr.iss}/Practitioner/7` });
      }
      const text = JSON.stringify(cw.commandCalls(PutLogEventsCommand).map((c) => c.args[0].input));
      for (const id of ids) expect(text).not.toContain(`rt-${id}`);
    } finally {
      ddb.restore();
      kms.restore();
      cw.restore();
    }
  });

  it('filters the scan on the issuer for --issuer and refuses to run without the table', async () => {
    const ddb = mockClient(DynamoDBClient);
    ddb.on(ScanCommand).resolves({ Items: [] });
    const kms = mockClient(KMSClient);
    const io = { stdout: () => undefined, stderr: () => undefined };
    try {
      expect(await sessionsMain(['end', '--issuer', portal.iss, '--mode', 'aws', '--config', configPath, '--table', 'sessions', '--kms-key', KEY_ARN], io)).toBe(0);
      expect(ddb).toHaveReceivedCommandWith(ScanCommand, { FilterExpression: '#kind = :session AND #iss = :iss', ExpressionAttributeValues: { ':session': { S: 'session' }, ':iss': { S: portal.iss } } });
      expect(await sessionsMain(['end', '--all', '--mode', 'aws', '--config', configPath, '--kms-key', KEY_ARN], io)).toBe(2);
      expect(kms).toHaveReceivedCommandTimes(DecryptCommand, 0);
    } finally {
      ddb.restore();
      kms.restore();
    }
  });

  it('refuses a config whose app is on another site than publicUrl with the message synth gives, before any AWS call (the cookie-site rule)', async () => {
    const file = join(dir, 'other-site.json');
    const appUrl = 'https://app.elsewhere.example/';
    await writeFile(file, JSON.stringify({ ...config, app: { ...config.app, url: appUrl } }));
    const ddb = mockClient(DynamoDBClient);
    const kms = mockClient(KMSClient);
    let err = '';
    try {
      const code = await sessionsMain(['end', '--all', '--mode', 'aws', '--config', file, '--table', 'sessions', '--kms-key', KEY_ARN], { stdout: () => undefined, stderr: (t) => void (err += t) });

      expect(code).toBe(2);
      expect(err).toContain(`  - $.app.url: ${cookieSiteProblem(config.publicUrl, appUrl)}`);
      expect(ddb.calls()).toHaveLength(0);
      expect(kms.calls()).toHaveLength(0);
    } finally {
      ddb.restore();
      kms.restore();
    }
  });
});
