/**
 * `compute` remembered per key, for at most `max` keys (all forgotten at once when full): for the
 * checks and parses of values that come back on every request of a session (an issuer's stored
 * endpoints, a granted scope, a FHIR base, an audit fact). `compute` must depend on its key alone,
 * and what it returns is only read, never changed. A thrown error or an `undefined` result is not
 * remembered.
 */
export function boundedMemo<V>(max: number, compute: (key: string) => V): (key: string) => V {
  const remembered = new Map<string, V>();
  return (key) => {
    let value = remembered.get(key);
    if (value === undefined) {
      value = compute(key);
      if (value !== undefined) {
        if (remembered.size >= max) remembered.clear();
        remembered.set(key, value);
      }
    }
    return value;
  };
}
