import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './import-graph.js';

/** Folders that are not part of the source tree (installed, generated or local data). */
const NOT_SOURCE = new Set(['node_modules', 'cdk.out', 'coverage', 'results']);

const folders = (dir: string) =>
  readdirSync(join(ROOT, dir), { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && !entry.name.startsWith('.') && !NOT_SOURCE.has(entry.name))
    .map((entry) => `${dir === '' ? '' : `${dir}/`}${entry.name}/`)
    .sort();

/** The folders named in the first column of the README's Layout table. */
function layoutRows(): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Layout'), readme.indexOf('\n## ', readme.indexOf('## Layout') + 1));
  return [...section.matchAll(/^\| ([^|]+) \|/gm)].flatMap((row) => [...row[1]!.matchAll(/`([^`]+\/)`/g)].map((m) => m[1]!));
}

describe('README layout table', () => {
  it('lists every top-level folder and every shared/ subfolder, and no folder that does not exist', () => {
    // Arrange
    const actual = [...folders(''), ...folders('shared')].filter((folder) => folder !== 'shared/');
    const listed = layoutRows();

    // Assert
    expect(listed.length).toBeGreaterThan(10);
    expect([...new Set(listed)].sort()).toEqual(actual.sort());
  });
});
