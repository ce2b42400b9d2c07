/**
 * The `start` and `delete` actions alone: containerd runs them, each in a fresh
 * process, on the critical path of every container. `main.ts` dispatches them here;
 * the launcher install form (`scripts/install.sh`) also bundles this module and what
 * it imports into one JavaScript file beside it (`lifecycle_main.js`, the cleanup
 * of `delete` in chunks loaded only when needed) and runs that for these two
 * actions: Deno loads one file ~4 ms faster than this module's graph of ten.
 *
 * @module
 */

import { FlagError, parseFlags, type ShimFlags } from "./flags.ts";
import { startAction } from "./start.ts";
import { deleteAction } from "./delete.ts";

/** Runs the `start` or `delete` action of `flags`; returns the exit code. */
export function runLifecycle(flags: ShimFlags): Promise<number> {
  switch (flags.action) {
    case "start":
      return startAction(flags);
    case "delete":
      return deleteAction(flags);
    default:
      console.error(`containerd-shim-wasmtime-v1: "${flags.action}" is not start or delete`);
      return Promise.resolve(2);
  }
}

if (import.meta.main) {
  let flags;
  try {
    flags = parseFlags(Deno.args);
  } catch (err) {
    if (!(err instanceof FlagError)) throw err;
    console.error(`containerd-shim-wasmtime-v1: ${err.message}`);
    Deno.exit(2);
  }
  Deno.exit(await runLifecycle(flags));
}
