import { randomUUID } from 'node:crypto';
import { CloudWatchLogsClient } from '@aws-sdk/client-cloudwatch-logs';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { KMSClient } from '@aws-sdk/client-kms';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { CloudWatchAuditSink } from '../adapters/cloudwatch-audit-sink.js';
import { DynamoSessionStore } from '../adapters/dynamo-session-store.js';
import { CachingKeyRing } from '../adapters/caching-key-ring.js';
import { KmsKeyRing } from '../adapters/kms-key-ring.js';
import { SecretsManagerClientSecrets } from '../adapters/secrets-manager-client-secrets.js';
import { cryptoRandom, fetchHttpClient, systemClock } from '../adapters/system.js';
import { ENV } from '../config/env.js';
import { parseConfigText } from '../config/schema.js';
import type { CoreDeps } from '../core/deps.js';
import { DiscoveryCache } from '../core/discovery.js';
import { JwksCache } from '../core/id-token.js';
import { OpenSessionCache } from '../core/session-cache.js';
import { awsSigner } from './aws-signer.js';
import { EmfMetrics, metricNamespace } from '../ops/metrics.js';
import { tracedHttp, tracer } from '../ops/tracing.js';

function required(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === '') throw new Error(`environment variable ${name} is not set`);
  return value;
}

/** The dedicated audit log group, one stream per container (date and a random id), when the stack names one. */
function auditSink(): CloudWatchAuditSink | undefined {
  const logGroupName = process.env[ENV.auditLogGroup];
  if (logGroupName === undefined || logGroupName === '') return undefined;
  const logStreamName = `${new Date().toISOString().slice(0, 10)}/${process.env.AWS_LAMBDA_FUNCTION_NAME ?? 'smart-launch'}/${randomUUID()}`;
  return new CloudWatchAuditSink({ client: tracer.captureAWSv3Client(new CloudWatchLogsClient({})), logGroupName, logStreamName });
}

let deps: Promise<CoreDeps> | undefined;

/** The adapters of a deployed stack, built once per container from the environment the CDK construct sets. */
export function awsDeps(): Promise<CoreDeps> {
  deps ??= Promise.resolve().then(() => {
    const config = parseConfigText(required(ENV.config), 'aws', `$${ENV.config}`);
    return {
      config,
      mode: 'aws' as const,
      store: new DynamoSessionStore({ client: tracer.captureAWSv3Client(new DynamoDBClient({})), tableName: required(ENV.tableName) }),
      // Decrypt at most once per session per warm container.
      keyRing: new CachingKeyRing(new KmsKeyRing({ client: tracer.captureAWSv3Client(new KMSClient({})), keyId: required(ENV.kmsKeyId) }), systemClock),
      http: tracedHttp(fetchHttpClient),
      clock: systemClock,
      random: cryptoRandom,
      clientSecrets: new SecretsManagerClientSecrets(tracer.captureAWSv3Client(new SecretsManagerClient({}))),
      signer: awsSigner(),
      // Per warm container: discovery 5 min fresh, then stale-while-revalidate up to 1 h; JWKS re-fetched on an unknown kid.
      discovery: new DiscoveryCache(),
      jwks: new JwksCache(),
      // Sessions the FHIR proxy opened, for `session.proxyCacheSeconds` (each function is its own
      // container: the sessions function's logout never sees this one).
      sessionCache: new OpenSessionCache(),
      audit: auditSink(),
      metrics: new EmfMetrics(metricNamespace(config.customer), 'smart-launch'),
    };
  });
  return deps;
}
