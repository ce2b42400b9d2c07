/**
 * Makes the guest of a container at Create: the one place that decides between a
 * wasm guest in a runner process (`src/runner`) and a native container run by runc
 * (`src/native`).
 *
 * @module
 */

import type { ContainerdAddress } from "../image/containerd/client.ts";
import { resolveGuestEntrypoint } from "../image/image_entrypoint.ts";
import { detectNative } from "../native/detect.ts";
import { createRuncGuest, type NativeGuestOptions } from "../native/runc_guest.ts";
import { createRunnerGuest, type RunnerGuestOptions } from "../runner/guest.ts";
import { detectKind, HEADER_LENGTH } from "../wasm/detect.ts";
import type { Guest, GuestConfig } from "./guest.ts";

/** Options of {@linkcode createGuest}. */
export interface CreateGuestOptions extends RunnerGuestOptions {
  /**
   * containerd's gRPC socket and namespace: when set, a container whose entrypoint is
   * not in its rootfs may run a Wasm layer of its image (see `image_entrypoint.ts`).
   */
  containerd?: ContainerdAddress;
  /**
   * How to run a container whose entrypoint is a native executable (ELF or `#!`) with
   * runc (see `src/native/runc_guest.ts`); without it such an entrypoint is refused as
   * not Wasm.
   */
  native?: NativeGuestOptions;
}

/** The first bytes of a file, enough to tell what it is. */
async function readHeader(path: string): Promise<Uint8Array> {
  using file = await Deno.open(path);
  const buf = new Uint8Array(HEADER_LENGTH);
  let n = 0;
  while (n < buf.length) {
    const got = await file.read(buf.subarray(n));
    if (got === null) break;
    n += got;
  }
  return buf.subarray(0, n);
}

/**
 * Prepares a guest: resolves its entrypoint (in the rootfs, else in the container's
 * image), and hands it to a runner (wasm) or to runc (a native executable of the
 * rootfs: an ELF binary or a `#!` script, with `options.native`, without a warm
 * runner). Any error (a bad entrypoint, a file that is not wasm, a missing export or
 * import) rejects saying why, and leaves no process behind.
 */
export async function createGuest(
  cfg: GuestConfig,
  options: CreateGuestOptions = {},
): Promise<Guest> {
  const entry = await resolveGuestEntrypoint(cfg, options);
  const header = await readHeader(entry.hostPath);
  // A native executable of the rootfs (the pause container, a sidecar) runs with runc;
  // without `options.native` it is refused below as "not a WebAssembly module".
  const native = entry.layer === undefined ? detectNative(header) : undefined;
  if (native !== undefined && options.native !== undefined) {
    return createRuncGuest(cfg, { guestPath: entry.guestPath, kind: native }, {
      log: options.log,
      ...options.native,
    });
  }
  return createRunnerGuest(cfg, entry, detectKind(header, entry.guestPath), options);
}
