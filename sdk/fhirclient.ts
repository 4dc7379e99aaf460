/**
 * fhirclient.js bridge: an existing fhirclient.js app moves to smart-launch by replacing
 * `await FHIR.oauth2.ready()` with `await ready(FHIR)`. The answer is a real fhirclient `Client`
 * bound to the session's proxy (`fhirBaseUrl`) with its context, so `patient.read()`,
 * `user.read()`, `encounter.read()` and `request()` with `pageLimit`, `flat` and
 * `resolveReferences` work unchanged. It holds no token: every request carries the HttpOnly binding
 * cookie instead, and a 401 runs the SDK's "one refresh, then sessionEnded" path.
 *
 * fhirclient is not bundled: pass the `FHIR` object of the copy the app already loads.
 */
import { ready as sdkReady, SessionEndedError, type SmartLaunchOptions, type SmartSession } from './index.js';

/** The parts of a fhirclient (2.x) `Client` the bridge adjusts. */
export interface FhirclientClient {
  request(requestOptions: unknown, fhirOptions?: unknown, refs?: unknown): Promise<unknown>;
  getFhirUser(): string | null;
}

/** The part of fhirclient's `FHIR` object the bridge uses. */
export interface FhirclientLike<C extends FhirclientClient> {
  client(state: { serverUrl: string; tokenResponse?: Record<string, unknown> }): C;
}

const sessions = new WeakMap<object, SmartSession>();

/** The smart-launch session behind a bridged client (for `logout()`, `onSessionEnded()`, …). */
export function sessionOf(client: object): SmartSession | undefined {
  return sessions.get(client);
}

/** A fhirclient `Client` for an open smart-launch session. */
export function toFhirclient<C extends FhirclientClient>(FHIR: FhirclientLike<C>, session: SmartSession): C {
  const { context } = session;
  const client = FHIR.client({
    serverUrl: context.fhirBaseUrl,
    // The launch context fhirclient reads from a token response; no token in it, ever.
    tokenResponse: {
      patient: context.patient,
      encounter: context.encounter,
      scope: context.scope,
      need_patient_banner: context.need_patient_banner,
      smart_style_url: context.smart_style_url,
      intent: context.intent,
      tenant: context.tenant,
      fhirContext: context.fhirContext,
    },
  });
  // fhirclient reads the user from the id_token, which stays on the server; the context names it.
  const fhirUser = context.fhirUser === undefined ? null : context.fhirUser.split('/').slice(-2).join('/');
  client.getFhirUser = () => fhirUser;
  const request = client.request.bind(client);
  // Every request (next pages and resolved references come through here too) carries the cookie.
  client.request = async (requestOptions: unknown, fhirOptions?: unknown, refs?: unknown) => {
    if (session.ended) throw new SessionEndedError(session.ended);
    const options = typeof requestOptions === 'string' ? { url: requestOptions } : { ...(requestOptions as object) };
    const withCookie = { credentials: 'include', ...options };
    try {
      return await request(withCookie, fhirOptions, refs);
    } catch (error) {
      if ((error as { status?: number }).status !== 401) throw error;
      await session.recoverFrom401();
      try {
        return await request(withCookie, fhirOptions, refs);
      } catch (again) {
        if ((again as { status?: number }).status !== 401) throw again;
        throw session.endAfter401(undefined, 'The EHR no longer accepts this session. Open the app again from the EHR, or start a new sign-in.');
      }
    }
  };
  sessions.set(client, session);
  return client;
}

/** `FHIR.oauth2.ready()` for smart-launch: this launch's session as a fhirclient `Client`. */
export async function ready<C extends FhirclientClient>(FHIR: FhirclientLike<C>, options: SmartLaunchOptions = {}): Promise<C> {
  return toFhirclient(FHIR, await sdkReady(options));
}
