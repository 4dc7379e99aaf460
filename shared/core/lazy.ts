/**
 * A value built on first use that stands in for it until then: every read, write and `in` goes to
 * the built value. For the zod schemas of the core: zod builds each schema's machinery when it is
 * constructed, which at module load costs every cold start, while most schemas serve only some of a
 * function's routes (the token response only the callback and refreshes, the CapabilityStatement
 * only SMART v1 EHRs). Types, names and behaviour stay those of the value.
 */
export function builtOnFirstUse<T extends object>(build: () => T): T {
  let built: T | undefined;
  const value = (): T => (built ??= build());
  return new Proxy(Object.create(null) as T, {
    get: (_, property) => Reflect.get(value(), property),
    set: (_, property, newValue) => Reflect.set(value(), property, newValue),
    has: (_, property) => Reflect.has(value(), property),
    getPrototypeOf: () => Reflect.getPrototypeOf(value()),
  });
}
