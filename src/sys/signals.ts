/**
 * Linux signal numbers and the names Deno takes, and exit statuses as containerd
 * reports them.
 *
 * @module
 */

import { invalidArgument } from "../errdefs/errors.ts";

/** Linux signal numbers (x86-64 and arm64) and the names Deno takes. */
const SIGNALS: Readonly<Record<number, Deno.Signal>> = {
  1: "SIGHUP",
  2: "SIGINT",
  3: "SIGQUIT",
  4: "SIGILL",
  5: "SIGTRAP",
  6: "SIGABRT",
  7: "SIGBUS",
  8: "SIGFPE",
  9: "SIGKILL",
  10: "SIGUSR1",
  11: "SIGSEGV",
  12: "SIGUSR2",
  13: "SIGPIPE",
  14: "SIGALRM",
  15: "SIGTERM",
  16: "SIGSTKFLT",
  17: "SIGCHLD",
  18: "SIGCONT",
  19: "SIGSTOP",
  20: "SIGTSTP",
  21: "SIGTTIN",
  22: "SIGTTOU",
  23: "SIGURG",
  24: "SIGXCPU",
  25: "SIGXFSZ",
  26: "SIGVTALRM",
  27: "SIGPROF",
  28: "SIGWINCH",
  29: "SIGIO",
  30: "SIGPWR",
  31: "SIGSYS",
};

/** The Deno name of signal `n`. @throws {ShimError} INVALID_ARGUMENT if unknown */
export function signalName(n: number): Deno.Signal {
  const name = SIGNALS[n];
  if (name === undefined) throw invalidArgument(`unknown signal ${n}`);
  return name;
}

/** The number of a signal named as Deno names it. */
export function signalNumber(name: string): number {
  for (const [n, s] of Object.entries(SIGNALS)) if (s === name) return Number(n);
  throw new RangeError(`unknown signal ${name}`);
}

/** Exit status as containerd reports it: the code, or 128+N for a death by signal N. */
export function exitStatus(status: Deno.CommandStatus): number {
  return status.signal === null ? status.code : 128 + signalNumber(status.signal);
}
