/**
 * The Deno permissions of a guest runner (launcher install form): what a runner may
 * read, write and reach, narrowed to its container.
 *
 * @module
 */

import { invalidArgument } from "../errdefs/errors.ts";
import type { WasmKind } from "../wasm/detect.ts";
import { DEV_NULL } from "../wasm/runner_protocol.ts";

/** The npm packages (jco's transpiler reads its own wasm from there at run time). */
export const NODE_MODULES = new URL("../../node_modules", import.meta.url).pathname;
/**
 * The shim's own source tree (launcher form): a wasi:http runner starts its worker
 * threads from `component/http_worker.ts`, which Deno checks against `--allow-read`.
 */
export const APP_SRC = new URL("../", import.meta.url).pathname;

/** What a guest runner needs from the host, for {@linkcode guestDenoFlags}. */
export interface GuestPermissions {
  /** Host path of the container's root (read and write: it is the guest's `/`). */
  rootfs: string;
  /** Host paths of the stdio FIFOs; "" (none) stands for /dev/null. */
  stdio: readonly string[];
  /** What the guest is; components may keep transpiled code in `cacheDir`. */
  kind: WasmKind;
  /** Cache directory a component runner may read and write. */
  cacheDir?: string;
  /** Network access: none (default), all (`true`), or these `host[:port]`s. */
  net?: boolean | readonly string[];
  /** The wasm file, read-only, when it is outside the rootfs (an image layer). */
  wasmFile?: string;
}

/** A Deno `--allow-*=a,b` flag. @throws {ShimError} INVALID_ARGUMENT for a path with "," */
export function allowList(flag: string, paths: readonly string[]): string {
  for (const path of paths) {
    if (path.includes(",")) {
      throw invalidArgument(
        `${path}: paths containing "," cannot be granted to a guest runner ` +
          `(Deno permission lists are comma-separated)`,
      );
    }
  }
  return `--${flag}=${[...new Set(paths)].join(",")}`;
}

/**
 * The Deno permission flags of a guest runner (launcher install form): read and write
 * on the rootfs and stdio, the cache directory for components, network only when
 * asked. The preview1 host needs nothing more.
 *
 * @throws {ShimError} INVALID_ARGUMENT for a path Deno's flags cannot express
 */
export function guestDenoFlags(req: GuestPermissions): string[] {
  const paths = [req.rootfs, ...req.stdio.map((p) => p || DEV_NULL)];
  if (req.kind === "component" && req.cacheDir) paths.push(req.cacheDir);
  const readOnly = req.kind === "component" ? [NODE_MODULES, APP_SRC] : [];
  if (req.wasmFile) readOnly.push(req.wasmFile);
  const flags = [allowList("allow-read", [...paths, ...readOnly]), allowList("allow-write", paths)];
  // jco and preview2-shim read the environment when they load; the runner's own env
  // is cleared (denoEnv), so only Deno's variables could be read through this.
  if (req.kind === "component") flags.push("--allow-env");
  // The container setup (mount(2), setresuid(2), … through libc; container_setup.ts), and
  // for components the memory images (memfd, mmap, madvise).
  flags.push("--allow-ffi");
  if (req.net === true) flags.push("--allow-net");
  else if (req.net && req.net.length > 0) flags.push(allowList("allow-net", req.net));
  return flags;
}
