import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { countTokenRequest, TokenEndpointFaultCounter } from '../faults.js';
import { readBody, sendJson } from '../http-util.js';
import { MAX_TOKEN_BODY_BYTES } from './state.js';
import type { AuthContext } from './state.js';

/**
 * Hands a request body the sandbox already read over to oidc-provider, which reads it again from the
 * request stream (lib/shared/selective_body.js: `req.readable`, then `req.iterator()`). Without this
 * it would fall back to `req.body` and print its "already parsed request body" warning.
 */
function replayBody(req: IncomingMessage, body: Buffer): void {
  const replay = Readable.from([body]);
  Object.defineProperties(req, {
    readable: { value: true, configurable: true },
    iterator: { value: replay.iterator.bind(replay), configurable: true },
    [Symbol.asyncIterator]: { value: replay[Symbol.asyncIterator].bind(replay), configurable: true },
  });
}

/*
 * Token endpoint faults. They are decided here, in front of oidc-provider, so that a faulted error
 * answer cannot have touched anything: the authorization code or refresh token presented is neither
 * consumed nor rotated, and a retry can succeed. Deciding by grant_type means reading the body
 * first; a request that is not answered here (other grant type, or only delayed) gets the same
 * bytes handed to oidc-provider (replayBody).
 */
export class TokenEndpointFaults {
  readonly #ctx: AuthContext;
  readonly #counter = new TokenEndpointFaultCounter();
  readonly #pendingDelays = new Set<{ timer?: NodeJS.Timeout; resolve: () => void }>();
  #disposed = false;

  constructor(ctx: AuthContext) {
    this.#ctx = ctx;
  }

  /** A token request while a token endpoint fault is set (tokenEndpointFaulted). */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { faults } = this.#ctx.options;
    let body: Buffer;
    try {
      body = await readBody(req, MAX_TOKEN_BODY_BYTES);
    } catch {
      this.#answer(res, 'unknown', 400, { error: 'invalid_request', error_description: 'the request body could not be read' });
      return;
    }
    const isForm = (req.headers['content-type'] ?? '').toLowerCase().startsWith('application/x-www-form-urlencoded');
    const grantType = (isForm ? new URLSearchParams(body.toString('utf8')).get('grant_type') : null) || 'unknown';

    if (faults.invalidClient === true) {
      this.#answer(res, grantType, 401, { error: 'invalid_client', error_description: 'client authentication failed (sandbox fault)' }, {
        'WWW-Authenticate': 'Basic realm="sandbox"',
      });
      return;
    }
    const action = this.#counter.take(faults, grantType);
    if (action.kind === 'answer') {
      this.#answer(res, grantType, action.status, action.body, action.headers);
      return;
    }
    if (action.kind === 'delay') {
      // A client that gives up meanwhile does not stop the request: like a slow real server, the
      // sandbox still processes it (a refresh still rotates) and the answer is lost.
      await this.#delay(action.ms);
      if (this.#disposed) {
        return;
      }
    }
    const hold = faults.tokenEndpointHold;
    if (hold !== undefined && (hold.grantTypes === undefined || hold.grantTypes.includes(grantType))) {
      hold.onHeld?.(grantType);
      await this.#held(hold.until);
      if (this.#disposed) {
        return;
      }
    }
    if (faults.malformedTokenResponse === true) {
      this.#answer(res, grantType, 200, { token_type: 'Bearer', expires_in: this.#ctx.currentAccessTokenTtl(), scope: '' });
      return;
    }
    replayBody(req, body);
    await this.#ctx.providerCallback(req, res);
  }

  /** An answer the sandbox gives instead of oidc-provider, counted like oidc-provider's own. */
  #answer(res: ServerResponse, grantType: string, status: number, body: Record<string, unknown>, headers: Record<string, string> = {}): void {
    countTokenRequest(this.#ctx.options.stats, grantType, status);
    sendJson(res, status, body, { 'Cache-Control': 'no-store', Pragma: 'no-cache', ...headers });
  }

  #delay(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const entry = {
        timer: setTimeout(() => {
          this.#pendingDelays.delete(entry);
          resolve();
        }, ms),
        resolve,
      };
      this.#pendingDelays.add(entry);
    });
  }

  /** Waits for a hold's `until` (settled either way), or for the sandbox to close. */
  #held(until: Promise<unknown>): Promise<void> {
    return new Promise((resolve) => {
      const entry = { resolve };
      this.#pendingDelays.add(entry);
      const done = () => {
        this.#pendingDelays.delete(entry);
        resolve();
      };
      until.then(done, done);
    });
  }

  /** Ends pending delays and holds without answering; called when the sandbox closes. */
  dispose(): void {
    this.#disposed = true;
    for (const entry of this.#pendingDelays) {
      clearTimeout(entry.timer);
      entry.resolve();
    }
    this.#pendingDelays.clear();
  }
}
