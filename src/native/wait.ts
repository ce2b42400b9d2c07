/**
 * Waiting for a native container's init process, which the shim server adopts: runc
 * exits after `create`, and its orphaned init is re-parented to the nearest
 * subreaper, the server (`PR_SET_CHILD_SUBREAPER`, see `src/shim/daemon.ts`). The
 * server then reaps it with waitpid(2) through FFI, at each SIGCHLD (`src/sys/libc.ts`).
 *
 * Deno's own child handling reaps only the processes Deno spawned (by pid), never an
 * adopted one, so the status is not lost to it (`wait_test.ts` checks this). Should
 * the init not be the server's child after all (no subreaper), the exit is noticed by
 * polling `/proc/<pid>`, and its status is unknown ({@linkcode UNKNOWN_EXIT_STATUS}).
 *
 * @module
 */

import { waitpid, type WaitResult } from "../sys/libc.ts";
import { procStat } from "../sys/proc.ts";

/** Exit status reported when a process ended but its status could not be read. */
export const UNKNOWN_EXIT_STATUS = 255;
/** Shell-style offset of a death by signal N: 128+N. */
export const SIGNAL_EXIT_BASE = 128;
/** How often the fallback checks whether a process that is not our child is gone. */
export const POLL_INTERVAL_MS = 100;
/** waitpid calls that may fail (EINTR) for a process that is still our child. */
const MAX_WAIT_ATTEMPTS = 100;

/** The low 7 bits of a wait status: 0 for an exit, the signal for a death by signal. */
const TERM_SIGNAL_MASK = 0x7f;
/** Low bits of a stopped (WUNTRACED) or continued (WCONTINUED) process: not an end. */
const STOPPED = 0x7f;

/**
 * Converts a raw wait status into an exit status as containerd reports it: the exit
 * code (WIFEXITED, WEXITSTATUS), or 128+N for a death by signal N (WIFSIGNALED,
 * WTERMSIG; the core-dump bit is ignored).
 *
 * @throws {RangeError} for the status of a stopped or continued process
 */
export function decodeWaitStatus(status: number): number {
  const low = status & TERM_SIGNAL_MASK;
  if (low === 0) return (status >> 8) & 0xff;
  if (low !== STOPPED) return SIGNAL_EXIT_BASE + low;
  throw new RangeError(
    `wait status 0x${status.toString(16)} is that of a stopped or continued process, not an end`,
  );
}

/** The parent pid of `pid` and whether it is a zombie, from `/proc`; undefined once gone. */
export function procParent(pid: number): { ppid: number; zombie: boolean } | undefined {
  const stat = procStat(pid);
  if (stat === undefined) return undefined;
  return { ppid: stat.ppid, zombie: stat.state === "Z" || stat.state === "X" };
}

/** Options of {@linkcode waitForExit}. */
export interface WaitOptions {
  /** Receives a line when the fallback is taken. */
  log?: (line: string) => void;
  /** The waitpid to use (tests); default the FFI one. */
  waitpid?: (pid: number) => Promise<WaitResult>;
  /** This process's pid (tests); default `Deno.pid`. */
  self?: number;
  /** Poll interval of the fallback; default {@linkcode POLL_INTERVAL_MS}. */
  pollMs?: number;
}

/**
 * Resolves with the exit status of `pid` once it has ended: reaped with waitpid(2)
 * when it is a child of this process; otherwise (someone else is its parent) noticed
 * by polling `/proc`, with {@linkcode UNKNOWN_EXIT_STATUS}.
 */
export async function waitForExit(pid: number, options: WaitOptions = {}): Promise<number> {
  const wait = options.waitpid ?? waitpid;
  const self = options.self ?? Deno.pid;
  for (let attempt = 0; attempt < MAX_WAIT_ATTEMPTS; attempt++) {
    const result = await wait(pid);
    if (result.pid === pid) return decodeWaitStatus(result.status);
    // -1: ECHILD (not our child, or reaped by someone else) or EINTR. Only a process
    // that is still ours is worth another waitpid.
    if (procParent(pid)?.ppid !== self) break;
  }
  options.log?.(
    `pid ${pid} cannot be reaped by this process (pid ${self}): waiting for it to be gone ` +
      `from /proc; its exit status will be reported as ${UNKNOWN_EXIT_STATUS}`,
  );
  const pollMs = options.pollMs ?? POLL_INTERVAL_MS;
  for (;;) {
    const proc = procParent(pid);
    if (proc === undefined || proc.zombie) return UNKNOWN_EXIT_STATUS;
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}
