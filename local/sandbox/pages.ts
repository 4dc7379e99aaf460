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
      ? `<a class="button" href="/ehr/launch?patient=${escapeHtml(encodeURIComponent(p.id))}">Launch app</a>`
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
