import * as iam from 'aws-cdk-lib/aws-iam';
import { CfnFunction } from 'aws-cdk-lib/aws-lambda';
import type { SmartFunction } from './smart-function.js';

/** X-Ray has no resource-level permissions for these two actions: `*` is the only resource they take. */
export const TRACE_WRITE_ACTIONS = ['xray:PutTraceSegments', 'xray:PutTelemetryRecords'] as const;
export const TRACE_STATEMENT_SID = 'WriteTraces';

/**
 * Active X-Ray tracing on the functions (the Lambda service then samples requests
 * and the Powertools Tracer in `shared/ops/tracing.ts` adds a subsegment per outbound call). Only
 * Lambda traces: the API Gateway stage keeps X-Ray off, because its segments would record request
 * URLs with session ids and callback codes.
 */
export function enableActiveTracing(functions: readonly SmartFunction[]): void {
  for (const fn of functions) {
    (fn.function.node.defaultChild as CfnFunction).tracingConfig = { mode: 'Active' };
    fn.policy.addStatements(new iam.PolicyStatement({ sid: TRACE_STATEMENT_SID, actions: [...TRACE_WRITE_ACTIONS], resources: ['*'] }));
  }
}
