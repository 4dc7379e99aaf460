import { describe, expect, it } from 'vitest';
import { fhirBaseUrl, jwksUrl, launchUrl, redirectUri, restartUrl } from '../../shared/core/urls.js';

describe('the URLs a stack publishes (docs/design.md, "The contract")', () => {
  const publicUrl = 'https://smart.acme.example/prod';

  it('derives the launch URL, redirect URI and JWKS URL from publicUrl, paths included (SMART-REG-01, SMART-REG-03)', () => {
    expect(launchUrl(publicUrl)).toBe('https://smart.acme.example/prod/launch');
    expect(redirectUri(publicUrl)).toBe('https://smart.acme.example/prod/callback');
    expect(jwksUrl(publicUrl)).toBe('https://smart.acme.example/prod/.well-known/jwks.json');
  });

  it('gives each session its own FHIR base under the session path', () => {
    expect(fhirBaseUrl({ publicUrl }, 'abc')).toBe('https://smart.acme.example/prod/sessions/abc/fhir');
  });

  it('restarts at the launch URL, naming the issuer (encoded) when it is known', () => {
    expect(restartUrl(publicUrl, undefined)).toBe('https://smart.acme.example/prod/launch');
    expect(restartUrl(publicUrl, 'https://ehr.example/fhir?x=1&y')).toBe(
      'https://smart.acme.example/prod/launch?iss=https%3A%2F%2Fehr.example%2Ffhir%3Fx%3D1%26y',
    );
  });
});
