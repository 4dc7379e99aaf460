import { getDomain } from 'tldts';
import { configJson, configSchema, parseConfigWith, type Config, type ConfigSchema } from './schema.js';
import * as z from './zod.js';

/*
 * The cookie-site rule, checked where a config is validated for deployment (the CDK app at synth,
 * `smart-launch doctor`, the ops CLI's aws mode), not in the functions: it needs the Public Suffix
 * List (tldts, about 126 KB, compiled at every cold start of every bundle that imports it), and a
 * config that fails it never synthesizes, so a function never runs with one. The functions parse
 * their config with `parseConfigText(text, 'aws', ...)` (schema.ts), which does not import this file.
 */

/**
 * The site (scheme-less registrable domain) a browser files a host under, for the cookie rules: the
 * Public Suffix List as browsers apply it, private section included (each `*.github.io`,
 * `*.cloudfront.net` or execute-api host is a site of its own), through tldts, which ships the list.
 * IP addresses, `localhost` and bare suffixes are their own site.
 */
export function siteOf(hostname: string): string {
  const host = hostname.toLowerCase().replace(/\.$/, '');
  return getDomain(host, { allowPrivateDomains: true }) ?? host;
}

/**
 * Why the browser-binding cookie cannot reach `/sessions` for this `publicUrl`/`app.url` pair, or
 * undefined when it can. The cookie is host-only on publicUrl's host (`__Host-`); the app calls the
 * session routes with `fetch(…, { credentials: 'include' })`. From another site, `SameSite=Lax` is
 * never sent, and `SameSite=None` is `Partitioned` (CHIPS): stored under the top-level site of the
 * `/callback` navigation (the API's own site in a top-level launch), so a page on the app's site
 * never sees it. Locally both run on localhost, which is one site.
 */
export function cookieSiteProblem(publicUrl: string, appUrl: string): string | undefined {
  let api: string;
  let app: string;
  try {
    api = siteOf(new URL(publicUrl).hostname);
    app = siteOf(new URL(appUrl).hostname);
  } catch {
    return undefined; // the URLs themselves are reported invalid elsewhere
  }
  if (api === app) return undefined;
  return (
    `app.url (site ${app}) and publicUrl (site ${api}) are on different sites, so the browser-binding cookie set on ` +
    `publicUrl's host never reaches the app's calls to /sessions (SameSite=Lax is not sent cross-site; SameSite=None is ` +
    `Partitioned into the API's own site) and every session call would answer SESSION_NOT_BOUND. Fix: serve publicUrl from ` +
    `a custom domain on the app's site (e.g. https://smart.${app}, "customDomain" in the stack options), or serve the app ` +
    `on publicUrl's site; "cookie.browserBinding": false also works but drops the binding of the session to the browser`
  );
}

let deployable: ConfigSchema | undefined;

/**
 * The 'aws' schema with the cookie-site rule added as one more refinement of the whole config, so
 * its problem is reported with the others, at `$.app.url`, in one ConfigError.
 */
function deployableSchema(): ConfigSchema {
  deployable ??= configSchema('aws').check(
    z.superRefine((config, ctx) => {
      if (!config.cookie.browserBinding) return;
      const problem = cookieSiteProblem(config.publicUrl, config.app.url);
      if (problem) ctx.addIssue({ code: 'custom', path: ['app', 'url'], message: problem });
    }),
  );
  return deployable;
}

/** Validates a parsed config for deployment: `parseConfig(value, 'aws', source)` and the cookie-site rule. */
export function parseDeployableConfig(value: unknown, source = '(inline)'): Config {
  return parseConfigWith(deployableSchema(), value, source);
}

/** Parses the text of a config file for deployment: `parseConfigText(text, 'aws', source)` and the cookie-site rule. */
export function parseDeployableConfigText(text: string, source: string): Config {
  return parseDeployableConfig(configJson(text, source), source);
}
