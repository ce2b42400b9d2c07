/**
 * What a guest is configured with ({@linkcode GuestConfig}: from the OCI spec and the
 * Create request), and what a guest runner process receives on its stdin
 * ({@linkcode GuestInit}). Both sides of a runner use these: the server's side
 * (`src/runner`, and `src/native` for a native container) and the runner itself.
 *
 * @module
 */

import type { ContainerSetup } from "../oci/mounts.ts";
import type { ContainerLimits, SpecMount, SpecUser } from "../oci/spec.ts";

/** What the OCI spec and Create request say about one guest. */
export interface GuestConfig {
  /** Container id (for logs and error messages). */
  id: string;
  /** Absolute host path of the mounted container root (`<bundle>/rootfs`). */
  rootfs: string;
  /** The task's bundle directory, where cleanup records are kept. */
  bundle?: string;
  /** `process.args` from the OCI spec; `args[0]` names the module, optionally `path#func`. */
  args: string[];
  /** `process.env` from the OCI spec, as `KEY=VALUE` strings: the only env the guest sees. */
  env: string[];
  /** `process.cwd` from the OCI spec (a path inside the container), default `/`. */
  cwd: string;
  /** Host path of the stdin FIFO, or "" for none. */
  stdin: string;
  /** Host path of the stdout FIFO, or "" for none. */
  stdout: string;
  /** Host path of the stderr FIFO, or "" for none. */
  stderr: string;
  /** Path of a network namespace to run in (from `linux.namespaces`), if any. */
  netns?: string;
  /**
   * Whether the guest may reach the network (`wasi:sockets`, outgoing `wasi:http`): see
   * `guestNetworkAllowed` in `src/oci/spec.ts`. Absent: no.
   */
  network?: boolean;
  /** The spec's `mounts` (planned for a wasm guest into {@linkcode container}). */
  mounts?: SpecMount[];
  /** The spec's `process.user`. */
  user?: SpecUser;
  /** The spec's `root.readonly`. */
  readonlyRoot?: boolean;
  /** The spec's `linux.maskedPaths` and `linux.readonlyPaths`. */
  maskedPaths?: string[];
  readonlyPaths?: string[];
  /** The spec's `linux.seccomp`, unread (see `parseSeccomp` in `src/oci/spec.ts`). */
  seccomp?: unknown;
  /**
   * What the runner sets up before the guest runs (mounts, devices, user; see
   * `container_setup.ts`). Without it, the runner runs the guest as it is.
   */
  container?: ContainerSetup;
  /**
   * The container's CPU and memory limits at Create (spec `linux.resources`): defaults
   * are sized to them (a wasi:http proxy's serving threads and grown-memory budget).
   */
  limits?: ContainerLimits;
  /** Directory where the runner may keep caches (transpiled components, …). */
  cacheDir?: string;
  /**
   * Called with the pid of the process that will run the guest as soon as it is
   * known, before it is ready: the task service moves it into the task's cgroup
   * meanwhile (a cgroup migration waits for the kernel, milliseconds). Not called
   * for a guest that joins its cgroup itself (`Guest.ownCgroup`, `src/task/guest.ts`).
   */
  onPid?: (pid: number) => void;
  /**
   * The W3C `traceparent` of the span that created the guest (the server's Create),
   * when telemetry is on: the runner's own spans are its children.
   */
  traceparent?: string;
  /** The server logs debug lines (`-debug`): the runner writes its own too. */
  debug?: boolean;
}

/**
 * What a guest runner process receives (one JSON line on its stdin): the guest's
 * config and its resolved entrypoint (see `entrypoint.ts`).
 */
export interface GuestInit extends GuestConfig {
  /** Host path of the wasm file. */
  hostPath: string;
  /** The same file's canonical path inside the container. */
  guestPath: string;
  /** Exported function to call (`_start` for a command). */
  func: string;
  /**
   * Digest of the image layer `hostPath` holds, when the wasm comes from the
   * container's image (a Wasm OCI artifact) instead of its rootfs; `hostPath` is
   * then in the shim's blob cache and `guestPath` only names it.
   */
  layer?: string;
}
