/**
 * Lean glue: our own instantiation of `wasi:http/proxy` and `wasi:cli/command`
 * components (and of components run by a function's name), used instead of jco's
 * generated glue where the component allows (`../transpile.ts` decides).
 *
 * Why: a wasi:http proxy gets a fresh instance per request, so instantiation and the
 * host calls of one request are the whole cost of serving it. jco 0.15's glue carries
 * a complete component-model async runtime (tasks, waitables, deadlock timers), all of
 * it rebuilt inside every `instantiate()` and run around every host call: for the
 * 8 KB hello component, ~0.3 ms to instantiate and ~0.5 ms of glue per request (and a
 * heap that grows under load), against ~0.05 ms for its three core instances (measured;
 * see `bench/RESULTS.md`). The lean glue does only what the canonical ABI requires for
 * WASI 0.2's synchronous functions, with JSPI for the blocking ones. A command is
 * instantiated once, but jco's glue (~150 KB of JS for a 4 KB command) still costs its
 * evaluation and runtime set-up at every container start; lean glue is a few KB of JSON.
 *
 * The "glue" is a header line and the JSON plan (`plan.ts`), so it is cached, sent to
 * worker threads and evaluated exactly where jco's glue source would be.
 *
 * @module
 */

import { type LeanInstantiate, link, type LinkOptions } from "./link.ts";
import { PLAN_FORMAT, type ReadComponent, readComponent } from "./plan.ts";
import type { LeanPlan } from "./plan_data.ts";

export { Unsupported } from "./plan.ts";
export {
  END_INSTANCE,
  GROWN_BYTES,
  idleInstances,
  type LinkStats,
  linkStats,
  plainEntry,
  recycleGrown,
  type ReusePolicy,
} from "./link.ts";
export type { LeanInstantiate } from "./link.ts";

/** First line of lean glue (and what tells it from jco's). */
export const LEAN_GLUE_HEADER = `// containerd-shim-wasmtime lean glue ${PLAN_FORMAT}\n`;

/** True if `source` is lean glue. */
export function isLeanGlue(source: string): boolean {
  return source.startsWith(LEAN_GLUE_HEADER);
}

/** The lean glue of a component, and its core modules. */
export interface LeanTranspiled {
  glue: string;
  cores: Map<string, Uint8Array>;
  /** Exports as jco would list them. */
  exports: [string, string][];
}

function jcoExportNames(plan: LeanPlan): [string, string][] {
  const out: [string, string][] = [];
  for (const e of plan.exports) {
    if (e.kind === "func") {
      out.push([e.name, "function"]);
    } else {
      const short = e.name.slice(e.name.lastIndexOf("/") + 1).replace(/@.*$/, "");
      out.push([short.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase()), "instance"]);
      out.push([e.name, "instance"]);
    }
  }
  return out;
}

/** Options of {@linkcode leanTranspile}. */
export interface LeanTranspileOptions {
  /**
   * Exports the glue calls through JSPI besides those the loader names (`iface#func`
   * unversioned, or `func`); they are kept in the glue, as jco's glue keeps its own.
   */
  extraAsyncExports?: readonly string[];
  /** Prepare memory images and recycling (default true; see `plan.ts`'s `ReadOptions`). */
  images?: boolean;
}

/**
 * Reads `component` into lean glue.
 *
 * @throws {Unsupported} (or another Error) if the lean glue cannot run it
 */
export function leanTranspile(
  component: Uint8Array,
  options: LeanTranspileOptions = {},
): LeanTranspiled {
  const read: ReadComponent = readComponent(component, { images: options.images });
  const extra = options.extraAsyncExports ?? [];
  if (extra.length > 0) read.plan.asyncExports = [...extra];
  return {
    glue: LEAN_GLUE_HEADER + JSON.stringify(read.plan),
    cores: read.cores,
    exports: jcoExportNames(read.plan),
  };
}

/** Evaluates lean glue into its `instantiate`. */
export function loadLeanGlue(source: string, options: LinkOptions): LeanInstantiate {
  if (!isLeanGlue(source)) throw new Error("not lean glue");
  const plan = JSON.parse(source.slice(LEAN_GLUE_HEADER.length)) as LeanPlan;
  if (plan.format !== PLAN_FORMAT) throw new Error(`lean glue format ${plan.format}`);
  if (plan.asyncExports === undefined) return link(plan, options);
  return link(plan, {
    ...options,
    asyncExports: [...options.asyncExports, ...plan.asyncExports],
  });
}
