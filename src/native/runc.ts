/**
 * A small wrapper of runc's command line, for the native containers of a wasm pod
 * (see `runc_guest.ts`): `create`, `start`, `pause`, `resume`, `ps`, `delete`.
 *
 * runc keeps a container's state in `<root>/<id>`; the root is
 * `${WASMTIME_SHIM_RUNC_ROOT:-/run/containerd/runc}/<namespace>`, the layout the runc
 * shim uses. At Create the bundle gets a marker ({@linkcode BundleFile.RUNC_MARKER}) naming
 * the runc binary and root, so that the `delete` action can remove a container its
 * dead server left ({@linkcode deleteMarkedContainer}). This module imports nothing
 * heavy: the `delete` action loads it.
 *
 * @module
 */

import { failedPrecondition } from "../errdefs/errors.ts";
import { BundleFile, bundlePath } from "../oci/bundle.ts";
import { SpanStatus, withSpan } from "../sys/telemetry.ts";

/** Environment variable naming the runc binary (a path, or a name looked up on PATH). */
export const RUNC_ENV = "WASMTIME_SHIM_RUNC";
/** Environment variable naming the parent of the per-namespace runc roots. */
export const RUNC_ROOT_ENV = "WASMTIME_SHIM_RUNC_ROOT";
/** Where runc roots live by default (as for containerd's runc shim). */
export const DEFAULT_RUNC_ROOT = "/run/containerd/runc";
/** The binary looked up on PATH when {@linkcode RUNC_ENV} is not set. */
export const RUNC_NAME = "runc";
/** How long one runc command may take before it is killed. */
export const DEFAULT_RUNC_TIMEOUT_MS = 60_000;
/** The shell that gives `runc create` the container's stdio. */
const SH = "/bin/sh";
/** What an empty stdio path stands for. */
const DEV_NULL = "/dev/null";
/**
 * Opens the three stdio paths read-write on fds 0–2 and execs runc: read-write, so that
 * opening a FIFO never waits for its other end (ctr with an empty stdin never opens
 * it). runc passes its own stdio to the container's init.
 */
const STDIO_SCRIPT = 'i=$1 o=$2 e=$3; shift 3; exec "$@" 0<>"$i" 1<>"$o" 2<>"$e"';

/** What the environment says (`Deno.env` by default; tests pass their own). */
export interface Env {
  get(name: string): string | undefined;
}

function isExecutableFile(path: string): boolean {
  try {
    const info = Deno.statSync(path);
    return info.isFile && ((info.mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/**
 * Finds the runc binary: {@linkcode RUNC_ENV} if set (a path, or a name looked up on
 * PATH), else `runc` on PATH.
 *
 * @throws {ShimError} FAILED_PRECONDITION naming what is missing and where it looked
 */
export function findRunc(env: Env = Deno.env): string {
  const chosen = env.get(RUNC_ENV) ?? "";
  const name = chosen || RUNC_NAME;
  const path = env.get("PATH") ?? "";
  const dirs = path.split(":").filter((d) => d.startsWith("/"));
  if (name.includes("/")) {
    if (isExecutableFile(name)) return name;
  } else {
    for (const dir of dirs) if (isExecutableFile(`${dir}/${name}`)) return `${dir}/${name}`;
  }
  const why = "native containers (an ELF or #! entrypoint) run through runc";
  if (chosen !== "") {
    throw failedPrecondition(
      `${RUNC_ENV}=${chosen} is not an executable file` +
        (name.includes("/") ? "" : ` on PATH (${path})`) + `: ${why}`,
    );
  }
  throw failedPrecondition(
    `runc is not on PATH (${path}) and ${RUNC_ENV} is not set: ${why}; ` +
      `install runc (Debian: apt-get install runc) or set ${RUNC_ENV} to its path`,
  );
}

/** The runc root of a containerd namespace: `${WASMTIME_SHIM_RUNC_ROOT:-…}/<namespace>`. */
export function runcRoot(namespace: string, env: Env = Deno.env): string {
  const parent = (env.get(RUNC_ROOT_ENV) || DEFAULT_RUNC_ROOT).replace(/(.)\/+$/, "$1");
  return `${parent}/${namespace}`;
}

/** A runc command that failed. */
export class RuncError extends Error {
  /** The runc subcommand (`create`, `start`, …). */
  readonly command: string;
  /** runc's exit code (137 when it was killed after the timeout). */
  readonly exitCode: number;

  /** Creates the error of `runc <command>` exiting with `exitCode`, saying `detail`. */
  constructor(command: string, exitCode: number, detail: string) {
    // runc's own messages often start with the same words.
    const why = detail.startsWith(`runc ${command} failed: `)
      ? detail.slice(`runc ${command} failed: `.length)
      : detail;
    super(`runc ${command} failed (exit code ${exitCode}): ${why}`);
    this.name = "RuncError";
    this.command = command;
    this.exitCode = exitCode;
  }
}

/** The last error runc wrote to a `--log-format json` log, if any. */
export function lastLoggedError(log: string): string | undefined {
  let last: string | undefined;
  for (const line of log.split("\n")) {
    if (line.trim() === "") continue;
    try {
      const entry = JSON.parse(line) as { level?: string; msg?: string };
      if ((entry.level === "error" || entry.level === "fatal") && entry.msg) last = entry.msg;
    } catch {
      // not a JSON line (an old runc writing text): keep looking
    }
  }
  return last;
}

/** Options of {@linkcode Runc}. */
export interface RuncOptions {
  /** The runc binary ({@linkcode findRunc}). */
  binary: string;
  /** Its state root (`--root`), one per containerd namespace ({@linkcode runcRoot}). */
  root: string;
  /** Pass `--systemd-cgroup` (the spec's cgroupsPath is `slice:prefix:name`). */
  systemdCgroup?: boolean;
  /** Time limit of each command; default {@linkcode DEFAULT_RUNC_TIMEOUT_MS}. */
  timeoutMs?: number;
}

/** The container's stdio for {@linkcode Runc.create}: host paths, "" for none. */
export interface RuncStdio {
  stdin: string;
  stdout: string;
  stderr: string;
}

/** runc's command line for one root. */
export class Runc {
  /** The runc binary. */
  readonly binary: string;
  /** The state root. */
  readonly root: string;
  /** Whether `--systemd-cgroup` is passed. */
  readonly systemdCgroup: boolean;
  #timeoutMs: number;

  /** A runc for `options.root`. */
  constructor(options: RuncOptions) {
    this.binary = options.binary;
    this.root = options.root;
    this.systemdCgroup = options.systemdCgroup ?? false;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_RUNC_TIMEOUT_MS;
  }

  #global(): string[] {
    return ["--root", this.root, ...(this.systemdCgroup ? ["--systemd-cgroup"] : [])];
  }

  /** Runs a command to its end (killed after the timeout); its output as text. */
  async #exec(
    command: Deno.Command,
  ): Promise<{ code: number; stdout: string; stderr: string; timedOut: boolean }> {
    const child = command.spawn();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }, this.#timeoutMs);
    try {
      const out = await child.output();
      const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes).trim();
      return {
        code: out.code,
        stdout: text(out.stdout),
        stderr: text(out.stderr),
        timedOut,
      };
    } finally {
      clearTimeout(timer);
    }
  }

  /** Runs `exec` (a runc command) in a span `runc <command>` that records its exit code. */
  #traced<T extends { code: number }>(command: string, exec: () => Promise<T>): Promise<T> {
    return withSpan(`runc ${command}`, { "runc.command": command }, async (span) => {
      const out = await exec();
      span?.setAttribute("process.exit.code", out.code);
      if (out.code !== 0) span?.setStatus({ code: SpanStatus.ERROR });
      return out;
    });
  }

  /** Runs `runc <global flags> <args>`; its stdout. @throws {RuncError} */
  async #run(args: string[]): Promise<string> {
    const out = await this.#traced(args[0], () =>
      this.#exec(
        new Deno.Command(this.binary, {
          args: [...this.#global(), ...args],
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }),
      ));
    if (out.code === 0 && !out.timedOut) return out.stdout;
    const detail = out.timedOut
      ? `killed after ${this.#timeoutMs} ms`
      : lastLoggedError(out.stderr) ?? (out.stderr || "it said nothing");
    throw new RuncError(args[0], out.code, detail);
  }

  /**
   * `runc create`: sets the container up from `<bundle>/config.json` (namespaces,
   * cgroup, limits, mounts) with its init waiting for {@linkcode Runc.start}. The
   * container's stdio is runc's own: the given paths, opened read-write. runc writes
   * the init's pid to `pidFile` and its log to `logFile`.
   *
   * @throws {RuncError} with runc's own error message
   */
  async create(
    id: string,
    opts: { bundle: string; pidFile: string; logFile: string; stdio: RuncStdio },
  ): Promise<void> {
    await Deno.remove(opts.logFile).catch(() => {});
    const { stdin, stdout, stderr } = opts.stdio;
    const runc = [
      this.binary,
      ...this.#global(),
      "--log",
      opts.logFile,
      "--log-format",
      "json",
      "create",
      "--bundle",
      opts.bundle,
      "--pid-file",
      opts.pidFile,
      id,
    ];
    const out = await this.#traced("create", () =>
      this.#exec(
        new Deno.Command(SH, {
          args: [
            "-c",
            STDIO_SCRIPT,
            "runc-stdio",
            stdin || DEV_NULL,
            stdout || DEV_NULL,
            stderr || DEV_NULL,
            ...runc,
          ],
          stdin: "null",
          // Only the shell's own complaints (a FIFO it cannot open) come through these:
          // runc's stdio is the container's.
          stdout: "piped",
          stderr: "piped",
        }),
      ));
    if (out.code === 0 && !out.timedOut) return;
    const log = await Deno.readTextFile(opts.logFile).catch(() => "");
    const detail = out.timedOut
      ? `killed after ${this.#timeoutMs} ms`
      : lastLoggedError(log) ?? (out.stderr || "it said nothing (see the container's stderr)");
    throw new RuncError("create", out.code, detail);
  }

  /** `runc start`: lets the created container's init exec its process. */
  async start(id: string): Promise<void> {
    await this.#run(["start", id]);
  }

  /** `runc pause` (freezes the container's cgroup). */
  async pause(id: string): Promise<void> {
    await this.#run(["pause", id]);
  }

  /** `runc resume` (thaws it). */
  async resume(id: string): Promise<void> {
    await this.#run(["resume", id]);
  }

  /** `runc ps --format json`: the pids in the container's cgroup. */
  async ps(id: string): Promise<number[]> {
    const text = await this.#run(["ps", "--format", "json", id]);
    const pids = JSON.parse(text || "null") as number[] | null;
    if (pids !== null && !(Array.isArray(pids) && pids.every(Number.isInteger))) {
      throw new RuncError("ps", 0, `unexpected output ${JSON.stringify(text)}`);
    }
    return pids ?? [];
  }

  /**
   * `runc delete --force`: kills what is left of the container, removes its cgroup
   * and its state. A container runc does not know is fine.
   */
  async delete(id: string): Promise<void> {
    await this.#run(["delete", "--force", id]);
  }
}

/** What {@linkcode BundleFile.RUNC_MARKER} records: how the task's runc was run. */
export interface RuncMarker {
  /** The runc binary. */
  runc: string;
  /** Its state root. */
  root: string;
  /** Whether `--systemd-cgroup` was passed. */
  systemdCgroup: boolean;
}

/** Writes the marker of a native task into its bundle. */
export async function writeMarker(bundle: string, marker: RuncMarker): Promise<void> {
  await Deno.writeTextFile(
    bundlePath(bundle, BundleFile.RUNC_MARKER),
    JSON.stringify(marker) + "\n",
  );
}

/** Removes the marker (the container is gone). */
export async function removeMarker(bundle: string): Promise<void> {
  await Deno.remove(bundlePath(bundle, BundleFile.RUNC_MARKER)).catch(() => {});
}

/** Reads the marker of a bundle; undefined when the task was not native. */
export async function readMarker(bundle: string): Promise<RuncMarker | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(bundlePath(bundle, BundleFile.RUNC_MARKER));
  } catch {
    return undefined;
  }
  const raw = JSON.parse(text) as Partial<RuncMarker>;
  if (typeof raw.runc !== "string" || typeof raw.root !== "string") {
    throw new Error(`${bundle}/${BundleFile.RUNC_MARKER} does not name runc and its root: ${text}`);
  }
  return { runc: raw.runc, root: raw.root, systemdCgroup: raw.systemdCgroup === true };
}

/**
 * For the `delete` action: if the bundle marks a native task, `runc delete --force`
 * it (its processes, cgroup and runc state), then drops the marker.
 *
 * @returns true if the bundle was a native task's
 * @throws {RuncError} or {Error} saying what could not be removed
 */
export async function deleteMarkedContainer(bundle: string, id: string): Promise<boolean> {
  const marker = await readMarker(bundle);
  if (marker === undefined) return false;
  const runc = new Runc({
    binary: marker.runc,
    root: marker.root,
    systemdCgroup: marker.systemdCgroup,
  });
  await runc.delete(id);
  await removeMarker(bundle);
  return true;
}
