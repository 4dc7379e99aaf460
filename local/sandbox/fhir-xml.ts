/*
 * A minimal FHIR JSON -> FHIR XML serializer for what the sandbox serves (resources, Bundles,
 * OperationOutcomes). It follows the FHIR XML rules that matter for these resources: the resource type
 * as the element name in the FHIR namespace, primitives as `value` attributes, element `id` and
 * extension `url` as attributes, `_field` primitive extensions merged into their element, nested
 * resources wrapped in their type element, and the narrative `div` copied as XHTML. Elements appear
 * in the JSON's property order, which for the sandbox's own data is the order of the definitions
 * closely enough; it is not a validating serializer. Byte-stable: the same resource always gives the
 * same bytes (no whitespace between elements, one XML declaration line, a final newline).
 */

const FHIR_NS = 'http://hl7.org/fhir';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function escapeAttribute(value: string): string {
  return value
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll('\n', '&#10;')
    .replaceAll('\r', '&#13;')
    .replaceAll('\t', '&#9;');
}

/** The children of an element: every property but `resourceType`, the attributes and `_` shadows. */
function children(object: JsonObject, skip: ReadonlySet<string>): string {
  let out = '';
  for (const key of Object.keys(object)) {
    if (skip.has(key) || key === 'resourceType' || key === 'fhir_comments') {
      continue;
    }
    if (key.startsWith('_')) {
      // A primitive that has only an id or extensions: its element sits where its shadow is.
      const name = key.slice(1);
      if (!(name in object)) {
        out += elements(name, undefined, object[key]);
      }
      continue;
    }
    out += elements(key, object[key], object[`_${key}`]);
  }
  return out;
}

function elements(name: string, value: Json | undefined, shadow: Json | undefined): string {
  if ((value === undefined || value === null) && (shadow === undefined || shadow === null)) {
    return '';
  }
  if (Array.isArray(value) || Array.isArray(shadow)) {
    const values = Array.isArray(value) ? value : [];
    const shadows = Array.isArray(shadow) ? shadow : [];
    let out = '';
    for (let i = 0; i < Math.max(values.length, shadows.length); i++) {
      out += element(name, values[i] ?? undefined, shadows[i] ?? undefined);
    }
    return out;
  }
  return element(name, value, shadow);
}

function element(name: string, value: Json | undefined, shadow: Json | undefined): string {
  if (isObject(value)) {
    if (typeof value.resourceType === 'string') {
      return `<${name}>${resourceElement(value, false)}</${name}>`;
    }
    let attributes = '';
    const skip = new Set<string>();
    if (typeof value.id === 'string') {
      attributes += ` id="${escapeAttribute(value.id)}"`;
      skip.add('id');
    }
    if ((name === 'extension' || name === 'modifierExtension') && typeof value.url === 'string') {
      attributes += ` url="${escapeAttribute(value.url)}"`;
      skip.add('url');
    }
    const inner = children(value, skip);
    return inner === '' ? `<${name}${attributes}/>` : `<${name}${attributes}>${inner}</${name}>`;
  }
  if (name === 'div' && typeof value === 'string') {
    return value; // Narrative XHTML: already XML, in its own namespace.
  }
  let attributes = '';
  let inner = '';
  if (isObject(shadow)) {
    if (typeof shadow.id === 'string') {
      attributes += ` id="${escapeAttribute(shadow.id)}"`;
    }
    inner = elements('extension', shadow.extension, undefined);
  }
  if (value !== undefined && value !== null) {
    attributes += ` value="${escapeAttribute(String(value))}"`;
  }
  return inner === '' ? `<${name}${attributes}/>` : `<${name}${attributes}>${inner}</${name}>`;
}

function resourceElement(resource: JsonObject, root: boolean): string {
  const type = String(resource.resourceType);
  const namespace = root ? ` xmlns="${FHIR_NS}"` : '';
  const inner = children(resource, new Set());
  return inner === '' ? `<${type}${namespace}/>` : `<${type}${namespace}>${inner}</${type}>`;
}

/** The FHIR XML document of a resource (UTF-8 text). */
export function toFhirXml(resource: { readonly resourceType: string }): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n${resourceElement(resource as unknown as JsonObject, true)}\n`;
}
