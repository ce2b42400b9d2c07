/**
 * Version and identity of the shim.
 *
 * @module
 */

/** The binary's name: containerd derives it from the runtime name. */
export const BINARY_NAME = "containerd-shim-wasmtime-v1";
/** The runtime name users pass to `ctr run --runtime` / a RuntimeClass handler. */
export const RUNTIME_NAME = "io.containerd.wasmtime.v1";
/** The shim's release version. */
export const VERSION = "0.1.0";

/**
 * The source revision: `build_info.json` beside main.ts (written by the build and
 * install scripts from git), or "unknown" when running from a plain checkout.
 */
export function revision(): string {
  try {
    const url = new URL("../../build_info.json", import.meta.url);
    const info = JSON.parse(Deno.readTextFileSync(url));
    return typeof info.revision === "string" ? info.revision : "unknown";
  } catch {
    return "unknown";
  }
}
