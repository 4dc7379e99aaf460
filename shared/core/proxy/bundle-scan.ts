/*
 * What the Bundle URL splice (`rewriteBody` in responses.ts) needs to know of a JSON answer, read off
 * its bytes without building it: whether it is JSON at all, whether it is a Bundle, and how many of its
 * `link[].url` and `entry[].fullUrl` values start with the EHR's base. `JSON.parse` answers the same
 * but builds every resource of the Bundle (about 90 KB of objects and strings for a 50-entry searchset,
 * garbage a moment later); this walk allocates nothing and checks the same grammar (RFC 8259, as
 * `JSON.parse` reads it).
 *
 * It answers `undefined` where it would have to guess (a `\u` or `\/` escape, which could spell a
 * key, `Bundle` or the base otherwise than in the bytes it compares; a key it looks for given twice,
 * where `JSON.parse` keeps the last; nesting deeper than it walks) and `'invalid'` for bytes that are not
 * JSON: the caller then parses, as before, so neither case changes what the client gets.
 */

/** The facts of a JSON answer: a Bundle or not, and its rewrite targets under the base. */
export interface BundleScan {
  readonly bundle: boolean;
  readonly targets: number;
}

/** Nesting the walk follows (recursion); deeper answers are left to `JSON.parse`. */
const MAX_DEPTH = 512;

/** Where a value sits, for the few places that matter. */
const enum Role {
  Other,
  Root,
  Links,
  Entries,
  Link,
  Entry,
}

const RESOURCE_TYPE = bytesOf('resourceType');
const LINK = bytesOf('link');
const ENTRY = bytesOf('entry');
const URL_KEY = bytesOf('url');
const FULL_URL = bytesOf('fullUrl');
const BUNDLE = bytesOf('Bundle');
const TRUE = bytesOf('true');
const FALSE = bytesOf('false');
const NULL = bytesOf('null');

function bytesOf(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

class Unsure extends Error {}
class Invalid extends Error {}
const UNSURE = new Unsure();
const INVALID = new Invalid();

/**
 * Scans `bytes` (UTF-8 JSON). `prefix` is the EHR's base plus `/`, ASCII without `"` or `\` (then,
 * with no `\u` or `\/` escape in the answer, a value starting with it shows it verbatim in the bytes).
 */
export function scanBundle(bytes: Uint8Array, prefix: Uint8Array): BundleScan | 'invalid' | undefined {
  const scanner = new Scanner(bytes, prefix);
  try {
    scanner.skipSpace();
    scanner.value(Role.Root, 0);
    scanner.skipSpace();
    if (scanner.at !== bytes.length) return 'invalid';
    return { bundle: scanner.bundle, targets: scanner.linkTargets + scanner.entryTargets };
  } catch (error) {
    if (error === INVALID) return 'invalid';
    if (error === UNSURE || error instanceof RangeError) return undefined;
    throw error;
  }
}

class Scanner {
  at = 0;
  bundle = false;
  linkTargets = 0;
  entryTargets = 0;
  readonly #b: Uint8Array;
  readonly #n: number;
  readonly #prefix: Uint8Array;

  constructor(bytes: Uint8Array, prefix: Uint8Array) {
    this.#b = bytes;
    this.#n = bytes.length;
    this.#prefix = prefix;
  }

  skipSpace(): void {
    const b = this.#b;
    let i = this.at;
    while (i < this.#n) {
      const c = b[i]!;
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else break;
    }
    this.at = i;
  }

  /** One value at `this.at` (no space before it); leaves `this.at` just after it. */
  value(role: Role, depth: number): void {
    if (depth > MAX_DEPTH) throw UNSURE;
    const c = this.#b[this.at];
    if (c === 0x7b) this.object(role, depth);
    else if (c === 0x5b) this.array(role, depth);
    else if (c === 0x22) this.string();
    else if (c === 0x74) this.literal(TRUE);
    else if (c === 0x66) this.literal(FALSE);
    else if (c === 0x6e) this.literal(NULL);
    else this.number();
  }

  literal(word: Uint8Array): void {
    const b = this.#b;
    const i = this.at;
    for (let k = 0; k < word.length; k++) if (b[i + k] !== word[k]) throw INVALID;
    this.at = i + word.length;
  }

  number(): void {
    const b = this.#b;
    let i = this.at;
    if (b[i] === 0x2d) i++;
    if (b[i] === 0x30) i++;
    else if (isDigit19(b[i])) {
      i++;
      while (isDigit(b[i])) i++;
    } else throw INVALID;
    if (b[i] === 0x2e) {
      i++;
      if (!isDigit(b[i])) throw INVALID;
      while (isDigit(b[i])) i++;
    }
    if (b[i] === 0x65 || b[i] === 0x45) {
      i++;
      if (b[i] === 0x2b || b[i] === 0x2d) i++;
      if (!isDigit(b[i])) throw INVALID;
      while (isDigit(b[i])) i++;
    }
    this.at = i;
  }

  /** A string at `this.at` (its opening quote); answers the index of its first content byte. */
  string(): number {
    const b = this.#b;
    const n = this.#n;
    const start = this.at + 1;
    let i = start;
    for (;;) {
      if (i >= n) throw INVALID;
      const c = b[i++]!;
      if (c === 0x22) break;
      if (c === 0x5c) {
        const e = b[i++];
        // `\u` and `\/` could spell a key, `Bundle` or the base another way than the bytes compared here.
        if (e === 0x75 || e === 0x2f) throw UNSURE;
        if (e !== 0x22 && e !== 0x5c && e !== 0x62 && e !== 0x66 && e !== 0x6e && e !== 0x72 && e !== 0x74) throw INVALID;
      } else if (c < 0x20) throw INVALID;
    }
    this.at = i;
    return start;
  }

  /** Whether the string whose content starts at `start` and ends before `end - 1` (its closing quote) is exactly `word`. */
  #is(start: number, end: number, word: Uint8Array): boolean {
    if (end - 1 - start !== word.length) return false;
    const b = this.#b;
    for (let k = 0; k < word.length; k++) if (b[start + k] !== word[k]) return false;
    return true;
  }

  /** Whether the string whose content starts at `start` (its end at `end`) starts with the prefix. */
  #underBase(start: number, end: number): boolean {
    const prefix = this.#prefix;
    if (end - 1 - start < prefix.length) return false;
    const b = this.#b;
    for (let k = 0; k < prefix.length; k++) if (b[start + k] !== prefix[k]) return false;
    return true;
  }

  object(role: Role, depth: number): void {
    const b = this.#b;
    this.at++;
    this.skipSpace();
    if (b[this.at] === 0x7d) {
      this.at++;
      return;
    }
    let seen = 0; // keys of interest met in this object (bits), to refuse duplicates
    for (;;) {
      if (b[this.at] !== 0x22) throw INVALID;
      const keyStart = this.string();
      const keyEnd = this.at;
      this.skipSpace();
      if (b[this.at] !== 0x3a) throw INVALID;
      this.at++;
      this.skipSpace();
      if (role === Role.Root) {
        if (this.#is(keyStart, keyEnd, RESOURCE_TYPE)) {
          if (seen & 1) throw UNSURE;
          seen |= 1;
          if (b[this.at] === 0x22) {
            const valueStart = this.string();
            this.bundle = this.#is(valueStart, this.at, BUNDLE);
          } else {
            this.value(Role.Other, depth + 1);
            this.bundle = false;
          }
        } else if (this.#is(keyStart, keyEnd, LINK)) {
          if (seen & 2) throw UNSURE;
          seen |= 2;
          this.value(Role.Links, depth + 1);
        } else if (this.#is(keyStart, keyEnd, ENTRY)) {
          if (seen & 4) throw UNSURE;
          seen |= 4;
          this.value(Role.Entries, depth + 1);
        } else this.value(Role.Other, depth + 1);
      } else if ((role === Role.Link && this.#is(keyStart, keyEnd, URL_KEY)) || (role === Role.Entry && this.#is(keyStart, keyEnd, FULL_URL))) {
        if (seen & 1) throw UNSURE;
        seen |= 1;
        if (b[this.at] === 0x22) {
          const valueStart = this.string();
          if (this.#underBase(valueStart, this.at)) {
            if (role === Role.Link) this.linkTargets++;
            else this.entryTargets++;
          }
        } else this.value(Role.Other, depth + 1);
      } else this.value(Role.Other, depth + 1);
      if (this.#closes(0x7d)) return;
    }
  }

  array(role: Role, depth: number): void {
    const b = this.#b;
    const element = role === Role.Links ? Role.Link : role === Role.Entries ? Role.Entry : Role.Other;
    this.at++;
    this.skipSpace();
    if (b[this.at] === 0x5d) {
      this.at++;
      return;
    }
    for (;;) {
      this.value(element, depth + 1);
      if (this.#closes(0x5d)) return;
    }
  }

  /** After a member or element: true past the closing `close`, false past a comma (and the space after it). */
  #closes(close: number): boolean {
    this.skipSpace();
    const c = this.#b[this.at];
    this.at++;
    if (c === close) return true;
    if (c !== 0x2c) throw INVALID;
    this.skipSpace();
    return false;
  }
}

const isDigit = (c: number | undefined): boolean => c !== undefined && c >= 0x30 && c <= 0x39;
const isDigit19 = (c: number | undefined): boolean => c !== undefined && c >= 0x31 && c <= 0x39;
