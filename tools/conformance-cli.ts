import { readFileSync, writeFileSync } from 'node:fs';
import { CONFORMANCE_PATH, regenerate, scanCoverage } from './conformance.js';

// `npm run docs:conformance`: rewrites the generated columns of docs/conformance.md in place.
const before = readFileSync(CONFORMANCE_PATH, 'utf8');
const after = regenerate(before, scanCoverage());
writeFileSync(CONFORMANCE_PATH, after);
console.log(before === after ? 'docs/conformance.md is up to date' : 'docs/conformance.md regenerated');
