/**
 * How the shim runs another copy of itself (the server daemon, a guest runner).
 *
 * Two install forms exist (see scripts/install.sh):
 * - compiled: `deno compile` made one executable; `Deno.execPath()` is the shim
 *   itself and Deno flags are baked in at compile time;
 * - launcher: the `deno` binary runs `main.ts` from the installed source tree with its
 *   cached dependencies; Deno flags (permissions) are given per process.
 *
 * @module
 */

/** The repository's `main.ts`, resolved from this file. */
const MAIN_URL = new URL("../../main.ts", import.meta.url);
/** The repository's `deno.json` (import map and lockfile location). */
const CONFIG_URL = new URL("../../deno.json", import.meta.url);

/** True when running as a `deno compile`d executable. */
export function isCompiled(): boolean {
  // A compiled binary's main module lives in a virtual file system, never on disk
  // beside a `deno` executable; the executable is then the shim, not `deno`.
  const exe = Deno.execPath();
  return !/(^|\/)deno$/.test(exe);
}

/** A command line that starts this program with `args` after its own flags. */
export interface SelfCommand {
  /** Executable path. */
  cmd: string;
  /** Arguments, Deno's own flags (launcher form) first. */
  args: string[];
}

/**
 * Builds the command line that runs this program again.
 *
 * @param args arguments for main.ts (flags and action word)
 * @param denoFlags Deno flags (permissions) for the launcher form; ignored when
 *   compiled, where flags are fixed at build time
 */
export function selfCommand(args: string[], denoFlags: string[] = ["-A"]): SelfCommand {
  if (isCompiled()) return { cmd: Deno.execPath(), args };
  return scriptCommand(MAIN_URL.pathname, args, denoFlags);
}

/**
 * Builds the command line that runs `script`, a module of the installed source tree
 * (launcher form only), with the same Deno options and config as
 * {@linkcode selfCommand}.
 */
export function scriptCommand(script: string, args: string[], denoFlags: string[]): SelfCommand {
  return {
    cmd: Deno.execPath(),
    args: [
      "run",
      "--no-prompt",
      "--no-check",
      "--quiet",
      "--cached-only",
      `--config=${CONFIG_URL.pathname}`,
      ...denoFlags,
      script,
      ...args,
    ],
  };
}

/**
 * The environment a child copy of the shim needs from Deno itself (its module
 * cache), and nothing of the caller's: pass it with `clearEnv: true`.
 */
export function denoEnv(): Record<string, string> {
  const env: Record<string, string> = { NO_COLOR: "1" };
  for (const key of ["DENO_DIR", "HOME", "PATH"]) {
    const value = Deno.env.get(key);
    if (value !== undefined) env[key] = value;
  }
  return env;
}
