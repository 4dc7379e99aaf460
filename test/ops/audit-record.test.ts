import { CloudWatchLogsClient, CreateLogStreamCommand, FilterLogEventsCommand, PutLogEventsCommand } from '@aws-sdk/client-cloudwatch-logs';
import { mockClient } from 'aws-sdk-client-mock';
import { describe, expect, it } from 'vitest';
import { fhirR4Problems } from '../../cli/fhir-validate.js';
import { CloudWatchAuditSink } from '../../shared/adapters/cloudwatch-audit-sink.js';
import { fromAuditEvent, toAuditEvent } from '../../shared/audit/audit-event.js';
import { AUDIT_ACTIONS, AuditRecordSchema, DIRECT_FIELD_CHECKS, auditRecord, parseAuditLine } from '../../shared/audit/record.js';

const NOW = Date.UTC(2026, 0, 31, 12, 0, 0, 123);

describe('audit records', () => {
  it('keep only facts that fit their field: control characters, spaces, free text and unknown fields are left out', () => {
    const record = auditRecord({
      nowMs: NOW,
      action: 'fhir',
      status: 200,
      correlationId: 'req-1',
      customer: 'acme',
      facts: {
        fhirUser: 'Practitioner/1\nforged: line',
        patient: 'p 1',
        resourceType: 'patient; DROP',
        interaction: 'read',
        iss: 'https://ehr.example/fhir',
        ...({ accessToken: 'secret-token', body: '{"resourceType":"Patient"}' } as object),
      },
    });
    expect(record).toEqual({
      v: 1,
      time: '2026-01-31T12:00:00.123Z',
      action: 'fhir',
      outcome: 'success',
      status: 200,
      correlationId: 'req-1',
      customer: 'acme',
      interaction: 'read',
      iss: 'https://ehr.example/fhir',
    });
    expect(JSON.stringify(record)).not.toContain('secret-token');
  });

  it('keep and leave out the same facts on every request (each distinct value is checked once), field by field', () => {
    const facts = { fhirUser: 'Practitioner/1', patient: 'p 1', clientId: 'app', resourceType: 'Patient' };
    const once = () => auditRecord({ nowMs: NOW, action: 'fhir', status: 200, correlationId: 'req-1', customer: 'acme', facts });
    const first = once();
    expect(first).toMatchObject({ fhirUser: 'Practitioner/1', clientId: 'app', resourceType: 'Patient' });
    expect(first).not.toHaveProperty('patient');
    expect(once()).toEqual(first);
    // The same text in another field is checked against that field's schema.
    const asType = auditRecord({ nowMs: NOW, action: 'fhir', status: 200, correlationId: 'req-1', customer: 'acme', facts: { resourceType: 'Practitioner/1', fhirUser: 'Patient' } });
    expect(asType).not.toHaveProperty('resourceType');
    expect(asType).toMatchObject({ fhirUser: 'Patient' });
  });

  it('check the per-request fields (version, statuses, correlation id) exactly as their schema does', () => {
    const shape = AuditRecordSchema.shape as Record<string, { safeParse(value: unknown): { success: boolean } }>;
    // (`undefined` is left out before any check: an absent fact.)
    const values: unknown[] = [
      1, 0, 2, 99, 100, 200, 404, 599, 600, 200.5, -1, NaN, Infinity, '200', '1', null, true, {},
      '', 'a', 'req-1', 'x'.repeat(128), 'x'.repeat(129), 'has space', 'tab\t', 'line\nbreak', 'caf\u00e9', '\u007f', '!~', 'a/b?c=d#e',
    ];
    expect([...DIRECT_FIELD_CHECKS.keys()].sort()).toEqual(['correlationId', 'status', 'upstreamStatus', 'v']);
    for (const [field, check] of DIRECT_FIELD_CHECKS) {
      for (const value of values) expect([field, value, check(value)]).toEqual([field, value, shape[field]!.safeParse(value).success]);
    }
  });

  it('keep the time exactly when its schema does: every instant of the years 0000-9999, and none beyond', () => {
    const time = (AuditRecordSchema.shape as Record<string, { safeParse(value: unknown): { success: boolean } }>).time!;
    const instants = [Date.UTC(0, 0, 1), Date.UTC(2024, 1, 29, 23, 59, 59, 999), NOW, Date.UTC(9999, 11, 31, 23, 59, 59, 999), Date.UTC(10000, 0, 1), -62167219200001];
    for (let i = 0; i < 2000; i += 1) instants.push(Math.floor(Math.random() * 2.6e14) - 6.3e13);
    for (const nowMs of instants) {
      const iso = new Date(nowMs).toISOString();
      if (time.safeParse(iso).success) expect(auditRecord({ nowMs, action: 'fhir', status: 200, correlationId: 'c', customer: 'acme' }).time).toBe(iso);
      else expect(() => auditRecord({ nowMs, action: 'fhir', status: 200, correlationId: 'c', customer: 'acme' })).toThrow();
    }
  });

  it('let a fact named like one of the record\'s own fields take its place, as before', () => {
    const record = auditRecord({ nowMs: NOW, action: 'refresh', status: 401, code: 'SESSION_NOT_OPEN', correlationId: 'c', customer: 'acme', facts: { code: 'REFRESH_REJECTED', iss: 'https://ehr.example/fhir' } });
    expect(Object.keys(record)).toEqual(['v', 'time', 'action', 'outcome', 'status', 'code', 'correlationId', 'customer', 'iss']);
    expect(record.code).toBe('REFRESH_REJECTED');
    const cleared = auditRecord({ nowMs: NOW, action: 'refresh', status: 401, code: 'SESSION_NOT_OPEN', correlationId: 'c', customer: 'acme', facts: { code: undefined } });
    expect(cleared).not.toHaveProperty('code');
  });

  it('are failures from status 400 on, with the error code', () => {
    expect(auditRecord({ nowMs: NOW, action: 'sign-in', status: 502, code: 'TOKEN_ENDPOINT_UNAVAILABLE', correlationId: 'c', customer: 'acme' })).toMatchObject({
      outcome: 'failure',
      code: 'TOKEN_ENDPOINT_UNAVAILABLE',
    });
    expect(parseAuditLine('{"v":1}')).toBeUndefined();
    expect(parseAuditLine('not json')).toBeUndefined();
  });

  it('convert to a valid FHIR R4 AuditEvent and back without loss, for every action and outcome', () => {
    const full = {
      iss: 'https://ehr.example/fhir',
      clientId: 'app',
      fhirUser: 'https://ehr.example/fhir/Practitioner/9',
      patient: 'p-1',
      launchMode: 'ehr' as const,
    };
    const cases = [
      ...AUDIT_ACTIONS.map((action) => ({ action, status: 200, facts: full })),
      { action: 'fhir' as const, status: 404, facts: { ...full, interaction: 'vread', resourceType: 'Observation', upstreamStatus: 404 } },
      { action: 'fhir' as const, status: 201, facts: { ...full, interaction: 'create', resourceType: 'Observation', upstreamStatus: 201 } },
      { action: 'fhir' as const, status: 200, facts: { ...full, interaction: 'operation-type', resourceType: 'Patient' } },
      { action: 'session-end' as const, status: 200, facts: { ...full, cause: 'operator' as const, revocation: 'failed' as const } },
      { action: 'refresh' as const, status: 401, code: 'REFRESH_REJECTED', facts: { clientId: 'app' } },
      { action: 'sign-in' as const, status: 400, code: 'STATE_UNKNOWN', facts: {} },
    ];
    for (const c of cases) {
      const record = auditRecord({ nowMs: NOW, correlationId: 'corr', customer: 'acme', ...c });
      const event = toAuditEvent(record);
      expect(fhirR4Problems(event), JSON.stringify(event)).toEqual([]);
      expect(fromAuditEvent(event)).toEqual(record);
    }
    const create = toAuditEvent(auditRecord({ nowMs: NOW, action: 'fhir', status: 201, correlationId: 'c', customer: 'acme', facts: { interaction: 'create' } }));
    expect(create.action).toBe('C');
    expect(create.subtype[0]).toEqual({ system: 'http://hl7.org/fhir/restful-interaction', code: 'create' });
    const failed = toAuditEvent(auditRecord({ nowMs: NOW, action: 'sign-in', status: 502, code: 'TOKEN_ENDPOINT_UNAVAILABLE', correlationId: 'c', customer: 'acme' }));
    expect(failed).toMatchObject({ outcome: '8', outcomeDesc: 'TOKEN_ENDPOINT_UNAVAILABLE', type: { code: '110114' }, subtype: [{ code: '110122' }, { code: 'sign-in' }] });
  });
});

describe('CloudWatchAuditSink', () => {
  const record = auditRecord({ nowMs: NOW, action: 'logout', status: 200, correlationId: 'c1', customer: 'acme', facts: { fhirUser: 'Practitioner/1' } });

  it('creates its stream once and puts each request\'s records as one batch in the audit group', async () => {
    const cw = mockClient(CloudWatchLogsClient);
    cw.on(CreateLogStreamCommand).resolves({});
    cw.on(PutLogEventsCommand).resolves({});
    const sink = new CloudWatchAuditSink({ client: new CloudWatchLogsClient({ region: 'us-east-1' }), logGroupName: '/smart-launch/acme/audit', logStreamName: 's1' });
    await sink.write([record, record]);
    await sink.write([record]);
    await sink.write([]);
    expect(cw).toHaveReceivedCommandTimes(CreateLogStreamCommand, 1);
    expect(cw).toHaveReceivedCommandWith(CreateLogStreamCommand, { logGroupName: '/smart-launch/acme/audit', logStreamName: 's1' });
    expect(cw).toHaveReceivedCommandTimes(PutLogEventsCommand, 2);
    expect(cw.commandCalls(PutLogEventsCommand)[0]!.args[0].input).toEqual({
      logGroupName: '/smart-launch/acme/audit',
      logStreamName: 's1',
      logEvents: [
        { timestamp: NOW, message: JSON.stringify(record) },
        { timestamp: NOW, message: JSON.stringify(record) },
      ],
    });
    cw.restore();
  });

  it('tries to create the stream again after a failure, and accepts a stream that already exists', async () => {
    const cw = mockClient(CloudWatchLogsClient);
    cw.on(CreateLogStreamCommand)
      .rejectsOnce(Object.assign(new Error('throttled'), { name: 'ThrottlingException' }))
      .rejectsOnce(Object.assign(new Error('exists'), { name: 'ResourceAlreadyExistsException' }));
    cw.on(PutLogEventsCommand).resolves({});
    const sink = new CloudWatchAuditSink({ client: new CloudWatchLogsClient({ region: 'us-east-1' }), logGroupName: 'g', logStreamName: 's' });
    await expect(sink.write([record])).rejects.toThrow('throttled');
    await sink.write([record]);
    expect(cw).toHaveReceivedCommandTimes(CreateLogStreamCommand, 2);
    expect(cw).toHaveReceivedCommandTimes(PutLogEventsCommand, 1);
    cw.restore();
  });

  it('reads a time range back page by page, skipping lines that are not audit records', async () => {
    const cw = mockClient(CloudWatchLogsClient);
    cw.on(FilterLogEventsCommand)
      .resolvesOnce({ events: [{ message: JSON.stringify(record) }, { message: 'START RequestId' }], nextToken: 't2' })
      .resolvesOnce({ events: [{ message: JSON.stringify({ ...record, correlationId: 'c2' }) }] });
    const sink = new CloudWatchAuditSink({ client: new CloudWatchLogsClient({ region: 'us-east-1' }), logGroupName: 'g', logStreamName: 'export' });
    const read = [];
    for await (const r of sink.read(NOW - 1000, NOW + 1000)) read.push(r.correlationId);
    expect(read).toEqual(['c1', 'c2']);
    expect(cw.commandCalls(FilterLogEventsCommand).map((c) => c.args[0].input)).toEqual([
      { logGroupName: 'g', startTime: NOW - 1000, endTime: NOW + 999 },
      { logGroupName: 'g', startTime: NOW - 1000, endTime: NOW + 999, nextToken: 't2' },
    ]);
    cw.restore();
  });
});
