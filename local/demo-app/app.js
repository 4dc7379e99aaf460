// A SMART app built on the smart-launch browser SDK (sdk/index.ts). The SDK takes the session id from
// the URL fragment, keeps it for this tab only (a reload keeps working), sends every request through
// the FHIR proxy with the HttpOnly binding cookie, and reports the end of the session once. The page
// never sees a token.
import { ready, SessionEndedError, SignInRequiredError } from './sdk/index.js';

const $ = (id) => document.getElementById(id);
const statusEl = $('status');
/** What this app reads, per section: the resource type and the scope it needs. */
const SECTIONS = [
  { id: 'conditions', type: 'Condition', label: 'conditions' },
  { id: 'medications', type: 'MedicationRequest', label: 'medications' },
  { id: 'observations', type: 'Observation', label: 'observations' },
  { id: 'vitals', type: 'Observation', label: 'vital signs' },
];
const VITALS = [
  { code: '8867-4', label: 'Heart rate (/min)', color: '#dc2626' },
  { code: '8480-6', label: 'Systolic BP (mmHg)', color: '#2563eb' },
  { code: '8462-4', label: 'Diastolic BP (mmHg)', color: '#0891b2' },
];

function setStatus(text, isError = false) {
  statusEl.textContent = text;
  statusEl.classList.toggle('error', isError);
  statusEl.hidden = text === '';
}

function el(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function sectionState(id, text, kind = '') {
  const state = document.querySelector(`.state[data-for="${id}"]`);
  state.textContent = text;
  state.className = `state ${kind}`;
  state.hidden = text === '';
  $(id).setAttribute('aria-busy', 'false');
}

/** Does the granted scope let this app read/search `type`? (SMART v1 `.read`/`.*`, v2 `.rs` subsets.) */
function permits(scopes, type) {
  return scopes.some((scope) => {
    const match = /^(patient|user|system)\/(\*|[A-Za-z]+)\.([a-z*]+)(\?.*)?$/.exec(scope);
    if (!match || (match[2] !== '*' && match[2] !== type)) return false;
    const permission = match[3];
    return permission === 'read' || permission === '*' || /^c?r?u?d?s?$/.test(permission) && /[rs]/.test(permission);
  });
}

function humanName(patient) {
  const name = patient.name?.find((n) => n.use === 'official') ?? patient.name?.[0];
  if (!name) return 'Unnamed patient';
  return name.text ?? [...(name.given ?? []), name.family].filter(Boolean).join(' ');
}

function conceptText(concept) {
  return concept?.text ?? concept?.coding?.[0]?.display ?? concept?.coding?.[0]?.code ?? '';
}

function observationValue(obs) {
  if (obs.valueQuantity) return `${obs.valueQuantity.value} ${obs.valueQuantity.unit ?? ''}`.trim();
  if (obs.valueCodeableConcept) return conceptText(obs.valueCodeableConcept);
  if (obs.valueString) return obs.valueString;
  if (obs.component) return obs.component.map((c) => `${c.valueQuantity?.value ?? ''} ${c.valueQuantity?.unit ?? ''}`.trim()).join(' / ');
  return '';
}

/** SMART `smart_style_url` (context-style): the EHR's colours and fonts, applied as CSS variables. */
async function applyStyle(url) {
  if (!url) return;
  try {
    const response = await fetch(url, { credentials: 'omit' });
    if (!response.ok) return;
    const style = await response.json();
    const map = {
      color_background: '--background', color_text: '--text', color_highlight: '--highlight', color_error: '--error',
      color_success: '--success', dim_border_radius: '--radius', font_family_body: '--font', font_family_heading: '--heading-font',
      dim_spacing_size: '--spacing',
    };
    for (const [key, variable] of Object.entries(map)) {
      if (typeof style[key] === 'string' && /^[#(),.%\w\s-]+$/.test(style[key])) document.documentElement.style.setProperty(variable, style[key]);
    }
    document.documentElement.dataset.smartStyle = 'applied';
  } catch {
    // The app's own style stays: a missing EHR style is not an error for the user.
  }
}

function renderContext(context) {
  const list = $('context-list');
  list.replaceChildren();
  const rows = [
    ['Launch', context.launchMode],
    ['Patient', context.patient],
    ['Encounter', context.encounter],
    ['User', context.fhirUser],
    ['Granted scope', context.scope],
    ['FHIR base (proxy)', context.fhirBaseUrl],
    ['Access token expires', context.expiresAt],
    ['Can refresh', String(context.canRefresh)],
    ['Patient banner needed', String(context.need_patient_banner !== false)],
  ];
  for (const [label, value] of rows) {
    if (value === undefined || value === null) continue;
    list.append(el('dt', label), el('dd', value));
  }
  $('context').hidden = false;
}

function renderReducedGrant(session) {
  const missing = [...new Set(SECTIONS.filter((s) => !permits(session.grantedScopes, s.type)).map((s) => s.label))];
  const noRefresh = !session.context.canRefresh;
  if (missing.length === 0 && !noRefresh) return;
  const parts = [];
  if (missing.length > 0) parts.push(`The EHR did not grant access to ${missing.join(', ')}; those sections say so below.`);
  if (noRefresh) parts.push('No refresh was granted: when the access expires you will need to open the app again.');
  $('reduced-text').textContent = parts.join(' ');
  $('reduced').hidden = false;
}

/** Clears every piece of patient data from the page: nothing stays on screen after access is lost. */
function clearChart() {
  for (const id of ['patient-name', 'patient-birth', 'patient-gender', 'patient-id']) $(id).textContent = '';
  for (const id of ['condition-list', 'medication-list', 'observation-rows', 'vitals-chart', 'context-list']) $(id).replaceChildren();
  $('chart-area').hidden = true;
  $('context').hidden = true;
  $('reduced').hidden = true;
}

function showEnded(detail) {
  clearChart();
  $('logout').hidden = true;
  $('reload-data').hidden = true;
  const ended = $('ended');
  const action = $('ended-action');
  action.replaceChildren();
  if (detail.reason === 'logged-out') {
    $('ended-title').textContent = 'Signed out';
    $('ended-message').textContent = 'You signed out of this app; its access to the EHR was revoked.';
    setStatus('Signed out. Open the app from the EHR again to start a new session.');
  } else {
    $('ended-title').textContent = 'Your session has ended';
    $('ended-message').textContent = detail.message;
    setStatus(`The session is no longer open${detail.code ? ` (${detail.code})` : ''}.`, true);
  }
  if (detail.relaunchUrl) {
    action.append(el('a', 'Sign in again', { href: detail.relaunchUrl, id: 'relaunch' }));
  } else {
    action.textContent = "To continue, open the app again from the patient's chart in the EHR.";
  }
  ended.hidden = false;
}

function failSection(id, error) {
  if (error instanceof SessionEndedError) return; // the sessionEnded handler already took over the page
  if (error.status === 403) {
    sectionState(id, `Not shared with this app: ${error.message}. ${error.hint ?? ''}`.trim(), 'refused');
    return;
  }
  sectionState(id, `Could not load: ${error.message}${error.code ? ` [${error.code}]` : ''}`, 'refused');
}

async function loadConditions(session) {
  const list = $('condition-list');
  try {
    const conditions = await session.request(`Condition?patient=${encodeURIComponent(session.patientId)}&_count=50`, { flat: true, pageLimit: 0, memoize: true });
    list.replaceChildren(...conditions.map((c) => el('li', `${conceptText(c.code)}${c.onsetDateTime ? ` (since ${c.onsetDateTime.slice(0, 4)})` : ''}`)));
    sectionState('conditions', conditions.length === 0 ? 'No conditions recorded.' : '');
  } catch (error) {
    failSection('conditions', error);
  }
}

async function loadMedications(session) {
  const list = $('medication-list');
  try {
    const requests = await session.request(`MedicationRequest?patient=${encodeURIComponent(session.patientId)}&_count=50`, { flat: true, pageLimit: 0, memoize: true });
    list.replaceChildren(
      ...requests.map((m) => el('li', `${conceptText(m.medicationCodeableConcept) || m.medicationReference?.display || 'Medication'}${m.dosageInstruction?.[0]?.text ? ` — ${m.dosageInstruction[0].text}` : ''}`)),
    );
    sectionState('medications', requests.length === 0 ? 'No medications recorded.' : '');
  } catch (error) {
    failSection('medications', error);
  }
}

async function loadObservations(session) {
  const rows = $('observation-rows');
  try {
    const bundle = await session.request(`Observation?patient=${encodeURIComponent(session.patientId)}&_sort=-date&_count=10`, { memoize: true });
    rows.replaceChildren();
    for (const entry of bundle.entry ?? []) {
      const obs = entry.resource;
      if (obs?.resourceType !== 'Observation') continue;
      const tr = el('tr');
      for (const text of [(obs.effectiveDateTime ?? obs.issued ?? '').slice(0, 10), conceptText(obs.code) || 'Observation', observationValue(obs)]) tr.append(el('td', text));
      rows.append(tr);
    }
    sectionState('observations', rows.children.length === 0 ? 'No observations recorded.' : '');
  } catch (error) {
    failSection('observations', error);
  }
}

/** A small SVG line chart of the vital signs over time (no chart library). */
function drawVitals(observations) {
  const series = VITALS.map((v) => ({
    ...v,
    points: observations
      .filter((o) => o.code?.coding?.some((c) => c.code === v.code) && typeof o.valueQuantity?.value === 'number' && o.effectiveDateTime)
      .map((o) => ({ t: Date.parse(o.effectiveDateTime), v: o.valueQuantity.value }))
      .sort((a, b) => a.t - b.t),
  })).filter((s) => s.points.length > 0);
  if (series.length === 0) return false;
  const all = series.flatMap((s) => s.points);
  const [tMin, tMax] = [Math.min(...all.map((p) => p.t)), Math.max(...all.map((p) => p.t))];
  const [vMin, vMax] = [Math.floor(Math.min(...all.map((p) => p.v)) / 10) * 10, Math.ceil(Math.max(...all.map((p) => p.v)) / 10) * 10];
  const W = 640, H = 200, L = 36, R = 10, T = 10, B = 24;
  const x = (t) => L + (tMax === tMin ? (W - L - R) / 2 : ((t - tMin) / (tMax - tMin)) * (W - L - R));
  const y = (v) => T + (vMax === vMin ? (H - T - B) / 2 : (1 - (v - vMin) / (vMax - vMin)) * (H - T - B));
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `Vital signs from ${new Date(tMin).toISOString().slice(0, 10)} to ${new Date(tMax).toISOString().slice(0, 10)}`);
  const add = (tag, attributes, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    svg.append(node);
  };
  for (const v of [vMin, (vMin + vMax) / 2, vMax]) {
    add('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: '#e4e7eb' });
    add('text', { x: 2, y: y(v) + 4 }, String(Math.round(v)));
  }
  add('text', { x: L, y: H - 6 }, new Date(tMin).toISOString().slice(0, 10));
  add('text', { x: W - R - 62, y: H - 6 }, new Date(tMax).toISOString().slice(0, 10));
  for (const s of series) {
    add('polyline', { fill: 'none', stroke: s.color, 'stroke-width': 2, points: s.points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ') });
    for (const p of s.points) add('circle', { cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: 2.5, fill: s.color });
  }
  const legend = el('p', undefined, { class: 'legend' });
  for (const s of series) {
    const item = el('span');
    const swatch = el('i');
    swatch.style.background = s.color;
    item.append(swatch, `${s.label}, latest ${s.points.at(-1).v}`);
    legend.append(item);
  }
  $('vitals-chart').replaceChildren(svg, legend);
  return true;
}

async function loadVitals(session) {
  try {
    const codes = VITALS.map((v) => v.code).join(',');
    const observations = await session.request(`Observation?patient=${encodeURIComponent(session.patientId)}&code=${codes}&_sort=date&_count=100`, { flat: true, pageLimit: 0, memoize: true });
    sectionState('vitals', drawVitals(observations) ? '' : 'No vital signs recorded.');
  } catch (error) {
    failSection('vitals', error);
  }
}

async function loadChart(session) {
  setStatus('Loading the patient record…');
  for (const section of SECTIONS) {
    $(section.id).setAttribute('aria-busy', 'true');
  }
  // Everything loads at once; the chart appears whole, the banner last, so no half-drawn record shows.
  const sections = Promise.all([loadConditions(session), loadMedications(session), loadObservations(session), loadVitals(session)]);
  let patient;
  try {
    patient = await session.patient();
  } catch (error) {
    await sections;
    if (error instanceof SessionEndedError) return;
    if (error.status === 403) {
      // A refused scope is a state of the launch, not a crash: say what is missing and what to do.
      $('patient-name').textContent = 'Patient details not shared with this app';
      $('patient-details').hidden = true;
      $('chart-area').hidden = false;
      setStatus(`The EHR did not grant this app access to the patient record (${error.code}). ${error.hint ?? ''}`, true);
      return;
    }
    setStatus(`Could not read the patient: ${error.message}${error.code ? ` [${error.code}]` : ''}. ${error.hint ?? ''}`, true);
    return;
  }
  await sections;
  if (session.ended) return;
  $('patient-name').textContent = humanName(patient);
  $('patient-birth').textContent = patient.birthDate ?? 'unknown';
  $('patient-gender').textContent = patient.gender ?? 'unknown';
  $('patient-id').textContent = patient.id;
  $('patient-details').hidden = false;
  // need_patient_banner false: the EHR shows its own banner around the app; keep a compact line.
  const compact = session.context.need_patient_banner === false;
  $('banner').classList.toggle('compact', compact);
  $('banner-note').hidden = !compact;
  $('chart-area').hidden = false;
  if (!session.ended) setStatus('');
}

async function start(session) {
  // Exposed for a look in the browser's devtools (and for the browser tests): never a token in it.
  window.demo = { session };
  $('signin').hidden = true;
  session.onSessionEnded(showEnded);
  void applyStyle(session.context.smart_style_url);
  renderContext(session.context);
  renderReducedGrant(session);
  const logout = $('logout');
  logout.hidden = false;
  logout.onclick = async () => {
    try {
      await session.logout();
    } catch (error) {
      if (!(error instanceof SessionEndedError)) setStatus(`Sign-out failed: ${error.message}`, true);
    }
  };
  const reloadData = $('reload-data');
  reloadData.hidden = false;
  reloadData.onclick = async () => {
    // Fresh data on request: drop what the SDK memoized, then show the context as it is now (the
    // proxy may have refreshed the tokens on the way).
    session.clearCache();
    await loadChart(session);
    if (session.ended) return;
    try {
      await session.reload();
      renderContext(session.context);
    } catch (error) {
      if (!(error instanceof SessionEndedError)) setStatus(`Could not reload the launch context: ${error.message}`, true);
    }
  };
  if (!session.patientId) {
    setStatus('This launch has no patient in context.');
    return;
  }
  await loadChart(session);
}

async function main() {
  try {
    await start(await ready({ signIn: 'auto' }));
  } catch (error) {
    if (error instanceof SignInRequiredError) {
      setStatus('');
      $('signin').hidden = false;
      $('signin-button').onclick = () => {
        setStatus('Waiting for the sign-in window…');
        error.signIn().then(start, (failure) => setStatus(`Sign-in did not complete: ${failure.message}`, true));
      };
      return;
    }
    if (error instanceof SessionEndedError) {
      showEnded(error.detail);
      return;
    }
    if (error.code === 'NO_SESSION') {
      setStatus('No launch in progress. Open this app from the EHR (or a patient portal link) to start a session.', true);
      return;
    }
    setStatus(`Could not load the launch: ${error.message}${error.code ? ` [${error.code}]` : ''}`, true);
  }
}

main();
