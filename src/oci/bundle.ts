/**
 * The files of a task's bundle directory, one place for every module that reads or
 * writes one. containerd creates the bundle with `config.json` and `rootfs`; the
 * shim adds the rest, and the `delete` action (a fresh process, possibly after the
 * server died) reads them back. `scripts/install.sh`'s launcher answers `delete`
 * from {@linkcode BundleFile.CLEANED} and {@linkcode BundleFile.SLOT} in shell;
 * `bundle_test.ts` checks that it names the same files.
 *
 * This module imports nothing: `start` and `delete` load it on every container's
 * critical path.
 *
 * @module
 */

/** The names of the bundle's files, relative to the bundle directory. */
export const BundleFile = {
  /** The OCI runtime spec (containerd writes it). */
  CONFIG: "config.json",
  /** The container's root filesystem, when the spec's `root.path` is the default. */
  ROOTFS: "rootfs",
  /** The server's ttrpc address (`unix://…`), which containerd 1.x reads on restart. */
  ADDRESS: "address",
  /** The pid of the task's init: the guest runner, or runc's container init. */
  INIT_PID: "init.pid",
  /** The path of the warm runner's slot directory the task took over. */
  SLOT: "slot",
  /**
   * Written by the server once it has deleted the task and released all it held for
   * it (guest, mounts, cgroup, runc state). It holds `delete`'s answer, which the
   * launcher (`write_launcher` in `scripts/install.sh`) and `delete` send as it is
   * instead of cleaning up again.
   */
  CLEANED: "cleaned",
  /** Marks a native task: how its runc was run (JSON), for `delete` after a crash. */
  RUNC_MARKER: "runc.json",
  /** What runc create logs (JSON lines; its errors are read from there). */
  RUNC_LOG: "runc-log.json",
  /** The shim's log (containerd's FIFO, or a file). */
  LOG: "log",
} as const;

/** The name of one of the bundle's files. */
export type BundleFileName = typeof BundleFile[keyof typeof BundleFile];

/** The path of `file` in `bundle`. */
export function bundlePath(bundle: string, file: BundleFileName): string {
  return `${bundle}/${file}`;
}
