import { readFileSync } from 'node:fs';
import { SourceMap, type SourceMapPayload } from 'node:module';
import { relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * An error's stack as source-mapped frames, read when an error needs them rather than at every cold
 * start. The functions run without `--enable-source-maps` (with it, Node reads and parses a
 * bundle's map and scans its lines when the bundle loads: about 10 ms of a cold start); this reads a
 * frame's map (the `<file>.map` beside the bundle file) the first time a frame in that file is
 * mapped, once per file per container, with Node's own `SourceMap` (`node:module`).
 *
 * A frame is a function name and a position, nothing else: the stack's first line (the message,
 * which can carry data) is never part of the result, and a name that is not an identifier path is
 * left out.
 */

/** At most this many frames (V8 records 10 by default; more if `Error.stackTraceLimit` says so). */
export const MAX_FRAMES = 15;

/** `    at name (location)` or `    at location`. */
const FRAME = /^\s*at (?:(.+?) \((.+)\)|(.+))$/;
/** A location's file, line and column. */
const POSITION = /^(.+):(\d+):(\d+)$/;
/** A function name as V8 writes it: identifiers joined by dots, `<anonymous>`, `[as x]`, `async `/`new ` prefixes. */
const NAME = /^[\w$.<>[\]# ]{1,120}$/;

/** Each file's map, `null` when it has none or it cannot be read: once per file per container. */
const maps = new Map<string, SourceMap | null>();

function mapOf(file: string): SourceMap | null {
  let map = maps.get(file);
  if (map === undefined) {
    try {
      map = new SourceMap(JSON.parse(readFileSync(`${file}.map`, 'utf8')) as SourceMapPayload);
    } catch {
      map = null;
    }
    maps.set(file, map);
  }
  return map;
}

/**
 * A map's source as a path in the project: its `sources` are relative to the map's folder
 * (`../../shared/core/launch.ts`), so the leading `../` and `./` go, and a dependency's path starts at
 * its last `node_modules/` (a bundle built inside node_modules names it from its package: `zod/...`).
 */
export function projectPath(source: string): string {
  const path = source.replace(/^(?:\.\.?\/)+/, '');
  const inModules = path.lastIndexOf('node_modules/');
  return inModules >= 0 ? path.slice(inModules) : path;
}

/** A file as a frame shows it when it is not mapped: relative to the task folder, or from its package. */
function shownFile(file: string): string {
  const fromCwd = relative(process.cwd(), file);
  if (!fromCwd.startsWith('..')) return fromCwd;
  const inModules = file.lastIndexOf(`node_modules${sep}`);
  return inModules >= 0 ? file.slice(inModules) : file;
}

interface Frame {
  name: string | undefined;
  /** The location as written when it is not a file position (`native`, `<anonymous>`, `index 0`). */
  location: string;
  /** The file on disk, when the location is a file position of one (not `node:`, not eval). */
  file?: string;
  line?: number;
  column?: number;
}

function parse(line: string): Frame | undefined {
  const match = FRAME.exec(line);
  if (!match) return undefined;
  const rawName = match[1];
  const location = (match[2] ?? match[3])!;
  const name = rawName !== undefined && NAME.test(rawName) ? rawName : undefined;
  const position = POSITION.exec(location);
  if (!position) return { name, location };
  const [, where, lineText, columnText] = position;
  let file: string | undefined;
  if (where!.startsWith('file://')) {
    try {
      file = fileURLToPath(where!);
    } catch {
      file = undefined;
    }
  } else if (where!.startsWith('/')) file = where;
  return { name, location, file, line: Number(lineText), column: Number(columnText) };
}

/** The stack's frame lines, without its first line(s): the error's name and message. */
function frameLines(error: Error): string[] {
  const stack = typeof error.stack === 'string' ? error.stack : '';
  const header = error.message === '' ? error.name : `${error.name}: ${error.message}`;
  // The header can span lines (a message with newlines); when it is not where V8 wrote it, only the first line goes.
  const rest = stack.startsWith(header) ? stack.slice(header.length) : stack.slice(stack.indexOf('\n') + 1 || stack.length);
  return rest.split('\n').filter((line) => FRAME.test(line));
}

function render(frame: Frame, mapped?: { file: string; line: number; column: number }): string {
  const location = mapped
    ? `${mapped.file}:${mapped.line}:${mapped.column}`
    : frame.file !== undefined
      ? `${shownFile(frame.file)}:${frame.line}:${frame.column}`
      : frame.location;
  return frame.name ? `${frame.name} (${location})` : location;
}

/**
 * `error`'s stack frames (at most `MAX_FRAMES`), each in the source its file's map names
 * (`fn (shared/core/launch.ts:123:45)`); a frame whose file has no map, or whose position the map
 * does not cover, stays as generated (`index.mjs:1:23456`), and `node:` frames as they are. The
 * function name is the generated one: minified for a function or class (`Xe`, `Ks.get`), not for a
 * method or property (`get`). (Node's `SourceMap.findEntry` carries a name over to the entries after
 * it that have none, so a name read from the map could be another function's.) Never throws.
 */
export function mappedFrames(error: Error): string[] {
  try {
    const frames = frameLines(error)
      .slice(0, MAX_FRAMES)
      .map((line) => parse(line)!);
    return frames.map((frame) => {
      if (frame.file === undefined) return render(frame);
      const map = mapOf(frame.file);
      if (!map) return render(frame);
      const entry = map.findEntry(frame.line! - 1, frame.column! - 1) as Partial<{ generatedLine: number; originalSource: string; originalLine: number; originalColumn: number }>;
      // `findEntry` answers the nearest entry before the position, on an earlier line too: that is not this frame's.
      if (entry.generatedLine !== frame.line! - 1 || entry.originalSource === undefined || entry.originalLine === undefined || entry.originalColumn === undefined) return render(frame);
      return render(frame, { file: projectPath(entry.originalSource), line: entry.originalLine + 1, column: entry.originalColumn + 1 });
    });
  } catch {
    return [];
  }
}
