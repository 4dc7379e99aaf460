// A minimal SMART app on top of smart-launch: the session id arrives in the URL fragment, is kept in
// memory only (never in storage, never in the URL after load), and every call carries the
// HttpOnly binding cookie automatically. The app never sees an access token.

const statusEl = document.getElementById('status');

function show(id, visible = true) {
  document.getElementById(id).hidden = !visible;
}

function setStatus(text, isError = false) {
  statusEl.textContent = text;
  statusEl.classList.toggle('error', isError);
  statusEl.hidden = text === '';
}

/** Reads `#session=…` once and removes it from the address bar and history entry. */
function takeSessionId() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const id = params.get('session');
  if (window.location.hash) {
    window.history.replaceState(null, '', window.location.pathname + window.location.search);
  }
  return id;
}

async function call(url, init = {}) {
  const response = await fetch(url, { credentials: 'include', ...init, headers: { accept: 'application/json', ...(init.headers ?? {}) } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message =
      body?.error?.message ??
      body?.issue?.[0]?.diagnostics ??
      `HTTP ${response.status}`;
    const hint = body?.error?.hint ?? body?.issue?.[0]?.details?.text ?? '';
    const code = body?.error?.code ?? body?.issue?.[0]?.details?.coding?.[0]?.code ?? '';
    throw new Error(`${message}${code ? ` [${code}]` : ''}${hint ? ` — ${hint}` : ''}`);
  }
  return body;
}

function humanName(patient) {
  const name = patient.name?.find((n) => n.use === 'official') ?? patient.name?.[0];
  if (!name) return 'Unnamed patient';
  return name.text ?? [...(name.given ?? []), name.family].filter(Boolean).join(' ');
}

function observationValue(obs) {
  if (obs.valueQuantity) return `${obs.valueQuantity.value} ${obs.valueQuantity.unit ?? ''}`.trim();
  if (obs.valueCodeableConcept) return obs.valueCodeableConcept.text ?? obs.valueCodeableConcept.coding?.[0]?.display ?? '';
  if (obs.valueString) return obs.valueString;
  if (obs.component) return obs.component.map((c) => `${c.valueQuantity?.value ?? ''} ${c.valueQuantity?.unit ?? ''}`.trim()).join(' / ');
  return '';
}

function renderContext(context) {
  const list = document.getElementById('context-list');
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
    const dt = document.createElement('dt');
    dt.textContent = label;
    const dd = document.createElement('dd');
    dd.textContent = value;
    list.append(dt, dd);
  }
  show('context');
}

async function main() {
  const sessionId = takeSessionId();
  if (!sessionId) {
    setStatus('No launch in progress. Open this app from the EHR (or a portal link) to start a session.', true);
    return;
  }
  const sessionUrl = `${window.location.origin}/sessions/${encodeURIComponent(sessionId)}`;
  try {
    const context = await call(sessionUrl);
    renderContext(context);
    const logout = document.getElementById('logout');
    logout.hidden = false;
    logout.addEventListener('click', async () => {
      try {
        await call(`${sessionUrl}/logout`, { method: 'POST' });
        document.querySelector('main').replaceChildren(statusEl);
        setStatus('Signed out. Open the app from the EHR again to start a new session.');
        logout.hidden = true;
      } catch (error) {
        setStatus(`Sign-out failed: ${error.message}`, true);
      }
    });
    if (!context.patient) {
      setStatus('This launch has no patient in context.');
      return;
    }
    const fhir = context.fhirBaseUrl;
    const [patient, bundle] = await Promise.all([
      call(`${fhir}/Patient/${encodeURIComponent(context.patient)}`, { headers: { accept: 'application/fhir+json' } }),
      call(`${fhir}/Observation?patient=${encodeURIComponent(context.patient)}&_sort=-date&_count=10`, { headers: { accept: 'application/fhir+json' } }),
    ]);
    document.getElementById('patient-name').textContent = humanName(patient);
    document.getElementById('patient-birth').textContent = patient.birthDate ?? 'unknown';
    document.getElementById('patient-gender').textContent = patient.gender ?? 'unknown';
    document.getElementById('patient-id').textContent = patient.id;
    // The EHR shows its own banner when need_patient_banner is false; this demo keeps the name visible anyway.
    show('banner');
    const rows = document.getElementById('observation-rows');
    rows.replaceChildren();
    for (const entry of bundle.entry ?? []) {
      const obs = entry.resource;
      if (obs?.resourceType !== 'Observation') continue;
      const tr = document.createElement('tr');
      for (const text of [
        (obs.effectiveDateTime ?? obs.issued ?? '').slice(0, 10),
        obs.code?.text ?? obs.code?.coding?.[0]?.display ?? 'Observation',
        observationValue(obs),
      ]) {
        const td = document.createElement('td');
        td.textContent = text;
        tr.append(td);
      }
      rows.append(tr);
    }
    show('observations');
    setStatus('');
  } catch (error) {
    setStatus(`Could not load the launch: ${error.message}`, true);
  }
}

main();
