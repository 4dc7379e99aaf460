import { config } from 'zod/mini';
import en from 'zod/v4/locales/en.js';

/*
 * zod for the schemas of the functions: `zod/mini`, the functional API of the same package. The
 * classic API attaches its chainable methods to every schema it builds and is four times the code
 * to load (about 35 ms of a bundle's own load against 10 ms, measured by `npm run bench`). Every
 * module with a schema imports zod through this one, so the English messages (which `zod/mini`
 * does not load by itself) are set before any schema parses, whatever the import order: they are
 * the messages config errors show. Only the English locale is bundled.
 */
config(en());

export * from 'zod/mini';
