import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { auditLine, parseAuditLine, type AuditRecord, type AuditSink, type AuditSource } from '../audit/record.js';

/** The audit trail of a local run: `audit.ndjson` in the local data folder, next to the store and keys. */
export const LOCAL_AUDIT_FILE = 'audit.ndjson';

/**
 * Audit records of a local run, one JSON line each, appended to `{dataDir}/audit.ndjson` (mode 0600,
 * apart from the console logs). Appends are serialized, so concurrent requests never interleave lines.
 */
export class FileAuditSink implements AuditSink, AuditSource {
  readonly path: string;
  #queue: Promise<void> = Promise.resolve();
  #folder: Promise<void> | undefined;

  constructor(dataDir: string) {
    this.path = join(dataDir, LOCAL_AUDIT_FILE);
  }

  write(records: readonly AuditRecord[]): Promise<void> {
    if (records.length === 0) return this.#queue;
    const text = records.map((record) => `${auditLine(record)}\n`).join('');
    const next = this.#queue.then(async () => {
      // The folder is made once per sink (again after a failed write), not before every append.
      this.#folder ??= mkdir(join(this.path, '..'), { recursive: true }).then(() => undefined);
      try {
        await this.#folder;
        await appendFile(this.path, text, { encoding: 'utf8', mode: 0o600 });
      } catch (error) {
        this.#folder = undefined;
        throw error;
      }
    });
    this.#queue = next.catch(() => undefined);
    return next;
  }

  async *read(fromMs: number, toMs: number): AsyncIterable<AuditRecord> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    for (const line of text.split('\n')) {
      if (line === '') continue;
      const record = parseAuditLine(line);
      if (record === undefined) continue;
      const at = Date.parse(record.time);
      if (at >= fromMs && at < toMs) yield record;
    }
  }
}
