import 'aws-sdk-client-mock-vitest/extend';
import { expect } from 'vitest';
import { allCustomMatcher } from 'aws-sdk-client-mock-vitest';

expect.extend(allCustomMatcher);
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
// Structured logs go to stdout; keep test output readable unless a test captures them.
process.env.POWERTOOLS_LOG_LEVEL ??= 'SILENT';
process.env.LOG_LEVEL ??= 'SILENT';
