/*
 * The FHIR proxy function's streaming budget: how large an answer it can stream before its timeout.
 * The streaming contract itself (prelude, response stream, `streamifyResponse`) is in
 * shared/http/streaming.ts, shared with the local runner.
 */

/**
 * What Lambda response streaming delivers in a given time: the first 6 MB go out unthrottled, then
 * about 2 MB/s (Lambda's documented bandwidth past 6 MB; API Gateway REST streams at the same pace).
 * Decimal megabytes, the conservative reading of both figures.
 */
export const STREAM_UNTHROTTLED_BYTES = 6_000_000;
export const STREAM_BYTES_PER_SECOND = 2_000_000;

/**
 * The largest body that can be streamed whole in `seconds`. An answer that would not make it before
 * the function times out is never started: the client gets a 502 RESPONSE_TOO_LARGE OperationOutcome
 * instead of a 200 cut mid-body. The same figure sizes the proxy function's timeout at synth.
 */
export function streamingCapBytes(seconds: number): number {
  return STREAM_UNTHROTTLED_BYTES + Math.floor(STREAM_BYTES_PER_SECOND * Math.max(0, seconds));
}

/** The seconds needed to stream `bytes` (0 within the unthrottled first 6 MB). */
export function streamingSecondsFor(bytes: number): number {
  return Math.max(0, bytes - STREAM_UNTHROTTLED_BYTES) / STREAM_BYTES_PER_SECOND;
}
