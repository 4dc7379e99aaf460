import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BrowserClient } from './browser-client.js';
import { ehrLaunch, sessionIdFrom, startFixture, type Fixture } from './stack-fixture.js';

/*
 * A SMART v1 EHR (no well-known file, only the CapabilityStatement's oauth-uris) that offers OpenID
 * Connect, with `openid fhirUser` in the scope and no `openidIssuer` configured: the local stack finds
 * the OpenID issuer at the authorization server, over real HTTP against the sandbox, no mocks.
 */

let fixture: Fixture;

beforeAll(async () => {
  fixture = await startFixture();
});
afterAll(async () => {
  await fixture?.close();
});
beforeEach(() => {
  fixture.stack.sandbox!.clearQuirks();
  fixture.stack.deps.discovery?.clear();
});

const sandbox = () => fixture.stack.sandbox!;

describe('SMART v1 EHR with OpenID, no openidIssuer configured', () => {
  it('the launch finds the OpenID issuer at the authorization server and verifies the id_token against it (SMART-DISC-07)', async () => {
    sandbox().quirks.noWellKnown = true;
    expect(JSON.stringify(fixture.stack.config)).not.toContain('openidIssuer');
    expect(fixture.stack.config.issuers[0]!.scope).toContain('openid');
    const browser = new BrowserClient();

    const nav = await ehrLaunch(fixture, browser, sandbox().patients[0]!.id);
    const context = (await browser.call(`${fixture.stack.apiUrl}/sessions/${sessionIdFrom(nav)}`)).body as Record<string, unknown>;

    // fhirUser comes from the verified id_token.
    expect(context).toMatchObject({ patient: sandbox().patients[0]!.id, fhirUser: `${sandbox().fhirBaseUrl}/Practitioner/${sandbox().practitioner.id}` });
    expect(fixture.observed.requests).toContain(`${sandbox().fhirBaseUrl}/metadata`);
    expect(fixture.observed.requests).toContain(`${sandbox().issuer}/.well-known/openid-configuration`);
  });

  it('without an OpenID configuration at the authorization server: OPENID_UNSUPPORTED before the redirect (SMART-DISC-07)', async () => {
    Object.assign(sandbox().quirks, { noWellKnown: true, noOpenidConfiguration: true });
    const browser = new BrowserClient();

    const nav = await ehrLaunch(fixture, browser, sandbox().patients[0]!.id);

    expect(nav.response.status).toBe(502);
    expect(nav.body).toContain('OPENID_UNSUPPORTED');
    expect(nav.hops.some((hop) => hop.url.startsWith(`${sandbox().issuer}/auth`))).toBe(false);
  });
});
