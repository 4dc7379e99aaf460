import { describe, expect, it } from 'vitest';
import { cycles, importGraph, importsOf, sourceFiles } from './import-graph.js';

const FOLDERS = ['shared', 'functions', 'infra', 'local', 'cli'];

describe('import graph', () => {
  it('has no import cycle in shared/, functions/, infra/, local/ or cli/ (type-only and dynamic imports included)', () => {
    const files = FOLDERS.flatMap(sourceFiles);
    expect(files.length).toBeGreaterThan(50);

    const found = cycles(importGraph(files)).map((loop) => loop.join(' -> '));

    expect(found).toEqual([]);
  });

  it('reads static, type-only, re-export, side-effect and dynamic imports, and skips commented-out ones', () => {
    const text = [
      "import { a } from './a.js';",
      "import type { B } from '../b.js';",
      "export { c } from './c.js';",
      "export * from './d.js';",
      "import './e.js';",
      "const f = await import('./f.js');",
      "import {\n  g,\n  h,\n} from './gh.js';",
      "// import { x } from './commented.js';",
      "/* import { y } from './block.js'; */",
      "import { z } from 'zod';",
    ].join('\n');

    expect(importsOf(text).sort()).toEqual(['../b.js', './a.js', './c.js', './d.js', './e.js', './f.js', './gh.js']);
  });

  it('finds a cycle of three files and names it in order', () => {
    const graph = new Map([
      ['session.ts', ['launch.ts', 'records.ts']],
      ['launch.ts', ['proxy.ts']],
      ['proxy.ts', ['session.ts']],
      ['records.ts', []],
    ]);

    expect(cycles(graph)).toEqual([['launch.ts', 'proxy.ts', 'session.ts', 'launch.ts']]);
    expect(cycles(new Map([['a.ts', ['b.ts']], ['b.ts', []]]))).toEqual([]);
  });
});
