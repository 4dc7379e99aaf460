import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type BrowserContextOptions, type Page } from 'playwright-core';

/**
 * Debian's Chromium, as its headless shell where installed: the same engine (Blink, V8, the network
 * stack, site isolation, cookie partitioning) without the browser UI, which is what Playwright itself
 * runs for headless tests. It costs well under half the CPU of the full browser in headless mode, and
 * the browser tests are most of the suite's CPU. `.ci/run` installs both Debian packages
 * (`apt-get install -y chromium chromium-headless-shell`); with only `chromium` the tests run on it.
 * `CHROMIUM_PATH` picks another binary.
 */
const CANDIDATES = ['/usr/bin/chromium-headless-shell', '/usr/bin/chromium'];
export const CHROMIUM = process.env.CHROMIUM_PATH ?? CANDIDATES.find((path) => existsSync(path)) ?? CANDIDATES[1]!;
export const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) process.stderr.write(`browser tests skipped: no Chromium at ${CHROMIUM} (apt-get install -y chromium chromium-headless-shell)\n`);

/** Where the browser tests leave their screenshots. */
export const SCREENSHOTS = join(process.cwd(), '.data', 'screenshots');

/**
 * Leaves a picture of what `page` shows in SCREENSHOTS as `<name>.jpg`: the viewport as a JPEG, which
 * costs Chromium a fraction of a full-page PNG (every test that takes one runs in every `npm test`).
 */
export function screenshot(page: Page, name: string): Promise<Buffer> {
  return page.screenshot({ path: join(SCREENSHOTS, `${name}.jpg`), type: 'jpeg', quality: 70 });
}

/**
 * The window the tests' pages get: 800 by 600 CSS pixels instead of playwright's 1280 by 720, half the
 * pixels for the renderer to raster and the compositor to draw at every change and every screenshot.
 * Wide enough for the demo app's two-column layout (it folds into one below 40rem) and for the EHR
 * page's frame around it.
 */
const VIEWPORT = { width: 800, height: 600 };

/** A new context (its own cookies and storage) in `browser`, with the tests' viewport unless `options` names one. */
export function newContext(browser: Browser, options: BrowserContextOptions = {}): Promise<BrowserContext> {
  return browser.newContext({ viewport: VIEWPORT, ...options });
}

/**
 * How long a page may take to show what is expected: generous, as the machine may be busy. Every poll
 * is a round trip through the protocol into the page's renderer, paid in CPU by node and Chromium
 * alike, and more of them the busier the machine: polling the SDK's tests every 400 ms instead of 100 ms
 * saved about 1.5 s of CPU. 250 ms keeps most of that for at most 150 ms more wait per check.
 */
export const PAGE_SHOWS = { timeout: 20_000, interval: 250 };

/**
 * `--renderer-process-limit=1`: every launch crosses between the EHR's site and the app's several
 * times in one tab, and a browser-started or cross-site navigation otherwise starts a fresh renderer
 * (about 0.2 s of CPU each here); at the limit Chromium reuses a live renderer of the same context
 * instead (never one of another context). What a page can observe is unchanged: the headless shell
 * does not isolate sites by default (a frame of another site shares its parent's renderer, with or
 * without the limit; only the full browser, or `--site-per-process`, puts it out of process), and
 * under `--site-per-process` the limit still keeps each site in its own renderer.
 *
 * `--in-process-gpu`: with `--disable-gpu` the GPU process only runs the software display compositor
 * that draws every frame and screenshot; as a thread of the browser process it does the same work
 * without a process of its own and the hand-offs between the two (the SDK's tests, Chromium's CPU in two
 * interleaved pairs: 17.3 s without, 15.8 s with, both times).
 */
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync', '--renderer-process-limit=1', '--in-process-gpu'];

/**
 * The `--disable-features` list playwright-core (1.65) passes to Chromium. Chromium honours only the
 * last `--disable-features` switch, so adding a feature means passing this whole list with ours and
 * dropping playwright's own switch (`ignoreDefaultArgs`); should playwright's list change, its switch
 * stays in and ours, coming after it, still holds every feature named here.
 */
const PLAYWRIGHT_DISABLED_FEATURES = [
  'AvoidUnnecessaryBeforeUnloadCheckSync',
  'DestroyProfileOnBrowserClose',
  'HttpsUpgrades',
  'HttpsFirstBalancedModeAutoEnable',
  'LensOverlay',
  'MediaRouter',
  'PaintHolding',
  'ThirdPartyStoragePartitioning',
  'AvoidCorsURLLoaderRestartOnRedirect',
  'TcpPortRandomizationWin',
  'OptimizationHints',
  'NetworkTimeServiceQuerying',
  'AimEnabled',
  'PreconnectToSearch',
  'msForceBrowserSignIn',
  'msEdgeUpdateLaunchServicesPreferredVersion',
];
/**
 * Features the tests turn off as well. `SpareRendererForSitePerProcess`: Chromium keeps a started,
 * unused renderer process ready for the next navigation and starts a new one whenever it is taken or
 * belongs to another context; the tests open a context per test and cross between two sites (the EHR
 * on 127.0.0.1, the app on localhost) at every launch, so most spares are started only to be thrown
 * away. Without it a renderer starts when a navigation needs one; the process model otherwise and
 * cookie partitioning are unchanged.
 */
const DISABLED_FEATURES = [...PLAYWRIGHT_DISABLED_FEATURES, 'SpareRendererForSitePerProcess'];

/**
 * The `--enable-features` list playwright-core (1.65) passes, and the one the tests pass instead (the
 * same last-switch-wins rule as above). `CDPScreenshotNewSurface` makes every screenshot draw the
 * page afresh on a surface of its own instead of copying the frame the compositor already drew: 0.10 s
 * of CPU per screenshot against 0.07 s (40 screenshots of one page, twice each). The screenshots are
 * taken once the test's assertions on the page have passed, so the page is settled and the drawn
 * frame is the page; they are pictures for people, and no test reads them.
 */
const PLAYWRIGHT_ENABLED_FEATURES = ['CDPScreenshotNewSurface', 'SkipListAccountsWithoutGaiaCookies'];
const ENABLED_FEATURES = PLAYWRIGHT_ENABLED_FEATURES.filter((feature) => feature !== 'CDPScreenshotNewSurface');

let launched: Promise<Browser> | undefined;

/**
 * The worker's one Chromium, launched on first use. The stack project shares one module registry per
 * worker, so every browser file the worker runs gets the same browser; each test opens its own
 * context (its own cookies and storage), and `releaseBrowser` closes them when the file (or a section
 * of browser.test.ts) ends.
 * Playwright stops the browser when the worker process exits.
 */
export async function sharedBrowser(): Promise<Browser> {
  if (launched) {
    const browser = await launched.catch(() => undefined);
    if (browser?.isConnected()) return browser;
  }
  launched = chromium.launch({
    executablePath: CHROMIUM,
    args: [...ARGS, `--disable-features=${DISABLED_FEATURES.join(',')}`, `--enable-features=${ENABLED_FEATURES.join(',')}`],
    ignoreDefaultArgs: [`--disable-features=${PLAYWRIGHT_DISABLED_FEATURES.join(',')}`, `--enable-features=${PLAYWRIGHT_ENABLED_FEATURES.join(',')}`],
  });
  await mkdir(SCREENSHOTS, { recursive: true });
  return launched;
}

/** Closes every context the file or section left open (files run one at a time in a worker), keeping the browser. */
export async function releaseBrowser(browser: Browser | undefined): Promise<void> {
  if (!browser) return;
  await Promise.all(browser.contexts().map((context) => context.close().catch(() => undefined)));
}
