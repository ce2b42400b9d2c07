/**
 * Warming a guest runner up while it waits for its guest.
 *
 * V8 compiles JavaScript functions lazily, at their first call, and a fresh runner
 * has run none of the preview1 host: a hello world's first run then spends ~5 ms
 * compiling the host's code on the container's critical path (measured: start to
 * exit 9–10 ms cold, 5 ms warmed). A warm runner runs this small guest
 * (`warmup.wat`) before it says it is idle, with no filesystem and its output
 * discarded, so that the container's guest finds the host compiled.
 *
 * @module
 */

import { Preview1Host, ProcExit } from "./host.ts";
import { WARMUP_WASM_BASE64 } from "./warmup_module.ts";

/** The warm-up guest's bytes. */
export function warmupWasm(): Uint8Array<ArrayBuffer> {
  return Uint8Array.from(atob(WARMUP_WASM_BASE64), (c) => c.charCodeAt(0));
}

/**
 * Runs the warm-up guest on a throwaway host (no filesystem, stdio discarded).
 * Returns its exit code (0).
 */
export function warmUpPreview1(): number {
  const module = new WebAssembly.Module(warmupWasm());
  const host = new Preview1Host({ args: ["warmup"], env: ["WARMUP=1"], root: null });
  const instance = new WebAssembly.Instance(module, host.imports);
  try {
    return host.start(instance);
  } catch (err) {
    if (err instanceof ProcExit) return err.code;
    throw err;
  } finally {
    host.close();
  }
}
