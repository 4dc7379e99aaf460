import {
  CreateLogStreamCommand,
  FilterLogEventsCommand,
  PutLogEventsCommand,
  type CloudWatchLogsClient,
} from '@aws-sdk/client-cloudwatch-logs';
import { auditLine, parseAuditLine, type AuditRecord, type AuditSink, type AuditSource } from '../audit/record.js';

export interface CloudWatchAuditSinkOptions {
  readonly client: CloudWatchLogsClient;
  /** The dedicated audit log group (its own KMS key and retention; `infra/constructs/audit-log.ts`). */
  readonly logGroupName: string;
  /** One stream per writer (a Lambda container); made once, on the first write. */
  readonly logStreamName: string;
}

/**
 * Audit records in a dedicated CloudWatch Logs group, apart from the functions' operational logs: one
 * `PutLogEvents` per request (the records of that request), into this container's own stream.
 * Reading back (`audit export`) filters the whole group by time with `FilterLogEvents`.
 */
export class CloudWatchAuditSink implements AuditSink, AuditSource {
  readonly #options: CloudWatchAuditSinkOptions;
  /** PutLogEvents is a round trip: a proxied read's records may be written after its answer is streamed. */
  readonly afterResponse = true;
  #stream: Promise<void> | undefined;

  constructor(options: CloudWatchAuditSinkOptions) {
    this.#options = options;
  }

  async write(records: readonly AuditRecord[]): Promise<void> {
    if (records.length === 0) return;
    const { client, logGroupName, logStreamName } = this.#options;
    this.#stream ??= client
      .send(new CreateLogStreamCommand({ logGroupName, logStreamName }))
      .then(() => undefined)
      .catch((error: unknown) => {
        if (error instanceof Error && error.name === 'ResourceAlreadyExistsException') return;
        this.#stream = undefined;
        throw error;
      });
    await this.#stream;
    await client.send(
      new PutLogEventsCommand({
        logGroupName,
        logStreamName,
        logEvents: records.map((record) => ({ timestamp: Date.parse(record.time), message: auditLine(record) })),
      }),
    );
  }

  async *read(fromMs: number, toMs: number): AsyncIterable<AuditRecord> {
    const { client, logGroupName } = this.#options;
    let nextToken: string | undefined;
    do {
      const page = await client.send(
        new FilterLogEventsCommand({ logGroupName, startTime: fromMs, endTime: toMs - 1, ...(nextToken ? { nextToken } : {}) }),
      );
      for (const event of page.events ?? []) {
        const record = event.message === undefined ? undefined : parseAuditLine(event.message);
        if (record !== undefined) yield record;
      }
      nextToken = page.nextToken;
    } while (nextToken !== undefined);
  }
}
