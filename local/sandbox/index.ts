import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import { ADMIN_PATH, handleAdmin } from './admin.js';
import { END_SESSION_PATH, endSessionRedirect, sendBackchannelLogout, type BackchannelLogoutRequest, type EndSessionCall } from './auth/backchannel-logout.js';
import { createAuthServer, generateSigningKey } from './auth-server.js';
import { generateSandboxData } from './data.js';
import { createDirectory, LaunchStore } from './directory.js';
import { clearFaults, createStats, resetStats } from './faults.js';
import { loadFhirDefinitions } from './fhir-definitions.js';
import { clearQuirks, createQuirkDataSync, quirkedCapabilityStatement, quirkedSmartConfiguration, withQuirkPatients } from './quirks.js';
import { createFhirServer } from './fhir-server.js';
import type { FhirServer } from './fhir-server.js';
import { sendHtml, sendJson, sendRedirect } from './http-util.js';
import { renderEhrFramePage, renderEhrPage, renderErrorPage } from './pages.js';
import { buildCapabilityStatement, buildSmartConfiguration, OidcDiscoverySchema } from './smart-configuration.js';
import type { AuthorizeOutcome, LaunchOptions, Sandbox, SandboxFaults, SandboxOptions, SandboxQuirks } from './types.js';

export type {
  AuthorizeOutcome,
  IdTokenFault,
  LaunchContext,
  LaunchOptions,
  Sandbox,
  SandboxClient,
  SandboxFaults,
  SandboxOptions,
  SandboxPatient,
  SandboxQuirks,
  SandboxStats,
  TokenEndpointDelayFault,
  TokenEndpointFault,
  TokenEndpointStatusFault,
} from './types.js';
export type { SigningKey } from './auth/signing-key.js';

/** Opaque organisation id returned as the SMART `tenant` launch parameter. */
export const SANDBOX_TENANT = 'sandbox-tenant-3f9a1c';
export { EMPTY_PATIENT } from './quirks.js';

const FHIR_PATH = '/fhir';
const OAUTH_PATH = '/oauth';

/** Served at `${url}/smart-style.json` and announced as `smart_style_url` (SMART `context-style`). */
const SMART_STYLE = {
  color_background: '#f6f7f9',
  color_error: '#9e2d2d',
  color_highlight: '#2b5fad',
  color_modal_backdrop: 'rgba(0, 0, 0, 0.4)',
  color_success: '#2e7d32',
  color_text: '#222222',
  dim_border_radius: '4px',
  dim_font_size: '14px',
  dim_spacing_size: '16px',
  font_family_body: 'system-ui, sans-serif',
  font_family_heading: 'system-ui, sans-serif',
};

function listen(server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const address = server.address();
      if (address === null || typeof address === 'string') {
        reject(new Error('the sandbox server is not listening on a TCP port'));
        return;
      }
      resolve(address);
    });
  });
}

const AUTHORIZE_OUTCOMES: readonly AuthorizeOutcome[] = ['invalid_client', 'invalid_redirect', 'invalid_scope', 'access_denied'];

/** Launch options from the EHR page's query (`authorize`, `consent`, `tokenTtl`, `refuseFraming`); a string is the problem. */
export function launchOptionsFrom(params: URLSearchParams): LaunchOptions | string {
  const options: LaunchOptions = {};
  const outcome = params.get('authorize') ?? '';
  if (outcome !== '' && outcome !== 'ok') {
    if (!(AUTHORIZE_OUTCOMES as readonly string[]).includes(outcome)) return `Unknown authorize outcome "${outcome}".`;
    options.authorizeOutcome = outcome as AuthorizeOutcome;
  }
  if (params.get('consent') === '1') options.consent = true;
  if (params.get('refuseFraming') === '1') options.refuseFraming = true;
  const ttl = params.get('tokenTtl') ?? '';
  if (ttl !== '') {
    const seconds = Number(ttl);
    if (!Number.isInteger(seconds) || seconds < 1 || seconds > 86_400) return 'The access token lifetime must be a whole number of seconds between 1 and 86400.';
    options.accessTokenTtlSeconds = seconds;
  }
  return options;
}

function withLaunchParams(launchUrl: string, params: Readonly<Record<string, string>>): string {
  const url = new URL(launchUrl);
  for (const [key, value] of Object.entries(params)) {
    url.searchParams.set(key, value);
  }
  return url.href;
}

/**
 * Starts the sandbox EHR: a SMART App Launch 2.x authorization server (oidc-provider, under `/oauth`)
 * and a FHIR R4 server (medplum's router on a memory repository, under `/fhir`; writes for
 * Observation and Basic only) seeded with deterministic synthetic data, plus the EHR's own pages,
 * all on one node:http server.
 */
export async function startSandbox(options: SandboxOptions): Promise<Sandbox> {
  const host = options.host ?? '127.0.0.1';
  const accessTokenTtlSeconds = options.accessTokenTtlSeconds ?? 300;
  if (!Number.isInteger(accessTokenTtlSeconds) || accessTokenTtlSeconds <= 0) {
    throw new Error('accessTokenTtlSeconds must be a positive integer');
  }
  const launchUrl = options.launchUrl === undefined ? undefined : new URL(options.launchUrl).href;

  const compartment = loadFhirDefinitions();
  const data = generateSandboxData();
  const repo = new MemoryRepository();
  for (const resource of data.all) {
    await repo.createResource(resource);
  }
  const router = new FhirRouter();
  const quirks: SandboxQuirks = {};
  const syncQuirkData = createQuirkDataSync(repo, quirks);
  const directory = withQuirkPatients(createDirectory(data), quirks);
  const launches = new LaunchStore(directory);
  const faults: SandboxFaults = {};
  const stats = createStats();
  const signingKey = options.signingKey ?? (await generateSigningKey());

  // The URL (and so the issuer) is only known after listen() picked the port, so requests are
  // dispatched once the authorization server is wired; the FHIR side follows once oidc-provider's
  // discovery (fetched over this very server) has been read.
  let dispatch: ((req: IncomingMessage, res: ServerResponse) => Promise<void>) | undefined;
  let fhirSide: { fhir: FhirServer; smartConfiguration: Record<string, unknown> } | undefined;
  const server = createServer((req, res) => {
    if (!dispatch) {
      sendJson(res, 503, { error: 'starting' });
      return;
    }
    dispatch(req, res).catch((error: unknown) => {
      console.error('sandbox request failed:', error);
      if (!res.headersSent) {
        sendJson(res, 500, { error: 'server_error' });
      } else {
        res.destroy();
      }
    });
  });
  const address = await listen(server, options.port ?? 0, host);
  const origin = `http://${host.includes(':') ? `[${host}]` : host}:${address.port}`;
  const fhirBaseUrl = `${origin}${FHIR_PATH}`;
  const issuer = `${origin}${OAUTH_PATH}`;
  const smartStyleUrl = `${origin}/smart-style.json`;

  let disposeAuth: (() => void) | undefined;
  const close = (): Promise<void> =>
    new Promise((resolve, reject) => {
      disposeAuth?.();
      server.close((error) => (error ? reject(error) : resolve()));
      // Keep-alive sockets (fetch keeps them open) would otherwise hold close() for seconds.
      server.closeAllConnections();
    });

  try {
    const auth = createAuthServer({
      origin,
      issuer,
      fhirBaseUrl,
      clients: options.clients,
      accessTokenTtlSeconds,
      directory,
      launches,
      faults,
      stats,
      signingKey,
      tenant: SANDBOX_TENANT,
      smartStyleUrl,
      quirks,
      now: options.now,
    });
    disposeAuth = auth.dispose;

    const revokeGrantOf = async (token: string): Promise<void> => {
      try {
        await auth.revokeGrantForRefreshToken(token);
      } catch {
        await auth.revokeGrantForAccessToken(token).catch((error: unknown) => {
          throw new Error('unknown token: neither a refresh token nor a JWT access token this sandbox holds', { cause: error });
        });
      }
    };
    const endSessionCalls: EndSessionCall[] = [];
    const admin = {
      faults,
      quirks,
      stats,
      resetStats: () => resetStats(stats),
      revokeGrantOf,
      sendBackchannelLogout: (request: BackchannelLogoutRequest) => sendBackchannelLogout(issuer, signingKey, request),
    };

    dispatch = async (req, res) => {
      await syncQuirkData();
      const url = new URL(req.url ?? '/', origin);
      const path = url.pathname;
      if (path === OAUTH_PATH || path.startsWith(`${OAUTH_PATH}/`)) {
        const interaction = /^\/oauth\/interaction\/([^/]+)(?:\/(login|cancel))?$/.exec(path);
        if (interaction?.[1] !== undefined) {
          const action = interaction[2] === 'login' || interaction[2] === 'cancel' ? interaction[2] : 'show';
          const expected = action === 'show' ? 'GET' : 'POST';
          if (req.method !== expected) {
            sendHtml(res, 405, renderErrorPage('Method not allowed', `Use ${expected} here.`));
            return;
          }
          await auth.handleInteraction(req, res, decodeURIComponent(interaction[1]), action);
          return;
        }
        await auth.handleProviderRequest(req, res);
        return;
      }
      if (path === FHIR_PATH || path.startsWith(`${FHIR_PATH}/`)) {
        if (!fhirSide) {
          sendJson(res, 503, { error: 'starting' });
          return;
        }
        const subPath = path.slice(FHIR_PATH.length);
        if (subPath === '/.well-known/smart-configuration') {
          const smartConfiguration = quirkedSmartConfiguration(fhirSide.smartConfiguration, quirks, fhirBaseUrl);
          if (smartConfiguration === undefined) {
            sendJson(res, 404, { error: 'not_found' }, { 'Cache-Control': 'no-store' });
            return;
          }
          sendJson(res, 200, smartConfiguration, {
            'Cache-Control': 'public, max-age=300',
            'Access-Control-Allow-Origin': '*',
          });
          return;
        }
        await fhirSide.fhir.handle(req, res, subPath, url.searchParams);
        return;
      }
      if (path === END_SESSION_PATH && quirks.endSession === true) {
        const { call, location } = await endSessionRedirect(issuer, signingKey, url, (id) => options.clients.some((client) => client.clientId === id));
        endSessionCalls.push(call);
        if (location === undefined) {
          sendHtml(res, 400, renderErrorPage('Sign-out refused', 'The client_id, id_token_hint or post_logout_redirect_uri is missing or invalid.'));
          return;
        }
        res.writeHead(302, { Location: location, 'Cache-Control': 'no-store' });
        res.end();
        return;
      }
      if (path === ADMIN_PATH || path.startsWith(`${ADMIN_PATH}/`)) {
        await handleAdmin(req, res, path.slice(ADMIN_PATH.length), admin);
        return;
      }
      if (req.method !== 'GET') {
        sendHtml(res, 405, renderErrorPage('Method not allowed', 'The sandbox EHR pages only answer GET.'));
        return;
      }
      switch (path) {
        case '/':
          sendHtml(
            res,
            200,
            renderEhrPage({
              fhirBaseUrl,
              issuer,
              practitionerName: directory.practitioner.name,
              patients: directory.patients,
              launchUrl,
              portalUrl: launchUrl === undefined ? undefined : withLaunchParams(launchUrl, { iss: fhirBaseUrl }),
              appLaunchUrl: options.appLaunchUrl,
              clients: options.clients,
            }),
          );
          return;
        case '/ehr/launch':
          handleEhrLaunch(url.searchParams, res);
          return;
        case '/ehr/frame':
          handleEhrLaunch(url.searchParams, res, 'frame');
          return;
        case '/smart-style.json':
          sendJson(res, 200, SMART_STYLE, { 'Cache-Control': 'public, max-age=3600', 'Access-Control-Allow-Origin': '*' });
          return;
        default:
          sendHtml(res, 404, renderErrorPage('Not found', `Nothing is served at ${path}.`));
      }
    };

    function handleEhrLaunch(params: URLSearchParams, res: ServerResponse, target: 'window' | 'frame' = 'window'): void {
      if (launchUrl === undefined) {
        sendHtml(res, 400, renderErrorPage('No launch URL', 'Start the sandbox with a launch URL (--launch-url) to launch apps.'));
        return;
      }
      const patient = params.get('patient') ?? '';
      if (!directory.hasPatient(patient)) {
        sendHtml(res, 400, renderErrorPage('Unknown patient', `There is no patient "${patient}" in the sandbox EHR.`));
        return;
      }
      const requestedEncounter = params.get('encounter');
      const encounter = requestedEncounter ?? directory.latestEncounter(patient);
      if (encounter !== undefined && directory.encounterPatient(encounter) !== patient) {
        sendHtml(res, 400, renderErrorPage('Unknown encounter', `Encounter "${encounter}" is not an encounter of ${patient}.`));
        return;
      }
      const launchOptions = launchOptionsFrom(params);
      if (typeof launchOptions === 'string') {
        sendHtml(res, 400, renderErrorPage('Invalid launch options', launchOptions));
        return;
      }
      const launch = launches.create({
        patient,
        ...(encounter === undefined ? {} : { encounter }),
        ...(Object.keys(launchOptions).length === 0 ? {} : { options: launchOptions }),
      });
      if (target === 'window') {
        sendRedirect(res, withLaunchParams(launchUrl, { iss: fhirBaseUrl, launch }));
        return;
      }
      // In a frame, as EHRs embed apps. When the EHR's sign-in refuses framing, the frame opens the
      // app's own launch page instead, and the app signs in in a popup.
      const frameUrl =
        launchOptions.refuseFraming === true && options.appLaunchUrl !== undefined ? options.appLaunchUrl : launchUrl;
      const src = withLaunchParams(frameUrl, { iss: fhirBaseUrl, launch });
      const name = directory.patients.find((p) => p.id === patient)?.name ?? patient;
      sendHtml(res, 200, renderEhrFramePage({ patientName: name, src, refuseFraming: launchOptions.refuseFraming === true }), {
        'Content-Security-Policy': `default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-src 'self' ${new URL(src).origin}`,
      });
    }

    // Endpoint URLs come from oidc-provider's own discovery, fetched over HTTP like any client would.
    const discoveryResponse = await fetch(`${issuer}/.well-known/openid-configuration`);
    if (!discoveryResponse.ok) {
      throw new Error(`oidc-provider discovery answered ${discoveryResponse.status}`);
    }
    const discovery = OidcDiscoverySchema.parse(await discoveryResponse.json());
    fhirSide = {
      smartConfiguration: buildSmartConfiguration(discovery),
      fhir: createFhirServer({
        fhirBaseUrl,
        repo,
        router,
        compartment,
        verifyAccessToken: auth.verifyAccessToken,
        faults,
        binaryContent: (id) => data.binaryContent.get(id)?.(),
        capabilityStatement: ((statement) => () => quirkedCapabilityStatement(statement, quirks, fhirBaseUrl))(
          buildCapabilityStatement(fhirBaseUrl, discovery),
        ),
      }),
    };

    return {
      url: origin,
      fhirBaseUrl,
      issuer,
      patients: directory.patients.map((p) => ({ ...p })),
      practitioner: { ...directory.practitioner },
      createLaunch: (context) => launches.create(context),
      faults,
      stats,
      resetStats: admin.resetStats,
      clearFaults: () => clearFaults(faults),
      quirks,
      clearQuirks: () => clearQuirks(quirks),
      revokeGrantForAccessToken: auth.revokeGrantForAccessToken,
      revokeGrantForRefreshToken: auth.revokeGrantForRefreshToken,
      revokeGrantOf,
      endSessionCalls,
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}
