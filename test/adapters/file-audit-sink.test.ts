import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FileAuditSink, LOCAL_AUDIT_FILE } from '../../shared/adapters/file-audit-sink.js';
import { auditRecord, type AuditRecord } from '../../shared/audit/record.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function sinkIn(): Promise<{ sink: FileAuditSink; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'audit-sink-'));
  dirs.push(dir);
  return { sink: new FileAuditSink(join(dir, 'data')), dir: join(dir, 'data') };
}

const record = (n: number): AuditRecord =>
  auditRecord({ nowMs: Date.UTC(2026, 2, 1, 10, 0, 0, n), action: 'fhir', status: 200, correlationId: `req-${n}`, customer: 'acme-health', facts: { interaction: 'read', resourceType: 'Patient' } });

describe('file audit sink', () => {
  it('appends one JSON line per record, in the order written, to a file only its owner reads', async () => {
    const { sink, dir } = await sinkIn();
    // Concurrent requests: every line stays whole and in the order the writes were made.
    await Promise.all(Array.from({ length: 50 }, (_, n) => sink.write([record(n), record(1000 + n)])));
    const lines = (await readFile(join(dir, LOCAL_AUDIT_FILE), 'utf8')).split('\n').filter((line) => line !== '');
    expect(lines).toHaveLength(100);
    expect(lines.map((line) => (JSON.parse(line) as AuditRecord).correlationId)).toEqual(Array.from({ length: 50 }, (_, n) => [`req-${n}`, `req-${1000 + n}`]).flat());
    expect((await stat(join(dir, LOCAL_AUDIT_FILE))).mode & 0o777).toBe(0o600);
    const read: AuditRecord[] = [];
    for await (const found of sink.read(0, Number.MAX_SAFE_INTEGER)) read.push(found);
    expect(read).toHaveLength(100);
    await sink.close();
  });

  it('opens the file again after it was closed, and after a write failed', async () => {
    const { sink, dir } = await sinkIn();
    await sink.write([record(1)]);
    await sink.close();
    await sink.write([record(2)]);
    await sink.close();
    const before = await readFile(join(dir, LOCAL_AUDIT_FILE), 'utf8');
    // The file cannot be opened (a folder stands in its place): the write fails (the caller logs it), the next one opens it again.
    await rm(join(dir, LOCAL_AUDIT_FILE));
    await mkdir(join(dir, LOCAL_AUDIT_FILE));
    await expect(sink.write([record(3)])).rejects.toThrow();
    await rm(join(dir, LOCAL_AUDIT_FILE), { recursive: true });
    await sink.write([record(4)]);
    await sink.close();
    const ids = (text: string) => text.split('\n').filter((line) => line !== '').map((line) => (JSON.parse(line) as AuditRecord).correlationId);
    expect(ids(before)).toEqual(['req-1', 'req-2']);
    expect(ids(await readFile(join(dir, LOCAL_AUDIT_FILE), 'utf8'))).toEqual(['req-4']);
  });
});
