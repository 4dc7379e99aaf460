import { isIP } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import { applyFaultsPatch, FaultsPatchSchema, snapshotStats } from './faults.js';
import { applyQuirksPatch, QuirksPatchSchema } from './quirks.js';
import { readBody, sendJson } from './http-util.js';
import { BackchannelLogoutRequestSchema, type BackchannelLogoutRequest } from './auth/backchannel-logout.js';
import type { SandboxFaults, SandboxQuirks, SandboxStats } from './types.js';

/*
 * Admin endpoints for manual testing while the sandbox runs (`npm start`, `npm run sandbox`): read the
 * counters, switch faults, revoke a grant. Loopback only, and only for a loopback Host (a web page
 * reaching the sandbox through DNS rebinding carries its own host name); state-changing calls need a
 * JSON body, which a cross-site form cannot send.
 */

export const ADMIN_PATH = '/admin';

export interface AdminControls {
  readonly faults: SandboxFaults;
  /** Absent: `/admin/quirks` answers 404. */
  readonly quirks?: SandboxQuirks;
  readonly stats: SandboxStats;
  resetStats(): void;
  revokeGrantOf(token: string): Promise<void>;
  /** Absent: `/admin/backchannel-logout` answers 404. */
  sendBackchannelLogout?(request: BackchannelLogoutRequest): Promise<{ status: number; body: string; cacheControl: string | null }>;
}

const MAX_ADMIN_BODY_BYTES = 16 * 1024;
const NO_STORE = { 'Cache-Control': 'no-store' } as const;
const RevokeGrantSchema = z.strictObject({ token: z.string().min(1) });

function isLoopbackAddress(address: string | undefined): boolean {
  if (address === undefined) {
    return false;
  }
  const ip = address.startsWith('::ffff:') ? address.slice('::ffff:'.length) : address;
  return ip === '::1' || (isIP(ip) === 4 && ip.startsWith('127.'));
}

function isLoopbackHost(hostHeader: string | undefined): boolean {
  const hostname = hostHeader === undefined ? undefined : URL.parse(`http://${hostHeader}`)?.hostname;
  if (hostname === undefined) {
    return false;
  }
  return hostname === 'localhost' || hostname.endsWith('.localhost') || isLoopbackAddress(hostname.replace(/^\[|\]$/g, ''));
}

async function readJson(req: IncomingMessage): Promise<{ ok: true; value: unknown } | { ok: false; status: number; message: string }> {
  const type = (req.headers['content-type'] ?? '').toLowerCase();
  if (!type.startsWith('application/json')) {
    return { ok: false, status: 415, message: 'send a JSON body (Content-Type: application/json)' };
  }
  try {
    const text = (await readBody(req, MAX_ADMIN_BODY_BYTES)).toString('utf8');
    return { ok: true, value: text.trim() === '' ? {} : JSON.parse(text) };
  } catch (error) {
    return { ok: false, status: 400, message: `the body is not JSON: ${error instanceof Error ? error.message : String(error)}` };
  }
}

function methodNotAllowed(res: ServerResponse, allow: string): void {
  sendJson(res, 405, { error: 'method_not_allowed', allow }, { ...NO_STORE, Allow: allow });
}

/** Reads a JSON body valid against `schema`; answers the 4xx itself and returns `undefined` otherwise. */
async function readValid<P>(req: IncomingMessage, res: ServerResponse, schema: z.ZodType<P>): Promise<P | undefined> {
  const body = await readJson(req);
  if (!body.ok) {
    sendJson(res, body.status, { error: 'invalid_request', message: body.message }, NO_STORE);
    return undefined;
  }
  const parsed = schema.safeParse(body.value);
  if (!parsed.success) {
    sendJson(res, 400, { error: 'invalid_request', message: z.prettifyError(parsed.error) }, NO_STORE);
    return undefined;
  }
  return parsed.data;
}

/**
 * `GET` answers the switches in force; `POST` validates a JSON patch with `schema`, applies it, and
 * answers the result. The same for every set of switches (faults, quirks).
 */
async function getOrPatch<T extends object, P>(
  req: IncomingMessage,
  res: ServerResponse,
  target: T,
  schema: z.ZodType<P>,
  apply: (target: T, patch: P) => void,
): Promise<void> {
  if (req.method === 'GET') {
    sendJson(res, 200, target, NO_STORE);
    return;
  }
  if (req.method !== 'POST') {
    methodNotAllowed(res, 'GET, POST');
    return;
  }
  const patch = await readValid(req, res, schema);
  if (patch === undefined) return;
  apply(target, patch);
  sendJson(res, 200, target, NO_STORE);
}

/** Answers `/admin/*`; `subPath` is the path below `/admin`. */
export async function handleAdmin(req: IncomingMessage, res: ServerResponse, subPath: string, controls: AdminControls): Promise<void> {
  if (!isLoopbackAddress(req.socket.remoteAddress) || !isLoopbackHost(req.headers.host)) {
    sendJson(res, 403, { error: 'forbidden', message: 'the sandbox admin endpoints answer loopback requests only' }, NO_STORE);
    return;
  }
  switch (subPath) {
    case '/stats':
      if (req.method !== 'GET') {
        methodNotAllowed(res, 'GET');
        return;
      }
      sendJson(res, 200, snapshotStats(controls.stats), NO_STORE);
      return;
    case '/stats/reset':
      if (req.method !== 'POST') {
        methodNotAllowed(res, 'POST');
        return;
      }
      controls.resetStats();
      sendJson(res, 200, snapshotStats(controls.stats), NO_STORE);
      return;
    case '/faults':
      await getOrPatch(req, res, controls.faults, FaultsPatchSchema, applyFaultsPatch);
      return;
    case '/quirks':
      if (controls.quirks === undefined) {
        sendJson(res, 404, { error: 'not_found', message: `nothing is served at ${ADMIN_PATH}${subPath}` }, NO_STORE);
        return;
      }
      await getOrPatch(req, res, controls.quirks, QuirksPatchSchema, applyQuirksPatch);
      return;
    case '/revoke-grant': {
      if (req.method !== 'POST') {
        methodNotAllowed(res, 'POST');
        return;
      }
      const request = await readValid(req, res, RevokeGrantSchema);
      if (request === undefined) return;
      try {
        await controls.revokeGrantOf(request.token);
      } catch (error) {
        sendJson(res, 404, { error: 'not_found', message: error instanceof Error ? error.message : String(error) }, NO_STORE);
        return;
      }
      res.writeHead(204, NO_STORE);
      res.end();
      return;
    }
    case '/backchannel-logout': {
      if (controls.sendBackchannelLogout === undefined) {
        sendJson(res, 404, { error: 'not_found', message: `nothing is served at ${ADMIN_PATH}${subPath}` }, NO_STORE);
        return;
      }
      if (req.method !== 'POST') {
        methodNotAllowed(res, 'POST');
        return;
      }
      const request = await readValid(req, res, BackchannelLogoutRequestSchema);
      if (request === undefined) return;
      try {
        sendJson(res, 200, { receiver: await controls.sendBackchannelLogout(request) }, NO_STORE);
      } catch (error) {
        sendJson(res, 400, { error: 'invalid_request', message: error instanceof Error ? error.message : String(error) }, NO_STORE);
      }
      return;
    }
    default:
      sendJson(res, 404, { error: 'not_found', message: `nothing is served at ${ADMIN_PATH}${subPath}` }, NO_STORE);
  }
}
