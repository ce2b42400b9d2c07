/**
 * The contract between the task service and wasm execution.
 *
 * The task service (src/task) owns the lifecycle; it asks this layer to prepare a
 * guest at Create (so that a guest that cannot run fails Create with a clear error),
 * to start it at Start, to signal it at Kill, and waits on it for the exit status.
 *
 * Every guest runs in its own child process ("guest runner"), so that SIGKILL ends
 * even a guest stuck in an infinite loop, stdio FIFOs are closed by the kernel on
 * exit, and the guest's host code holds only the Deno permissions it needs.
 *
 * A container whose entrypoint is a native executable (ELF or `#!`) is a guest too:
 * a Linux container run by runc (`src/native/runc_guest.ts`), which implements the
 * optional members below.
 *
 * @module
 */

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
  /** Directory where the runner may keep caches (transpiled components, …). */
  cacheDir?: string;
  /**
   * Called with the pid of the process that will run the guest as soon as it is
   * known, before it is ready: the task service moves it into the task's cgroup
   * meanwhile (a cgroup migration waits for the kernel, milliseconds). Not called
   * for a guest that joins its cgroup itself (`Guest.ownCgroup`).
   */
  onPid?: (pid: number) => void;
}

/** A prepared or running guest. */
export interface Guest {
  /** Host pid of the process that runs the guest. */
  readonly pid: number;
  /** Lets a prepared guest run. Resolves once it runs. */
  start(): Promise<void>;
  /** Ends the guest's stdin (CloseIO): the guest reads EOF once it has read what came before. */
  closeStdin(): void;
  /** Delivers a signal (a number, as in KillRequest) to the guest. */
  kill(signal: number): void;
  /** Resolves with the exit status: the guest's own code, or 128+N when killed by signal N. */
  readonly exited: Promise<number>;
  /**
   * True when the guest's runtime puts it into the spec's cgroup and applies the spec's
   * limits itself (runc, for a native container): the task service then does not move
   * its pid, and only reads that cgroup (Stats, OOM) and changes it (Update).
   */
  readonly ownCgroup?: boolean;
  /** Pauses the whole guest (Pause); without it the service sends SIGSTOP. */
  pause?(): Promise<void>;
  /** Resumes it (Resume); without it the service sends SIGCONT. */
  resume?(): Promise<void>;
  /** The pids of all its processes (Pids); without it, just {@linkcode Guest.pid}. */
  pids?(): Promise<number[]>;
  /** Frees what its runtime keeps once it has exited (Delete), e.g. runc's state. */
  destroy?(): Promise<void>;
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
