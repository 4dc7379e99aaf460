/*
 * JSON Patch (RFC 6902) for the sandbox's PATCH interaction: add, remove, replace, move, copy and
 * test, with JSON Pointers (RFC 6901). Applied to a copy; the original is never changed. A patch that
 * cannot be applied throws `JsonPatchError` (the FHIR server answers 422; a malformed patch, 400).
 */

export class JsonPatchError extends Error {
  /** True when the patch document itself is malformed (not an array of operations). */
  readonly malformed: boolean;
  constructor(message: string, malformed = false) {
    super(message);
    this.name = 'JsonPatchError';
    this.malformed = malformed;
  }
}

type Container = Record<string, unknown> | unknown[];

function isContainer(value: unknown): value is Container {
  return typeof value === 'object' && value !== null;
}

function parsePointer(pointer: unknown): string[] {
  if (typeof pointer !== 'string' || (pointer !== '' && !pointer.startsWith('/'))) {
    throw new JsonPatchError(`"${String(pointer)}" is not a JSON Pointer`, true);
  }
  return pointer === '' ? [] : pointer.slice(1).split('/').map((token) => token.replaceAll('~1', '/').replaceAll('~0', '~'));
}

function arrayIndex(array: unknown[], token: string, forInsert: boolean): number {
  if (forInsert && token === '-') {
    return array.length;
  }
  if (!/^(0|[1-9][0-9]*)$/.test(token)) {
    throw new JsonPatchError(`"${token}" is not an array index`);
  }
  const index = Number(token);
  if (index > array.length || (!forInsert && index === array.length)) {
    throw new JsonPatchError(`array index ${index} is out of bounds`);
  }
  return index;
}

/** The container holding the pointer's last token, and that token. */
function parentOf(document: unknown, path: string[]): { parent: Container; key: string } {
  if (path.length === 0) {
    throw new JsonPatchError('the whole document cannot be the target here');
  }
  let current = document;
  for (const token of path.slice(0, -1)) {
    if (Array.isArray(current)) {
      current = current[arrayIndex(current, token, false)];
    } else if (isContainer(current) && Object.hasOwn(current, token)) {
      current = (current as Record<string, unknown>)[token];
    } else {
      throw new JsonPatchError(`the path /${path.join('/')} does not exist`);
    }
  }
  if (!isContainer(current)) {
    throw new JsonPatchError(`the path /${path.join('/')} does not exist`);
  }
  return { parent: current, key: path[path.length - 1] ?? '' };
}

function get(document: unknown, path: string[]): unknown {
  let current = document;
  for (const token of path) {
    if (Array.isArray(current)) {
      current = current[arrayIndex(current, token, false)];
    } else if (isContainer(current) && Object.hasOwn(current, token)) {
      current = (current as Record<string, unknown>)[token];
    } else {
      throw new JsonPatchError(`the path /${path.join('/')} does not exist`);
    }
  }
  return current;
}

function add(document: unknown, path: string[], value: unknown): void {
  const { parent, key } = parentOf(document, path);
  if (Array.isArray(parent)) {
    parent.splice(arrayIndex(parent, key, true), 0, value);
  } else {
    parent[key] = value;
  }
}

function remove(document: unknown, path: string[]): unknown {
  const { parent, key } = parentOf(document, path);
  if (Array.isArray(parent)) {
    return parent.splice(arrayIndex(parent, key, false), 1)[0];
  }
  if (!Object.hasOwn(parent, key)) {
    throw new JsonPatchError(`the path /${path.join('/')} does not exist`);
  }
  const old = parent[key];
  delete parent[key];
  return old;
}

function equal(a: unknown, b: unknown): boolean {
  if (a === b) {
    return true;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((item, i) => equal(item, b[i]));
  }
  if (isContainer(a) && isContainer(b) && !Array.isArray(a) && !Array.isArray(b)) {
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every((key) => Object.hasOwn(b, key) && equal(a[key], b[key]));
  }
  return false;
}

/** Applies `patch` to a deep copy of `document` and returns the copy. */
export function applyJsonPatch<T>(document: T, patch: unknown): T {
  if (!Array.isArray(patch)) {
    throw new JsonPatchError('a JSON Patch is an array of operations', true);
  }
  const out = structuredClone(document) as unknown;
  for (const operation of patch) {
    if (!isContainer(operation) || Array.isArray(operation)) {
      throw new JsonPatchError('each JSON Patch operation is an object', true);
    }
    const path = parsePointer(operation.path);
    switch (operation.op) {
      case 'add':
        add(out, path, structuredClone(operation.value));
        break;
      case 'remove':
        remove(out, path);
        break;
      case 'replace':
        remove(out, path);
        add(out, path, structuredClone(operation.value));
        break;
      case 'move': {
        const from = parsePointer(operation.from);
        if (path.length > from.length && from.every((token, i) => token === path[i])) {
          throw new JsonPatchError('a value cannot be moved into itself');
        }
        add(out, path, remove(out, from));
        break;
      }
      case 'copy':
        add(out, path, structuredClone(get(out, parsePointer(operation.from))));
        break;
      case 'test':
        if (!equal(get(out, path), operation.value)) {
          throw new JsonPatchError(`test failed at /${path.join('/')}`);
        }
        break;
      default:
        throw new JsonPatchError(`unknown JSON Patch operation "${String(operation.op)}"`, true);
    }
  }
  return out as T;
}
