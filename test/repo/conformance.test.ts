import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { cells, CONFORMANCE_PATH, idsIn, invariantsIn, regenerate, scanCoverage, testTitles } from '../../tools/conformance.js';

const committed = readFileSync(CONFORMANCE_PATH, 'utf8');
const requirementRows = committed.split('\n').filter((line) => /^\| `[A-Z]+(?:-[A-Z]+)?-\d{2}` \|/.test(line));

describe('docs/conformance.md', () => {
  it('is up to date with the test titles (run npm run docs:conformance after adding or renaming tests)', () => {
    expect(regenerate(committed, scanCoverage())).toBe(committed);
  });

  it('has one row per requirement id, each with a level, our statement and a source', () => {
    const ids = requirementRows.map((row) => cells(row)[0]!.replace(/`/g, ''));

    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.length).toBeGreaterThanOrEqual(186);
    for (const row of requirementRows) {
      const [, level, requirement, source] = cells(row);
      expect(level, row).toMatch(/^(MUST|SHOULD|MAY|DERIVED|INFO|MUST NOT)\b/);
      expect(requirement!.length, row).toBeGreaterThan(10);
      expect(source!.length, row).toBeGreaterThan(3);
    }
  });

  it('lists the nine invariants, in order', () => {
    const numbers = committed.split('\n').filter((line) => /^\| \d \|/.test(line)).map((line) => Number(cells(line)[0]));
    expect(numbers).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });
});

describe('the coverage scanner', () => {
  it('reads describe, it, test, it.each and modifier titles in any quote style', () => {
    // Written with # for - and @ for a, so that this file's own source names no requirement id or invariant.
    const source = [
      "describe('outer (SMART#CB#01)', () => {",
      '  it("double quoted", () => {});',
      '  it.each([[1], [2]])(`each %s (BFF#02)`, () => {});',
      "  it.skip('skipped (inv@riant 3)', () => {});",
      "  test.concurrent('concurrent \\'quoted\\' (AWS#04)', async () => {});",
      "  const notATitle = fn('SMART#CB#02');",
      '});',
    ]
      .join('\n')
      .replace(/#/g, '-')
      .replace(/@/g, 'a');

    expect(testTitles(source)).toEqual(['outer (SMART-CB-01)', 'double quoted', 'each %s (BFF-02)', 'skipped (invariant 3)', "concurrent \\'quoted\\' (AWS-04)"]);
  });

  it('expands the id shorthands used in titles', () => {
    expect(idsIn('x (SMART-FHIR-01/03, BFF-12..14; AWS-06)').sort()).toEqual(['AWS-06', 'BFF-12', 'BFF-13', 'BFF-14', 'SMART-FHIR-01', 'SMART-FHIR-03']);
    expect(idsIn('no ids (SMART-REFRESH), BFF-1')).toEqual([]);
  });

  it('reads invariant numbers, alone or listed', () => {
    expect(invariantsIn('(invariant 8)')).toEqual([8]);
    expect(invariantsIn('(invariants 2 and 6; Invariant 9)').sort()).toEqual([2, 6, 9]);
    expect(invariantsIn('no invariant here')).toEqual([]);
  });

  it('regenerates only the covered-by cells and the summary line', () => {
    const doc = [
      'Requirement ids named by at least one test title: old.',
      '| id | level | requirement | source | covered by |',
      '| `BFF-02` | MUST | Cookie is `Secure` \\| `HttpOnly`. | BFF draft | stale |',
      '| `BFF-03` | SHOULD | Strict. | BFF draft | stale |',
      '| 8 | one refresh | stale |',
    ].join('\n');
    const coverage = {
      requirements: new Map([['BFF-02', new Map([['http/cookies', 2], ['core/launch', 1]])]]),
      invariants: new Map([[8, new Map([['core/refresh', 4]])]]),
    };

    expect(regenerate(doc, coverage).split('\n')).toEqual([
      'Requirement ids named by at least one test title: 1 of 2.',
      '| id | level | requirement | source | covered by |',
      '| `BFF-02` | MUST | Cookie is `Secure` \\| `HttpOnly`. | BFF draft | `core/launch` (1), `http/cookies` (2) |',
      '| `BFF-03` | SHOULD | Strict. | BFF draft | — |',
      '| 8 | one refresh | `core/refresh` (4) |',
    ]);
  });
});
