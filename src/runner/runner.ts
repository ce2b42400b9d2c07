/**
 * Starts guest runner processes (see `guest_main.ts`) and drives them for the task
 * service: {@linkcode createGuest} at Create, then `start()`, `kill()` and `exited`.
 *
 * Each runner is this program again (`main.ts guest <id>`), started with an empty
 * environment except what Deno needs ({@linkcode denoEnv}), cwd `/`, and — in the
 * launcher install form — Deno permissions narrowed to the container's rootfs and
 * stdio ({@linkcode guestDenoFlags}).
 *
 * @module
 */

import { Code, failedPrecondition, invalidArgument, RpcError } from "../ttrpc/status.ts";
import type { ContainerdAddress } from "../image/containerd/client.ts";
import {
  denoEnv,
  isCompiled,
  scriptCommand,
  type SelfCommand,
  selfCommand,
} from "../sys/self_exec.ts";
import { detectNative } from "../native/detect.ts";
import { createRuncGuest, type NativeGuestOptions } from "../native/runc_guest.ts";
import { detectKind, HEADER_LENGTH, type WasmKind } from "../wasm/detect.ts";
import { resolveGuestEntrypoint } from "../image/image_entrypoint.ts";
import {
  DEV_NULL,
  IDLE_MESSAGE,
  PRELOAD_COMPONENT_ARG,
  type ReadyMessage,
  RUNNER_ACTION,
  START_LINE,
} from "../wasm/runner_protocol.ts";
import type { RunnerPool } from "./pool.ts";
import { drainedBy, holdReaders, holdReadersNow, NonBlockingFifo } from "../sys/fifo.ts";
import type { Guest, GuestConfig, GuestInit } from "../wasm/guest_init.ts";

export { RUNNER_ACTION };

/**
 * V8 options of every runner, by default: the garbage collector works on the thread
 * that allocates, without helper threads, and young generations stay small (8 MB
 * semi-spaces). A runner shares the node's cores with the other containers; under
 * load, helper threads only compete with the threads serving requests, and a large
 * young generation makes each scavenge pause longer. Measured with wasi:http on 2
 * cores (runner alone), `wrk -t2 -c50`: 22.5–23.4k req/s, p99 15–17 ms without;
 * 26.1–30.0k req/s, p99 8.6–9.7 ms with (`--max-semi-space-size=8` alone: p99 11–13
 * ms). The price is at high concurrency: with `-c200`, p99 39–60 ms and a peak RSS
 * of ~450 MB, against 22–26 ms and 190–290 MB without `--single-threaded-gc`. A
 * node can choose with {@linkcode RUNNER_V8_FLAGS_ENV}. A runner's start costs the
 * same either way (19–20 ms of CPU).
 */
export const DEFAULT_RUNNER_V8_FLAGS = "--single-threaded-gc,--max-semi-space-size=8";

/**
 * The shim's environment variable that replaces {@linkcode DEFAULT_RUNNER_V8_FLAGS}
 * (launcher form; a compiled binary has its V8 options fixed when it is built).
 */
export const RUNNER_V8_FLAGS_ENV = "WASMTIME_SHIM_RUNNER_V8_FLAGS";

/**
 * The V8 options runners start with: `value` (the shim's
 * {@linkcode RUNNER_V8_FLAGS_ENV}) if set, else the default; "" for V8's own.
 *
 * @throws {Error} for a value that is not a comma-separated list of `--flag[=value]`
 */
export function runnerV8Flags(value: string | undefined): string[] {
  if (value === undefined) return [`--v8-flags=${DEFAULT_RUNNER_V8_FLAGS}`];
  if (value.trim() === "") return [];
  if (!/^--[a-z0-9-]+(=[\w.-]+)?(,--[a-z0-9-]+(=[\w.-]+)?)*$/.test(value.trim())) {
    throw new Error(
      `${RUNNER_V8_FLAGS_ENV}="${value}" is not a comma-separated list of V8 options ` +
        `(e.g. ${DEFAULT_RUNNER_V8_FLAGS})`,
    );
  }
  return [`--v8-flags=${value.trim()}`];
}

/** How long a runner may take to compile and check its guest before Create fails. */
export const DEFAULT_READY_TIMEOUT_MS = 60_000;
/** How many of the runner's last stderr lines an error message quotes. */
export const STDERR_TAIL_LINES = 10;
/** How long Start waits for a reader on the container's stdout and stderr FIFOs. */
const READER_WAIT_MS = 1_000;
/** How long a guest's exit waits for the readers to take its output (see `exited`). */
const OUTPUT_DRAIN_MS = 1_000;
/** How long a runner that closed its stdout gets to exit before it is killed. */
const EXIT_GRACE_MS = 2_000;
/** The npm packages (jco's transpiler reads its own wasm from there at run time). */
export const NODE_MODULES = new URL("../../node_modules", import.meta.url).pathname;
/**
 * The shim's own source tree (launcher form): a wasi:http runner starts its worker
 * threads from `component/http_worker.ts`, which Deno checks against `--allow-read`.
 */
export const APP_SRC = new URL("../", import.meta.url).pathname;
/** Where util-linux `nsenter` is looked for when not on PATH. */
const NSENTER_DIRS = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"];

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

/** The Deno name of signal `n`. @throws {RpcError} INVALID_ARGUMENT if unknown */
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

/** What a guest runner needs from the host, for {@linkcode guestDenoFlags}. */
export interface GuestPermissions {
  /** Host path of the container's root (read and write: it is the guest's `/`). */
  rootfs: string;
  /** Host paths of the stdio FIFOs; "" (none) stands for /dev/null. */
  stdio: readonly string[];
  /** What the guest is; components may keep transpiled code in `cacheDir`. */
  kind: WasmKind;
  /** Cache directory a component runner may read and write. */
  cacheDir?: string;
  /** Network access: none (default), all (`true`), or these `host[:port]`s. */
  net?: boolean | readonly string[];
  /** The wasm file, read-only, when it is outside the rootfs (an image layer). */
  wasmFile?: string;
}

/** A Deno `--allow-*=a,b` flag. @throws {RpcError} INVALID_ARGUMENT for a path with "," */
export function allowList(flag: string, paths: readonly string[]): string {
  for (const path of paths) {
    if (path.includes(",")) {
      throw invalidArgument(
        `${path}: paths containing "," cannot be granted to a guest runner ` +
          `(Deno permission lists are comma-separated)`,
      );
    }
  }
  return `--${flag}=${[...new Set(paths)].join(",")}`;
}

/**
 * The Deno permission flags of a guest runner (launcher install form): read and write
 * on the rootfs and stdio, the cache directory for components, network only when
 * asked. The preview1 host needs nothing more.
 *
 * @throws {RpcError} INVALID_ARGUMENT for a path Deno's flags cannot express
 */
export function guestDenoFlags(req: GuestPermissions): string[] {
  const paths = [req.rootfs, ...req.stdio.map((p) => p || DEV_NULL)];
  if (req.kind === "component" && req.cacheDir) paths.push(req.cacheDir);
  const readOnly = req.kind === "component" ? [NODE_MODULES, APP_SRC] : [];
  if (req.wasmFile) readOnly.push(req.wasmFile);
  const flags = [allowList("allow-read", [...paths, ...readOnly]), allowList("allow-write", paths)];
  // jco and preview2-shim read the environment when they load; the runner's own env
  // is cleared (denoEnv), so only Deno's variables could be read through this.
  if (req.kind === "component") flags.push("--allow-env");
  if (req.net === true) flags.push("--allow-net");
  else if (req.net && req.net.length > 0) flags.push(allowList("allow-net", req.net));
  return flags;
}

/** Options of {@linkcode createGuest}. */
export interface CreateGuestOptions {
  /** Receives each line the runner writes on its stderr (for the shim's log). */
  log?: (line: string) => void;
  /** Time allowed for the runner to be ready; default {@linkcode DEFAULT_READY_TIMEOUT_MS}. */
  readyTimeoutMs?: number;
  /** Network access for the guest's host code (wasi:http servers); none by default. */
  net?: boolean | readonly string[];
  /**
   * containerd's gRPC socket and namespace: when set, a container whose entrypoint is
   * not in its rootfs may run a Wasm layer of its image (see `image_entrypoint.ts`).
   */
  containerd?: ContainerdAddress;
  /**
   * How to run a container whose entrypoint is a native executable (ELF or `#!`) with
   * runc (see `src/native/runc_guest.ts`); without it such an entrypoint is refused as
   * not Wasm.
   */
  native?: NativeGuestOptions;
}

/** Finds util-linux `nsenter`. */
function findNsenter(): string {
  const path = Deno.env.get("PATH") ?? "";
  for (const dir of [...path.split(":").filter((d) => d.startsWith("/")), ...NSENTER_DIRS]) {
    if (isFile(`${dir}/nsenter`)) return `${dir}/nsenter`;
  }
  throw failedPrecondition(
    "the spec asks for a network namespace, but nsenter (util-linux) is not installed",
  );
}

async function readHeader(path: string): Promise<Uint8Array> {
  using file = await Deno.open(path);
  const buf = new Uint8Array(HEADER_LENGTH);
  let n = 0;
  while (n < buf.length) {
    const got = await file.read(buf.subarray(n));
    if (got === null) break;
    n += got;
  }
  return buf.subarray(0, n);
}

/** Resolves with `promise`'s value, or "timeout" after `ms`. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<"timeout">((resolve) => timer = setTimeout(() => resolve("timeout"), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Yields the lines of a byte stream (a last unterminated line too). */
async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let pending = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    pending += text;
    let nl;
    while ((nl = pending.indexOf("\n")) >= 0) {
      yield pending.slice(0, nl);
      pending = pending.slice(nl + 1);
    }
  }
  if (pending !== "") yield pending;
}

/** Index of `needle` in `haystack`, or -1. */
function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return i;
  }
  return -1;
}

/** A guest running in a runner process. */
class RunnerGuest implements Guest {
  readonly pid: number;
  readonly exited: Promise<number>;
  #id: string;
  #child: Deno.ChildProcess;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #started = false;
  #done = false;
  #stdinPath: string;
  #stdinClosed = false;
  #fifo: NonBlockingFifo | undefined;
  /** The output FIFOs no writer end is held on yet (see `start`). */
  #output: string[] = [];
  /** Writer ends held on the output FIFOs from Create until the guest is gone. */
  #held: NonBlockingFifo[] = [];

  /**
   * @param drained settles when the runner's stdout and stderr are read to the end;
   *   `exited` waits for it (briefly), so that the runner's last log lines come first
   */
  constructor(
    id: string,
    child: Deno.ChildProcess,
    stdin: WritableStreamDefaultWriter<Uint8Array>,
    drained: Promise<unknown>,
    stdio: { stdin: string; stdout: string; stderr: string },
    onExit: () => void = () => {},
  ) {
    this.#id = id;
    this.#stdinPath = stdio.stdin;
    // Writer ends on the output FIFOs whose readers are there already (ctr's and
    // containerd's open before Create), as runc's shim opens them at Create: see start.
    const { held, waiting } = holdReadersNow([stdio.stdout, stdio.stderr]);
    this.#held = held;
    this.#output = waiting;
    this.#child = child;
    this.#stdin = stdin;
    this.pid = child.pid;
    this.exited = child.status.then(async (status) => {
      this.#done = true;
      try {
        onExit();
      } catch {
        // cleanup problems are logged by onExit itself
      }
      // Frees the pipe of a guest that never started, and ends the stdin pump.
      this.#abandonStdin();
      // The exit is reported once the readers have taken the guest's output: ctr, told
      // of the exit, gives up a FIFO open its runtime has not finished yet (it can lag
      // under load), and a fast guest's output went with it. Bounded, for readers that
      // do not read.
      await Promise.all([
        within(drained, EXIT_GRACE_MS),
        drainedBy(this.#held, OUTPUT_DRAIN_MS),
      ]);
      for (const end of this.#held.splice(0)) end.close();
      return exitStatus(status);
    });
  }

  async start(): Promise<void> {
    if (this.#started) throw failedPrecondition(`guest ${this.#id} is already started`);
    this.#started = true;
    // A reader (ctr, containerd) opens its end of the output FIFOs in the background:
    // its open(2) returns only once a writer opens the FIFO, and ctr gives up an open
    // still under way when the task has exited. Were the guest to write and exit
    // before that, the output would be lost; so writer ends are held from Create (or,
    // for a reader that came later, from here), until the guest is gone.
    this.#held.push(...await holdReaders(this.#output.splice(0), READER_WAIT_MS));
    try {
      await this.#stdin.write(new TextEncoder().encode(`${START_LINE}\n`));
    } catch (err) {
      throw failedPrecondition(
        `guest ${this.#id}: its runner (pid ${this.pid}) is gone: ${(err as Error).message}`,
      );
    }
    if (this.#stdinPath === "") this.#finishStdin();
    else this.#pumpStdin();
  }

  /**
   * Copies the container's stdin FIFO into the runner's stdin pipe. The FIFO is
   * opened read-write so that opening never waits for a writer that may never come
   * (ctr with an empty stdin never opens its end); the end of stdin is therefore
   * signalled by CloseIO (or the guest's exit), not by the FIFO's EOF.
   *
   * At CloseIO the client has already written everything and closed its end, but
   * some of it may still sit in the FIFO. So the server writes a random marker into
   * the FIFO and forwards everything before it: nothing written before CloseIO is
   * lost, and the blocked read is woken.
   */
  async #pumpStdin(): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    const marker = this.#marker;
    let carry = new Uint8Array(0);
    try {
      // Non-blocking: an idle FIFO must not hold one of Deno's few blocking threads.
      this.#fifo = NonBlockingFifo.openReadWrite(this.#stdinPath);
      if (this.#closeRequested) this.#wake();
      while (true) {
        const n = await this.#fifo.read(buf, () => !this.#stdinClosed);
        if (n <= 0) break;
        const data = new Uint8Array(carry.length + n);
        data.set(carry);
        data.set(buf.subarray(0, n), carry.length);
        const end = indexOf(data, marker);
        if (end >= 0) {
          if (end > 0) await this.#stdin.write(data.slice(0, end));
          break;
        }
        const keep = Math.min(marker.length - 1, data.length);
        if (data.length > keep) await this.#stdin.write(data.slice(0, data.length - keep));
        carry = data.slice(data.length - keep);
        if (this.#stdinClosed) break;
      }
    } catch {
      // The runner is gone or the FIFO was removed: stdin ends.
    } finally {
      this.#finishStdin();
      // Stdin may have been finished before the FIFO was opened (the guest exited).
      this.#fifo?.close();
      this.#fifo = undefined;
    }
  }

  /** Random bytes that end the stdin stream once CloseIO was asked for. */
  #marker = crypto.getRandomValues(new Uint8Array(32));
  #closeRequested = false;

  /** Writes the end marker into the FIFO through a second handle (the pump stops there). */
  #wake(): void {
    const marker = this.#marker;
    const attempt = (tries: number) => {
      try {
        const waker = NonBlockingFifo.openWriterIfRead(this.#stdinPath);
        // The pump holds the read end; 32 bytes go in whole once there is room.
        const written = waker?.writeSome(marker) ?? -1;
        waker?.close();
        if (written === 0 && tries > 0) setTimeout(() => attempt(tries - 1), 10);
      } catch {
        // the FIFO is gone: the pump ends on its own
      }
    };
    attempt(500);
  }

  #stdinFinished = false;

  #finishStdin(): void {
    if (this.#stdinFinished) return;
    this.#stdinFinished = true;
    this.#stdinClosed = true;
    this.#stdin.close().catch(() => {});
    const fifo = this.#fifo;
    this.#fifo = undefined;
    fifo?.close();
  }

  closeStdin(): void {
    if (this.#closeRequested) return;
    this.#closeRequested = true;
    // Not started, or no stdin: nothing to drain.
    if (!this.#started || this.#stdinPath === "") return this.#finishStdin();
    if (this.#fifo !== undefined) this.#wake();
  }

  /** The guest is gone: stop pumping without waiting for a drain. */
  #abandonStdin(): void {
    this.#stdinClosed = true;
    if (this.#fifo !== undefined) this.#wake();
    else this.#finishStdin();
  }

  kill(signal: number): void {
    if (signal === 0) return;
    const name = signalName(signal);
    if (this.#done) return;
    try {
      this.#child.kill(name);
    } catch (err) {
      // Exited between the check and the kill: the exit is reported through `exited`.
      if (!(err instanceof TypeError)) throw err;
    }
  }
}

/** True if the component at `path` exports `wasi:http/incoming-handler` (an HTTP proxy). */
async function isHttpProxy(path: string): Promise<boolean> {
  try {
    const { inspectComponent } = await import("../wasm/component/inspect.ts");
    const shape = inspectComponent(await Deno.readFile(path));
    return shape.exports.some((e) => e.name.startsWith("wasi:http/incoming-handler@"));
  } catch {
    return false; // the runner reports what is wrong with it
  }
}

/** The runner's answer to its init line: the next line but the idle one. */
async function nextReply(stdout: AsyncGenerator<string>): Promise<ReadyMessage | undefined> {
  for (;;) {
    const line = await stdout.next();
    if (line.done) return undefined;
    if (line.value !== IDLE_MESSAGE) return JSON.parse(line.value) as ReadyMessage;
  }
}

/** A started runner process, before it has been given its guest. */
export interface Runner {
  child: Deno.ChildProcess;
  /** True once the process has exited. */
  exited: boolean;
  stdin: WritableStreamDefaultWriter<Uint8Array>;
  stdout: AsyncGenerator<string>;
  stderrDone: Promise<void>;
  tail: string[];
}

/**
 * Starts a runner process (`main.ts guest <id> [preload=component]`) with the given
 * Deno permission flags.
 */
export function spawnRunner(
  id: string,
  flags: string[],
  netns: string | undefined,
  log: ((line: string) => void) | undefined,
  preloadComponent = false,
): Runner {
  // --unstable-net: several HTTP listeners on one port (reusePort) for wasi:http.
  const args = [id, ...(preloadComponent ? [PRELOAD_COMPONENT_ARG] : [])];
  const self = runnerCommand(args, ["--unstable-net", ...v8Flags(log), ...flags]);
  const command = netns
    ? { cmd: findNsenter(), args: [`--net=${netns}`, "--", self.cmd, ...self.args] }
    : self;
  const child = new Deno.Command(command.cmd, {
    args: command.args,
    clearEnv: true,
    env: denoEnv(),
    cwd: "/",
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const tail: string[] = [];
  const stderrDone = (async () => {
    for await (const line of lines(child.stderr)) {
      tail.push(line);
      if (tail.length > STDERR_TAIL_LINES) tail.shift();
      log?.(`guest ${id} (runner pid ${child.pid}): ${line}`);
    }
  })().catch(() => {});
  const runner: Runner = {
    child,
    exited: false,
    stdin: child.stdin.getWriter(),
    stdout: lines(child.stdout),
    stderrDone,
    tail,
  };
  child.status.then(() => runner.exited = true);
  return runner;
}

let checkedV8Flags: string[] | undefined;

/** The runners' V8 options, from the shim's environment (checked once; logged if bad). */
function v8Flags(log: ((line: string) => void) | undefined): string[] {
  if (checkedV8Flags === undefined) {
    try {
      checkedV8Flags = runnerV8Flags(Deno.env.get(RUNNER_V8_FLAGS_ENV));
    } catch (err) {
      log?.(`${(err as Error).message}; using ${DEFAULT_RUNNER_V8_FLAGS}`);
      checkedV8Flags = runnerV8Flags(undefined);
    }
  }
  return checkedV8Flags;
}

/** The bundled runner entry (see `runner_main.ts`), where the install made one. */
const RUNNER_BUNDLE = new URL("../wasm/runner_main.js", import.meta.url).pathname;
let runnerBundle: boolean | undefined;

/**
 * The command line of a runner: the bundled entry when there is one (launcher form,
 * ~8 ms of CPU less per runner), else this program's `guest` action.
 */
function runnerCommand(args: string[], denoFlags: string[]): SelfCommand {
  // The action word stays in both forms: `delete` recognises runners by it.
  const words = [RUNNER_ACTION, ...args];
  if (!isCompiled()) {
    runnerBundle ??= isFile(RUNNER_BUNDLE);
    if (runnerBundle) return scriptCommand(RUNNER_BUNDLE, words, denoFlags);
  }
  return selfCommand(words, denoFlags);
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** Kills a runner and waits until its pipes are closed. */
export async function discardRunner(runner: Runner): Promise<void> {
  try {
    runner.child.kill("SIGKILL");
  } catch {
    // already exited
  }
  await runner.child.status;
  await runner.stdin.close().catch(() => {});
  try {
    for await (const _ of runner.stdout); // to its end, so that the pipe is closed
  } catch {
    // a broken pipe ends it as well
  }
  await runner.stderrDone;
}

/** Options of {@linkcode createGuest} beyond {@linkcode CreateGuestOptions}. */
export interface CreateWithPool extends CreateGuestOptions {
  /** Warm runners; one is used if it fits this guest. */
  pool?: RunnerPool;
}

/**
 * Prepares a guest: resolves its entrypoint, starts a runner process that compiles
 * and checks the wasm, and waits until it is ready to start. Any error (a bad
 * entrypoint, a file that is not wasm, a missing export or import) rejects with an
 * {@linkcode RpcError} saying why, and leaves no process behind.
 *
 * An entrypoint in the rootfs that is a native executable (an ELF binary or a `#!`
 * script) is not Wasm: it runs as a Linux container through runc instead
 * (`src/native/runc_guest.ts`, with `options.native`), without a warm runner.
 */
export async function createGuest(
  cfg: GuestConfig,
  options: CreateWithPool = {},
): Promise<Guest> {
  const entry = await resolveGuestEntrypoint(cfg, options);
  const header = await readHeader(entry.hostPath);
  // A native executable of the rootfs (the pause container, a sidecar) runs with runc;
  // without `options.native` it is refused below as "not a WebAssembly module".
  const native = entry.layer === undefined ? detectNative(header) : undefined;
  if (native !== undefined && options.native !== undefined) {
    return createRuncGuest(cfg, { guestPath: entry.guestPath, kind: native }, {
      log: options.log,
      ...options.native,
    });
  }
  const kind: WasmKind = detectKind(header, entry.guestPath);
  let net = options.net;
  if (kind === "component" && !net && await isHttpProxy(entry.hostPath)) {
    // A wasi:http/proxy serves on its listen address and may make outgoing requests.
    net = true;
  }
  const pooled = options.pool?.take(cfg, net, kind);
  let runner = pooled?.runner;
  // A pooled runner sees the container through its slot (see runner_pool.ts).
  const paths = pooled === undefined
    ? { rootfs: cfg.rootfs, stdout: cfg.stdout, stderr: cfg.stderr }
    : {
      rootfs: pooled.rootfs,
      stdout: pooled.stdout,
      stderr: pooled.stderr,
      hostPath: entry.layer ? entry.hostPath : `${pooled.rootfs}${entry.guestPath}`,
    };
  if (runner === undefined) {
    const flags = guestDenoFlags({
      rootfs: cfg.rootfs,
      stdio: [cfg.stdin, cfg.stdout, cfg.stderr],
      kind,
      cacheDir: cfg.cacheDir,
      wasmFile: entry.layer ? entry.hostPath : undefined,
      net,
    });
    runner = spawnRunner(cfg.id, flags, cfg.netns, options.log);
  }
  const { child, stdin, stdout, stderrDone, tail } = runner;
  cfg.onPid?.(child.pid);

  const release = pooled?.release ?? (() => {});
  const fail = async (error: RpcError): Promise<never> => {
    await discardRunner(runner);
    release();
    throw error;
  };

  const timeoutMs = options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  let reply: ReadyMessage | "timeout" | undefined;
  try {
    const { onPid: _, ...config } = cfg;
    const init: GuestInit = { ...config, ...entry, ...paths };
    await stdin.write(new TextEncoder().encode(JSON.stringify(init) + "\n"));
    reply = await within(nextReply(stdout), timeoutMs);
  } catch (err) {
    // A runner that died before reading its config, or answered something not JSON.
    options.log?.(`guest ${cfg.id}: talking to its runner: ${(err as Error).message}`);
  }

  if (reply === "timeout") {
    return fail(
      new RpcError(
        Code.DEADLINE_EXCEEDED,
        `guest ${cfg.id}: ${entry.guestPath} was not ready after ${timeoutMs / 1000} s ` +
          `(compiling or checking it took too long); its runner was killed`,
      ),
    );
  }
  if (reply !== undefined && "error" in reply) {
    return fail(new RpcError(reply.code as RpcError["code"], reply.error));
  }
  if (reply === undefined || reply.ready !== true) {
    const status = await within(child.status, EXIT_GRACE_MS);
    const how = status === "timeout"
      ? "stopped answering"
      : status.signal
      ? `was killed by ${status.signal}`
      : `exited with code ${status.code}`;
    if (status !== "timeout") await stderrDone;
    return fail(
      new RpcError(
        Code.INTERNAL,
        `guest ${cfg.id}: its runner ${how} before it was ready` +
          (tail.length > 0 ? `; its stderr ended with: ${tail.join(" | ")}` : ""),
      ),
    );
  }
  // Drain the runner's stdout: nothing more is expected, but a full pipe would block it.
  const stdoutDone = (async () => {
    for await (const line of stdout) options.log?.(`guest ${cfg.id} (stdout): ${line}`);
  })().catch(() => {});
  return new RunnerGuest(
    cfg.id,
    child,
    stdin,
    Promise.all([stdoutDone, stderrDone]),
    { stdin: cfg.stdin, stdout: cfg.stdout, stderr: cfg.stderr },
    release,
  );
}
