import { request as httpRequest } from 'node:http';

/**
 * A tiny browser stand-in for integration tests: a cookie jar keyed by host (as browsers scope
 * cookies, ignoring the port), manual redirects so every hop is visible, and form posts. Loopback
 * hosts count as secure contexts, as they do in Chromium, so `Secure`/`__Host-` cookies are kept.
 */
export interface Hop {
  readonly url: string;
  readonly status: number;
  readonly location: string | undefined;
}

export interface Navigation {
  readonly response: Response;
  readonly body: string;
  /** Every request made, in order, with its status and Location. */
  readonly hops: Hop[];
  /** The URL of the last request. */
  readonly url: string;
  /** The Location that ended the chain outside HTTP (e.g. a URL with a fragment), if any. */
  readonly finalLocation: string | undefined;
}

export class BrowserClient {
  readonly #jar = new Map<string, Map<string, string>>();
  /** Every response body and header block seen, for leak checks. */
  readonly transcript: string[] = [];

  cookies(host: string): ReadonlyMap<string, string> {
    return this.#jar.get(host) ?? new Map();
  }

  setCookie(host: string, name: string, value: string): void {
    const jar = this.#jar.get(host) ?? new Map<string, string>();
    jar.set(name, value);
    this.#jar.set(host, jar);
  }

  /** Raw `Set-Cookie` lines seen per host, to check attributes. */
  readonly setCookieLines: Array<{ host: string; line: string }> = [];

  #store(url: URL, response: Response): void {
    for (const line of response.headers.getSetCookie()) {
      this.setCookieLines.push({ host: url.hostname, line });
      const [pair, ...attributes] = line.split(';');
      const index = (pair ?? '').indexOf('=');
      if (index < 0) continue;
      const name = (pair as string).slice(0, index).trim();
      const value = (pair as string).slice(index + 1).trim();
      const expired = attributes.some((a) => /^\s*max-age\s*=\s*0\s*$/i.test(a));
      const jar = this.#jar.get(url.hostname) ?? new Map<string, string>();
      if (expired) jar.delete(name);
      else jar.set(name, value);
      this.#jar.set(url.hostname, jar);
    }
  }

  #cookieHeader(url: URL): string | undefined {
    const jar = this.#jar.get(url.hostname);
    if (!jar || jar.size === 0) return undefined;
    return [...jar].map(([name, value]) => `${name}=${value}`).join('; ');
  }

  /** One request, no redirect following. */
  async fetch(input: string, init: RequestInit = {}): Promise<Response> {
    const url = new URL(input);
    const headers = new Headers(init.headers);
    const cookie = this.#cookieHeader(url);
    if (cookie) headers.set('cookie', cookie);
    const response = await fetch(url, { ...init, headers, redirect: 'manual' });
    this.#store(url, response);
    return response;
  }

  /** Follows redirects like a top-level navigation; stops at a non-redirect or at a URL with a fragment. */
  async navigate(start: string, init: RequestInit = {}, maxHops = 25): Promise<Navigation> {
    const hops: Hop[] = [];
    let url = start;
    let requestInit = init;
    for (let i = 0; i < maxHops; i++) {
      const response = await this.fetch(url, requestInit);
      const location = response.headers.get('location') ?? undefined;
      hops.push({ url, status: response.status, location });
      if (response.status >= 300 && response.status < 400 && location) {
        await response.arrayBuffer();
        const next = new URL(location, url).href;
        if (next.includes('#')) {
          this.transcript.push(location);
          return { response, body: '', hops, url, finalLocation: next };
        }
        url = next;
        requestInit = {};
        continue;
      }
      const body = await response.text();
      this.transcript.push(body, JSON.stringify([...response.headers]));
      return { response, body, hops, url, finalLocation: undefined };
    }
    throw new Error(`more than ${maxHops} redirects from ${start}`);
  }

  /** Submits a form as a browser would (application/x-www-form-urlencoded), then follows redirects. */
  submitForm(action: string, fields: Record<string, string>): Promise<Navigation> {
    return this.navigate(action, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(fields).toString(),
    });
  }

  /**
   * A request with the path sent byte for byte (no URL normalisation of `..`, `%2e` or `\\`), as a
   * hostile client would, with the cookies of the host.
   */
  rawCall(origin: string, rawPath: string): Promise<{ status: number; body: unknown }> {
    const url = new URL(origin);
    return new Promise((resolve, reject) => {
      const req = httpRequest(
        { host: url.hostname, port: url.port, path: rawPath, method: 'GET', headers: { cookie: this.#cookieHeader(url) ?? '' } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let body: unknown = text;
            try {
              body = JSON.parse(text);
            } catch {
              // not JSON
            }
            resolve({ status: res.statusCode ?? 0, body });
          });
        },
      );
      req.on('error', reject);
      req.end();
    });
  }

  /** A JSON/FHIR call from the app, with the cookies of its host. */
  async call(url: string, init: RequestInit = {}): Promise<{ status: number; body: unknown; response: Response }> {
    const response = await this.fetch(url, init);
    const text = await response.text();
    this.transcript.push(text, JSON.stringify([...response.headers]));
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: response.status, body, response };
  }
}
