/**
 * Reading `/proc/<pid>/stat`, the one place the shim learns a process's state and
 * parent.
 *
 * @module
 */

/** The fields of `/proc/<pid>/stat` the shim uses. */
export interface ProcStat {
  /** The state letter: `R`, `S`, `D`, `Z` (zombie), `X` (dead), … */
  state: string;
  /** The parent pid. */
  ppid: number;
}

/** `pid`'s state and parent; undefined once it is gone (a zombie is still there). */
export function procStat(pid: number): ProcStat | undefined {
  let stat: string;
  try {
    stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  // "pid (comm) S ppid …": comm may hold spaces and parentheses; it ends at the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { state: fields[0], ppid: Number(fields[1]) };
}
