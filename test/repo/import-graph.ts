import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

/** The repository root (this file is test/repo/import-graph.ts). */
export const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '../..');

/** Every `.ts` file under a folder of the repository, as repository-relative paths. */
export function sourceFiles(folder: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      if (name === 'node_modules' || name.startsWith('.')) continue;
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(relative(ROOT, path));
    }
  };
  walk(join(ROOT, folder));
  return out.sort();
}

/**
 * The relative module specifiers a file imports: static `import ... from`, `export ... from`,
 * side-effect `import '...'` and dynamic `import('...')`. Type-only imports count too: a cycle of
 * types still means two files that cannot be understood one without the other.
 */
export function importsOf(text: string): string[] {
  const specifiers: string[] = [];
  const patterns = [
    /(?:^|[\s;])(?:import|export)\s[^'"`;]*?\sfrom\s*['"]([^'"]+)['"]/g,
    /(?:^|[\s;])import\s*['"]([^'"]+)['"]/g,
    /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g,
  ];
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  for (const pattern of patterns) {
    for (const match of code.matchAll(pattern)) specifiers.push(match[1]!);
  }
  return specifiers.filter((s) => s.startsWith('.'));
}

/** Resolves a relative `.js` specifier of an ESM TypeScript file to the `.ts` file it names. */
export function resolveSpecifier(from: string, specifier: string): string {
  const target = join(dirname(from), specifier);
  return target.replace(/\.js$/, '.ts');
}

export type Graph = Map<string, string[]>;

/** The import graph of the given files; edges to files outside the set are kept out. */
export function importGraph(files: string[]): Graph {
  const known = new Set(files);
  const graph: Graph = new Map();
  for (const file of files) {
    const targets = importsOf(readFileSync(join(ROOT, file), 'utf8'))
      .map((s) => resolveSpecifier(file, s))
      .filter((t) => known.has(t));
    graph.set(file, [...new Set(targets)]);
  }
  return graph;
}

/** Every cycle as a list of files (first file repeated at the end), found by Tarjan's strongly connected components. */
export function cycles(graph: Graph): string[][] {
  let index = 0;
  const indices = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const connect = (node: string) => {
    indices.set(node, index);
    low.set(node, index);
    index += 1;
    stack.push(node);
    onStack.add(node);
    for (const next of graph.get(node) ?? []) {
      if (!indices.has(next)) {
        connect(next);
        low.set(node, Math.min(low.get(node)!, low.get(next)!));
      } else if (onStack.has(next)) {
        low.set(node, Math.min(low.get(node)!, indices.get(next)!));
      }
    }
    if (low.get(node) === indices.get(node)) {
      const component: string[] = [];
      let member: string;
      do {
        member = stack.pop()!;
        onStack.delete(member);
        component.push(member);
      } while (member !== node);
      const selfLoop = (graph.get(node) ?? []).includes(node);
      if (component.length > 1 || selfLoop) components.push(component);
    }
  };
  for (const node of graph.keys()) if (!indices.has(node)) connect(node);
  return components.map((component) => pathThrough(graph, new Set(component)));
}

/** One concrete loop inside a strongly connected component, for a readable failure message. */
function pathThrough(graph: Graph, members: Set<string>): string[] {
  const start = [...members].sort()[0]!;
  const path = [start];
  const seen = new Set([start]);
  let node = start;
  for (;;) {
    const next = (graph.get(node) ?? []).filter((n) => members.has(n));
    const back = next.find((n) => n === start);
    if (back !== undefined && path.length > 1) return [...path, start];
    const fresh = next.find((n) => !seen.has(n));
    if (fresh === undefined) return [...path, next[0] ?? start];
    path.push(fresh);
    seen.add(fresh);
    node = fresh;
  }
}
