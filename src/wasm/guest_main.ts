/**
 * The guest runner: the child process that runs one guest (`main.ts guest <id>`).
 *
 * Protocol with the shim server (see `runner.ts`), over the runner's own stdio:
 * 0. once booted, the runner writes the line `{"idle":true}` on stdout;
 * 1. stdin: one JSON line, a {@linkcode GuestInit};
 * 2. the runner reads and compiles the wasm and checks it can run, then answers
 *    one JSON line on stdout: `{"ready":true}`, or `{"error":"…","code":<grpc code>}`
 *    and exits with `EXIT_NOT_READY`;
 * 3. stdin: the line `start`; the runner opens the container's stdio FIFOs, runs the
 *    guest, and exits with the guest's own exit code (or `EXIT_TRAP`, 137).
 *
 * (See `runner_protocol.ts`.) The runner's stderr goes to the shim's log, never to the container's output.
 *
 * Core modules run on the WASI preview1 host of `preview1/host.ts`, written on Deno's
 * own APIs: the runner of a core module loads no `node:` module, which keeps its
 * start-up time and memory close to a bare `deno run`. Components load the WASI 0.2
 * host of `component/` (and jco) only when the guest is one.
 *
 * Signals keep their default disposition: SIGTERM, SIGINT or SIGKILL end the process
 * (and the guest with it), which the shim reports as 128+N.
 *
 * @module
 */

import { describeError, invalidArgument, kindOf, ShimError } from "../errdefs/errors.ts";
import { checkExport, checkImports, detectKind } from "./detect.ts";
import { DEFAULT_FUNC } from "./entrypoint.ts";
import { PREVIEW1_FUNCTIONS, WASI_PREVIEW1 } from "./preview1/abi.ts";
import { Preview1Host, ProcExit } from "./preview1/host.ts";
import { warmUpPreview1 } from "./preview1/warmup.ts";
import { writeAllSync } from "../sys/write_all.ts";
import { loadLibc } from "../sys/libc.ts";
import {
  DEBUG_LINE_PREFIX,
  DEV_NULL,
  EXIT_NOT_READY,
  EXIT_TRAP,
  type ExitMessage,
  IDLE_MESSAGE,
  PRELOAD_COMPONENT_ARG,
  type ReadyMessage,
  START_LINE,
} from "./runner_protocol.ts";
import type { GuestInit } from "./guest_init.ts";
import { becomeGuestUser, mountContainer } from "./container_setup.ts";
import {
  type CompiledSeccomp,
  installGuestRunnerFilter,
  installSeccompProfile,
} from "../sys/seccomp.ts";
import {
  flushMetrics,
  gauge,
  metricsSummary,
  parseTraceparent,
  type SpanContext,
  withSpan,
} from "../sys/telemetry.ts";

export { WASI_PREVIEW1 };

/** Runs the prepared guest; resolves with its exit code. */
type Run = () => number | Promise<number>;

const encoder = new TextEncoder();

/** Writes a line to the runner's own stderr (the shim's log). */
function log(message: string): void {
  writeAllSync(Deno.stderr, encoder.encode(message.endsWith("\n") ? message : `${message}\n`));
}

/** True once the guest's configuration says the server logs debug lines. */
let debugging = false;

/** Writes a debug line (see `DEBUG_LINE_PREFIX`), when the server logs them. */
function debug(message: string): void {
  if (debugging) log(`${DEBUG_LINE_PREFIX}${message}`);
}

/**
 * Sends Node process warnings (from the npm code components load) to the runner's
 * stderr, the shim's log, as one line each. Only for components: the preview1 path
 * loads no `node:` module.
 */
async function logNodeWarnings(): Promise<void> {
  const { default: process } = await import("node:process");
  process.removeAllListeners("warning");
  process.on("warning", (warning: Error) => {
    log(`warning: ${warning.name}: ${warning.message}`);
  });
}

type ComponentHost = typeof import("./component/mod.ts");

/**
 * The component host's module, named at run time: a bundler then leaves it (and the
 * npm packages beneath it) out of the bundled runner (`runner_main.ts`), which loads
 * it from the sources beside it only for a component.
 */
const COMPONENT_HOST = new URL("./component/mod.ts", import.meta.url).href;

let componentHost: Promise<ComponentHost> | undefined;

/**
 * Loads the component host once: loaded only for components (or ahead, see
 * {@linkcode runGuestMain}), since it and Deno's Node compatibility layer beneath it
 * cost ~50 ms of CPU to load.
 */
function loadComponentHost(): Promise<ComponentHost> {
  componentHost ??= logNodeWarnings().then(() => import(COMPONENT_HOST) as Promise<ComponentHost>);
  return componentHost;
}

/** Reads newline-terminated lines from the runner's stdin, without read-ahead. */
class StdinLines {
  #pending = new Uint8Array(0);
  #decoder = new TextDecoder();

  /** The next line, or null at end of input. */
  async next(): Promise<string | null> {
    const chunk = new Uint8Array(64 * 1024);
    while (true) {
      const nl = this.#pending.indexOf(0x0a);
      if (nl >= 0) {
        const line = this.#decoder.decode(this.#pending.subarray(0, nl));
        this.#pending = this.#pending.slice(nl + 1);
        return line;
      }
      const n = await Deno.stdin.read(chunk);
      if (n === null) return null;
      const joined = new Uint8Array(this.#pending.length + n);
      joined.set(this.#pending);
      joined.set(chunk.subarray(0, n), this.#pending.length);
      this.#pending = joined;
    }
  }
}

/** Reads one line from stdin one byte at a time, so that nothing after it is consumed. */
function readLineExact(): string | null {
  const byte = new Uint8Array(1);
  const bytes: number[] = [];
  while (true) {
    const n = Deno.stdin.readSync(byte);
    if (n === null) {
      return bytes.length > 0 ? new TextDecoder().decode(new Uint8Array(bytes)) : null;
    }
    if (n === 0) continue;
    if (byte[0] === 0x0a) return new TextDecoder().decode(new Uint8Array(bytes));
    bytes.push(byte[0]);
  }
}

function answer(message: ReadyMessage): void {
  writeAllSync(Deno.stdout, encoder.encode(JSON.stringify(message) + "\n"));
}

function parseInit(line: string): GuestInit {
  const init = JSON.parse(line) as GuestInit;
  for (const key of ["id", "rootfs", "hostPath", "guestPath", "func"] as const) {
    if (typeof init[key] !== "string") throw new TypeError(`guest init: ${key} is not a string`);
  }
  if (!Array.isArray(init.args) || !Array.isArray(init.env)) {
    throw new TypeError("guest init: args and env must be arrays");
  }
  return init;
}

/** The container's stdout and stderr, open. */
interface Stdio {
  stdout: Deno.FsFile;
  stderr: Deno.FsFile;
}

/**
 * Opens the container's stdout and stderr (FIFOs, or /dev/null), read-write and in
 * append mode, so that opening a FIFO never waits for a reader. The guest's stdin is
 * the runner's own: the server copies the container's stdin into it after the start
 * line.
 */
function openStdio(init: GuestInit): Stdio {
  const open = (path: string, what: string) => {
    try {
      return Deno.openSync(path || DEV_NULL, { read: true, append: true });
    } catch (err) {
      throw new Error(`cannot open ${what} ${path || DEV_NULL}: ${(err as Error).message}`);
    }
  };
  const stdout = open(init.stdout, "stdout");
  try {
    return { stdout, stderr: open(init.stderr, "stderr") };
  } catch (err) {
    stdout.close();
    throw err;
  }
}

/** The wasm frames of a trap's stack, indented, for the container's stderr. */
function wasmFrames(err: Error): string[] {
  return (err.stack ?? "").split("\n").map((l) => l.trim()).filter((l) => l.includes("wasm://"))
    .map((l) => `    ${l}`);
}

/** Explains an error thrown while the guest ran, for its stderr. */
export function describeFailure(err: unknown): string {
  if (err instanceof WebAssembly.RuntimeError || err instanceof RangeError) {
    return [`wasm trap: ${err.message}`, ...wasmFrames(err)].join("\n");
  }
  const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return `wasm host error: ${message}`;
}

/**
 * Runs a compiled core module as a WASI preview1 guest; returns its exit code. `opened`
 * is the stdio if it was opened ahead (before the runner became the spec's user).
 */
function runModule(init: GuestInit, module: WebAssembly.Module, opened?: Stdio): number {
  let stdio: Stdio;
  try {
    stdio = opened ?? openStdio(init);
  } catch (err) {
    log((err as Error).message);
    return EXIT_TRAP;
  }
  try {
    const host = new Preview1Host({
      args: init.args,
      env: init.env,
      // The container root is the only preopen, "/". WASI preview1 has no cwd:
      // wasi-libc starts at "/" whatever the host does.
      root: init.rootfs,
      stdin: Deno.stdin,
      stdout: stdio.stdout,
      stderr: stdio.stderr,
    });
    const instance = new WebAssembly.Instance(module, host.imports);
    if (init.func === DEFAULT_FUNC) return host.start(instance);
    return callExport(host, instance, init.func);
  } catch (err) {
    if (err instanceof ProcExit) return err.code;
    const text = describeFailure(err);
    log(text);
    try {
      writeAllSync(stdio.stderr, encoder.encode(text + "\n"));
    } catch (writeErr) {
      log(`cannot write to the container's stderr: ${(writeErr as Error).message}`);
    }
    return EXIT_TRAP;
  }
}

/**
 * Calls an export other than `_start`: binds the host to the module's memory, runs
 * `_initialize` if it is a reactor, then calls the function with no arguments.
 * Returns 0 when it returns (`proc_exit` throws {@linkcode ProcExit}).
 */
function callExport(host: Preview1Host, instance: WebAssembly.Instance, func: string): number {
  const fn = instance.exports[func] as (...args: unknown[]) => unknown;
  if (fn.length > 0) {
    throw new TypeError(
      `exported function "${func}" takes ${fn.length} parameter(s); only functions ` +
        `without parameters can be an entrypoint`,
    );
  }
  host.initialize(instance);
  fn();
  return 0;
}

/**
 * Frees the guest's bytes now that they are compiled (V8 keeps its own copy): they
 * would otherwise stay until a garbage collection on this thread, which may never come
 * while the guest runs (a wasi:http proxy's main thread sits idle while worker threads
 * serve; a compute-bound guest allocates nothing in JS): 12 MB of a componentize-js
 * guest's runner. Detaching the buffer gives its memory back at once.
 */
function release(bytes: Uint8Array<ArrayBuffer>): void {
  bytes.buffer.transfer(0);
}

/** Reads, checks and compiles the guest; returns what runs it after `start`. */
async function prepare(init: GuestInit): Promise<Run> {
  const path = init.guestPath;
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    if (init.layer) {
      // An image layer in the shim's blob cache, verified by the server: not in the
      // rootfs, and not reachable through it.
      bytes = await Deno.readFile(init.hostPath);
    } else {
      // The server resolved the path inside the rootfs; check again here, in case the
      // rootfs changed since (Deno's --allow-read does not look through symlinks).
      const [real, root] = await Promise.all([
        Deno.realPath(init.hostPath),
        Deno.realPath(init.rootfs),
      ]);
      if (!real.startsWith(root === "/" ? "/" : `${root}/`)) {
        throw invalidArgument(`entrypoint ${path} now leads outside the container's root`);
      }
      bytes = await Deno.readFile(real);
    }
  } catch (err) {
    if (err instanceof ShimError) throw err;
    throw new Error(`cannot read ${path} (${init.hostPath}): ${(err as Error).message}`);
  }
  if (detectKind(bytes, path) === "component") {
    const { prepareComponent } = await loadComponentHost();
    const run = await prepareComponent(init, bytes);
    release(bytes);
    return () => run();
  }
  let module: WebAssembly.Module;
  try {
    module = await WebAssembly.compile(bytes);
  } catch (err) {
    throw invalidArgument(`module ${path} does not compile: ${(err as Error).message}`);
  }
  release(bytes);
  checkExport(module, init.func, path);
  checkImports(module, path, { [WASI_PREVIEW1]: PREVIEW1_FUNCTIONS });
  // Opened now, while the runner may still open root's FIFOs (see becomeGuestUser).
  const stdio = init.container ? openStdio(init) : undefined;
  return () => runModule(init, module, stdio);
}

/**
 * Installs the container's own seccomp profile (the spec's `linux.seccomp`) on every
 * thread, then checks that the runner still works under it: its event loop (a timer)
 * and an asynchronous file operation (Deno's blocking-task threads) on the container's
 * root. A profile that refuses the runner what it needs fails Create here, rather
 * than the guest later; a profile that kills on such a call ends the runner, which the
 * server reports.
 *
 * @throws {ShimError} INVALID_ARGUMENT saying what the profile stopped
 */
async function installContainerProfile(profile: CompiledSeccomp, root: string): Promise<void> {
  try {
    installSeccompProfile(profile);
  } catch (err) {
    throw invalidArgument(`linux.seccomp: cannot install the profile: ${(err as Error).message}`);
  }
  try {
    await new Promise((resolve) => setTimeout(resolve, 0));
    await Deno.stat(root);
  } catch (err) {
    throw invalidArgument(
      `linux.seccomp: the profile stops the wasm runner itself: ${(err as Error).message}`,
    );
  }
  debug(`seccomp profile installed (${profile.instructions} instructions)`);
}

/**
 * The guest runner's main: see the module documentation for the protocol.
 *
 * @param args the words after the action (`PRELOAD_COMPONENT_ARG` loads the component host ahead)
 * @returns the process exit code: the guest's own (truncated to 8 bits, as the kernel
 *   would), `EXIT_TRAP` on a trap or host error, `EXIT_NOT_READY` if it never ran
 */
export async function runGuestMain(args: readonly string[] = []): Promise<number> {
  // A warm runner told to expect a component loads its host before it says it waits
  // (what it loads then is not charged to the container's cgroup: see IDLE_MESSAGE).
  if (args.includes(PRELOAD_COMPONENT_ARG)) await loadComponentHost().catch(() => {});
  // The preview1 host's code compiled ahead (see warmup.ts): ~5 ms off every start.
  try {
    warmUpPreview1();
  } catch (err) {
    log(`warm-up: ${describeFailure(err)}`);
  }
  // libc through FFI, for the container setup (~5 ms to bind its symbols).
  try {
    loadLibc();
  } catch (err) {
    log(`libc: ${describeFailure(err)}`);
  }
  writeAllSync(Deno.stdout, encoder.encode(IDLE_MESSAGE + "\n"));
  const lines = new StdinLines();
  let init: GuestInit | undefined;
  let run: Run;
  /** The server's span this runner's spans are children of. */
  let parent: SpanContext | undefined;
  try {
    const line = await lines.next();
    if (line === null) throw new Error("no guest configuration on stdin");
    init = parseInit(line);
    debugging = init.debug === true;
    const ready = init;
    const started = performance.now();
    parent = parseTraceparent(init.traceparent);
    const attributes = { "container.id": init.id, "wasm.path": init.guestPath };
    run = await withSpan("prepare guest", attributes, async () => {
      if (ready.container) {
        const setup = ready.container;
        await withSpan("mount container", {}, () => mountContainer(ready.rootfs, setup));
      }
      const prepared = await prepare(ready);
      if (ready.container) {
        becomeGuestUser(ready.rootfs, ready.container);
        installGuestRunnerFilter();
        if (ready.container.seccomp) {
          await installContainerProfile(ready.container.seccomp, ready.rootfs);
        }
      }
      debug(
        `prepared ${ready.guestPath} in ${(performance.now() - started).toFixed(1)} ms ` +
          `(${ready.layer ? "image layer" : "rootfs"}${
            ready.container ? ", container set up" : ""
          })`,
      );
      return prepared;
    }, parent);
  } catch (err) {
    answer({ error: describeError(err), kind: kindOf(err) });
    return EXIT_NOT_READY;
  }
  answer({ ready: true });
  // Byte by byte: what follows the start line is the guest's stdin, read from fd 0.
  const command = readLineExact();
  if (command !== START_LINE) {
    log(`${command === null ? "stdin closed" : `unexpected "${command}"`} before start`);
    return EXIT_NOT_READY;
  }
  gauge(
    "runner.memory.rss",
    { description: "resident memory of a guest runner process", unit: "By" },
    () => Deno.memoryUsage().rss,
  );
  const ran = performance.now();
  debug("started");
  const code = await withSpan("run guest", { "container.id": init.id }, async (span) => {
    try {
      const code = (await run()) & 0xff;
      span?.setAttribute("process.exit.code", code);
      return code;
    } catch (err) {
      log(describeFailure(err));
      span?.setAttribute("process.exit.code", EXIT_TRAP);
      return EXIT_TRAP;
    } finally {
      // The guest's numbers (a wasi:http proxy's requests…) in the shim's log.
      flushMetrics();
      const summary = metricsSummary();
      if (summary !== "") log(`metrics: ${summary}`);
    }
  }, parent);
  debug(`guest ended with code ${code} after ${(performance.now() - ran).toFixed(1)} ms`);
  const exit: ExitMessage = { exit: code };
  writeAllSync(Deno.stdout, encoder.encode(JSON.stringify(exit) + "\n"));
  return code;
}
