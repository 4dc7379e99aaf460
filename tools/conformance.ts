import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

/**
 * Regenerates the "covered by" columns of docs/conformance.md from the test titles that name each
 * requirement id or invariant. Everything else in the file is written by hand and kept as it is.
 * `npm run docs:conformance` writes the file; test/repo/conformance.test.ts fails when the
 * committed file differs from what this produces.
 */

export const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');
export const CONFORMANCE_PATH = join(ROOT, 'docs', 'conformance.md');

/** A requirement id as the tests and docs cite it: `SMART-AUTHZ-07`, `BFF-16`, `AWS-04`. */
export const REQUIREMENT_ID = /\b(?:SMART-[A-Z]+|BFF|BCP|CERT|EPIC|ORCL|MTCH|TRUB|OTH|AWS)-\d{2}\b/g;

/** The `.test.ts` files under test/, repository-relative, sorted. */
export function testFiles(root = ROOT): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.test.ts')) out.push(relative(root, path));
    }
  };
  walk(join(root, 'test'));
  return out.sort();
}

/**
 * The titles of `describe`, `it` and `test` calls in a test file (including `it.each(...)('title')`
 * and modifiers such as `.skip` or `.concurrent`), as written in the source.
 */
export function testTitles(source: string): string[] {
  const titles: string[] = [];
  const call = /(?:\b(?:describe|it|test)(?:\.(?:skip|only|concurrent|sequential|todo|fails))*|\))\(\s*(['"`])((?:\\.|(?!\1)[^\\])*)\1/g;
  for (const match of source.matchAll(call)) titles.push(match[2]!);
  return titles;
}

/**
 * The requirement ids a title names, with the shorthands used in titles expanded:
 * `SMART-FHIR-01/03` names 01 and 03, `SMART-CAUTH-04..06` names 04, 05 and 06.
 */
export function idsIn(text: string): string[] {
  const ids = new Set<string>();
  const withShorthand = /\b((?:SMART-[A-Z]+|BFF|BCP|CERT|EPIC|ORCL|MTCH|TRUB|OTH|AWS)-)(\d{2})((?:(?:\/|\.\.)\d{2})*)/g;
  for (const match of text.matchAll(withShorthand)) {
    const prefix = match[1]!;
    let previous = Number(match[2]);
    ids.add(`${prefix}${match[2]}`);
    for (const part of match[3]!.matchAll(/(\/|\.\.)(\d{2})/g)) {
      const n = Number(part[2]);
      if (part[1] === '..') for (let i = previous + 1; i <= n; i += 1) ids.add(`${prefix}${String(i).padStart(2, '0')}`);
      else ids.add(`${prefix}${part[2]}`);
      previous = n;
    }
  }
  return [...ids];
}

/** The invariant numbers a title names: "invariant 8", "invariants 2 and 6", "invariant 1, invariant 9". */
export function invariantsIn(text: string): number[] {
  const found = new Set<number>();
  for (const match of text.matchAll(/\binvariants?\s+(\d(?:\s*(?:,|and|&|\/)\s*\d)*)/gi)) {
    for (const n of match[1]!.matchAll(/\d/g)) found.add(Number(n[0]));
  }
  return [...found];
}

export interface Coverage {
  /** id or invariant number → test file (short form) → number of titles naming it. */
  readonly requirements: Map<string, Map<string, number>>;
  readonly invariants: Map<number, Map<string, number>>;
}

const shortName = (file: string) => file.replace(/^test\//, '').replace(/\.test\.ts$/, '');

export function scanCoverage(root = ROOT): Coverage {
  const requirements = new Map<string, Map<string, number>>();
  const invariants = new Map<number, Map<string, number>>();
  const count = <K>(map: Map<K, Map<string, number>>, key: K, file: string) => {
    const files = map.get(key) ?? new Map<string, number>();
    files.set(file, (files.get(file) ?? 0) + 1);
    map.set(key, files);
  };
  for (const file of testFiles(root)) {
    const name = shortName(file);
    for (const title of testTitles(readFileSync(join(root, file), 'utf8'))) {
      for (const id of idsIn(title)) count(requirements, id, name);
      for (const n of invariantsIn(title)) count(invariants, n, name);
    }
  }
  return { requirements, invariants };
}

function coveredBy(files: Map<string, number> | undefined): string {
  if (!files || files.size === 0) return '—';
  return [...files.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([file, n]) => `\`${file}\` (${n})`)
    .join(', ');
}

/** Splits a markdown table row into its cells (a `\|` inside a cell is not a separator). */
export function cells(row: string): string[] {
  return row
    .trim()
    .replace(/^\|/, '')
    .replace(/\|$/, '')
    .split(/(?<!\\)\|/)
    .map((cell) => cell.trim());
}

/** The whole of docs/conformance.md with every generated part recomputed from `coverage`. */
export function regenerate(markdown: string, coverage: Coverage): string {
  let total = 0;
  let covered = 0;
  const lines = markdown.split('\n').map((line) => {
    if (!line.startsWith('|')) return line;
    const row = cells(line);
    const first = row[0] ?? '';
    if (/^`?[A-Z]+(?:-[A-Z]+)?-\d{2}`?$/.test(first) && row.length === 5) {
      const id = first.replace(/`/g, '');
      total += 1;
      const files = coverage.requirements.get(id);
      if (files && files.size > 0) covered += 1;
      return `| ${row.slice(0, 4).join(' | ')} | ${coveredBy(files)} |`;
    }
    if (/^\d$/.test(first) && row.length === 3) {
      return `| ${row.slice(0, 2).join(' | ')} | ${coveredBy(coverage.invariants.get(Number(first)))} |`;
    }
    return line;
  });
  return lines
    .join('\n')
    .replace(/^(Requirement ids named by at least one test title: ).*$/m, `$1${covered} of ${total}.`);
}
