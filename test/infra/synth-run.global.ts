import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    /** A folder of this test run where the one shared `cdk synth` writes (see shared-synth.ts). */
    smartLaunchSynthRun: string;
  }
}

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const KEY = Symbol.for('smart-launch.synth-run');
type Shared = { dir: string; users: number };

/**
 * Global setup of the infra and integration projects: one run folder for the whole `vitest run`,
 * shared by both projects (they run in this one main process, so `globalThis` is common to them).
 * Nothing is synthesized here: the first test file that needs the synth runs it (shared-synth.ts),
 * so a run that selects neither the synth test nor the rehearsal pays nothing. The folder is inside
 * the project so the bundles resolve the AWS SDK (external, as Lambda provides it) from node_modules.
 */
export default function setup(project: TestProject): () => void {
  const scope = globalThis as { [KEY]?: Shared };
  if (!scope[KEY]) {
    const cache = join(ROOT, 'node_modules', '.cache');
    mkdirSync(cache, { recursive: true });
    scope[KEY] = { dir: mkdtempSync(join(cache, 'smart-launch-synth-')), users: 0 };
  }
  const shared = scope[KEY];
  shared.users += 1;
  project.provide('smartLaunchSynthRun', shared.dir);
  return () => {
    shared.users -= 1;
    if (shared.users === 0) {
      rmSync(shared.dir, { recursive: true, force: true });
      delete scope[KEY];
    }
  };
}
