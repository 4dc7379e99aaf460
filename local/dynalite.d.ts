// dynalite ships no typings; this covers only what `local/dynamo-local.ts` uses.
declare module 'dynalite' {
  import type { Server } from 'node:http';

  interface DynaliteOptions {
    /** LevelDB folder; in memory when absent. */
    path?: string;
    /** How long a new table stays CREATING (default 500 ms). */
    createTableMs?: number;
    deleteTableMs?: number;
    updateTableMs?: number;
    maxItemSizeKb?: number;
    verbose?: boolean;
    debug?: boolean;
  }

  /** An unstarted HTTP server speaking the DynamoDB JSON protocol; `close()` also closes the store. */
  function dynalite(options?: DynaliteOptions): Server;

  export = dynalite;
}
