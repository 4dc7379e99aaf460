import { escapeHtml, page } from './http-util.js';
import type { SandboxClient, SandboxPatient } from './types.js';

export interface EhrPageInput {
  readonly fhirBaseUrl: string;
  readonly issuer: string;
  readonly practitionerName: string;
  readonly patients: readonly SandboxPatient[];
  readonly launchUrl: string | undefined;
  readonly portalUrl: string | undefined;
  readonly clients: readonly SandboxClient[];
  /** The app's own launch page, for the "sign-in refuses framing" launch (popup sign-in). */
  readonly appLaunchUrl?: string | undefined;
}

/** The sandbox attributes EHRs put on the frames they embed apps in. */
export const EHR_FRAME_SANDBOX = 'allow-scripts allow-same-origin allow-forms allow-popups allow-popups-to-escape-sandbox allow-modals allow-downloads';

export interface EhrFramePageInput {
  readonly patientName: string;
  readonly src: string;
  readonly refuseFraming: boolean;
}

/** `GET /ehr/frame`: the EHR's chart with the app embedded in a cross-site, sandboxed iframe. */
export function renderEhrFramePage(input: EhrFramePageInput): string {
  return page(
    'Sandbox EHR chart',
    `<p><a href="/">Sandbox EHR</a> › Chart of <strong>${escapeHtml(input.patientName)}</strong>${
      input.refuseFraming ? ' <span class="note">(the EHR sign-in refuses framing: the app signs in in a separate window)</span>' : ''
    }</p>
<iframe id="app-frame" title="SMART app" src="${escapeHtml(input.src)}" sandbox="${EHR_FRAME_SANDBOX}" allow="clipboard-write" style="width:100%;height:78vh;border:1px solid #cbd2d9;border-radius:4px;background:#fff"></iframe>`,
  );
}

/** `GET /`: the clinician's view of the sandbox EHR, with one EHR-launch button per patient. */
export function renderEhrPage(input: EhrPageInput): string {
  const rows = input.patients
    .map(
      (p) => `<tr>
  <td>${escapeHtml(p.name)}</td>
  <td>${escapeHtml(p.birthDate)}</td>
  <td><code>${escapeHtml(p.id)}</code></td>
  <td>${
    input.launchUrl
      ? `<a class="button" href="/ehr/launch?patient=${escapeHtml(encodeURIComponent(p.id))}">Launch app</a>
    <a href="/ehr/launch?patient=${escapeHtml(encodeURIComponent(p.id))}" target="_blank" rel="opener">New window</a>
    <a href="/ehr/frame?patient=${escapeHtml(encodeURIComponent(p.id))}">In EHR frame</a>${
      input.appLaunchUrl
        ? `\n    <a href="/ehr/frame?patient=${escapeHtml(encodeURIComponent(p.id))}&amp;refuseFraming=1">Frame, sign-in refuses framing</a>`
        : ''
    }`
      : '<span class="note">no launch URL configured</span>'
  }</td>
</tr>`,
    )
    .join('\n');
  const launchNote = input.launchUrl
    ? `<p>Apps launch at <code>${escapeHtml(input.launchUrl)}</code> with <code>iss</code> and <code>launch</code>; the launch carries the patient and their most recent encounter.</p>`
    : '<p class="error">No app launch URL was configured (start the sandbox with <code>--launch-url</code>), so the launch buttons and the portal link are disabled.</p>';
  const portal = input.portalUrl
    ? `<p><a class="button" href="${escapeHtml(input.portalUrl)}">Patient portal</a> <span class="note">(standalone launch: the app is opened with only <code>iss</code>; the patient signs in here)</span></p>`
    : '';
  const clients = input.clients
    .map(
      (c) =>
        `<li><code>${escapeHtml(c.clientId)}</code> (${escapeHtml(c.clientAuth)}), redirect URIs: ${c.redirectUris
          .map((u) => `<code>${escapeHtml(u)}</code>`)
          .join(', ')}</li>`,
    )
    .join('\n');
  return page(
    'Sandbox EHR',
    `<h1>Sandbox EHR</h1>
<p class="note">Signed in as ${escapeHtml(input.practitionerName)}. Synthetic data only.</p>
${launchNote}
<table>
<thead><tr><th>Patient</th><th>Birth date</th><th>Id</th><th></th></tr></thead>
<tbody>
${rows}
</tbody>
</table>
${portal}
${input.launchUrl ? launchOptionsForm(input.patients) : ''}
<h2>Endpoints</h2>
<ul>
<li>FHIR base (<code>iss</code>, <code>aud</code>): <code>${escapeHtml(input.fhirBaseUrl)}</code></li>
<li>SMART configuration: <code>${escapeHtml(`${input.fhirBaseUrl}/.well-known/smart-configuration`)}</code></li>
<li>OAuth issuer: <code>${escapeHtml(input.issuer)}</code></li>
</ul>
<h2>Registered clients</h2>
<ul>
${clients || '<li>none</li>'}
</ul>`,
  );
}

/** Launch options for app teams: the unhappy paths of the authorize step, narrowed grants, short tokens. */
function launchOptionsForm(patients: readonly SandboxPatient[]): string {
  const patientOptions = patients.map((p) => `<option value="${escapeHtml(p.id)}">${escapeHtml(p.name)}</option>`).join('');
  return `<h2>Launch with options</h2>
<form method="get" action="/ehr/launch" aria-label="Launch with options">
<p><label>Patient <select name="patient">${patientOptions}</select></label></p>
<p><label>At the authorize step <select name="authorize">
  <option value="ok">sign in normally</option>
  <option value="invalid_client">fail: unknown client (invalid_client)</option>
  <option value="invalid_redirect">fail: redirect URI not registered</option>
  <option value="invalid_scope">fail: scope refused (invalid_scope)</option>
  <option value="access_denied">the user cancels (access_denied)</option>
</select></label></p>
<p><label><input type="checkbox" name="consent" value="1"> Ask which scopes to share (the user may untick some)</label></p>
<p><label><input type="checkbox" name="refuseFraming" value="1"> The EHR's sign-in pages refuse framing (in a frame, the app signs in in a popup)</label></p>
<p><label>Access tokens expire after <input type="number" name="tokenTtl" min="1" max="86400" placeholder="300" style="width:6rem"> seconds</label></p>
<p><button type="submit">Launch app</button> <button type="submit" formtarget="_blank">Launch in new window</button> <button type="submit" formaction="/ehr/frame">Launch in EHR frame</button></p>
</form>`;
}

export function renderErrorPage(title: string, message: string): string {
  return page(title, `<h1>${escapeHtml(title)}</h1>\n<p class="error">${escapeHtml(message)}</p>\n<p><a href="/">Back to the sandbox EHR</a></p>`);
}

export interface LoginAccount {
  readonly accountId: string;
  readonly label: string;
  readonly detail: string;
}

export interface LoginPageInput {
  readonly uid: string;
  readonly clientId: string;
  readonly scope: string;
  readonly accounts: readonly LoginAccount[];
  readonly error?: string;
}

/** The standalone-launch sign-in page: each synthetic user is one button; Cancel denies the request. */
export function renderLoginPage(input: LoginPageInput): string {
  const base = `/oauth/interaction/${encodeURIComponent(input.uid)}`;
  const buttons = input.accounts
    .map(
      (a) => `<tr>
  <td>${escapeHtml(a.detail)}</td>
  <td><form method="post" action="${escapeHtml(`${base}/login`)}">
    <input type="hidden" name="account" value="${escapeHtml(a.accountId)}">
    <button type="submit">Sign in as ${escapeHtml(a.label)}</button>
  </form></td>
</tr>`,
    )
    .join('\n');
  return page(
    'Sandbox EHR sign-in',
    `<h1>Sandbox EHR sign-in</h1>
${input.error ? `<p class="error">${escapeHtml(input.error)}</p>` : ''}
<p>The app <code>${escapeHtml(input.clientId)}</code> asks for: <code>${escapeHtml(input.scope)}</code></p>
<p class="note">Choose a synthetic user. Signing in grants every requested scope.</p>
<table>
<tbody>
${buttons}
</tbody>
</table>
<form method="post" action="${escapeHtml(`${base}/cancel`)}">
  <button class="secondary" type="submit">Cancel</button>
</form>`,
  );
}

export interface ConsentPageInput {
  readonly uid: string;
  readonly clientId: string;
  readonly patientName: string;
  readonly scopes: readonly string[];
}

/** The EHR-launch consent step (launch option): each requested scope is a ticked box the user may untick. */
export function renderConsentPage(input: ConsentPageInput): string {
  const base = `/oauth/interaction/${encodeURIComponent(input.uid)}`;
  const boxes = input.scopes
    .map(
      (scope) =>
        `<li><label><input type="checkbox" name="scope" value="${escapeHtml(scope)}" checked> <code>${escapeHtml(scope)}</code></label></li>`,
    )
    .join('\n');
  return page(
    'Allow access',
    `<h1>Allow access</h1>
<p>The app <code>${escapeHtml(input.clientId)}</code> asks to open the chart of <strong>${escapeHtml(input.patientName)}</strong> with:</p>
<form method="post" action="${escapeHtml(`${base}/login`)}">
<ul>
${boxes}
</ul>
<p class="note">Untick what the app should not get: it will receive a narrower grant.</p>
<button type="submit">Allow</button>
</form>
<form method="post" action="${escapeHtml(`${base}/cancel`)}">
  <button class="secondary" type="submit">Cancel</button>
</form>`,
  );
}
