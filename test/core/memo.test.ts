import { describe, expect, it } from 'vitest';
import { boundedMemo } from '../../shared/core/memo.js';

describe('boundedMemo', () => {
  it('computes each key once and hands back the same value', () => {
    // Arrange
    const computed: string[] = [];
    const lengthOf = boundedMemo(4, (key) => {
      computed.push(key);
      return { length: key.length };
    });

    // Act
    const first = lengthOf('patient/*.rs');
    const again = lengthOf('patient/*.rs');
    const other = lengthOf('user/*.rs');

    // Assert
    expect(first).toBe(again);
    expect(other).toEqual({ length: 9 });
    expect(computed).toEqual(['patient/*.rs', 'user/*.rs']);
  });

  it('remembers at most max keys, forgetting them all when full', () => {
    // Arrange
    const computed: string[] = [];
    const same = boundedMemo(2, (key) => (computed.push(key), key));

    // Act
    for (const key of ['a', 'b', 'a', 'c', 'a', 'b']) same(key);

    // Assert: `c` found the memo full (a, b) and cleared it; then `a` and `b` were computed again.
    expect(computed).toEqual(['a', 'b', 'c', 'a', 'b']);
  });

  it('remembers neither a thrown error nor an undefined result', () => {
    // Arrange
    let calls = 0;
    const parse = boundedMemo(8, (key) => {
      calls += 1;
      if (key === 'bad') throw new TypeError('not a URL');
      return key === 'absent' ? undefined : key;
    });

    // Act
    expect(() => parse('bad')).toThrow(TypeError);
    expect(() => parse('bad')).toThrow(TypeError);
    expect(parse('absent')).toBeUndefined();
    expect(parse('absent')).toBeUndefined();
    expect(parse('kept')).toBe('kept');
    expect(parse('kept')).toBe('kept');

    // Assert
    expect(calls).toBe(5);
  });

  it('remembers false, so a refused value is not checked again', () => {
    // Arrange
    let calls = 0;
    const fits = boundedMemo(8, (key) => (calls++, key.length < 4));

    // Act
    fits('toolong');
    fits('toolong');

    // Assert
    expect(fits('toolong')).toBe(false);
    expect(calls).toBe(1);
  });
});
