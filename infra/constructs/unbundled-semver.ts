/**
 * Stands in for `semver` in the function bundles (`BUNDLE_ALIASES`, smart-function-defaults.ts).
 * Its one importer there is the X-Ray SDK's AWS SDK v2 patcher (`captureAWS`, `captureAWSClient`),
 * which calls `semver.gte` on the v2 SDK's version when asked to capture a v2 SDK; the functions
 * use the v3 SDK (`captureAWSv3Client`), so it never runs. Bundled, semver was 29 KB of the 121 KB
 * tracer chunk, its module bodies (a few hundred regular expressions) run at every cold start with
 * tracing on. `test/cold-start/tracer-bundle.test.ts` fails if anything else imports it.
 */
export function gte(): never {
  throw new Error('semver is not bundled: capturing an AWS SDK v2 (captureAWS, captureAWSClient) is not supported here; use captureAWSv3Client');
}
