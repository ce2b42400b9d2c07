/**
 * `wasi:cli@0.2.x` for one component instance: environment, exit, stdio, terminals.
 *
 * @module
 */

import { type ByteSink, type ByteSource, InputStream, OutputStream } from "./io.ts";
import { sharedSink } from "./pipes.ts";

/**
 * Thrown by `wasi:cli/exit`: unwinds the guest and carries its exit code. It is an
 * `Error` so that jco's glue treats it as a trap and lets it through unchanged.
 */
export class GuestExit extends Error {
  /** The exit code the guest asked for. */
  readonly code: number;

  /** An exit with `code`. */
  constructor(code: number) {
    super(`the component exited with code ${code}`);
    this.name = "GuestExit";
    this.code = code;
  }
}

/** What one instance's `wasi:cli` sees. */
export interface CliConfig {
  /** `get-arguments`. */
  args: readonly string[];
  /** `get-environment`, in order. */
  env: readonly (readonly [string, string])[];
  /** `initial-cwd`, a path inside the container; undefined for none. */
  cwd?: string;
  /** Source of stdin (shared by every `get-stdin` handle). */
  stdin: ByteSource;
  /** Sink of stdout (shared by every `get-stdout` handle). */
  stdout: ByteSink;
  /** Sink of stderr (shared by every `get-stderr` handle). */
  stderr: ByteSink;
}

/** The `wasi:cli/terminal-input.terminal-input` resource (never handed out). */
export class TerminalInput {}
/** The `wasi:cli/terminal-output.terminal-output` resource (never handed out). */
export class TerminalOutput {}

/** Keeps the shared source open when one guest handle is dropped. */
function keepOpen(source: ByteSource): ByteSource {
  return {
    take: (max) => source.take(max),
    readable: () => source.readable(),
    whenReadable: () => source.whenReadable(),
    close: () => {},
  };
}

const exit = {
  /** `exit(status: result)`: 0 for ok, 1 for err (all WASI 0.2.0 can say). */
  exit(status: { tag: "ok" | "err" }): never {
    throw new GuestExit(status.tag === "ok" ? 0 : 1);
  },
  /** `exit-with-code(status-code: u8)` (unstable in 0.2.x, used by wasi-libc when present). */
  exitWithCode(code: number): never {
    throw new GuestExit(code & 0xff);
  },
};

const terminals = {
  "wasi:cli/terminal-input": { TerminalInput },
  "wasi:cli/terminal-output": { TerminalOutput },
  "wasi:cli/terminal-stdin": { getTerminalStdin: () => undefined },
  "wasi:cli/terminal-stdout": { getTerminalStdout: () => undefined },
  "wasi:cli/terminal-stderr": { getTerminalStderr: () => undefined },
};

/** The `wasi:cli/*` imports of one instance. */
export function cliImports(config: CliConfig): Record<string, Record<string, unknown>> {
  return {
    "wasi:cli/environment": environmentImport(
      config.args,
      config.env.map(([k, v]) => [k, v]),
      config.cwd,
    ),
    ...cliStdioImports(config),
  };
}

/**
 * `wasi:cli/environment` of one instance. `env` and `args` are its own (the guest gets
 * copies of them on every call, never them).
 */
export function environmentImport(
  args: readonly string[],
  env: readonly (readonly [string, string])[],
  cwd: string | undefined,
): Record<string, unknown> {
  return {
    getEnvironment: () => env.map(([k, v]) => [k, v]),
    getArguments: () => [...args],
    initialCwd: () => cwd,
  };
}

/**
 * The `wasi:cli/*` imports besides the environment: stdio (each `get-std*` call is a
 * new stream over the shared source or sink), exit, terminals. They hold no state of
 * their own, so instances with the same stdio can share them.
 */
export function cliStdioImports(
  config: Pick<CliConfig, "stdin" | "stdout" | "stderr">,
): Record<string, Record<string, unknown>> {
  const stdin = keepOpen(config.stdin);
  const stdout = sharedSink(config.stdout);
  const stderr = sharedSink(config.stderr);
  return {
    "wasi:cli/exit": exit,
    "wasi:cli/stdin": { getStdin: () => new InputStream(stdin, "stdin") },
    "wasi:cli/stdout": { getStdout: () => new OutputStream(stdout, "stdout") },
    "wasi:cli/stderr": { getStderr: () => new OutputStream(stderr, "stderr") },
    ...terminals,
  };
}
