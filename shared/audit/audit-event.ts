import { AuditRecordSchema, type AuditAction, type AuditRecord } from './record.js';

/**
 * Audit records as FHIR R4 `AuditEvent` resources, and back: `fromAuditEvent(toAuditEvent(r))` is `r`
 * for every record, so nothing is lost in the conversion.
 *
 * - `type`: `rest` (audit-event-type) for proxied FHIR interactions, DICOM `110114` User Authentication
 *   for sign-in, refresh, logout and session end; `subtype` the RESTful interaction or DICOM
 *   Login/Logout, plus the action in this product's code system.
 * - `agent[0]`: the user (`fhirUser` as a reference), the requestor; `agent[1]`: the app, as its client
 *   id at the issuer.
 * - `source`: this deployment (`site` = customer), an application server.
 * - `entity`: the patient (role Patient) and the transaction details (correlation id, status, code,
 *   interaction, resource type, upstream status, launch mode, cause, revocation).
 * @see https://hl7.org/fhir/R4/auditevent.html
 */

export const AUDIT_ACTION_SYSTEM = 'urn:smart-launch:audit-action';
const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const EVENT_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-event-type';
const RESTFUL = 'http://hl7.org/fhir/restful-interaction';
const ENTITY_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-entity-type';
const OBJECT_ROLE = 'http://terminology.hl7.org/CodeSystem/object-role';
const SOURCE_TYPE = 'http://terminology.hl7.org/CodeSystem/security-source-type';
const PARTICIPATION = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType';
const DETAILS_NAME = 'smart-launch';

interface Coding {
  system: string;
  code: string;
  display?: string;
}
interface Reference {
  reference?: string;
  identifier?: { system?: string; value: string };
  display?: string;
}
export interface AuditEventResource {
  resourceType: 'AuditEvent';
  type: Coding;
  subtype: Coding[];
  action: 'C' | 'R' | 'U' | 'D' | 'E';
  recorded: string;
  outcome: '0' | '4' | '8';
  outcomeDesc?: string;
  agent: Array<{ type?: { coding: Coding[] }; who?: Reference; requestor: boolean }>;
  source: { site: string; observer: Reference; type: Coding[] };
  entity: Array<{ what?: Reference; type?: Coding; role?: Coding; name?: string; detail?: Array<{ type: string; valueString: string }> }>;
}

/** FHIR RESTful interaction codes (http://hl7.org/fhir/restful-interaction) of the proxy's interaction kinds. */
const REST_CODE: Record<string, string> = {
  capabilities: 'capabilities',
  read: 'read',
  vread: 'vread',
  'search-type': 'search-type',
  'search-system': 'search-system',
  'search-compartment': 'search-compartment',
  'history-instance': 'history-instance',
  'history-type': 'history-type',
  'history-system': 'history-system',
  'operation-system': 'operation',
  'operation-type': 'operation',
  'operation-instance': 'operation',
  create: 'create',
  update: 'update',
  patch: 'patch',
  delete: 'delete',
};

/** AuditEvent.action (C R U D E) of an interaction, as the AuditEvent page maps them. */
function crude(record: AuditRecord): AuditEventResource['action'] {
  if (record.action !== 'fhir') return 'E';
  const kind = record.interaction ?? '';
  if (kind === 'create') return 'C';
  if (kind === 'update' || kind === 'patch') return 'U';
  if (kind === 'delete') return 'D';
  if (kind === 'read' || kind === 'vread' || kind.startsWith('history') || kind === 'capabilities') return 'R';
  return 'E';
}

function subtypes(record: AuditRecord): Coding[] {
  const own: Coding = { system: AUDIT_ACTION_SYSTEM, code: record.action };
  switch (record.action) {
    case 'fhir': {
      const rest = REST_CODE[record.interaction ?? ''];
      return rest ? [{ system: RESTFUL, code: rest }, own] : [own];
    }
    case 'sign-in':
      return [{ system: DCM, code: '110122', display: 'Login' }, own];
    case 'logout':
    case 'session-end':
      return [{ system: DCM, code: '110123', display: 'Logout' }, own];
    case 'refresh':
      return [own];
  }
}

/** The record fields that travel as entity details (the rest have a structured place). */
const DETAIL_FIELDS = ['correlationId', 'status', 'code', 'interaction', 'resourceType', 'upstreamStatus', 'launchMode', 'cause', 'revocation'] as const;

export function toAuditEvent(record: AuditRecord): AuditEventResource {
  const agents: AuditEventResource['agent'] = [
    {
      type: { coding: [{ system: PARTICIPATION, code: 'AUT', display: 'author (originator)' }] },
      ...(record.fhirUser !== undefined ? { who: { reference: record.fhirUser } } : {}),
      requestor: true,
    },
  ];
  if (record.clientId !== undefined || record.iss !== undefined) {
    agents.push({
      type: { coding: [{ system: DCM, code: '110150', display: 'Application' }] },
      who: {
        ...(record.clientId !== undefined ? { identifier: { ...(record.iss !== undefined ? { system: record.iss } : {}), value: record.clientId } } : {}),
        ...(record.iss !== undefined ? { display: record.iss } : {}),
      },
      requestor: false,
    });
  }
  const entities: AuditEventResource['entity'] = [];
  if (record.patient !== undefined) {
    entities.push({
      what: { reference: `Patient/${record.patient}` },
      type: { system: ENTITY_TYPE, code: '1', display: 'Person' },
      role: { system: OBJECT_ROLE, code: '1', display: 'Patient' },
    });
  }
  const detail: Array<{ type: string; valueString: string }> = [];
  for (const field of DETAIL_FIELDS) {
    const value = record[field];
    if (value !== undefined) detail.push({ type: field, valueString: String(value) });
  }
  entities.push({ type: { system: ENTITY_TYPE, code: '2', display: 'System Object' }, name: DETAILS_NAME, detail });
  return {
    resourceType: 'AuditEvent',
    type:
      record.action === 'fhir'
        ? { system: EVENT_TYPE, code: 'rest', display: 'RESTful Operation' }
        : { system: DCM, code: '110114', display: 'User Authentication' },
    subtype: subtypes(record),
    action: crude(record),
    recorded: record.time,
    outcome: record.outcome === 'success' ? '0' : record.status >= 500 ? '8' : '4',
    ...(record.code !== undefined ? { outcomeDesc: record.code } : {}),
    agent: agents,
    source: {
      site: record.customer,
      observer: { display: `smart-launch ${record.customer}` },
      type: [{ system: SOURCE_TYPE, code: '4', display: 'Application Server' }],
    },
    entity: entities,
  };
}

const NUMERIC_DETAILS = new Set(['status', 'upstreamStatus']);

/** The record an AuditEvent of `toAuditEvent` came from (validated); throws on anything else. */
export function fromAuditEvent(event: AuditEventResource): AuditRecord {
  const action = event.subtype.find((coding) => coding.system === AUDIT_ACTION_SYSTEM)?.code as AuditAction | undefined;
  const user = event.agent.find((agent) => agent.requestor);
  const app = event.agent.find((agent) => !agent.requestor);
  const patient = event.entity.find((entity) => entity.role?.code === '1' && entity.role.system === OBJECT_ROLE)?.what?.reference;
  const details = event.entity.find((entity) => entity.name === DETAILS_NAME)?.detail ?? [];
  const record: Record<string, unknown> = {
    v: 1,
    time: event.recorded,
    action,
    outcome: event.outcome === '0' ? 'success' : 'failure',
    customer: event.source.site,
    fhirUser: user?.who?.reference,
    clientId: app?.who?.identifier?.value,
    iss: app?.who?.display,
    patient: patient?.replace(/^Patient\//, ''),
  };
  for (const { type, valueString } of details) record[type] = NUMERIC_DETAILS.has(type) ? Number(valueString) : valueString;
  for (const key of Object.keys(record)) if (record[key] === undefined) delete record[key];
  return AuditRecordSchema.parse(record);
}
