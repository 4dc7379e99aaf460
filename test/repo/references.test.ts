import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { idsIn } from '../../tools/conformance.js';
import { ROOT } from './import-graph.js';

/*
 * Every reference in the repository resolves inside it: cited documents and source or test files exist, requirement ids are
 * rows of docs/conformance.md, "invariant N" and "docs/design.md §N" exist in docs/design.md, and
 * nothing points at development tracking ("issue" numbers) or at documents kept elsewhere.
 */

const SKIP_DIRS = new Set(['node_modules', '.git', 'cdk.out', '.data', 'coverage', 'results']);
const TEXT = /\.(ts|js|mjs|cjs|md|json|html|css|ya?ml|sh|txt)$|^run$/;

function repoFiles(dir = ROOT): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    if (SKIP_DIRS.has(name)) continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...repoFiles(path));
    else if (TEXT.test(name) && name !== 'package-lock.json') out.push(relative(ROOT, path));
  }
  return out.sort();
}

const files = repoFiles();
const basenames = new Set(files.map((f) => basename(f)));
const conformance = readFileSync(join(ROOT, 'docs/conformance.md'), 'utf8');
const knownIds = new Set([...conformance.matchAll(/^\| `([A-Z]+(?:-[A-Z]+)?-\d{2})` \|/gm)].map((m) => m[1]!));
const design = readFileSync(join(ROOT, 'docs/design.md'), 'utf8');
const invariantsSection = design.slice(design.indexOf('## 4. Invariants'), design.indexOf('## 5.'));
const knownInvariants = new Set([...invariantsSection.matchAll(/^(\d)\. \*\*/gm)].map((m) => Number(m[1])));
const designSections = new Set([...design.matchAll(/^## (\d+)\. /gm)].map((m) => Number(m[1])));

/** Text with URLs removed: a link to a page elsewhere is not a reference to a repository document. */
const withoutUrls = (text: string) => text.replace(/\bhttps?:\/\/[^\s)>\]'"`]+/g, ' ');

export interface Finding {
  readonly file: string;
  readonly line: number;
  readonly problem: string;
}

// The names of documents kept outside the repository, spelled so this file does not cite them.
const OUTSIDE_DOCUMENTS = ['DES' + 'IGN', 'STY' + 'LE', 'STA' + 'CK', 'SMART-CHECK' + 'LIST'];
const OUTSIDE = new RegExp(`\\b(?:${OUTSIDE_DOCUMENTS.join('|')})(?:\\.md)?\\b(?![_-])`);
const ISSUE = new RegExp('\\b(?:issue|ticket)s?\\s*#\\s*\\d+', 'i');
// A numbered note of a document kept elsewhere ("Gotcha N", "point N of ..."): say the thing itself instead.
const NUMBERED_NOTE = new RegExp('\\b(?:gotcha|point)\\s*#?\\s*\\d+\\b', 'i');

const TOP_FOLDERS = ['bench', 'cli', 'docs', 'functions', 'infra', 'local', 'sdk', 'shared', 'test', 'tools'];
/** A path under a top-level folder to a TypeScript, Markdown or JSON file (served `.js` URLs are not files). */
const REPO_PATH = new RegExp(`(?<![\\w./-])(?:${TOP_FOLDERS.join('|')})/[A-Za-z0-9_./-]*[A-Za-z0-9_-]\\.(?:ts|mts|md|json)\\b`, 'g');

/** What a file's text cites that does not resolve inside the repository. */
export function findDangling(file: string, text: string): Finding[] {
  const findings: Finding[] = [];
  text.split('\n').forEach((raw, index) => {
    const line = withoutUrls(raw);
    const at = (problem: string) => findings.push({ file, line: index + 1, problem });
    const outside = line.match(OUTSIDE);
    if (outside) at(`cites "${outside[0]}", a document outside the repository`);
    const issue = line.match(ISSUE);
    if (issue) at(`cites "${issue[0]}"`);
    const note = line.match(NUMBERED_NOTE);
    if (note) at(`cites "${note[0]}", a numbered note kept outside the repository`);
    for (const match of line.matchAll(/[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md\b/g)) {
      const cited = match[0];
      const candidates = [resolve(ROOT, dirname(file), cited), resolve(ROOT, cited)];
      if (!candidates.some((c) => existsSync(c)) && !basenames.has(basename(cited))) at(`cites ${cited}, which is not in the repository`);
    }
    // A source, test or document path from the top of the repository (`test/core/proxy.test.ts`,
    // `shared/runtime/deadline.ts`), as docs and comments name the code that proves or does a thing.
    for (const match of line.matchAll(REPO_PATH)) {
      // What a run writes (bench/results/, .data/, cdk.out/) is not in a fresh clone.
      if (match[0].split('/').some((segment) => SKIP_DIRS.has(segment))) continue;
      if (!existsSync(resolve(ROOT, match[0]))) at(`cites ${match[0]}, which is not in the repository`);
    }
    for (const id of idsIn(line)) if (!knownIds.has(id)) at(`cites ${id}, which is not a row of docs/conformance.md`);
    for (const match of line.matchAll(/\binvariants?\s+(\d+(?:\s*(?:,|and|&|\/)\s*\d+)*)/gi)) {
      for (const n of match[1]!.matchAll(/\d+/g)) if (!knownInvariants.has(Number(n[0]))) at(`cites invariant ${n[0]}, which docs/design.md does not define`);
    }
    for (const match of line.matchAll(/design\.md\s*§\s*(\d+)/g)) {
      if (!designSections.has(Number(match[1]))) at(`cites docs/design.md §${match[1]}, which has no such section`);
    }
  });
  return findings;
}

describe('references resolve inside the repository', () => {
  it('docs/design.md defines invariants 1 to 9 and docs/conformance.md has the requirement ids', () => {
    expect([...knownInvariants]).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(knownIds.size).toBeGreaterThanOrEqual(186);
  });

  it('no file cites a missing document, an issue number, an unknown requirement id, invariant or design section', () => {
    expect(files.length).toBeGreaterThan(100);
    const findings = files.flatMap((file) => findDangling(file, readFileSync(join(ROOT, file), 'utf8')));

    expect(findings.map((f) => `${f.file}:${f.line}: ${f.problem}`)).toEqual([]);
  });

  it('flags each kind of dangling reference, and accepts what resolves', () => {
    const sample = [
      `see ${OUTSIDE_DOCUMENTS[0]}.md §2`,
      `(${OUTSIDE_DOCUMENTS[1]} §4)`,
      'fixed in iss' + 'ue #4',
      'Go' + 'tcha 5: the default issues no refresh token',
      'as in po' + 'int 3 of the list',
      // Split so that this file's own source cites none of them.
      'see docs/nowhere' + '.md',
      'covers SMART-AUTHZ-' + '99',
      'keeps invariant ' + '12',
      'budgets: docs/design.md §' + '9',
      'proved by test/browser/gone' + '.test.ts',
      // These resolve:
      'see docs/design.md §5 and [the table](conformance.md#registration) and infra/README.md',
      'SMART-AUTHZ-07, SMART-FHIR-01/03 and invariant 8; https://example.org/elsewhere.md',
      'STACK_OPTIONS_SUFFIX, SMART_STYLE',
      'see shared/runtime/deadline.ts and test/repo/references.test.ts; sdk/dist/index.js is built',
      'a run writes bench/results/latest.json',
    ].join('\n');

    const found = [...new Set(findDangling('docs/design.md', sample).map((f) => f.line))];

    expect(found).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });
});
