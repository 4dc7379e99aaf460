import { SmartError } from '../../shared/core/errors.js';

/** Awaits a promise that must reject with a `SmartError`, and returns that error for assertions. */
export async function caught(promise: Promise<unknown>): Promise<SmartError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof SmartError) return error;
    throw error;
  }
  throw new Error('expected a SmartError, but the call succeeded');
}
