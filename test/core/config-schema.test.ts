import { describe, expect, it } from 'vitest';
import { ConfigError, configSchema, parseConfig, parseConfigText, PROXY_DEFAULTS, proxyOptionsOf, signingAlgOf, signingAlgsOf, WRITE_INTERACTIONS, type ConfigMode } from '../../shared/config/schema.js';
import { sampleConfig, sampleIssuer } from '../fakes/deps.js';

const SECRET_ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:acme/ehr-client-AbCdEf';

/** The problems a config is refused with; fails the test if it is accepted. */
function problemsOf(value: unknown, mode: ConfigMode = 'local'): readonly string[] {
  try {
    parseConfig(value, mode);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error('expected the config to be refused, but it parsed');
}

function withIssuers(...issuers: Array<Record<string, unknown>>): Record<string, unknown> {
  return sampleConfig({ issuers });
}

describe('parseConfig', () => {
  it('parses a valid sample and fills in the session and cookie defaults', () => {
    const config = parseConfig(sampleConfig(), 'local');

    expect(config.customer).toBe('acme-health');
    expect(config.session).toEqual({ lifetimeMinutes: 480, idleTimeoutMinutes: 60, transactionMinutes: 10, refreshSkewSeconds: 60, refreshLeaseSeconds: 15, proxyCacheSeconds: 5 });
    expect(config.cookie).toEqual({ sameSite: 'Lax', browserBinding: true });
    expect(config.issuers).toHaveLength(1);
    expect(config.issuers[0]?.iss).toBe('https://ehr.example.org/fhir/r4');
  });

  it('drops trailing slashes from publicUrl so redirect_uri and fhirBaseUrl are built without "//"', () => {
    const config = parseConfig(sampleConfig({ publicUrl: 'https://smart.acme.example/' }), 'local');

    expect(config.publicUrl).toBe('https://smart.acme.example');
  });

  it('keeps the issuer string exactly as written, trailing slash included (SMART-AUTHZ-07)', () => {
    const config = parseConfig(withIssuers(sampleIssuer({ iss: 'https://ehr.example.org/fhir/r4/' })), 'local');

    expect(config.issuers[0]?.iss).toBe('https://ehr.example.org/fhir/r4/');
  });

  it('returns a frozen config', () => {
    expect(Object.isFrozen(parseConfig(sampleConfig(), 'local'))).toBe(true);
  });

  it('lists every problem at once, each with its JSON path (two issuers wrong → both paths)', () => {
    const problems = problemsOf(
      withIssuers(
        sampleIssuer({ iss: 'http://ehr.example.org/fhir', default: undefined }),
        sampleIssuer({ iss: 'https://other.example.org/fhir', clientSecret: undefined, default: undefined }),
      ),
    );

    expect(problems).toHaveLength(2);
    expect(problems).toContainEqual(expect.stringMatching(/^\$\.issuers\[0\]\.iss: /));
    expect(problems).toContainEqual(expect.stringMatching(/^\$\.issuers\[1\]\.clientSecret: /));
  });

  it('reports field problems together with cross-issuer problems', () => {
    const problems = problemsOf(
      sampleConfig({ customer: 'ACME Health', issuers: [sampleIssuer(), sampleIssuer()] }),
    );

    expect(problems).toContainEqual(expect.stringMatching(/^\$\.customer: /));
    expect(problems).toContainEqual(expect.stringMatching(/^\$\.issuers: at most one issuer may be "default"/));
    expect(problems).toContainEqual(expect.stringMatching(/^\$\.issuers\[1\]\.iss: .*listed twice/));
  });

  it('builds each mode\'s schema once, and no parse shares state with another', () => {
    expect(configSchema('aws')).toBe(configSchema('aws'));
    expect(configSchema('local')).toBe(configSchema('local'));
    expect(configSchema('local')).not.toBe(configSchema('aws'));

    const raw = sampleConfig();
    delete raw['cookie'];
    delete raw['session'];
    const first = parseConfig(raw, 'local');
    const second = parseConfig(raw, 'local');
    expect(second).not.toBe(first);
    expect(second.session).not.toBe(first.session);
    expect(second.cookie).not.toBe(first.cookie);
    expect(second.issuers[0]).not.toBe(first.issuers[0]);
    // A refinement's per-parse bookkeeping (the duplicate-iss check) starts afresh each time.
    expect(() => parseConfig(raw, 'local')).not.toThrow();
    expect(problemsOf(withIssuers(sampleIssuer(), sampleIssuer()))).toContain('$.issuers[1].iss: iss "https://ehr.example.org/fhir/r4" is listed twice');
    expect(() => parseConfig(raw, 'local')).not.toThrow();
  });

  it('throws a ConfigError with code CONFIG_INVALID and the source name in its message', () => {
    let caught: unknown;
    try {
      parseConfig(sampleConfig({ issuers: [] }), 'local', 'customers/acme.json');
    } catch (error) {
      caught = error;
    }

    expect(caught).toBeInstanceOf(ConfigError);
    expect(caught).toMatchObject({ code: 'CONFIG_INVALID', problems: ['$.issuers: issuers must list at least one EHR'] });
    expect((caught as Error).message).toContain('customers/acme.json');
  });

  it('reports invalid JSON text as a problem at "$"', () => {
    expect(() => parseConfigText('{ "customer": ', 'local', 'broken.json')).toThrow(ConfigError);
    try {
      parseConfigText('{ "customer": ', 'local', 'broken.json');
    } catch (error) {
      expect((error as ConfigError).problems).toEqual([expect.stringMatching(/^\$: not valid JSON/)]);
    }
  });

  describe('http issuers', () => {
    it.each(['http://localhost:8080/fhir', 'http://127.0.0.1:9000/fhir/r4', 'http://[::1]:8080/fhir', 'http://127.1.2.3/fhir'])(
      'accepts http on loopback (%s) in local mode',
      (iss) => {
        expect(parseConfig(withIssuers(sampleIssuer({ iss })), 'local').issuers[0]?.iss).toBe(iss);
      },
    );

    it('refuses http on loopback in aws mode', () => {
      const problems = problemsOf(
        sampleConfig({ issuers: [sampleIssuer({ iss: 'http://localhost:8080/fhir', clientSecret: SECRET_ARN })] }),
        'aws',
      );

      expect(problems).toEqual(['$.issuers[0].iss: iss must use https in a deployed stack']);
    });

    it.each(['http://ehr.example.org/fhir', 'http://localhost.evil.example/fhir', 'http://127.0.0.1.nip.io/fhir', 'http://10.0.0.5/fhir'])(
      'refuses http on a non-loopback host (%s) even in local mode',
      (iss) => {
        expect(problemsOf(withIssuers(sampleIssuer({ iss })))).toEqual([
          expect.stringMatching(/^\$\.issuers\[0\]\.iss: iss must use https \(http is accepted only on loopback/),
        ]);
      },
    );

    it('refuses http publicUrl and app.url in aws mode', () => {
      const problems = problemsOf(
        sampleConfig({
          publicUrl: 'http://localhost:3000',
          app: { url: 'http://localhost:3000/app/' },
          issuers: [sampleIssuer({ clientSecret: SECRET_ARN })],
        }),
        'aws',
      );

      expect(problems).toEqual([
        '$.publicUrl: publicUrl must use https in a deployed stack',
        '$.app.url: app.url must use https in a deployed stack',
      ]);
    });

    it.each([
      ['a relative URL', 'ehr.example.org/fhir', /must be an absolute URL/],
      ['credentials', 'https://user:pw@ehr.example.org/fhir', /must not carry credentials/],
      ['a fragment', 'https://ehr.example.org/fhir#x', /must not have a #fragment/],
      ['a query string', 'https://ehr.example.org/fhir?tenant=1', /must not have a query string/],
      ['another scheme', 'ftp://ehr.example.org/fhir', /must use https/],
    ])('refuses an iss with %s', (_what, iss, message) => {
      expect(problemsOf(withIssuers(sampleIssuer({ iss })))).toEqual([expect.stringMatching(message)]);
    });
  });

  describe('client authentication', () => {
    it('requires clientSecret for client_secret_basic', () => {
      expect(problemsOf(withIssuers(sampleIssuer({ clientSecret: undefined })))).toEqual([
        '$.issuers[0].clientSecret: clientSecret is required when clientAuth is "client_secret_basic"',
      ]);
    });

    it('refuses clientSecret for a public client (clientAuth "none")', () => {
      expect(problemsOf(withIssuers(sampleIssuer({ clientAuth: 'none' })))).toEqual([
        '$.issuers[0].clientSecret: clientSecret must be absent when clientAuth is "none"',
      ]);
    });

    it('accepts a public client without a secret', () => {
      const config = parseConfig(withIssuers(sampleIssuer({ clientAuth: 'none', clientSecret: undefined })), 'local');

      expect(config.issuers[0]?.clientAuth).toBe('none');
      expect(config.issuers[0]?.clientSecret).toBeUndefined();
    });

    it('refuses a client secret in clear in aws mode', () => {
      expect(problemsOf(sampleConfig(), 'aws')).toEqual([
        '$.issuers[0].clientSecret: in a deployed stack clientSecret must be a Secrets Manager secret ARN, never the secret itself',
      ]);
    });

    it('accepts a Secrets Manager ARN as clientSecret in aws mode', () => {
      const config = parseConfig(withIssuers(sampleIssuer({ clientSecret: SECRET_ARN })), 'aws');

      expect(config.issuers[0]?.clientSecret).toBe(SECRET_ARN);
    });

    it('accepts private_key_jwt without a clientSecret, signing RS384 by default (SMART-CAUTH-04, SMART-CAUTH-09)', () => {
      for (const mode of ['local', 'aws'] as const) {
        const config = parseConfig(withIssuers(sampleIssuer({ clientAuth: 'private_key_jwt', clientSecret: undefined })), mode);

        expect(config.issuers[0]?.clientAuth).toBe('private_key_jwt');
        expect(config.issuers[0]?.clientSecret).toBeUndefined();
        expect(signingAlgOf(config.issuers[0]!)).toBe('RS384');
        expect(signingAlgsOf(config)).toEqual(['RS384']);
      }
    });

    it('refuses a clientSecret with private_key_jwt (the private key never leaves the signer)', () => {
      expect(problemsOf(withIssuers(sampleIssuer({ clientAuth: 'private_key_jwt' })))).toEqual([
        '$.issuers[0].clientSecret: clientSecret must be absent when clientAuth is "private_key_jwt"',
      ]);
    });

    it('takes signingAlg ES384 or RS384 for private_key_jwt and refuses anything else (SMART-REG-05, SMART-CAUTH-09)', () => {
      const issuer = (signingAlg: unknown, iss = 'https://ehr.example.org/fhir/r4') =>
        sampleIssuer({ iss, clientAuth: 'private_key_jwt', clientSecret: undefined, signingAlg, default: undefined });
      const config = parseConfig(withIssuers(issuer('ES384'), issuer('RS384', 'https://other.example.org/fhir')), 'aws');
      expect(config.issuers.map(signingAlgOf)).toEqual(['ES384', 'RS384']);
      expect(signingAlgsOf(config)).toEqual(['RS384', 'ES384']);

      for (const bad of ['RS256', 'ES256', 'PS384', 'HS384', 'none', 384]) {
        expect(problemsOf(withIssuers(issuer(bad)))).toEqual([expect.stringMatching(/^\$\.issuers\[0\]\.signingAlg: /)]);
      }
    });

    it('refuses signingAlg on an issuer that does not use private_key_jwt', () => {
      expect(problemsOf(withIssuers(sampleIssuer({ signingAlg: 'ES384' })))).toEqual([
        '$.issuers[0].signingAlg: signingAlg applies only to clientAuth "private_key_jwt" (this issuer uses "client_secret_basic")',
      ]);
      expect(signingAlgsOf(parseConfig(sampleConfig(), 'local'))).toEqual([]);
    });

    it('takes the sendClientIdWithAuth quirk as a boolean only', () => {
      expect(parseConfig(withIssuers(sampleIssuer({ sendClientIdWithAuth: true })), 'local').issuers[0]?.sendClientIdWithAuth).toBe(true);
      expect(problemsOf(withIssuers(sampleIssuer({ sendClientIdWithAuth: 'yes' })))).toEqual([
        expect.stringMatching(/^\$\.issuers\[0\]\.sendClientIdWithAuth: /),
      ]);
    });

    it('refuses an unknown clientAuth value', () => {
      expect(problemsOf(withIssuers(sampleIssuer({ clientAuth: 'client_secret_post' })))).toEqual([
        expect.stringMatching(/^\$\.issuers\[0\]\.clientAuth: /),
      ]);
    });
  });

  describe('issuer list', () => {
    it('refuses two default issuers', () => {
      const problems = problemsOf(withIssuers(sampleIssuer(), sampleIssuer({ iss: 'https://other.example.org/fhir' })));

      expect(problems).toEqual(['$.issuers: at most one issuer may be "default": true']);
    });

    it('refuses the same iss listed twice (SMART-REG-06)', () => {
      const problems = problemsOf(withIssuers(sampleIssuer(), sampleIssuer({ default: undefined, clientId: 'other' })));

      expect(problems).toEqual(['$.issuers[1].iss: iss "https://ehr.example.org/fhir/r4" is listed twice']);
    });

    it('accepts two issuers that differ only by a trailing slash, as distinct exact strings', () => {
      const config = parseConfig(
        withIssuers(sampleIssuer(), sampleIssuer({ iss: 'https://ehr.example.org/fhir/r4/', default: undefined })),
        'local',
      );

      expect(config.issuers.map((i) => i.iss)).toEqual(['https://ehr.example.org/fhir/r4', 'https://ehr.example.org/fhir/r4/']);
    });

    it('refuses an empty issuer list', () => {
      expect(problemsOf(withIssuers())).toEqual(['$.issuers: issuers must list at least one EHR']);
    });
  });

  describe('unknown keys', () => {
    it('refuses a misspelt top-level key', () => {
      expect(problemsOf(sampleConfig({ sesion: { lifetimeMinutes: 60 } }))).toEqual([expect.stringMatching(/^\$: .*"sesion"/)]);
    });

    it('refuses a misspelt issuer key', () => {
      expect(problemsOf(withIssuers(sampleIssuer({ defualt: true })))).toEqual([expect.stringMatching(/^\$\.issuers\[0\]: .*"defualt"/)]);
    });

    it('refuses a misspelt cookie key', () => {
      expect(problemsOf(sampleConfig({ cookie: { browserBindng: false } }))).toEqual([expect.stringMatching(/^\$\.cookie: .*"browserBindng"/)]);
    });
  });

  describe('other fields', () => {
    it.each([
      ['double spaces', 'openid  fhirUser'],
      ['a tab', 'openid\tfhirUser'],
      ['non-ASCII', 'openid fhirÜser'],
    ])('refuses a scope with %s', (_what, scope) => {
      expect(problemsOf(withIssuers(sampleIssuer({ scope })))).toEqual([expect.stringMatching(/^\$\.issuers\[0\]\.scope: /)]);
    });

    it('refuses an empty clientId', () => {
      expect(problemsOf(withIssuers(sampleIssuer({ clientId: '' })))).toEqual(['$.issuers[0].clientId: clientId must not be empty']);
    });

    it('refuses a customer name that is not a lowercase slug', () => {
      expect(problemsOf(sampleConfig({ customer: 'Acme_Health' }))).toEqual([expect.stringMatching(/^\$\.customer: /)]);
    });

    it('refuses session lifetimes out of range', () => {
      const problems = problemsOf(sampleConfig({ session: { lifetimeMinutes: 1, transactionMinutes: 120 } }));

      expect(problems).toEqual([expect.stringMatching(/^\$\.session\.lifetimeMinutes: /), expect.stringMatching(/^\$\.session\.transactionMinutes: /)]);
    });

    it('accepts SameSite None and binding off for iframe-embedded EHRs', () => {
      const config = parseConfig(sampleConfig({ cookie: { sameSite: 'None', browserBinding: false } }), 'local');

      expect(config.cookie).toEqual({ sameSite: 'None', browserBinding: false });
    });

    it('refuses SameSite Strict, which would break the cross-site callback (BFF-11)', () => {
      expect(problemsOf(sampleConfig({ cookie: { sameSite: 'Strict' } }))).toEqual([expect.stringMatching(/^\$\.cookie\.sameSite: /)]);
    });
  });
});

describe('issuers[].writes and issuers[].proxy', () => {
  it('leaves both out of the parsed config when absent (the config travels in a 4 KB Lambda environment), with read-only defaults', () => {
    const config = parseConfig(sampleConfig(), 'local');
    const issuer = config.issuers[0]!;

    expect(issuer).not.toHaveProperty('writes');
    expect(issuer).not.toHaveProperty('proxy');
    const options = proxyOptionsOf(issuer);
    expect(options).toMatchObject(PROXY_DEFAULTS);
    expect([...options.writes]).toEqual([]);
  });

  it('enables all four writes with writes.enabled, or only those listed', () => {
    const all = parseConfig(withIssuers(sampleIssuer({ writes: { enabled: true } })), 'local').issuers[0]!;
    const some = parseConfig(withIssuers(sampleIssuer({ writes: { enabled: true, interactions: ['create', 'update'] } })), 'local').issuers[0]!;
    const off = parseConfig(withIssuers(sampleIssuer({ writes: { enabled: false, interactions: ['create'] } })), 'local').issuers[0]!;

    expect([...proxyOptionsOf(all).writes].sort()).toEqual([...WRITE_INTERACTIONS].sort());
    expect([...proxyOptionsOf(some).writes]).toEqual(['create', 'update']);
    expect([...proxyOptionsOf(off).writes]).toEqual([]);
  });

  it('takes proxy tuning per issuer and fills in the rest', () => {
    const issuer = parseConfig(withIssuers(sampleIssuer({ proxy: { timeoutSeconds: 60, enforceScopes: false } })), 'local').issuers[0]!;

    expect(proxyOptionsOf(issuer)).toMatchObject({ ...PROXY_DEFAULTS, timeoutSeconds: 60, enforceScopes: false });
  });

  it.each([
    ['an unknown write interaction', { writes: { enabled: true, interactions: ['transaction'] } }, /^\$\.issuers\[0\]\.writes\.interactions\[0\]: /],
    ['an empty interaction list', { writes: { enabled: true, interactions: [] } }, /^\$\.issuers\[0\]\.writes\.interactions: /],
    ['writes without enabled', { writes: { interactions: ['create'] } }, /^\$\.issuers\[0\]\.writes\.enabled: /],
    ['an unknown writes key', { writes: { enabled: true, bulk: true } }, /^\$\.issuers\[0\]\.writes: /],
    ['a zero timeout', { proxy: { timeoutSeconds: 0 } }, /^\$\.issuers\[0\]\.proxy\.timeoutSeconds: /],
    ['a request limit over what Lambda can carry', { proxy: { maxRequestKilobytes: 8192 } }, /^\$\.issuers\[0\]\.proxy\.maxRequestKilobytes: /],
    ['a response limit over Lambda streaming’s 200 MB', { proxy: { maxResponseMegabytes: 500 } }, /^\$\.issuers\[0\]\.proxy\.maxResponseMegabytes: /],
    ['a non-boolean switch', { proxy: { confineToPatient: 'no' } }, /^\$\.issuers\[0\]\.proxy\.confineToPatient: /],
    ['an unknown proxy key', { proxy: { followRedirects: true } }, /^\$\.issuers\[0\]\.proxy: /],
  ])('refuses %s with its JSON path', (_what, overrides, path) => {
    expect(problemsOf(withIssuers(sampleIssuer(overrides)))).toEqual([expect.stringMatching(path)]);
  });
});
