import { Logger } from '@aws-lambda-powertools/logger';

/**
 * Structured JSON logs (Powertools). Every line carries the correlation id of its request. What is
 * logged is chosen field by field at the call sites: codes, statuses, durations, hashed keys; never
 * tokens, codes, cookies, session ids, query strings, bodies or patient identifiers.
 */
export function createLogger(serviceName: string): Logger {
  return new Logger({ serviceName, logLevel: (process.env.LOG_LEVEL as 'INFO' | undefined) ?? 'INFO' });
}
