/**
 * The guest runner's entry point alone (`main.ts guest <id>` is the same through the
 * dispatcher). The launcher install form (`scripts/install.sh`) bundles this module
 * and what it imports (the WASI preview1 host, not the component host, which
 * `guest_main.ts` loads from the sources only for a component) into one JavaScript
 * file beside it, `runner_main.js`, and the shim server starts runners from that:
 * Deno loads one file instead of a graph of ~20 modules, ~8 ms of CPU off every
 * container (see `runnerCommand` in `runner.ts`).
 *
 * @module
 */

import { runGuestMain } from "./guest_main.ts";
import { RUNNER_ACTION as ACTION } from "./runner_protocol.ts";

if (import.meta.main) {
  const [action, ...rest] = Deno.args;
  if (action !== ACTION) {
    console.error(`runner_main: expected "${ACTION}" first, got ${JSON.stringify(action)}`);
    Deno.exit(2);
  }
  Deno.exit(await runGuestMain(rest));
}
