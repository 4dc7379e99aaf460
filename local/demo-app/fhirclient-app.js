// An app written for fhirclient.js, moved to smart-launch. The only change:
//   - const client = await FHIR.oauth2.ready();
//   + const client = await ready(FHIR);
// patient.read(), user.read(), encounter.read() and request() with pageLimit, flat and
// resolveReferences are fhirclient's own, going to the proxy's fhirBaseUrl with the binding cookie.
import { ready } from './sdk/fhirclient.js';

const FHIR = window.FHIR;
const statusEl = document.getElementById('status');

function nameOf(resource) {
  const name = resource?.name?.[0];
  return name?.text ?? [...(name?.given ?? []), name?.family].filter(Boolean).join(' ');
}

async function main() {
  const client = await ready(FHIR);
  const patient = await client.patient.read();
  const user = await client.user.read();
  const encounter = await client.encounter.read();
  const query = `Observation?patient=${encodeURIComponent(client.patient.id)}&_count=5`;
  const pages = await client.request(query, { pageLimit: 3 });
  const observations = await client.request(query, { pageLimit: 3, flat: true });
  const withSubjects = await client.request(`Observation?patient=${encodeURIComponent(client.patient.id)}&_count=2`, { flat: true, resolveReferences: ['subject'] });
  const result = {
    patient: { resourceType: patient.resourceType, id: patient.id, name: nameOf(patient) },
    user: { resourceType: user.resourceType, id: user.id, name: nameOf(user) },
    encounter: { resourceType: encounter.resourceType, id: encounter.id },
    pages: pages.length,
    observations: observations.length,
    everyObservationOfPatient: observations.every((o) => o.subject?.reference === `Patient/${patient.id}`),
    resolvedSubject: nameOf(withSubjects[0]?.subject),
  };
  const summary = document.getElementById('summary');
  for (const [label, value] of [
    ['client.patient.read()', `${result.patient.name} (${result.patient.id})`],
    ['client.user.read()', `${result.user.name} (${result.user.resourceType})`],
    ['client.encounter.read()', result.encounter.id],
    ['request(…, { pageLimit: 3 })', `${result.pages} pages`],
    ['request(…, { pageLimit: 3, flat: true })', `${result.observations} observations`],
    ['request(…, { resolveReferences: ["subject"] })', result.resolvedSubject],
  ]) {
    const dt = document.createElement('dt');
    dt.textContent = label;
    const dd = document.createElement('dd');
    dd.textContent = value;
    summary.append(dt, dd);
  }
  const out = document.getElementById('result');
  out.textContent = JSON.stringify(result, null, 2);
  out.dataset.state = 'done';
  statusEl.textContent = '';
}

main().catch((error) => {
  statusEl.textContent = `fhirclient.js could not start: ${error.message}`;
  statusEl.classList.add('error');
  document.getElementById('result').dataset.state = 'failed';
});
