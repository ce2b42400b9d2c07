/**
 * A guest in a runner process, for the task service: {@linkcode createRunnerGuest}
 * at Create (a warm runner from the pool, or a new one), then `start()`, `kill()`,
 * `closeStdin()` and `exited`.
 *
 * @module
 */

import { failedPrecondition, isErrorKind, Kind, ShimError } from "../errdefs/errors.ts";
import { exitStatus, signalName } from "../sys/signals.ts";
import { drainedBy, holdReaders, holdReadersNow, NonBlockingFifo } from "../sys/fifo.ts";
import type { Entrypoint } from "../wasm/entrypoint.ts";
import type { WasmKind } from "../wasm/detect.ts";
import type { GuestConfig, GuestInit } from "../wasm/guest_init.ts";
import {
  EXIT_FLUSH_GRACE_MS,
  IDLE_MESSAGE,
  parseExitMessage,
  type ReadyMessage,
  START_LINE,
} from "../wasm/runner_protocol.ts";
import { guestDenoFlags } from "./permissions.ts";
import type { RunnerPool } from "./pool.ts";
import { discardRunner, type RunnerLog, spawnRunner } from "./spawn.ts";
import { activeSpan, failSpan, formatTraceparent, startSpan } from "../sys/telemetry.ts";

/** How long a runner may take to compile and check its guest before Create fails. */
export const DEFAULT_READY_TIMEOUT_MS = 60_000;
/** How long Start waits for a reader on the container's stdout and stderr FIFOs. */
const READER_WAIT_MS = 1_000;
/** How long a guest's exit waits for the readers to take its output (see `exited`). */
const OUTPUT_DRAIN_MS = 1_000;
/** How long a runner that closed its stdout gets to exit before it is killed. */
const EXIT_GRACE_MS = 2_000;

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

/**
 * The guest's exit code once its runner is gone: from the process's status, or, when
 * the runner said how its guest ended, that code — a runner still exiting
 * {@linkcode EXIT_FLUSH_GRACE_MS} after it said so (Deno sends its last telemetry at
 * exit) is killed rather than let the exit wait for a collector.
 */
async function runnerGone(
  child: Deno.ChildProcess,
  reported: Promise<number>,
  log: (line: string) => void,
): Promise<number> {
  const first = await Promise.race([
    child.status,
    reported.then((code) => ({ reported: code })),
  ]);
  if (!("reported" in first)) return exitStatus(first);
  const status = await within(child.status, EXIT_FLUSH_GRACE_MS);
  if (status !== "timeout") return exitStatus(status);
  log(
    `its runner (pid ${child.pid}) was still exiting ${EXIT_FLUSH_GRACE_MS} ms after its ` +
      `guest ended with ${first.reported}: killed`,
  );
  try {
    child.kill("SIGKILL");
  } catch {
    // exited meanwhile
  }
  await child.status;
  return first.reported;
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

/**
 * Where the container's stdin stands, for the runner's stdin pipe:
 *
 * - `unstarted`: before Start; nothing is copied yet.
 * - `pumping`: the stdin FIFO is copied into the runner's stdin.
 * - `draining`: CloseIO came: copying goes on up to the end marker written after
 *   everything the client wrote, then stops.
 * - `abandoned`: the guest is gone: copying stops without draining.
 * - `closed`: the runner's stdin is closed; final.
 */
export type StdinState = "unstarted" | "pumping" | "draining" | "abandoned" | "closed";

/**
 * What moves stdin on: Start, CloseIO, the guest's exit, and the end of copying
 * (the marker reached, the FIFO gone, or nothing to copy).
 */
export type StdinEvent = "start" | "closeIO" | "exit" | "end";

/** The state each event leads to; an event missing from a state's row changes nothing. */
const STDIN_TRANSITIONS: Readonly<
  Record<StdinState, Readonly<Partial<Record<StdinEvent, StdinState>>>>
> = {
  // Not started: nothing to drain, whatever ends stdin closes it at once.
  unstarted: { start: "pumping", closeIO: "closed", exit: "closed", end: "closed" },
  pumping: { closeIO: "draining", exit: "abandoned", end: "closed" },
  draining: { exit: "abandoned", end: "closed" },
  abandoned: { end: "closed" },
  closed: {},
};

/** The stdin state after `event` in `state` (see {@linkcode StdinState}). */
export function nextStdinState(state: StdinState, event: StdinEvent): StdinState {
  return STDIN_TRANSITIONS[state][event] ?? state;
}

/** How long CloseIO waits for room in a full stdin FIFO to write its end marker. */
const WAKE_TIMEOUT_MS = 5_000;

/** A guest running in a runner process. */
export class RunnerGuest {
  readonly pid: number;
  readonly exited: Promise<number>;
  #id: string;
  #child: Deno.ChildProcess;
  /** The runner's stdin pipe: the start line, then the container's stdin. */
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #started = false;
  /** The runner has exited. */
  #done = false;
  /** The container's stdin FIFO, "" for none. */
  #stdinPath: string;
  #stdinState: StdinState = "unstarted";
  /** The stdin FIFO while the pump has it open. */
  #fifo: NonBlockingFifo | undefined;
  /** Random bytes that end the stdin stream once CloseIO was asked for. */
  #marker = crypto.getRandomValues(new Uint8Array(32));
  /** Settles when the pump next reads (making room in the FIFO) or stdin closes. */
  #progress = Promise.withResolvers<void>();
  /** The output FIFOs no writer end is held on yet (see `start`). */
  #output: string[] = [];
  /** Writer ends held on the output FIFOs from Create until the guest is gone. */
  #held: NonBlockingFifo[] = [];

  /**
   * @param drained settles when the runner's stdout and stderr are read to the end;
   *   `exited` waits for it (briefly), so that the runner's last log lines come first
   * @param reported resolves with the exit code the runner said its guest ended with
   *   (see `ExitMessage`); never settles if it said none
   * @param log where a runner killed after its guest ended is logged
   */
  constructor(
    id: string,
    child: Deno.ChildProcess,
    stdin: WritableStreamDefaultWriter<Uint8Array>,
    drained: Promise<unknown>,
    stdio: { stdin: string; stdout: string; stderr: string },
    onExit: () => void = () => {},
    reported: Promise<number> = new Promise(() => {}),
    log: (line: string) => void = () => {},
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
    this.exited = runnerGone(child, reported, (line) => log(`guest ${id}: ${line}`)).then(
      async (code) => {
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
        return code;
      },
    );
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
    if (this.#stdinPath === "") return this.#finishStdin();
    // Stdin may have ended while the start line was written (the guest exited).
    if (this.#stdinState !== "unstarted") return;
    this.#stdinState = nextStdinState(this.#stdinState, "start");
    this.#pumpStdin();
  }

  /** True while the pump copies: pumping, or draining up to the marker. */
  get #copying(): boolean {
    return this.#stdinState === "pumping" || this.#stdinState === "draining";
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
      // CloseIO may have come before the FIFO was open: its marker is written now.
      if (this.#stdinState === "draining") void this.#wake();
      while (true) {
        const n = await this.#fifo.read(buf, () => this.#copying);
        if (n <= 0) break;
        this.#signalProgress();
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
        if (!this.#copying) break;
      }
    } catch {
      // The runner is gone or the FIFO was removed: stdin ends.
    } finally {
      this.#finishStdin();
    }
  }

  /** Wakes whatever waits for the pump to read (see {@linkcode #wake}). */
  #signalProgress(): void {
    this.#progress.resolve();
    this.#progress = Promise.withResolvers<void>();
  }

  /**
   * Writes the end marker into the FIFO through a second handle (the pump stops
   * there). The pump holds the read end, so the open succeeds; the 32 bytes go in
   * whole (under PIPE_BUF) once there is room, which the pump makes each time it
   * reads: a full FIFO is retried on the pump's next read, for at most
   * {@linkcode WAKE_TIMEOUT_MS} (a guest that never reads its stdin keeps it full).
   */
  async #wake(): Promise<void> {
    const deadline = Date.now() + WAKE_TIMEOUT_MS;
    while (this.#stdinState !== "closed") {
      const progress = this.#progress.promise;
      let written: number;
      try {
        const waker = NonBlockingFifo.openWriterIfRead(this.#stdinPath);
        if (waker === undefined) return;
        try {
          written = waker.writeSome(this.#marker);
        } finally {
          waker.close();
        }
      } catch {
        return; // the FIFO is gone: the pump ends on its own
      }
      if (written !== 0) return;
      const left = deadline - Date.now();
      if (left <= 0 || await within(progress, left) === "timeout") return;
    }
  }

  /** Stdin is over: closes the runner's stdin pipe and the FIFO. */
  #finishStdin(): void {
    if (this.#stdinState === "closed") return;
    this.#stdinState = nextStdinState(this.#stdinState, "end");
    this.#stdin.close().catch(() => {});
    const fifo = this.#fifo;
    this.#fifo = undefined;
    fifo?.close();
    this.#signalProgress();
  }

  closeStdin(): void {
    const next = nextStdinState(this.#stdinState, "closeIO");
    if (next === this.#stdinState) return;
    // Not started, or no stdin: nothing to drain.
    if (next === "closed") return this.#finishStdin();
    this.#stdinState = next;
    if (this.#fifo !== undefined) void this.#wake();
  }

  /** The guest is gone: stop pumping without waiting for a drain. */
  #abandonStdin(): void {
    const next = nextStdinState(this.#stdinState, "exit");
    if (next === this.#stdinState) return;
    // No FIFO open (not started, or the pump has not opened it yet): nothing to wake.
    if (next === "closed" || this.#fifo === undefined) return this.#finishStdin();
    this.#stdinState = next;
    void this.#wake();
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

/** Options of {@linkcode createRunnerGuest}. */
export interface RunnerGuestOptions {
  /** Receives each line the runner writes on its stderr (for the shim's log). */
  log?: RunnerLog;
  /** Time allowed for the runner to be ready; default {@linkcode DEFAULT_READY_TIMEOUT_MS}. */
  readyTimeoutMs?: number;
  /** Network access for the guest's host code (wasi:http servers); none by default. */
  net?: boolean | readonly string[];
  /** Warm runners; one is used if it fits this guest. */
  pool?: RunnerPool;
}

/**
 * Prepares a wasm guest whose entrypoint is resolved and whose kind is known: starts
 * a runner process (or takes a warm one) that compiles and checks the wasm, and
 * waits until it is ready to start. Any error (a file that is not wasm, a missing
 * export or import) rejects with an error saying why, and leaves no process behind.
 */
export async function createRunnerGuest(
  cfg: GuestConfig,
  entry: Entrypoint,
  kind: WasmKind,
  options: RunnerGuestOptions = {},
): Promise<RunnerGuest> {
  let net = options.net;
  let ownRunner = Boolean(net);
  if (kind === "component" && !net && await isHttpProxy(entry.hostPath)) {
    // A wasi:http/proxy serves on its listen address (its outgoing requests and sockets
    // are the host's to allow: cfg.network).
    net = true;
    ownRunner = true;
  } else if (kind === "component" && !net && cfg.network) {
    // wasi:sockets and outgoing wasi:http, where the container may reach the network.
    net = true;
  }
  const pooled = ownRunner ? undefined : options.pool?.take(cfg, net, kind);
  let runner = pooled?.runner;
  // A pooled runner sees the container through its slot (see pool.ts).
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
  // A warm runner's lines name its container from now on.
  runner.name = cfg.id;
  const { child, stdin, stdout, stderrDone, tail } = runner;
  cfg.onPid?.(child.pid);
  activeSpan()?.setAttributes({
    "wasm.kind": kind,
    "runner.pid": child.pid,
    "runner.warm": pooled !== undefined,
    "wasi.http.proxy": net === true,
  });
  // The hand-off: from the guest's config sent to the runner's answer.
  const handOff = startSpan("runner hand-off", { "container.id": cfg.id });

  const release = pooled?.release ?? (() => {});
  const fail = async (error: ShimError): Promise<never> => {
    await discardRunner(runner);
    release();
    throw error;
  };

  const timeoutMs = options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  let reply: ReadyMessage | "timeout" | undefined;
  try {
    const { onPid: _, ...config } = cfg;
    const traceparent = handOff && formatTraceparent(handOff.spanContext());
    const init: GuestInit = { ...config, ...entry, ...paths, traceparent };
    await stdin.write(new TextEncoder().encode(JSON.stringify(init) + "\n"));
    reply = await within(nextReply(stdout), timeoutMs);
  } catch (err) {
    // A runner that died before reading its config, or answered something not JSON.
    options.log?.(`guest ${cfg.id}: talking to its runner: ${(err as Error).message}`);
  }
  if (reply === undefined || reply === "timeout" || !("ready" in reply)) {
    failSpan(handOff, reply === undefined || reply === "timeout" ? "no answer" : reply.error);
  }
  handOff?.end();

  if (reply === "timeout") {
    return fail(
      new ShimError(
        Kind.DEADLINE_EXCEEDED,
        `guest ${cfg.id}: ${entry.guestPath} was not ready after ${timeoutMs / 1000} s ` +
          `(compiling or checking it took too long); its runner was killed`,
      ),
    );
  }
  if (reply !== undefined && "error" in reply) {
    return fail(new ShimError(isErrorKind(reply.kind) ? reply.kind : Kind.UNKNOWN, reply.error));
  }
  if (reply === undefined || reply.ready !== true) {
    const status = await within(child.status, EXIT_GRACE_MS);
    const how = status === "timeout"
      ? "stopped answering"
      : status.signal
      ? `was killed by ${status.signal}`
      : `exited with code ${status.code}`;
    if (status !== "timeout") await stderrDone;
    // The container's own profile is installed last: a call it kills or denies
    // (SIGSYS: SCMP_ACT_KILL_*, SCMP_ACT_TRAP) is the spec's doing.
    const profile = cfg.container?.seccomp !== undefined;
    const sigsys = status !== "timeout" && status.signal === "SIGSYS";
    return fail(
      new ShimError(
        profile && sigsys ? Kind.INVALID_ARGUMENT : Kind.INTERNAL,
        `guest ${cfg.id}: its runner ${how} before it was ready` +
          (profile
            ? ` (under the container's seccomp profile, linux.seccomp, which ${
              sigsys ? "killed it on a call the runner needs" : "may deny a call the runner needs"
            })`
            : "") +
          (tail.length > 0 ? `; its stderr ended with: ${tail.join(" | ")}` : ""),
      ),
    );
  }
  // Drain the runner's stdout: nothing more is expected, but a full pipe would block it.
  // …but for the line saying how the guest ended.
  const reported = Promise.withResolvers<number>();
  const stdoutDone = (async () => {
    for await (const line of stdout) {
      const code = parseExitMessage(line);
      if (code !== undefined) reported.resolve(code);
      else options.log?.(`guest ${cfg.id} (stdout): ${line}`);
    }
  })().catch(() => {});
  return new RunnerGuest(
    cfg.id,
    child,
    stdin,
    Promise.all([stdoutDone, stderrDone]),
    { stdin: cfg.stdin, stdout: cfg.stdout, stderr: cfg.stderr },
    release,
    reported.promise,
    options.log,
  );
}
