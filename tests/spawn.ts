/**
 * Runs a command for a test without depending on what its descendants do with their
 * output: the command gets its own process group, its stdout and stderr go to a file
 * (never a pipe a grandchild could keep open), and the test waits for the command's
 * own exit. Whatever it left running in its group is reported, then killed, so a test
 * can assert that nothing was left and never leaks a process itself.
 *
 * @module
 */

/** What a command run by {@linkcode spawnLogged} did. */
export interface Finished {
  /** Its exit code (128 + N after signal N). */
  code: number;
  /** Its stdout and stderr, interleaved as written. */
  output: string;
  /** `pid comm` of each process it left running in its process group (now killed). */
  leftover: string[];
  /** True if the deadline killed it. */
  timedOut: boolean;
}

/** A command started by {@linkcode spawnLogged}. */
export interface Spawned {
  /** The command's pid, also its process group id. */
  pid: number;
  /** Its output so far. */
  output(): Promise<string>;
  /** Resolves once `text` appears in its output, or rejects when it exits first. */
  waitFor(text: string): Promise<void>;
  /** Sends `signal` to the command itself; nothing happens once it has exited. */
  signal(signal: Deno.Signal): void;
  /** Resolves when the command has exited (its leftovers reported and killed). */
  finished: Promise<Finished>;
}

/** Options of {@linkcode spawnLogged}. */
export interface SpawnOptions {
  /** Environment for the command, added to this process's own unless `clearEnv`. */
  env?: Record<string, string>;
  /** Give the command only `env`. */
  clearEnv?: boolean;
  /** Working directory. */
  cwd?: string;
  /** After this long the whole group is killed (SIGKILL) and `timedOut` is set. */
  timeoutMs: number;
}

/**
 * Starts `cmd args…` in a new process group, with stdin from /dev/null and stdout and
 * stderr appended to a temp file.
 */
export async function spawnLogged(
  cmd: string,
  args: string[],
  opts: SpawnOptions,
): Promise<Spawned> {
  const log = await Deno.makeTempFile({ prefix: "spawn-log-" });
  // bash opens the log as the command's stdout and stderr, then becomes the command.
  const child = new Deno.Command("bash", {
    args: ["-c", 'exec "$@" >>"$0" 2>&1', log, cmd, ...args],
    env: opts.env,
    clearEnv: opts.clearEnv,
    cwd: opts.cwd,
    stdin: "null",
    stdout: "null",
    stderr: "null",
    detached: true,
  }).spawn();
  const pid = child.pid;
  let exited = false;
  let timedOut = false;
  const deadline = setTimeout(() => {
    timedOut = true;
    killGroup(pid);
  }, opts.timeoutMs);
  const output = () => Deno.readTextFile(log);
  const finished = (async (): Promise<Finished> => {
    const { code } = await child.status;
    exited = true;
    clearTimeout(deadline);
    const leftover = groupMembers(pid);
    killGroup(pid);
    const text = await output();
    await Deno.remove(log).catch(() => {});
    return { code, output: text, leftover, timedOut };
  })();
  return {
    pid,
    output,
    finished,
    signal(signal) {
      if (exited) return;
      try {
        Deno.kill(pid, signal);
      } catch {
        // exited between the check and the kill
      }
    },
    async waitFor(text) {
      for (;;) {
        const now = await output().catch(() => "");
        if (now.includes(text)) return;
        if (exited) throw new Error(`exited before printing ${JSON.stringify(text)}:\n${now}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
}

/** Runs a command to its end as {@linkcode spawnLogged} does. */
export async function runLogged(
  cmd: string,
  args: string[],
  opts: SpawnOptions,
): Promise<Finished> {
  return await (await spawnLogged(cmd, args, opts)).finished;
}

/** `pid comm` of every live process in process group `pgid`. */
export function groupMembers(pgid: number): string[] {
  const found: string[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      // Fields after the parenthesised comm: state ppid pgrp …
      const close = stat.lastIndexOf(")");
      const [state, , pgrp] = stat.slice(close + 2).split(" ");
      if (Number(pgrp) === pgid && state !== "Z") {
        found.push(`${entry.name} ${stat.slice(stat.indexOf("(") + 1, close)}`);
      }
    } catch {
      // gone while listing
    }
  }
  return found;
}

function killGroup(pgid: number): void {
  try {
    Deno.kill(-pgid, "SIGKILL");
  } catch {
    // nothing left in the group
  }
}
