import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Grant, Interaction, InteractionResults, KoaContextWithOIDC } from 'oidc-provider';
import { readForm, sendHtml } from '../http-util.js';
import { renderConsentPage, renderErrorPage, renderLoginPage } from '../pages.js';
import type { LoginAccount } from '../pages.js';
import { isResourceScope } from '../scopes.js';
import { FRAME_REFUSED } from './authorize.js';
import { splitScope, STATIC_SCOPE_SET } from './state.js';
import type { AuthContext, AuthState } from './state.js';

/*
 * The sign-in step of an authorization request (`/oauth/interaction/:uid`): an EHR launch resolves
 * its launch (and the launch options of the EHR page: simulated authorize errors, a consent step that
 * narrows the grant), a standalone launch shows the sign-in page; both end in a grant that carries the
 * launch context (GrantContext).
 */

/** How long an interaction (a sign-in page) stays valid, in seconds. */
export const INTERACTION_TTL_SECONDS = 600;

/** On `interaction.started`: remembers which refresh scope the client asked for, by interaction uid. */
export function rememberRequestedRefresh(state: AuthState, ctx: KoaContextWithOIDC): void {
  const { requestedRefresh } = state;
  const interaction = ctx.oidc?.entities.Interaction;
  if (!interaction) {
    return;
  }
  // oidc-provider removes offline_access from the request's scope unless prompt=consent (OIDC Core
  // 11), so the interaction never sees it; read what the client really sent.
  const raw = ctx.method === 'POST' ? ctx.oidc?.body?.scope : ctx.query.scope;
  const requested = new Set(splitScope(Array.isArray(raw) ? raw.join(' ') : raw));
  const now = Date.now();
  // Abandoned interactions (the user never came back) would otherwise pile up in a long session.
  for (const [uid, entry] of requestedRefresh) {
    if (now - entry.at > INTERACTION_TTL_SECONDS * 1000) {
      requestedRefresh.delete(uid);
    }
  }
  requestedRefresh.set(interaction.uid, {
    refresh: requested.has('offline_access') ? 'offline_access' : requested.has('online_access') ? 'online_access' : undefined,
    at: now,
  });
}

function requestedScopes(params: Record<string, unknown>): { oidc: string[]; resource: string[]; all: string[] } {
  const all = splitScope(params.scope);
  return {
    all,
    oidc: all.filter((s) => STATIC_SCOPE_SET.has(s)),
    resource: all.filter(isResourceScope),
  };
}

async function grantEverything(ctx: AuthContext, accountId: string, clientId: string, params: Record<string, unknown>): Promise<string> {
  const { provider, options: { fhirBaseUrl } } = ctx;
  const grant: Grant = new provider.Grant({ accountId, clientId });
  const scopes = requestedScopes(params);
  if (scopes.oidc.length > 0) {
    grant.addOIDCScope(scopes.oidc.join(' '));
  }
  if (scopes.resource.length > 0) {
    grant.addResourceScope(fhirBaseUrl, scopes.resource.join(' '));
  }
  return grant.save();
}

/** A grant of the scopes the user left ticked; the unticked ones are recorded as refused, so oidc-provider does not ask again. */
async function grantChosen(
  ctx: AuthContext,
  accountId: string,
  clientId: string,
  params: Record<string, unknown>,
  chosen: Record<string, unknown>,
): Promise<string> {
  const { provider, options: { fhirBaseUrl } } = ctx;
  const grant: Grant = new provider.Grant({ accountId, clientId });
  const asked = requestedScopes(params);
  const kept = new Set(splitScope(chosen.scope));
  const split = (scopes: string[]) => [scopes.filter((s) => kept.has(s)), scopes.filter((s) => !kept.has(s))] as const;
  const [oidcKept, oidcRefused] = split(asked.oidc);
  const [resourceKept, resourceRefused] = split(asked.resource);
  if (oidcKept.length > 0) grant.addOIDCScope(oidcKept.join(' '));
  if (oidcRefused.length > 0) grant.rejectOIDCScope(oidcRefused.join(' '));
  if (resourceKept.length > 0) grant.addResourceScope(fhirBaseUrl, resourceKept.join(' '));
  if (resourceRefused.length > 0) grant.rejectResourceScope(fhirBaseUrl, resourceRefused.join(' '));
  return grant.save();
}

/*
 * Account switching. One browser keeps one oidc-provider session, and a sandbox launch signs in
 * whichever account it needs: the practitioner for an EHR launch, the chosen user for a standalone
 * one. oidc-provider does not change a session's account in place: when the login result names
 * another account than the session holds, the resume step (lib/actions/authorization/resume.js)
 * answers with an auto-submitting form to the end-session confirmation instead of the redirect to
 * the client, which a client without JavaScript cannot follow and which, once confirmed, revokes the
 * earlier launches' grants. The sandbox therefore ends the previous sign-in itself before finishing
 * the interaction (signOutOtherAccount), and, as resume.js does before its own logout detour,
 * unbinds interactions from the session's uid so that a sign-in page left open while another launch
 * switched the account can still be finished (detachFromSession).
 */

/**
 * Drops the interaction's binding to the session it started from. With the binding, oidc-provider
 * refuses to load or finish the interaction once the session's account changed ("session principal
 * changed"), and resume checks the session uid. A sandbox interaction never relies on the session's
 * account (every result names its own login and grant), so the binding protects nothing here.
 */
export async function detachFromSession(interaction: Interaction): Promise<void> {
  if (interaction.session?.uid === undefined) {
    return;
  }
  delete interaction.session.uid;
  await interaction.persist();
}

/**
 * Ends the browser session's sign-in when it belongs to another account than `accountId`, so that
 * resuming the interaction signs `accountId` in without oidc-provider's end-session detour. Grants
 * and tokens of earlier launches stay valid (tokens do not expire with the session here), as they
 * would in an EHR where one user signing in does not sign other apps out.
 */
async function signOutOtherAccount(ctx: AuthContext, req: IncomingMessage, res: ServerResponse, accountId: string): Promise<void> {
  const session = await ctx.provider.Session.get(ctx.provider.createContext(req, res));
  if (session.accountId === undefined || session.accountId === accountId || session.exp === undefined) {
    return;
  }
  delete session.accountId;
  delete session.loginTs;
  delete session.acr;
  delete session.amr;
  delete session.transient;
  // The per-client sids and grant ids belong to the previous account's sign-in.
  delete session.authorizations;
  await session.persist();
}

function loginAccounts(ctx: AuthContext, params: Record<string, unknown>): LoginAccount[] {
  const { practitionerAccount, options: { directory } } = ctx;
  const wantsPatient = requestedScopes(params).all.includes('launch/patient');
  const list: LoginAccount[] = directory.patients.map((p) => ({
    accountId: `patient-${p.id}`,
    label: p.name,
    detail: `Patient ${p.name}, born ${p.birthDate}`,
  }));
  // A clinician has no patient of their own, so they are offered only when no patient context is needed.
  if (!wantsPatient) {
    list.push({ accountId: practitionerAccount.accountId, label: practitionerAccount.name, detail: `Clinician ${practitionerAccount.name}` });
  }
  return list;
}

export async function handleInteraction(
  ctx: AuthContext,
  req: IncomingMessage,
  res: ServerResponse,
  uid: string,
  action: 'show' | 'login' | 'cancel',
): Promise<void> {
  const { provider, requestedRefresh, grantContexts, accounts, practitionerAccount } = ctx;
  const { directory, launches } = ctx.options;
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch {
    sendHtml(res, 400, renderErrorPage('Sign-in expired', 'This sign-in was not started in this browser or has expired. Start the launch again from the app.'));
    return;
  }
  if (details.uid !== uid) {
    sendHtml(res, 400, renderErrorPage('Sign-in mismatch', 'This sign-in page does not belong to the current authorization request.'));
    return;
  }
  const params = details.params;
  const clientId = typeof params.client_id === 'string' ? params.client_id : '';
  const refresh = requestedRefresh.get(uid)?.refresh;
  const launch = typeof params.launch === 'string' ? params.launch : undefined;
  const finish = async (result: InteractionResults): Promise<void> => {
    requestedRefresh.delete(uid);
    if (result.login !== undefined) {
      await signOutOtherAccount(ctx, req, res, result.login.accountId);
    }
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  };

  if (launch !== undefined) {
    // EHR launch: the clinician is already signed in to the EHR, so there is nothing to show.
    const context = launches.resolve(launch);
    if (!context) {
      await finish({ error: 'invalid_request', error_description: 'launch is unknown or has expired' });
      return;
    }
    // Launch options of the sandbox EHR page: simulated authorize errors, a consent step.
    const launchOptions = context.options ?? {};
    if (launchOptions.authorizeOutcome === 'invalid_scope') {
      await finish({ error: 'invalid_scope', error_description: 'the EHR refused the requested scope (simulated by the sandbox EHR)' });
      return;
    }
    if (launchOptions.authorizeOutcome === 'access_denied') {
      await finish({ error: 'access_denied', error_description: 'the user cancelled the sign-in (simulated by the sandbox EHR)' });
      return;
    }
    let granted = params;
    let grantedRefresh = refresh;
    if (launchOptions.consent === true || launchOptions.refuseFraming === true) {
      const offered = [...splitScope(params.scope), ...(refresh && !splitScope(params.scope).includes(refresh) ? [refresh] : [])];
      if (action === 'show') {
        const patientName = directory.patients.find((p) => p.id === context.patient)?.name ?? context.patient;
        sendHtml(res, 200, renderConsentPage({ uid, clientId, patientName, scopes: offered }), launchOptions.refuseFraming ? FRAME_REFUSED : {});
        return;
      }
      if (action === 'cancel') {
        await finish({ error: 'access_denied', error_description: 'the user did not allow access' });
        return;
      }
      // Only what was asked for and left ticked: the user narrows the grant, never widens it.
      const kept = new Set((await readForm(req)).getAll('scope'));
      const chosen = offered.filter((scope) => kept.has(scope));
      granted = { ...params, scope: chosen.join(' ') };
      grantedRefresh = refresh !== undefined && kept.has(refresh) ? refresh : undefined;
    }
    const grantId =
      granted === params ? await grantEverything(ctx, practitionerAccount.accountId, clientId, params) : await grantChosen(ctx, practitionerAccount.accountId, clientId, params, granted);
    const focus = context.encounter === undefined ? undefined : directory.encounterFocus(context.encounter);
    grantContexts.set(grantId, {
      launchType: 'ehr',
      user: `Practitioner/${practitionerAccount.id}`,
      patient: context.patient,
      encounter: context.encounter,
      // fhirContext may not carry Patient or Encounter (they have their own parameters), so it names
      // the problem the open encounter addresses.
      fhirContext: focus === undefined ? [] : [{ reference: focus }],
      refresh: grantedRefresh,
      accessTokenTtlSeconds: launchOptions.accessTokenTtlSeconds,
    });
    await finish({ login: { accountId: practitionerAccount.accountId }, consent: { grantId } });
    return;
  }

  const accountsOffered = loginAccounts(ctx, params);
  const scope = typeof params.scope === 'string' ? params.scope : '';
  if (action === 'show') {
    sendHtml(res, 200, renderLoginPage({ uid, clientId, scope, accounts: accountsOffered }));
    return;
  }
  if (action === 'cancel') {
    await finish({ error: 'access_denied', error_description: 'the user cancelled the sign-in' });
    return;
  }
  const form = await readForm(req);
  const chosen = accountsOffered.find((a) => a.accountId === form.get('account'));
  const account = chosen ? accounts.get(chosen.accountId) : undefined;
  if (!account) {
    sendHtml(res, 400, renderLoginPage({ uid, clientId, scope, accounts: accountsOffered, error: 'Choose one of the listed users.' }));
    return;
  }
  const grantId = await grantEverything(ctx, account.accountId, clientId, params);
  grantContexts.set(grantId, {
    launchType: 'standalone',
    user: `${account.resourceType}/${account.id}`,
    // A signed-in patient is their own patient context (SMART lets the server infer launch/patient).
    patient: account.resourceType === 'Patient' ? account.id : undefined,
    encounter: undefined,
    fhirContext: [],
    refresh,
  });
  await finish({ login: { accountId: account.accountId }, consent: { grantId } });
}
