import { describe, expect, it } from 'vitest';
import { headerKey, multiValueHeader, requestHeaders, responseHeaders, singleHeader, type EventHeaders } from '../../shared/http/headers.js';

describe('header normalisation', () => {
  it('keys a header by its lower-case name', () => {
    expect(['Content-Type', 'X-Correlation-ID', 'accept'].map(headerKey)).toEqual(['content-type', 'x-correlation-id', 'accept']);
  });

  describe('requestHeaders', () => {
    it('merges the multi-value headers under lower-case names, repeated ones as lists in order', () => {
      // Arrange
      const event = {
        headers: { Accept: 'ignored when multi-value headers exist' },
        multiValueHeaders: { Accept: ['application/fhir+json'], 'X-Thing': ['a', 'b'], 'x-thing': ['c'], Empty: [] },
      };

      // Act
      const headers = requestHeaders(event);

      // Assert
      expect(headers).toEqual({ accept: ['application/fhir+json'], 'x-thing': ['a', 'b', 'c'] });
    });

    it('falls back to the single-value headers when API Gateway sent no multi-value ones', () => {
      expect(requestHeaders({ headers: { 'Content-Type': 'application/json', Prefer: undefined }, multiValueHeaders: null })).toEqual({
        'content-type': ['application/json'],
      });
      expect(requestHeaders({})).toEqual({});
    });

    it('keeps a header a client names __proto__ as one more entry, in either shape of the event', () => {
      // Built by JSON.parse, as the event reaches a handler: `__proto__` is an own key there.
      for (const event of [
        JSON.parse('{"headers":{"__proto__":"x","Accept":"application/fhir+json"}}') as EventHeaders,
        JSON.parse('{"multiValueHeaders":{"__proto__":["x"],"Accept":["application/fhir+json"]}}') as EventHeaders,
      ]) {
        const headers = requestHeaders(event);
        expect(Object.keys(headers)).toEqual(['__proto__', 'accept']);
        expect(Object.getOwnPropertyDescriptor(headers, '__proto__')?.value).toEqual(['x']);
        expect(headers.accept).toEqual(['application/fhir+json']);
      }
    });
  });

  it('finds a single-value header however it is spelled, and nothing when it is absent', () => {
    const headers = { 'X-Forwarded-For': '203.0.113.9', origin: undefined };
    expect(singleHeader(headers, 'x-forwarded-for')).toBe('203.0.113.9');
    expect(singleHeader(headers, 'X-FORWARDED-FOR')).toBe('203.0.113.9');
    expect(singleHeader(headers, 'Origin')).toBeUndefined();
    expect(singleHeader(null, 'origin')).toBeUndefined();
  });

  it('collects every value of a multi-value header across spellings', () => {
    expect(multiValueHeader({ Cookie: ['a=1'], cookie: ['b=2', 'c=3'], Accept: ['*/*'] }, 'cookie')).toEqual(['a=1', 'b=2', 'c=3']);
    expect(multiValueHeader(undefined, 'cookie')).toEqual([]);
  });

  it('lays out response headers for writeHead: lower-case names, strings, lists winning over single values', () => {
    // Act
    const headers = responseHeaders({ 'Content-Type': 'text/html', 'Cache-Control': 'no-store', 'X-Count': 3 }, { 'Set-Cookie': ['a=1', 'b=2'], 'cache-control': ['private'] });

    // Assert
    expect(headers).toEqual({ 'content-type': 'text/html', 'cache-control': ['private'], 'x-count': '3', 'set-cookie': ['a=1', 'b=2'] });
    expect(responseHeaders(undefined, undefined)).toEqual({});
  });
});
