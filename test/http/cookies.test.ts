import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../shared/config/schema.js';
import { BINDING_COOKIE, bindingCookie } from '../../shared/http/cookies.js';
import { cookieOf } from '../../shared/http/api-event.js';
import { sampleConfig } from '../fakes/deps.js';
import { apiEvent } from '../fixtures/api-event.js';

const SECRET = 'A'.repeat(43);

describe('the browser-binding cookie (invariant 2)', () => {
  it('is __Host- prefixed, Secure, HttpOnly, Path=/, without Domain, SameSite=Lax by default (BFF-02, BFF-03, BFF-11)', () => {
    const config = parseConfig(sampleConfig(), 'local');

    const cookie = bindingCookie(config, SECRET);

    expect(cookie.startsWith(`${BINDING_COOKIE}=${SECRET}; `)).toBe(true);
    expect(BINDING_COOKIE.startsWith('__Host-')).toBe(true);
    const attributes = cookie.split('; ').slice(1);
    expect(attributes).toEqual(['Path=/', 'Secure', 'HttpOnly', 'SameSite=Lax', `Max-Age=${config.session.lifetimeMinutes * 60}`]);
    expect(cookie).not.toMatch(/Domain=/i);
    expect(cookie).not.toMatch(/Partitioned/);
  });

  it('is SameSite=None with Partitioned (CHIPS) for apps embedded in an EHR iframe (BFF-12)', () => {
    const config = parseConfig(sampleConfig({ cookie: { sameSite: 'None' } }), 'local');

    const attributes = bindingCookie(config, SECRET).split('; ').slice(1);

    expect(attributes).toEqual(expect.arrayContaining(['Secure', 'HttpOnly', 'SameSite=None', 'Partitioned', 'Path=/']));
  });

  it('is read only when it appears exactly once, so a second injected cookie of the same name binds nothing', () => {
    const single = apiEvent({ resource: '/sessions/{id}', path: '/sessions/x', cookies: { [BINDING_COOKIE]: SECRET, other: 'y' } });
    const doubled = apiEvent({ resource: '/sessions/{id}', path: '/sessions/x', headers: { Cookie: `${BINDING_COOKIE}=${SECRET}; ${BINDING_COOKIE}=${'B'.repeat(43)}` } });

    expect(cookieOf(single, BINDING_COOKIE)).toBe(SECRET);
    expect(cookieOf(doubled, BINDING_COOKIE)).toBeUndefined();
  });
});
