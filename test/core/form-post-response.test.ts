import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { formPostResponse } from '../../shared/http/responses.js';

describe('formPostResponse: authorize by POST (SMART-AUTHZ-10)', () => {
  const result = formPostResponse('https://ehr.example.org/oauth2/authorize?tenant=a&b=1', [
    ['scope', 'launch patient/Observation.rs?category=x|y'],
    ['state', '"><script>alert(1)</script>'],
  ], ['__Host-smart-launch=v; Path=/; Secure; HttpOnly; SameSite=Lax']);

  it('escapes every value and the action', () => {
    expect(result.body).toContain('action="https://ehr.example.org/oauth2/authorize?tenant=a&#38;b=1"');
    expect(result.body).toContain('value="&#34;&#62;&#60;script&#62;alert(1)&#60;/script&#62;"');
    expect(result.body).not.toContain('<script>alert(1)');
  });

  it('allows only its own script, by hash, and offers a button without JavaScript (BFF-09)', () => {
    const script = /<script>([^<]*)<\/script>/.exec(result.body)?.[1] ?? '';
    const csp = result.headers?.['content-security-policy'];

    expect(script).toBe("document.getElementById('authorize').submit();");
    expect(csp).toBe(`default-src 'none'; script-src 'sha256-${createHash('sha256').update(script).digest('base64')}'; style-src 'unsafe-inline'; base-uri 'none'`);
    expect(result.body).toMatch(/<noscript>[^]*<\/noscript>\s*<button type="submit">Continue<\/button>/);
  });

  it('is a no-store 200 page that sets the browser-binding cookie', () => {
    expect(result.statusCode).toBe(200);
    expect(result.headers).toMatchObject({ 'cache-control': 'no-store', 'content-type': 'text/html; charset=utf-8', 'referrer-policy': 'no-referrer' });
    expect(result.multiValueHeaders?.['set-cookie']).toEqual(['__Host-smart-launch=v; Path=/; Secure; HttpOnly; SameSite=Lax']);
  });
});
