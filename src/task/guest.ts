/**
 * The contract between the task service and what runs a container.
 *
 * The task service owns the lifecycle; it asks for a guest at Create (so that a guest
 * that cannot run fails Create with a clear error), starts it at Start, signals it
 * at Kill, and waits on it for the exit status.
 *
 * A wasm guest runs in its own child process ("guest runner", `src/runner`), so that
 * SIGKILL ends even a guest stuck in an infinite loop, stdio FIFOs are closed by the
 * kernel on exit, and the guest's host code holds only the Deno permissions it
 * needs. A container whose entrypoint is a native executable (ELF or `#!`) is a
 * guest too: a Linux container run by runc (`src/native/runc_guest.ts`), which
 * implements the optional members below. `guest_factory.ts` decides which.
 *
 * @module
 */

export type { GuestConfig } from "../wasm/guest_init.ts";

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
  /**
   * Delivers a signal to every process of the guest (KillRequest `all`); without it
   * the guest is one process, and {@linkcode Guest.kill} reaches all of it.
   */
  killAll?(signal: number): Promise<void>;
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
