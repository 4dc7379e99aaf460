import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ScanCommand } from '@aws-sdk/client-dynamodb';
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { startLocalStack, type LocalStack, type LocalStackOptions } from '../../local/stack.js';
import { sandboxSigningKey, seedSigningKeys } from '../fixtures/keys.js';
import { BrowserClient, type Navigation } from './browser-client.js';

export interface Observed {
  /** Secrets seen on the wire between the API and the EHR (never by the browser). */
  readonly secrets: Set<string>;
  readonly requests: string[];
  /** Successful token endpoint answers, in order (for tests that act as the EHR's administrator). */
  readonly tokenResponses: Array<Record<string, unknown>>;
}

/**
 * Wraps the real fetch to watch (not replace) what the API sends to and receives from the EHR: the
 * tokens, code and PKCE verifier it handles, so tests can prove none of them leaks anywhere.
 */
export function watchingFetch(observed: Observed): typeof fetch {
  return async (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    observed.requests.push(url);
    if (typeof init?.body === 'string') {
      const form = new URLSearchParams(init.body);
      for (const name of ['code', 'code_verifier', 'refresh_token']) {
        const value = form.get(name);
        if (value) observed.secrets.add(value);
      }
    }
    const authorization = new Headers(init?.headers).get('authorization');
    if (authorization) observed.secrets.add(authorization.replace(/^(Basic|Bearer)\s+/i, ''));
    const response = await fetch(input, init);
    if (/\/token$/.test(new URL(url).pathname) && response.ok) {
      const body = (await response.clone().json()) as Record<string, unknown>;
      observed.tokenResponses.push(body);
      for (const name of ['access_token', 'refresh_token', 'id_token']) {
        if (typeof body[name] === 'string') observed.secrets.add(body[name] as string);
      }
    }
    return response;
  };
}

export interface Fixture {
  readonly stack: LocalStack;
  readonly dataDir: string;
  readonly observed: Observed;
  close(): Promise<void>;
}

export interface FixtureSetup {
  /**
   * Seeds the data folder with the `n`th pooled test signing keys (test/fixtures/keys.ts), so the
   * local signer loads keys instead of generating an RSA 3072 key on first use; for files that test
   * signing with the keys, not their generation.
   */
  readonly seededSigningKeys?: number;
}

export async function startFixture(options: Partial<LocalStackOptions> = {}, dataDir?: string, setup: FixtureSetup = {}): Promise<Fixture> {
  const dir = dataDir ?? (await mkdtemp(join(tmpdir(), 'smart-launch-it-')));
  if (setup.seededSigningKeys !== undefined) await seedSigningKeys(dir, setup.seededSigningKeys);
  const observed: Observed = { secrets: new Set(), requests: [], tokenResponses: [] };
  const stack = await startLocalStack({
    port: 0,
    sandboxPort: 0,
    dataDir: dir,
    sandbox: true,
    http: watchingFetch(observed),
    // A pooled key for the sandbox EHR instead of an RSA key generation per start.
    sandboxSigningKey: await sandboxSigningKey(),
    // A throwaway data folder is never reopened: its DynamoDB store can live in memory. A folder the
    // caller keeps (a restart) keeps the store on disk, as `npm start` does.
    inMemoryStore: dataDir === undefined,
    ...options,
  });
  return {
    stack,
    dataDir: dir,
    observed,
    async close() {
      await stack.close();
      if (dataDir === undefined) await rm(dir, { recursive: true, force: true });
    },
  };
}

export function sessionIdFrom(navigation: Navigation): string {
  const location = navigation.finalLocation;
  if (!location) throw new Error(`the launch did not end at the app: last hop ${JSON.stringify(navigation.hops.at(-1))}\n${navigation.body.slice(0, 500)}`);
  const id = new URL(location).hash.match(/^#session=([A-Za-z0-9_-]+)$/)?.[1];
  if (!id) throw new Error(`no session id in ${location}`);
  return id;
}

/** Runs an EHR launch for a patient from the sandbox EHR page's "Launch app" link. */
export async function ehrLaunch(fixture: Fixture, browser: BrowserClient, patient: string): Promise<Navigation> {
  const sandbox = fixture.stack.sandbox;
  if (!sandbox) throw new Error('no sandbox');
  return browser.navigate(`${sandbox.url}/ehr/launch?patient=${encodeURIComponent(patient)}`);
}

/** Runs a standalone launch and signs in at the sandbox as the given patient. */
export async function standaloneLaunch(fixture: Fixture, browser: BrowserClient, patient: string, launchPath = '/launch'): Promise<Navigation> {
  const login = await browser.navigate(`${fixture.stack.apiUrl}${launchPath}`);
  const action = login.body.match(/<form method="post" action="([^"]+\/login)">/)?.[1];
  if (!action) throw new Error(`no login form at ${login.url}: ${login.body.slice(0, 300)}`);
  return browser.submitForm(new URL(action.replace(/&#(\d+);/g, (_, c: string) => String.fromCharCode(Number(c))), login.url).href, {
    account: `patient-${patient}`,
  });
}

export type Item = Record<string, AttributeValue>;

/** Every item in the local table (a full scan, as a curious operator would do). */
export async function scanTable(fixture: Fixture): Promise<Item[]> {
  const out = await fixture.stack.dynamo.client.send(new ScanCommand({ TableName: fixture.stack.dynamo.tableName, ConsistentRead: true }));
  return out.Items ?? [];
}

/** The text of every attribute of every item, strings as they are and binaries both raw and base64. */
export function itemTexts(items: Item[]): string[] {
  const texts: string[] = [];
  for (const item of items) {
    for (const value of Object.values(item)) {
      if (value.S !== undefined) texts.push(value.S);
      if (value.N !== undefined) texts.push(value.N);
      if (value.B !== undefined) texts.push(Buffer.from(value.B).toString('latin1'), Buffer.from(value.B).toString('base64'));
    }
  }
  return texts;
}
