/**
 * Runs a command component (`wasi:cli/run`) or a named export of a component once, and
 * turns how it ended into an exit code.
 *
 * @module
 */

import { invalidArgument } from "../../errdefs/errors.ts";
import { GuestExit } from "./host/cli.ts";
import { parseInterfaceName } from "./inspect.ts";
import { GLUE_MODULE_NAME } from "./instantiate/trampoline.ts";

/** Exit code of a trap or host error (runwasi's: 128 + SIGKILL). */
export const EXIT_TRAP = 137;
/** Exit code when `run` returns `err` (as wasmtime). */
export const EXIT_RUN_ERR = 1;

/** How a run ended. */
export type RunEnd =
  | { kind: "exit"; code: number }
  | { kind: "trap"; message: string };

/** jco's name for a WIT name: `say-hello` → `sayHello`. */
export function camelCase(name: string): string {
  return name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/**
 * Finds the function `func` names among an instance's exports: `name` for a top-level
 * export, `ns:pkg/iface#name` (version optional) for one in an exported interface.
 *
 * @throws {ShimError} INVALID_ARGUMENT if there is no such function, or it takes
 *   parameters
 */
export function findExportedFunction(
  exports: Record<string, unknown>,
  func: string,
  path: string,
): () => unknown {
  let holder: Record<string, unknown> | undefined = exports;
  let name = func;
  const hash = func.lastIndexOf("#");
  if (hash >= 0) {
    const iface = func.slice(0, hash);
    name = func.slice(hash + 1);
    const base = parseInterfaceName(iface).base;
    const key = Object.keys(exports).find((k) =>
      k === iface || (k.includes(":") && parseInterfaceName(k).base === base)
    );
    holder = key === undefined ? undefined : exports[key] as Record<string, unknown>;
    if (holder === undefined) {
      throw invalidArgument(
        `component ${path} does not export interface ${iface}; it exports ${
          describeExports(exports)
        }`,
      );
    }
  }
  const fn = holder[name] ?? holder[camelCase(name)];
  if (typeof fn !== "function") {
    throw invalidArgument(
      `component ${path} has no exported function "${func}"; it exports ${
        describeExports(exports)
      }`,
    );
  }
  if (fn.length > 0) {
    throw invalidArgument(
      `exported function "${func}" of ${path} takes ${fn.length} parameter(s); only ` +
        `functions without parameters can be an entrypoint`,
    );
  }
  return fn as () => unknown;
}

function describeExports(exports: Record<string, unknown>): string {
  const names = Object.entries(exports).flatMap(([k, v]) =>
    typeof v === "function"
      ? [k]
      : k.includes(":")
      ? Object.keys(v as object).map((f) => `${k}#${f}`)
      : []
  );
  return names.length > 0 ? names.join(", ") : "no functions";
}

/** Calls `fn` (the guest's `run` or a named export) and reports how it ended. */
export async function runToEnd(fn: () => unknown): Promise<RunEnd> {
  try {
    await fn();
    return { kind: "exit", code: 0 };
  } catch (err) {
    return endOf(err);
  }
}

/** How a thrown value ends a run. */
export function endOf(err: unknown): RunEnd {
  if (err instanceof GuestExit) return { kind: "exit", code: err.code };
  // `run` returning `err` (a unit payload): jco throws the payload itself.
  if (err === undefined) return { kind: "exit", code: EXIT_RUN_ERR };
  if (err instanceof WebAssembly.RuntimeError || err instanceof RangeError) {
    // jco's glue already rewrites V8's trap messages as wasmtime's ("wasm trap: ...").
    const message = err.message.startsWith("wasm trap:")
      ? err.message
      : `wasm trap: ${err.message}`;
    return { kind: "trap", message: `${message}${wasmFrames(err)}` };
  }
  const message = err instanceof Error ? `${err.name}: ${err.message}` : JSON.stringify(err);
  return { kind: "trap", message: `wasm host error: ${message}` };
}

/** The guest's wasm frames of `err`'s stack (not those of the glue's own modules). */
function wasmFrames(err: Error): string {
  const glue = `wasm://wasm/${GLUE_MODULE_NAME}-`;
  const frames = (err.stack ?? "").split("\n").map((l) => l.trim())
    .filter((l) => l.includes("wasm://") && !l.includes(glue)).map((l) => `\n    ${l}`);
  return frames.join("");
}
