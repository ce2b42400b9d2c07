/**
 * Starts and discards guest runner processes: this program again
 * (`main.ts guest <id>`, or the bundled `runner_main.js`), with an empty environment
 * except what Deno needs ({@linkcode denoEnv}) and {@linkcode RUNNER_MALLOC_ENV}, cwd `/`, the given Deno permission
 * flags, the runners' V8 options, and — for a spec with a network namespace — under
 * `nsenter`.
 *
 * @module
 */

import { failedPrecondition } from "../errdefs/errors.ts";
import {
  denoEnv,
  isCompiled,
  scriptCommand,
  type SelfCommand,
  selfCommand,
} from "../sys/self_exec.ts";
import {
  DEBUG_LINE_PREFIX,
  PRELOAD_COMPONENT_ARG,
  RUNNER_ACTION,
} from "../wasm/runner_protocol.ts";
import { RUNNER_CAP_NAMES } from "../wasm/container_setup.ts";
import { OtelEnv, runnerTelemetryEnv, telemetryConfig, withInstanceId } from "../sys/telemetry.ts";

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
 *
 * The old generation may grow only 20% past what the last full collection kept
 * (`--heap-growing-percent=20`): V8's own growth lets each isolate (the runner's
 * thread and each wasi:http worker) pile up ~70–90 MB of garbage before collecting it,
 * which put a componentize-js proxy's runner over a 256 MiB pod limit (OOM-killed at
 * ~300 MB). With it, under `wrk -t2 -c50`, that runner levels off at ~290 MB RSS
 * (anon ~210) and completes under the limit (4.9–5.2k req/s), and the Rust hello's at
 * ~170 MB instead of ~205 MB, at the same throughput (~240 MB for the first with
 * {@linkcode RUNNER_MALLOC_ENV} too).
 */
export const DEFAULT_RUNNER_V8_FLAGS =
  "--single-threaded-gc,--max-semi-space-size=8,--heap-growing-percent=20";

/**
 * glibc malloc settings of every runner: at most two malloc arenas. glibc gives each
 * thread that allocates under contention an arena of its own (up to 8 per core), and
 * memory freed in one arena serves only that arena: a wasi:http runner (its main
 * thread, the serving worker threads, Deno's tokio threads) kept 5–6 arenas of 10–22 MB
 * each, mostly free. Measured with a componentize-js proxy under `wrk -t2 -c50` on 2
 * cores: peak RSS 285–292 MB with glibc's default, 260–267 MB with two arenas, at the
 * same throughput (one arena: 259 MB, slower).
 */
export const RUNNER_MALLOC_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: "2" };

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

/** How many of the runner's last stderr lines an error message quotes. */
export const STDERR_TAIL_LINES = 10;
/** Where util-linux `nsenter` is looked for when not on PATH. */
const NSENTER_DIRS = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"];

const found = new Map<string, string>();

/** Finds a util-linux tool (`nsenter`, `unshare`, `setpriv`), once. */
function findTool(name: string, why: string): string {
  const known = found.get(name);
  if (known !== undefined) return known;
  const path = Deno.env.get("PATH") ?? "";
  for (const dir of [...path.split(":").filter((d) => d.startsWith("/")), ...NSENTER_DIRS]) {
    if (isFile(`${dir}/${name}`)) {
      found.set(name, `${dir}/${name}`);
      return `${dir}/${name}`;
    }
  }
  throw failedPrecondition(`${why}, but ${name} (util-linux) is not installed`);
}

/** Finds util-linux `nsenter`. */
function findNsenter(): string {
  return findTool("nsenter", "the spec asks for a network namespace");
}

/**
 * The commands a runner starts under, before Deno: `[nsenter --net=<netns>]`, then
 * `unshare --mount --propagation private` (its own mount namespace: what it mounts
 * for its container is never seen on the node, and goes with it), then `setpriv`
 * (`no_new_privs`, no inheritable capabilities, and a bounding set — hence, for
 * root, a permitted set — of {@linkcode RUNNER_CAP_NAMES} only). Each execs the
 * next: the runner keeps one pid. What the runner then sets up for its container is
 * `src/wasm/container_setup.ts`.
 *
 * @throws {ShimError} FAILED_PRECONDITION naming a tool the node lacks
 */
export function runnerPrefix(netns: string | undefined): string[] {
  const prefix = netns ? [findNsenter(), `--net=${netns}`, "--"] : [];
  const why = "a guest runner needs its own mount namespace";
  prefix.push(findTool("unshare", why), "--mount", "--propagation", "private", "--");
  prefix.push(
    findTool("setpriv", why),
    "--no-new-privs",
    "--inh-caps=-all",
    `--bounding-set=-all,${RUNNER_CAP_NAMES.map((c) => `+${c}`).join(",")}`,
    "--",
  );
  return prefix;
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

/**
 * Receives a runner's stderr lines (and the server side's lines about runners), named
 * after the runner's guest: at debug level when the runner marked them so.
 */
export type RunnerLog = (line: string, level?: "debug") => void;

/** A started runner process, before it has been given its guest. */
export interface Runner {
  /**
   * What its log lines name it by: `guest <name> (runner pid …)`: the container's id, or
   * a warm runner's slot until the pool gives it a container (which sets this).
   */
  name: string;
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
  log: RunnerLog | undefined,
  preloadComponent = false,
): Runner {
  // --unstable-net: several HTTP listeners on one port (reusePort) for wasi:http.
  const args = [id, ...(preloadComponent ? [PRELOAD_COMPONENT_ARG] : [])];
  const self = runnerCommand(args, ["--unstable-net", ...v8Flags(log), ...flags]);
  const [cmd, ...rest] = [...runnerPrefix(netns), self.cmd, ...self.args];
  const command = { cmd, args: rest };
  const child = new Deno.Command(command.cmd, {
    args: command.args,
    clearEnv: true,
    env: { ...denoEnv(), ...RUNNER_MALLOC_ENV, ...runnerTelemetry() },
    cwd: "/",
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const tail: string[] = [];
  const runner: Runner = {
    name: id,
    child,
    exited: false,
    stdin: child.stdin.getWriter(),
    stdout: lines(child.stdout),
    stderrDone: Promise.resolve(),
    tail,
  };
  runner.stderrDone = (async () => {
    for await (const line of lines(child.stderr)) {
      const name = `guest ${runner.name} (runner pid ${child.pid})`;
      if (line.startsWith(DEBUG_LINE_PREFIX)) {
        log?.(`${name}: ${line.slice(DEBUG_LINE_PREFIX.length)}`, "debug");
        continue;
      }
      tail.push(line);
      if (tail.length > STDERR_TAIL_LINES) tail.shift();
      log?.(`${name}: ${line}`);
    }
  })().catch(() => {});
  child.status.then(() => runner.exited = true);
  return runner;
}

let telemetryEnv: Record<string, string> | undefined;

/**
 * The OTel variables of every runner, from the server's environment: runners export
 * their own spans (a wasi:http request's, the guest's preparation) and metrics.
 */
function runnerTelemetry(): Record<string, string> {
  telemetryEnv ??= runnerTelemetryEnv(telemetryConfig(Deno.env.toObject()));
  // Each runner a series of its own (a new service.instance.id).
  return telemetryEnv[OtelEnv.DENO] ? withInstanceId(telemetryEnv) : telemetryEnv;
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
