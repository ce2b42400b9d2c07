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
import { type ContainerSetup, planMounts } from "../oci/mounts.ts";
import { close, openTree } from "../sys/libc.ts";
import { parseSeccomp } from "../oci/spec.ts";
import { compileSeccompProfile } from "../sys/seccomp_profile.ts";
import { type CompiledSeccomp, filterArch } from "../sys/seccomp.ts";
import { invalidArgument } from "../errdefs/errors.ts";
import type { FileHold } from "../sys/cache_files.ts";

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
  // A Wasm layer's cache entry is held until its runner has read it (see blob_cache.ts).
  const holds: FileHold[] = [];
  try {
    return await createGuestHolding(cfg, options, holds);
  } finally {
    for (const hold of holds) hold.release();
  }
}

async function createGuestHolding(
  cfg: GuestConfig,
  options: CreateGuestOptions,
  holds: FileHold[],
): Promise<Guest> {
  const entry = await resolveGuestEntrypoint(cfg, { ...options, keep: (h) => holds.push(h) });
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
  const setup = openContainerSetup(cfg);
  try {
    return await createRunnerGuest(
      { ...cfg, container: setup },
      entry,
      detectKind(header, entry.guestPath),
      options,
    );
  } finally {
    // The runner took its copies (pidfd_getfd) before it answered, or is gone.
    closeContainerSetup(setup);
  }
}

/** Most compiled profiles kept (see {@linkcode compileSpecProfile}). */
const PROFILE_CACHE_SIZE = 16;
/** Compiled profiles by the spec's JSON of them, oldest first. */
const compiledProfiles = new Map<string, CompiledSeccomp>();

/**
 * The spec's `linux.seccomp` compiled for this architecture (undefined without one). A
 * node's containers mostly share a few profiles (CRI's RuntimeDefault): each is compiled
 * once (a few ms), then taken from a small cache keyed by its JSON.
 *
 * @throws {ShimError} INVALID_ARGUMENT for a profile the runner cannot apply
 */
function compileSpecProfile(cfg: GuestConfig): CompiledSeccomp | undefined {
  if (cfg.seccomp === undefined || cfg.seccomp === null) return undefined;
  const key = JSON.stringify(cfg.seccomp);
  const cached = compiledProfiles.get(key);
  if (cached !== undefined) return cached;
  const profile = parseSeccomp(cfg.seccomp, `of container ${cfg.id}`)!;
  const compiled = compileSeccompProfile(
    profile,
    filterArch(),
    `container ${cfg.id}: linux.seccomp`,
  );
  if (compiledProfiles.size >= PROFILE_CACHE_SIZE) {
    compiledProfiles.delete(compiledProfiles.keys().next().value!);
  }
  compiledProfiles.set(key, compiled);
  return compiled;
}

/**
 * Plans the spec's mounts for a wasm guest's runner and makes the detached copies it
 * attaches (`open_tree(2)`: the rootfs and each bind source, as the node has them
 * now). Undefined for a config without a spec's mounts or user (unit tests).
 *
 * @throws {ShimError} INVALID_ARGUMENT naming a bad entry; nothing is left open
 */
export function openContainerSetup(cfg: GuestConfig): ContainerSetup | undefined {
  if (cfg.mounts === undefined && cfg.user === undefined && cfg.readonlyRoot === undefined) {
    return undefined;
  }
  const mounts = planMounts(cfg.mounts ?? [], `container ${cfg.id}`);
  const setup: ContainerSetup = {
    mounts,
    readonlyRoot: cfg.readonlyRoot === true,
    maskedPaths: cfg.maskedPaths ?? [],
    readonlyPaths: cfg.readonlyPaths ?? [],
    user: cfg.user ?? { uid: 0, gid: 0, additionalGids: [] },
    serverPid: Deno.pid,
    seccomp: compileSpecProfile(cfg),
  };
  try {
    setup.rootfsFd = openTree(cfg.rootfs, true);
    for (const m of mounts) {
      if (m.kind !== "bind") continue;
      try {
        m.fd = openTree(m.source, m.recursive);
      } catch (err) {
        throw invalidArgument(`container ${cfg.id}: ${m.name}: ${(err as Error).message}`);
      }
    }
  } catch (err) {
    closeContainerSetup(setup);
    throw err;
  }
  return setup;
}

/** Closes the descriptors of {@linkcode openContainerSetup}. */
export function closeContainerSetup(setup: ContainerSetup | undefined): void {
  if (setup === undefined) return;
  if (setup.rootfsFd !== undefined) close(setup.rootfsFd);
  for (const m of setup.mounts) if (m.fd !== undefined) close(m.fd);
}
