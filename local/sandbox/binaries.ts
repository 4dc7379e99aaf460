import { createCipheriv, createHash } from 'node:crypto';

/*
 * Content of the sandbox's seeded Binary resources. The repository holds each Binary without its
 * `data`; the FHIR server attaches the bytes on the way out (raw, or base64 in FHIR JSON/XML), so the
 * 10 MB one is generated only when first read, and once per process.
 */

export const BIG_BINARY_BYTES = 10 * 1024 * 1024;

let big: Buffer | undefined;

/**
 * 10 MB of deterministic, incompressible bytes (every value 0-255, NULs included): an AES-256-CTR
 * keystream under a fixed key, about 40 ms to generate. Cached for the process; the same Buffer is
 * returned each time, so callers must not modify it.
 */
export function bigBinary(): Buffer {
  if (big === undefined) {
    const key = createHash('sha256').update('smart-launch sandbox binary').digest();
    const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
    big = Buffer.concat([cipher.update(Buffer.alloc(BIG_BINARY_BYTES)), cipher.final()]);
  }
  return big;
}

/** A PDF string literal: `(`, `)` and `\` escaped; only printable ASCII is kept. */
function pdfString(text: string): string {
  return `(${text.replace(/[^\x20-\x7e]/g, '?').replace(/[()\\]/g, (c) => `\\${c}`)})`;
}

/**
 * A small, valid one-page PDF (PDF 1.4, Helvetica text lines and a 16x16 greyscale image whose 256
 * pixels are the byte values 0-255, so the file carries NULs, CR, LF and high bytes). Deterministic:
 * the same lines always give the same bytes.
 */
export function samplePdf(lines: readonly string[]): Buffer {
  const text = ['BT /F1 12 Tf 16 TL 72 720 Td', ...lines.map((line, i) => `${i === 0 ? '' : 'T* '}${pdfString(line)} Tj`), 'ET', 'q 64 0 0 64 72 560 cm /Im1 Do Q'].join('\n');
  const pixels = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const objects: Buffer[] = [
    Buffer.from('<< /Type /Catalog /Pages 2 0 R >>', 'latin1'),
    Buffer.from('<< /Type /Pages /Kids [3 0 R] /Count 1 >>', 'latin1'),
    Buffer.from('<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> /XObject << /Im1 6 0 R >> >> /Contents 5 0 R >>', 'latin1'),
    Buffer.from('<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>', 'latin1'),
    Buffer.from(`<< /Length ${Buffer.byteLength(text, 'latin1')} >>\nstream\n${text}\nendstream`, 'latin1'),
    Buffer.concat([
      Buffer.from('<< /Type /XObject /Subtype /Image /Width 16 /Height 16 /ColorSpace /DeviceGray /BitsPerComponent 8 /Length 256 >>\nstream\n', 'latin1'),
      pixels,
      Buffer.from('\nendstream', 'latin1'),
    ]),
  ];
  // The second line marks the file as binary (bytes above 127), as PDF writers do.
  const parts: Buffer[] = [Buffer.from('%PDF-1.4\n%\u00e2\u00e3\u00cf\u00d3\n', 'latin1')];
  let offset = parts[0]?.length ?? 0;
  const offsets: number[] = [];
  objects.forEach((body, index) => {
    offsets.push(offset);
    const object = Buffer.concat([Buffer.from(`${index + 1} 0 obj\n`, 'latin1'), body, Buffer.from('\nendobj\n', 'latin1')]);
    parts.push(object);
    offset += object.length;
  });
  const xref = [
    'xref',
    `0 ${objects.length + 1}`,
    '0000000000 65535 f ',
    ...offsets.map((o) => `${String(o).padStart(10, '0')} 00000 n `),
    'trailer',
    `<< /Size ${objects.length + 1} /Root 1 0 R >>`,
    'startxref',
    String(offset),
    '%%EOF',
    '',
  ].join('\n');
  parts.push(Buffer.from(xref, 'latin1'));
  return Buffer.concat(parts);
}
