import type {
  Binary,
  CodeableConcept,
  Condition,
  DocumentReference,
  Encounter,
  MedicationRequest,
  Observation,
  Organization,
  Patient,
  Practitioner,
  Resource,
} from '@medplum/fhirtypes';
import { BIG_BINARY_BYTES, bigBinary, samplePdf } from './binaries.js';

/**
 * Synthetic, deterministic sandbox data. Every value derives from fixed tables and a seeded PRNG, so
 * resource ids, counts and values are identical on every start and tests can rely on them. The people
 * are invented; names are chosen to look like test fixtures, not like anyone real.
 */

export const LOINC = 'http://loinc.org';
export const SNOMED = 'http://snomed.info/sct';
export const UCUM = 'http://unitsofmeasure.org';
const OBSERVATION_CATEGORY = 'http://terminology.hl7.org/CodeSystem/observation-category';
const CONDITION_CLINICAL = 'http://terminology.hl7.org/CodeSystem/condition-clinical';
const CONDITION_VERIFICATION = 'http://terminology.hl7.org/CodeSystem/condition-ver-status';
const CONDITION_CATEGORY = 'http://terminology.hl7.org/CodeSystem/condition-category';
const ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const MRN_SYSTEM = 'urn:oid:2.16.840.1.113883.3.9999.1';
const DOCUMENT_CATEGORY = 'http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category';

/** The 10 MB Binary (`application/octet-stream`) of Amy's imaging export, DocumentReference `amy-sample-document-2`. */
export const BIG_BINARY_ID = 'amy-sample-document-2-data';
/** The Binary (`application/pdf`) of a patient's visit summary, DocumentReference `{patient}-document-1`. */
export const summaryPdfId = (patientId: string): string => `${patientId}-document-1-pdf`;

/** Every resource carries the same meta, so the repository does not stamp random versions or times. */
const META = { versionId: '1', lastUpdated: '2025-07-01T00:00:00.000Z' };

export const SEED = 20_240_901;

/** mulberry32: tiny, well-distributed, and reproducible across Node versions (pure 32-bit integer maths). */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

interface ConditionSeed {
  readonly code: string;
  readonly display: string;
}

interface PatientSeed {
  readonly id: string;
  readonly given: string;
  readonly family: string;
  readonly gender: 'female' | 'male';
  readonly birthDate: string;
  readonly encounters: number;
  readonly conditions: readonly ConditionSeed[];
  /** Per-patient shifts of the measurement baselines (keyed by LOINC code), so charts differ. */
  readonly offsets: Readonly<Record<string, number>>;
}

const HYPERTENSION: ConditionSeed = { code: '59621000', display: 'Essential hypertension' };

export const RXNORM = 'http://www.nlm.nih.gov/research/umls/rxnorm';

/** The medication each seeded problem is treated with (RxNorm), one active MedicationRequest per condition. */
const MEDICATION_FOR: Readonly<Record<string, { code: string; display: string; dosage: string }>> = {
  '59621000': { code: '314076', display: 'lisinopril 10 MG Oral Tablet', dosage: 'Take 1 tablet by mouth once daily' },
  '195967001': { code: '245314', display: 'albuterol 0.09 MG/ACTUAT Metered Dose Inhaler', dosage: 'Inhale 2 puffs every 4 to 6 hours as needed for wheezing' },
  '44054006': { code: '861007', display: 'metformin hydrochloride 500 MG Oral Tablet', dosage: 'Take 1 tablet by mouth twice daily with meals' },
  '55822004': { code: '617312', display: 'atorvastatin 20 MG Oral Tablet', dosage: 'Take 1 tablet by mouth once daily at bedtime' },
  '87522002': { code: '310325', display: 'ferrous sulfate 325 MG Oral Tablet', dosage: 'Take 1 tablet by mouth once daily' },
  '37796009': { code: '313157', display: 'sumatriptan 50 MG Oral Tablet', dosage: 'Take 1 tablet by mouth at migraine onset; may repeat once after 2 hours' },
};

const PATIENTS: readonly PatientSeed[] = [
  {
    id: 'amy-sample',
    given: 'Amy',
    family: 'Sample',
    gender: 'female',
    birthDate: '1985-03-14',
    encounters: 10,
    conditions: [HYPERTENSION, { code: '195967001', display: 'Asthma' }],
    offsets: { '8480-6': 14, '8462-4': 8 },
  },
  {
    id: 'ben-testwell',
    given: 'Ben',
    family: 'Testwell',
    gender: 'male',
    birthDate: '1958-11-02',
    encounters: 11,
    conditions: [
      { code: '44054006', display: 'Diabetes mellitus type 2' },
      { code: '55822004', display: 'Hyperlipidemia' },
      HYPERTENSION,
    ],
    offsets: { '2339-0': 55, '29463-7': 18, '8480-6': 10 },
  },
  {
    id: 'cara-demoson',
    given: 'Cara',
    family: 'Demoson',
    gender: 'female',
    birthDate: '2001-07-23',
    encounters: 12,
    conditions: [
      { code: '87522002', display: 'Iron deficiency anemia' },
      { code: '37796009', display: 'Migraine' },
    ],
    offsets: { '718-7': -2.6, '8867-4': 9, '29463-7': -12 },
  },
];

interface MeasureSeed {
  readonly code: string;
  readonly display: string;
  readonly category: 'vital-signs' | 'laboratory';
  readonly unit: string;
  readonly ucum: string;
  readonly base: number;
  readonly spread: number;
  readonly decimals: number;
}

const MEASURES: readonly MeasureSeed[] = [
  { code: '8867-4', display: 'Heart rate', category: 'vital-signs', unit: 'beats/minute', ucum: '/min', base: 72, spread: 8, decimals: 0 },
  { code: '9279-1', display: 'Respiratory rate', category: 'vital-signs', unit: 'breaths/minute', ucum: '/min', base: 15, spread: 2, decimals: 0 },
  { code: '8310-5', display: 'Body temperature', category: 'vital-signs', unit: 'Cel', ucum: 'Cel', base: 36.8, spread: 0.4, decimals: 1 },
  { code: '8480-6', display: 'Systolic blood pressure', category: 'vital-signs', unit: 'mmHg', ucum: 'mm[Hg]', base: 118, spread: 9, decimals: 0 },
  { code: '8462-4', display: 'Diastolic blood pressure', category: 'vital-signs', unit: 'mmHg', ucum: 'mm[Hg]', base: 76, spread: 6, decimals: 0 },
  { code: '59408-5', display: 'Oxygen saturation in Arterial blood by Pulse oximetry', category: 'vital-signs', unit: '%', ucum: '%', base: 97.5, spread: 1.2, decimals: 0 },
  { code: '29463-7', display: 'Body weight', category: 'vital-signs', unit: 'kg', ucum: 'kg', base: 72, spread: 1.5, decimals: 1 },
  { code: '8302-2', display: 'Body height', category: 'vital-signs', unit: 'cm', ucum: 'cm', base: 170, spread: 0.3, decimals: 1 },
  { code: '2339-0', display: 'Glucose [Mass/volume] in Blood', category: 'laboratory', unit: 'mg/dL', ucum: 'mg/dL', base: 92, spread: 10, decimals: 0 },
  { code: '718-7', display: 'Hemoglobin [Mass/volume] in Blood', category: 'laboratory', unit: 'g/dL', ucum: 'g/dL', base: 14.2, spread: 0.6, decimals: 1 },
  { code: '2160-0', display: 'Creatinine [Mass/volume] in Serum or Plasma', category: 'laboratory', unit: 'mg/dL', ucum: 'mg/dL', base: 0.9, spread: 0.12, decimals: 2 },
  { code: '2823-3', display: 'Potassium [Moles/volume] in Serum or Plasma', category: 'laboratory', unit: 'mmol/L', ucum: 'mmol/L', base: 4.2, spread: 0.3, decimals: 1 },
];

const CATEGORY_DISPLAY: Readonly<Record<MeasureSeed['category'], string>> = {
  'vital-signs': 'Vital Signs',
  laboratory: 'Laboratory',
};

/** First visit of the first patient; visits are 8 weeks apart and patients are staggered by 3 days. */
const FIRST_VISIT = Date.UTC(2023, 0, 9, 9, 0, 0);
const DAY_MS = 86_400_000;
const VISIT_INTERVAL_DAYS = 56;

export interface SandboxData {
  readonly organization: Organization & { id: string };
  readonly practitioner: Practitioner & { id: string };
  readonly patients: readonly (Patient & { id: string })[];
  readonly encounters: readonly (Encounter & { id: string })[];
  readonly conditions: readonly (Condition & { id: string })[];
  readonly observations: readonly (Observation & { id: string })[];
  /** One active MedicationRequest per condition, prescribed at the condition's onset. */
  readonly medicationRequests: readonly (MedicationRequest & { id: string })[];
  /** Per patient: a visit summary (PDF); for Amy also an imaging export (10 MB). Each links its Binary. */
  readonly documents: readonly (DocumentReference & { id: string })[];
  /**
   * The documents' content, without `data`: the FHIR server attaches the bytes of `binaryContent` when
   * it serves them. `securityContext` names the DocumentReference, whose access rules apply.
   */
  readonly binaries: readonly (Binary & { id: string })[];
  /** The bytes of each Binary, by id (the 10 MB one is generated on first call, once per process). */
  readonly binaryContent: ReadonlyMap<string, () => Buffer>;
  /** All resources above, in insertion order (the memory repository keeps this order for unsorted searches). */
  readonly all: readonly Resource[];
}

function round(value: number, decimals: number): number {
  const factor = 10 ** decimals;
  return Math.round(value * factor) / factor;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function concept(system: string, code: string, display: string): CodeableConcept {
  return { coding: [{ system, code, display }], text: display };
}

export function displayName(resource: Patient | Practitioner): string {
  const name = resource.name?.[0];
  if (!name) {
    return resource.id ?? '';
  }
  return [...(name.prefix ?? []), ...(name.given ?? []), name.family ?? ''].filter((p) => p !== '').join(' ');
}

/** Builds the whole data set. Pure: the same seed always gives the same resources. */
export function generateSandboxData(seed: number = SEED): SandboxData {
  const random = seededRandom(seed);
  const organization: Organization & { id: string } = {
    resourceType: 'Organization',
    id: 'sandbox-clinic',
    meta: META,
    active: true,
    name: 'Sandbox Community Clinic',
    address: [{ line: ['1 Example Way'], city: 'Testville', postalCode: '00000', country: 'US' }],
  };
  const practitioner: Practitioner & { id: string } = {
    resourceType: 'Practitioner',
    id: 'erin-example',
    meta: META,
    active: true,
    identifier: [{ system: 'http://hl7.org/fhir/sid/us-npi', value: '9999999991' }],
    name: [{ use: 'official', family: 'Example', given: ['Erin'], prefix: ['Dr.'] }],
    gender: 'female',
  };
  const practitionerRef = { reference: `Practitioner/${practitioner.id}`, display: displayName(practitioner) };
  const organizationRef = { reference: `Organization/${organization.id}`, display: organization.name };

  const patients: (Patient & { id: string })[] = [];
  const encounters: (Encounter & { id: string })[] = [];
  const conditions: (Condition & { id: string })[] = [];
  const observations: (Observation & { id: string })[] = [];
  const medicationRequests: (MedicationRequest & { id: string })[] = [];
  const documents: (DocumentReference & { id: string })[] = [];
  const binaries: (Binary & { id: string })[] = [];
  const binaryContent = new Map<string, () => Buffer>();

  /** A DocumentReference of the patient and the Binary it links (`securityContext` points back). */
  const addDocument = (
    patientRef: { reference: string; display: string },
    id: string,
    binaryId: string,
    fields: { type: CodeableConcept; description: string; title: string; contentType: string; size: number; date: string; encounter: string },
    bytes: () => Buffer,
  ): void => {
    documents.push({
      resourceType: 'DocumentReference',
      id,
      meta: META,
      status: 'current',
      docStatus: 'final',
      type: fields.type,
      category: [concept(DOCUMENT_CATEGORY, 'clinical-note', 'Clinical Note')],
      subject: patientRef,
      date: fields.date,
      author: [practitionerRef],
      custodian: organizationRef,
      description: fields.description,
      content: [{ attachment: { contentType: fields.contentType, url: `Binary/${binaryId}`, size: fields.size, title: fields.title, creation: fields.date } }],
      context: { encounter: [{ reference: `Encounter/${fields.encounter}` }] },
    });
    binaries.push({
      resourceType: 'Binary',
      id: binaryId,
      meta: META,
      contentType: fields.contentType,
      securityContext: { reference: `DocumentReference/${id}` },
    });
    binaryContent.set(binaryId, bytes);
  };

  PATIENTS.forEach((seedPatient, patientIndex) => {
    const patient: Patient & { id: string } = {
      resourceType: 'Patient',
      id: seedPatient.id,
      meta: META,
      active: true,
      identifier: [{ system: MRN_SYSTEM, value: `SBX-${String(1001 + patientIndex)}` }],
      name: [{ use: 'official', family: seedPatient.family, given: [seedPatient.given] }],
      gender: seedPatient.gender,
      birthDate: seedPatient.birthDate,
      address: [{ line: [`${10 + patientIndex} Fixture Street`], city: 'Testville', postalCode: '00000', country: 'US' }],
      generalPractitioner: [practitionerRef],
      managingOrganization: organizationRef,
    };
    patients.push(patient);
    const patientRef = { reference: `Patient/${patient.id}`, display: displayName(patient) };

    const firstVisit = FIRST_VISIT + patientIndex * 3 * DAY_MS + patientIndex * 3_600_000;
    const patientConditions = seedPatient.conditions.map((c, conditionIndex) => {
      const onset = iso(firstVisit + conditionIndex * VISIT_INTERVAL_DAYS * DAY_MS);
      const condition: Condition & { id: string } = {
        resourceType: 'Condition',
        id: `${patient.id}-condition-${conditionIndex + 1}`,
        meta: META,
        clinicalStatus: concept(CONDITION_CLINICAL, 'active', 'Active'),
        verificationStatus: concept(CONDITION_VERIFICATION, 'confirmed', 'Confirmed'),
        category: [concept(CONDITION_CATEGORY, 'problem-list-item', 'Problem List Item')],
        code: concept(SNOMED, c.code, c.display),
        subject: patientRef,
        encounter: { reference: `Encounter/${patient.id}-encounter-${conditionIndex + 1}` },
        onsetDateTime: onset,
        recordedDate: onset,
        recorder: practitionerRef,
      };
      return condition;
    });
    conditions.push(...patientConditions);
    patientConditions.forEach((condition, conditionIndex) => {
      const medication = MEDICATION_FOR[condition.code?.coding?.[0]?.code ?? ''];
      if (medication === undefined) return;
      medicationRequests.push({
        resourceType: 'MedicationRequest',
        id: `${patient.id}-medication-${conditionIndex + 1}`,
        meta: META,
        status: 'active',
        intent: 'order',
        medicationCodeableConcept: concept(RXNORM, medication.code, medication.display),
        subject: patientRef,
        encounter: condition.encounter,
        authoredOn: condition.onsetDateTime,
        requester: practitionerRef,
        reasonReference: [{ reference: `Condition/${condition.id}` }],
        dosageInstruction: [{ text: medication.dosage }],
      });
    });

    for (let visit = 0; visit < seedPatient.encounters; visit++) {
      const start = firstVisit + visit * VISIT_INTERVAL_DAYS * DAY_MS;
      const encounterId = `${patient.id}-encounter-${visit + 1}`;
      // Each visit addresses one of the patient's problems, in turn.
      const addressed = patientConditions[visit % patientConditions.length];
      const encounter: Encounter & { id: string } = {
        resourceType: 'Encounter',
        id: encounterId,
        meta: META,
        status: 'finished',
        class: { system: ACT_CODE, code: 'AMB', display: 'ambulatory' },
        type: [concept(SNOMED, '185349003', 'Encounter for check up')],
        subject: patientRef,
        participant: [{ individual: practitionerRef }],
        period: { start: iso(start), end: iso(start + 40 * 60_000) },
        serviceProvider: organizationRef,
        ...(addressed ? { diagnosis: [{ condition: { reference: `Condition/${addressed.id}` }, rank: 1 }] } : {}),
      };
      encounters.push(encounter);

      MEASURES.forEach((measure, measureIndex) => {
        // Vitals are taken during the visit, labs are resulted two hours later; one minute apart each,
        // so every observation of a patient has a distinct effectiveDateTime and `_sort=date` is total.
        const offsetMinutes = measure.category === 'vital-signs' ? 5 + measureIndex : 120 + measureIndex;
        const shift = seedPatient.offsets[measure.code] ?? 0;
        const value =
          measure.code === '8302-2'
            ? measure.base + (patientIndex - 1) * 8 + (random() - 0.5) * measure.spread
            : measure.base + shift + (random() * 2 - 1) * measure.spread;
        observations.push({
          resourceType: 'Observation',
          id: `${encounterId}-obs-${String(measureIndex + 1).padStart(2, '0')}`,
          meta: META,
          status: 'final',
          category: [concept(OBSERVATION_CATEGORY, measure.category, CATEGORY_DISPLAY[measure.category])],
          code: concept(LOINC, measure.code, measure.display),
          subject: patientRef,
          encounter: { reference: `Encounter/${encounterId}` },
          effectiveDateTime: iso(start + offsetMinutes * 60_000),
          issued: iso(start + (offsetMinutes + 10) * 60_000),
          performer: [practitionerRef],
          valueQuantity: {
            value: round(value, measure.decimals),
            unit: measure.unit,
            system: UCUM,
            code: measure.ucum,
          },
        });
      });
    }

    // Documents of the latest visit: its summary as a PDF (with characters that need escaping in
    // XML, so FHIR XML renderings are exercised), and for the first patient a 10 MB imaging export.
    const lastVisit = seedPatient.encounters - 1;
    const lastEncounter = `${patient.id}-encounter-${seedPatient.encounters}`;
    const documentDate = iso(firstVisit + lastVisit * VISIT_INTERVAL_DAYS * DAY_MS + 60 * 60_000);
    const pdf = samplePdf([
      `Visit summary: ${displayName(patient)} (born ${seedPatient.birthDate})`,
      `Seen by ${displayName(practitioner)} on ${documentDate.slice(0, 10)}`,
      ...patientConditions.map((c) => `Problem: ${c.code?.text ?? ''}`),
    ]);
    addDocument(
      patientRef,
      `${patient.id}-document-1`,
      summaryPdfId(patient.id),
      {
        type: concept(LOINC, '34133-9', 'Summary of episode note'),
        description: `Visit summary – ${displayName(patient)}: plan & follow-up in < 8 weeks ✓`,
        title: 'visit-summary.pdf',
        contentType: 'application/pdf',
        size: pdf.length,
        date: documentDate,
        encounter: lastEncounter,
      },
      () => pdf,
    );
    if (patientIndex === 0) {
      addDocument(
        patientRef,
        `${patient.id}-document-2`,
        BIG_BINARY_ID,
        {
          type: concept(LOINC, '18748-4', 'Diagnostic imaging study'),
          description: 'Imaging export (raw data)',
          title: 'imaging-export.bin',
          contentType: 'application/octet-stream',
          size: BIG_BINARY_BYTES,
          date: documentDate,
          encounter: lastEncounter,
        },
        bigBinary,
      );
    }
  });

  return {
    organization,
    practitioner,
    patients,
    encounters,
    conditions,
    observations,
    medicationRequests,
    documents,
    binaries,
    binaryContent,
    all: [organization, practitioner, ...patients, ...encounters, ...conditions, ...observations, ...medicationRequests, ...documents, ...binaries],
  };
}
