/**
 * What a wasm guest gets of the spec's `mounts`: a plan the guest's runner carries out
 * in its own mount namespace (`src/wasm/container_setup.ts`), checked here first so
 * that bad input fails Create with a message naming the entry, before anything is
 * mounted.
 *
 * - `bind` (or any type with a `bind`/`rbind` option): the host path `source`, a file
 *   or a directory, at `destination`; `ro` makes it read-only.
 * - `tmpfs`: a new tmpfs (its data options, e.g. `mode=755,size=65536k`, as given).
 * - `proc`, `sysfs`, `devpts`, `mqueue`, `cgroup`, `cgroup2`: kernel interfaces of a
 *   Linux process, which a wasm guest has no way to use (WASI has no ioctl, no
 *   ptys, no message queues) and which would show it the node's: skipped, as the
 *   defaults containerd puts in every spec.
 * - anything else: refused.
 *
 * Destinations are absolute container paths; `..` must not climb above `/` and `/`
 * itself cannot be a destination. Symbolic links on the way are resolved inside the
 * rootfs when the mount is made (the runner refuses one that leads out).
 *
 * @module
 */

import type { CompiledSeccomp } from "../sys/seccomp.ts";
import { invalidArgument } from "../errdefs/errors.ts";
import { parseMountOptions } from "../sys/mount.ts";
import type { SpecMount } from "./spec.ts";

/** Mount types a wasm guest does without (see the module documentation). */
export const SKIPPED_TYPES: ReadonlySet<string> = new Set([
  "proc",
  "sysfs",
  "devpts",
  "mqueue",
  "cgroup",
  "cgroup2",
]);

/** mount(2) flags the plan uses. */
export const MountFlag = {
  MS_RDONLY: 0x1,
  MS_NOSUID: 0x2,
  MS_NODEV: 0x4,
  MS_NOEXEC: 0x8,
  MS_REMOUNT: 0x20,
  MS_BIND: 0x1000,
  MS_REC: 0x4000,
  MS_PRIVATE: 1 << 18,
  MS_SLAVE: 1 << 19,
  MS_SHARED: 1 << 20,
  MS_UNBINDABLE: 1 << 17,
} as const;

/** Per-mount flags a bind mount gets by a remount (MS_BIND ignores them on creation). */
const REMOUNT_FLAGS = MountFlag.MS_RDONLY | MountFlag.MS_NOSUID | MountFlag.MS_NODEV |
  MountFlag.MS_NOEXEC | 0x400 /* noatime */ | 0x800 /* nodiratime */ | 0x200000 /* relatime */ |
  0x1000000; /* strictatime */

/** Propagation options: the runner's namespace is private, so they are accepted and ignored. */
const PROPAGATION = new Set([
  "private",
  "rprivate",
  "shared",
  "rshared",
  "slave",
  "rslave",
  "unbindable",
  "runbindable",
]);

/** One mount the runner makes. */
export interface PlannedMount {
  /** The entry as the spec gives it, for messages: `mounts[i] <destination>`. */
  name: string;
  /** Normalized absolute destination inside the container (never `/`). */
  destination: string;
  kind: "bind" | "tmpfs";
  /** Host path of a bind mount's source; "tmpfs" for a tmpfs. */
  source: string;
  /** Bind: `rbind` (submounts too). */
  recursive: boolean;
  /** Bind: the source is a directory (else a file is made at the destination). */
  directory: boolean;
  /** Flags of the mount(2) that makes it (tmpfs), or of the remount (bind). */
  flags: number;
  /** Filesystem data (tmpfs options). */
  data: string;
  /**
   * Bind: a descriptor in the shim server of a detached copy of the source
   * (`open_tree(2)`), which the runner takes with `pidfd_getfd(2)`: what the node has
   * mounted there now, not what it had when a warm runner started.
   */
  fd?: number;
}

/**
 * An absolute container path without `.`, `..` and repeated slashes.
 *
 * @throws {ShimError} INVALID_ARGUMENT if it is relative or climbs above `/`
 */
export function normalizeDestination(path: string, name: string): string {
  if (!path.startsWith("/")) {
    throw invalidArgument(`${name}: destination "${path}" is not an absolute path`);
  }
  if (path.includes("\0")) throw invalidArgument(`${name}: destination contains a NUL byte`);
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (out.length === 0) {
        throw invalidArgument(`${name}: destination "${path}" leads outside the container's root`);
      }
      out.pop();
    } else out.push(part);
  }
  return `/${out.join("/")}`;
}

/** Whether a path exists and is a directory, for {@linkcode planMounts}. */
export type SourceKind = (path: string) => "file" | "directory" | "missing";

/** The default {@linkcode SourceKind}: stat(2) on the node. */
export function statSource(path: string): "file" | "directory" | "missing" {
  try {
    return Deno.statSync(path).isDirectory ? "directory" : "file";
  } catch {
    return "missing";
  }
}

/**
 * Plans the spec's mounts for a wasm guest, in spec order (a later mount over an
 * earlier one's path stacks on it, as under runc).
 *
 * @param where names the spec in messages
 * @throws {ShimError} INVALID_ARGUMENT naming the entry: an unknown type, a bind
 *   source that does not exist, a destination that is `/` or leaves the root
 */
export function planMounts(
  mounts: readonly SpecMount[],
  where: string,
  kindOf: SourceKind = statSource,
): PlannedMount[] {
  const plan: PlannedMount[] = [];
  mounts.forEach((m, i) => {
    const name = `mounts[${i}] (${m.type || "no type"} on ${m.destination})`;
    const bind = m.type === "bind" || m.options.includes("bind") || m.options.includes("rbind");
    if (!bind && SKIPPED_TYPES.has(m.type)) return;
    if (!bind && m.type !== "tmpfs") {
      throw invalidArgument(
        `${where}: ${name}: mount type "${m.type}" is not supported for wasm guests ` +
          `(bind and tmpfs are; ${[...SKIPPED_TYPES].join(", ")} are skipped)`,
      );
    }
    const destination = normalizeDestination(m.destination, `${where}: ${name}`);
    if (destination === "/") {
      throw invalidArgument(`${where}: ${name}: a mount over the container's root is not allowed`);
    }
    const options = m.options.filter((o) => !PROPAGATION.has(o));
    const { flags, data } = parseMountOptions(options);
    if (bind) {
      if (!m.source.startsWith("/")) {
        throw invalidArgument(`${where}: ${name}: bind source "${m.source}" is not absolute`);
      }
      const kind = kindOf(m.source);
      if (kind === "missing") {
        throw invalidArgument(`${where}: ${name}: bind source ${m.source} does not exist`);
      }
      plan.push({
        name,
        destination,
        kind: "bind",
        source: m.source,
        recursive: (flags & MountFlag.MS_REC) !== 0,
        directory: kind === "directory",
        flags: flags & REMOUNT_FLAGS,
        data: "",
      });
    } else {
      plan.push({
        name,
        destination,
        kind: "tmpfs",
        source: "tmpfs",
        recursive: false,
        directory: true,
        flags: flags & ~(MountFlag.MS_BIND | MountFlag.MS_REC),
        data,
      });
    }
  });
  return plan;
}

/** The default devices of a container, as runc makes them. */
export const DEFAULT_DEVICES = ["null", "zero", "full", "random", "urandom", "tty"] as const;

/** Who the guest is, and what its runner becomes before the guest runs. */
export interface GuestUser {
  uid: number;
  gid: number;
  additionalGids: number[];
}

/** Everything the runner sets up in its mount namespace before the guest runs. */
export interface ContainerSetup {
  /** The spec's mounts, planned. */
  mounts: PlannedMount[];
  /** `root.readonly`. */
  readonlyRoot: boolean;
  /**
   * `linux.maskedPaths` and `linux.readonlyPaths`, applied to the node's `/proc` and
   * `/sys` as the runner sees them (its own mount namespace), as runc applies them.
   */
  maskedPaths: string[];
  readonlyPaths: string[];
  /** The spec's user. */
  user: GuestUser;
  /** The shim server's pid: the runner takes the descriptors below from it. */
  serverPid: number;
  /** Server descriptor of a detached copy of the rootfs (see {@linkcode PlannedMount.fd}). */
  rootfsFd?: number;
  /**
   * The spec's `linux.seccomp`, compiled: installed after the setup, on top of the
   * runner's own filter (absent: the runner's filter only).
   */
  seccomp?: CompiledSeccomp;
}
