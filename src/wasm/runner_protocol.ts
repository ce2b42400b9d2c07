/**
 * What the shim server (`runner.ts`) and a guest runner (`guest_main.ts`) say to each
 * other over the runner's stdio. Kept apart so that the server does not load the
 * runner's code (the WASI hosts) to know it.
 *
 * 0. runner → server stdout: {@linkcode IDLE_MESSAGE} once it has booted and waits;
 * 1. server → runner stdin: one JSON line, a `GuestInit`;
 * 2. runner → server stdout: one JSON line, a {@linkcode ReadyMessage};
 * 3. server → runner stdin: the line {@linkcode START_LINE} lets the guest run;
 * 4. runner → server stdout: once the guest has ended, one JSON line, an
 *    {@linkcode ExitMessage}, then the runner exits with that code.
 *
 * @module
 */

/**
 * The action word that starts a guest runner's arguments (`main.ts guest <id>`, or the
 * bundled `runner_main.js guest <id>`). The container id follows it on the command
 * line, which the `delete` action checks before killing a pid it finds in the bundle
 * (`src/shim/delete.ts`).
 */
export const RUNNER_ACTION = "guest";

/** The line on a runner's stdin that lets its guest run. */
export const START_LINE = "start";

/** Where a guest's stdio goes when the container has none. */
export const DEV_NULL = "/dev/null";

/** Exit code of a guest that trapped or hit a host error (runwasi's, 128+SIGKILL). */
export const EXIT_TRAP = 137;

/** Exit code of a runner that could not prepare its guest, or was never started. */
export const EXIT_NOT_READY = 1;

/** What a runner answers once its guest is prepared, or could not be. */
export type ReadyMessage = { ready: true } | { error: string; kind: string };

/**
 * The line a runner writes once it has booted (and loaded what it preloads) and
 * waits for its guest: a warm runner's pool may then move it into a cgroup
 * without charging its boot's memory there (see `src/runner/pool.ts`).
 */
export const IDLE_MESSAGE = '{"idle":true}';

/**
 * Starts a runner's stderr line that is a debug line (written only when its guest's
 * configuration says `debug`): the server logs it at debug level, with the others'
 * fields (the container's id and pod).
 */
export const DEBUG_LINE_PREFIX = "[debug] ";

/**
 * The runner argument asking a warm runner to load the component host while it
 * waits for its guest (see `RunnerPool` and `guest_main.ts`).
 */
export const PRELOAD_COMPONENT_ARG = "preload=component";

/**
 * What a runner says once its guest has ended, before it exits with `exit`. The server
 * reports the exit from this line: what the runner does after it (Deno sends the last
 * telemetry at exit, which a slow collector can hold up) delays no container; a runner
 * still there {@linkcode EXIT_FLUSH_GRACE_MS} later is killed.
 */
export interface ExitMessage {
  exit: number;
}

/** How long a runner that said {@linkcode ExitMessage} may take to exit before it is killed. */
export const EXIT_FLUSH_GRACE_MS = 500;

/** The exit code of an {@linkcode ExitMessage} line, or undefined for another line. */
export function parseExitMessage(line: string): number | undefined {
  if (!line.startsWith('{"exit":')) return undefined;
  try {
    const code = (JSON.parse(line) as Partial<ExitMessage>).exit;
    return Number.isInteger(code) && code! >= 0 && code! <= 255 ? code : undefined;
  } catch {
    return undefined;
  }
}
