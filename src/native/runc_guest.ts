/**
 * Native containers in a wasm pod: when a container's entrypoint is a Linux
 * executable (an ELF binary or a `#!` script, see `detect.ts`) rather than Wasm, the
 * shim runs it as a normal Linux container through runc — this is how Kubernetes'
 * pause container and native sidecars run in a pod whose RuntimeClass is this shim.
 *
 * It is a second guest (`src/task/guest.ts`) beside the wasm runner:
 *
 * - Create: `runc create --bundle <bundle> --pid-file <bundle>/init.pid <id>`, with
 *   runc's stdio (which runc hands to the container's init) on the task's FIFOs,
 *   opened read-write so that opening never blocks. runc reads `<bundle>/config.json`
 *   (the rootfs is already mounted at `<bundle>/rootfs`) and applies the spec's
 *   namespaces, cgroupsPath and resources itself. The bundle gets a marker
 *   (`runc.ts`, `BundleFile.RUNC_MARKER`) for the `delete` action.
 * - The init: once runc create has exited, the orphaned init is the shim server's
 *   child (the server is a subreaper) and is reaped with waitpid(2) (`wait.ts`).
 * - Start: `runc start`; Kill: kill(2) on the init (any signal number); Pause/Resume:
 *   `runc pause`/`resume`; Pids: `runc ps`; Delete: `runc delete --force`.
 *
 * stdin: the container holds its stdin FIFO open for reading and writing, so it never
 * reads EOF there (CloseIO cannot end it); a native container that must see the end
 * of its input does not get it. A terminal (`process.terminal`) is refused at Create,
 * as for Wasm.
 *
 * @module
 */

import { failedPrecondition, invalidArgument } from "../errdefs/errors.ts";
import { Errno, kill, SyscallError } from "../sys/libc.ts";
import { isSystemdPath } from "../cgroup/paths.ts";
import { readSpec } from "../oci/spec.ts";
import type { GuestConfig } from "../wasm/guest_init.ts";
import type { NativeKind } from "./detect.ts";
import { findRunc, removeMarker, Runc, RuncError, type RuncOptions, writeMarker } from "./runc.ts";
import { waitForExit } from "./wait.ts";
import { BundleFile, bundlePath } from "../oci/bundle.ts";

/** The largest signal number Linux has (SIGRTMAX). */
export const MAX_SIGNAL = 64;

/** Options of {@linkcode createRuncGuest}. */
export interface NativeGuestOptions {
  /** runc's state root for the task's namespace (see `runcRoot` in `runc.ts`). */
  root: string;
  /** The runc binary; default {@linkcode findRunc} (FAILED_PRECONDITION when missing). */
  binary?: string;
  /** Time limit of each runc command (`RuncOptions.timeoutMs`). */
  timeoutMs?: number;
  /** Receives a line for the shim's log. */
  log?: (line: string) => void;
}

/** What the entrypoint was found to be. */
export interface NativeEntry {
  /** The executable's canonical path inside the container. */
  guestPath: string;
  /** ELF or script. */
  kind: NativeKind;
}

/** A native container run by runc. */
export class RuncGuest {
  readonly pid: number;
  readonly exited: Promise<number>;
  /** runc puts the init into the spec's cgroup and applies its limits. */
  readonly ownCgroup = true;
  #id: string;
  #bundle: string;
  #runc: Runc;
  #done = false;
  #started = false;
  #destroyed = false;

  constructor(id: string, bundle: string, runc: Runc, pid: number, log?: (line: string) => void) {
    this.#id = id;
    this.#bundle = bundle;
    this.#runc = runc;
    this.pid = pid;
    this.exited = waitForExit(pid, { log }).then((status) => {
      this.#done = true;
      return status;
    });
  }

  #fail(what: string, err: unknown): never {
    const why = err instanceof RuncError ? err.message : (err as Error).message;
    throw failedPrecondition(`native container ${this.#id}: ${what}: ${why}`);
  }

  async start(): Promise<void> {
    if (this.#started) throw failedPrecondition(`guest ${this.#id} is already started`);
    this.#started = true;
    try {
      await this.#runc.start(this.#id);
    } catch (err) {
      this.#fail("starting it", err);
    }
  }

  /** Nothing to do: the container holds its stdin open itself (see the module doc). */
  closeStdin(): void {}

  kill(signal: number): void {
    if (signal === 0 || this.#done) return;
    this.#signal(this.pid, signal);
  }

  /** Signals every process of the container (`ctr task kill --all`), init included. */
  async killAll(signal: number): Promise<void> {
    if (signal === 0 || this.#done) return;
    for (const pid of new Set([this.pid, ...await this.pids()])) this.#signal(pid, signal);
  }

  #signal(pid: number, signal: number): void {
    if (!Number.isInteger(signal) || signal < 0 || signal > MAX_SIGNAL) {
      throw invalidArgument(`native container ${this.#id}: unknown signal ${signal}`);
    }
    try {
      kill(pid, signal);
    } catch (err) {
      // Exited between the check and the kill: the exit comes through `exited`.
      if (!(err instanceof SyscallError && err.errno === Errno.ESRCH)) throw err;
    }
  }

  async pause(): Promise<void> {
    try {
      await this.#runc.pause(this.#id);
    } catch (err) {
      this.#fail("pausing it", err);
    }
  }

  async resume(): Promise<void> {
    try {
      await this.#runc.resume(this.#id);
    } catch (err) {
      this.#fail("resuming it", err);
    }
  }

  async pids(): Promise<number[]> {
    if (this.#done) return [];
    try {
      return await this.#runc.ps(this.#id);
    } catch (err) {
      this.#fail("listing its processes", err);
    }
  }

  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    try {
      await this.#runc.delete(this.#id);
    } catch (err) {
      this.#fail("deleting it", err);
    }
    this.#destroyed = true;
    await removeMarker(this.#bundle);
  }
}

/** The runc options for a task: its binary, root, and cgroup driver from the spec. */
async function runcFor(bundle: string, options: NativeGuestOptions): Promise<RuncOptions> {
  const binary = options.binary ?? findRunc();
  const spec = await readSpec(bundle);
  const runcOptions: RuncOptions = {
    binary,
    root: options.root,
    // `slice:prefix:name` is systemd's notation, which runc reads only with its systemd
    // driver (runc then asks systemd for a scope, as the runc shim with SystemdCgroup).
    systemdCgroup: spec.cgroupsPath !== undefined && isSystemdPath(spec.cgroupsPath),
    timeoutMs: options.timeoutMs,
  };
  return runcOptions;
}

/**
 * Creates a native container for `cfg` through runc, its init waiting for Start.
 *
 * @throws {ShimError} FAILED_PRECONDITION when runc is missing (naming what and where it
 *   looked) or refuses the container (with runc's own message); nothing is left behind
 */
export async function createRuncGuest(
  cfg: GuestConfig,
  entry: NativeEntry,
  options: NativeGuestOptions,
): Promise<RuncGuest> {
  const bundle = cfg.bundle;
  if (!bundle) {
    throw failedPrecondition(`native container ${cfg.id}: runc needs the task's bundle`);
  }
  const runcOptions = await runcFor(bundle, options);
  const runc = new Runc(runcOptions);
  options.log?.(
    `guest ${cfg.id}: ${entry.guestPath} is ${
      entry.kind === "elf" ? "an ELF executable" : "a #! script"
    }: running it natively with ${runc.binary} (root ${runc.root})`,
  );
  await writeMarker(bundle, {
    runc: runc.binary,
    root: runc.root,
    systemdCgroup: runc.systemdCgroup,
  });
  const pidFile = bundlePath(bundle, BundleFile.INIT_PID);
  let pid: number;
  try {
    await runc.create(cfg.id, {
      bundle,
      pidFile,
      logFile: bundlePath(bundle, BundleFile.RUNC_LOG),
      stdio: { stdin: cfg.stdin, stdout: cfg.stdout, stderr: cfg.stderr },
    });
    const text = (await Deno.readTextFile(pidFile)).trim();
    pid = Number(text);
    if (!Number.isSafeInteger(pid) || pid <= 0) {
      throw new Error(`runc wrote "${text}" to ${pidFile}, which is not a pid`);
    }
  } catch (err) {
    // runc cleans up after a failed create itself; this covers a create it was killed in.
    await runc.delete(cfg.id).catch((cleanup) =>
      options.log?.(`guest ${cfg.id}: cleaning up after runc create: ${cleanup.message}`)
    );
    await removeMarker(bundle);
    throw failedPrecondition(`native container ${cfg.id}: ${(err as Error).message}`);
  }
  return new RuncGuest(cfg.id, bundle, runc, pid, options.log);
}
