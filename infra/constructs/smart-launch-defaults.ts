/**
 * Lambda caps the whole environment of a function at 4 KB (names and values). The validated config
 * travels in one variable; the rest (table name, key ARN, service name) fits in the
 * remainder with room to spare.
 */
export const CONFIG_ENVIRONMENT_BUDGET_BYTES = 3400;

/** Host suffix of API Gateway's own endpoints: a `publicUrl` there needs no custom domain. */
export const EXECUTE_API_HOST = /\.execute-api\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$/;
