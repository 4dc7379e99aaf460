import type { Resource } from '@medplum/fhirtypes';
import { writeAnswer } from '../fhir-wire.js';
import type { FhirContext } from './context.js';
import { CORS_HEADERS } from './exchange.js';
import type { Exchange } from './exchange.js';

/*
 * Binary content (bytes from `binaries.ts`, held outside the repository): attached as base64 `data`
 * to FHIR answers, or served raw in its own content type, as from a content server behind a sticky
 * load balancer.
 */

/** Attaches the bytes of Binaries (alone or in a Bundle) as base64 `data`, for FHIR JSON and XML. */
export function withContent<T extends Resource>(ctx: FhirContext, resource: T): T {
  const { options } = ctx;
  if (resource.resourceType === 'Binary' && resource.data === undefined && resource.id !== undefined) {
    const bytes = options.binaryContent?.(resource.id);
    return bytes === undefined ? resource : { ...resource, data: bytes.toString('base64') };
  }
  if (resource.resourceType === 'Bundle' && resource.entry?.some((e) => e.resource?.resourceType === 'Binary')) {
    return { ...resource, entry: resource.entry.map((e) => (e.resource ? { ...e, resource: withContent(ctx, e.resource) } : e)) };
  }
  return resource;
}

/** A Binary read without a FHIR format asked for: the content itself, in its own content type. */
export async function sendBinaryContent(ctx: FhirContext, ex: Exchange, resource: Resource, headers: Readonly<Record<string, string>>): Promise<void> {
  const { options, fhirBasePath } = ctx;
  if (resource.resourceType !== 'Binary') {
    return;
  }
  const bytes = (resource.id === undefined ? undefined : options.binaryContent?.(resource.id)) ?? Buffer.from(resource.data ?? '', 'base64');
  await writeAnswer(
    ex.res,
    200,
    {
      'Content-Type': resource.contentType ?? 'application/octet-stream',
      'Cache-Control': 'no-store',
      'X-Content-Type-Options': 'nosniff',
      ...CORS_HEADERS,
      ...headers,
      // As from a content server behind a sticky load balancer: a cookie and a node header that a
      // proxy in front of this EHR must not hand to browsers.
      'Set-Cookie': `sandbox-content-node=1; Path=${fhirBasePath}/Binary; HttpOnly; SameSite=Lax`,
      'X-Content-Node': 'sandbox-1',
    },
    bytes,
    { drop: ex.drop },
  );
}
