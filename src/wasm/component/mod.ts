/**
 * Running WebAssembly components (WASI 0.2) in a guest runner process.
 *
 * Design (measured with Deno 2.9.6 and jco-transpile 0.15.0 on a 2-core machine; the
 * figures are in this directory's README):
 *
 * - **Host: our own WASI 0.2 host (`host/`), not preview2-shim.** preview2-shim's Node
 *   build is process-global (real stdio, `process.exit`, the whole environment). Its
 *   browser build is per-instance for the CLI interfaces only: its HTTP types buffer
 *   whole request and response bodies (no streaming, no backpressure), it has no
 *   server-side handler for `Deno.serve`, no real stdin, and no disk filesystem
 *   confined to a root — most of what a container needs. So every instance gets its
 *   own arguments, environment, stdio streams, preopen and resource objects here;
 *   instances share nothing but stateless classes. `wasi:cli/exit` throws (exact codes
 *   with `exit-with-code`); the rootfs is the only preopen, resolved by us so that `..`
 *   and symlinks never leave it (`host/filesystem.ts` says what remains).
 * - **Blocking calls through JSPI.** The glue is transpiled with `asyncMode: "jspi"`;
 *   `poll`, `pollable.block` and the `blocking-*` stream methods are async functions
 *   over Deno streams and timers, so many instances run concurrently on one thread and
 *   a guest waiting on I/O never blocks the event loop.
 * - **Transpile once per component and options, cached on disk** (`cache.ts`): one
 *   verified file per entry under `<cacheDir>/components/`, written by atomic rename.
 *   `cacheDir` defaults to {@linkcode DEFAULT_CACHE_DIR}; an unwritable directory only
 *   costs the cache. Only jco's bindgen is loaded, and only on a miss.
 * - **Glue evaluated with `new Function`** (`transpile.ts`; ~5 ms for 300 KB against
 *   ~100 ms through a `data:` URL), which a `deno compile`d binary allows (no import of
 *   run-time files, no `blob:` URL); core modules are compiled once per process. Two
 *   text patches take jco's debug logging out of every host call (~20% per request).
 * - **wasi:http: a fresh instance per request**, from a small pool created ahead of
 *   requests (`http_server.ts`), on N worker threads sharing the port when Deno runs
 *   with `--unstable-net` (`http_workers.ts`), else on the main thread. jco's glue
 *   costs ~0.4–0.7 ms to instantiate and ~0.7 ms per handful of host calls, so a proxy
 *   gets our own lean glue instead (`instantiate/`): one core instance (wit-component's shims
 *   linked away), a reused zeroed memory, host functions found by slot: ~75 µs of CPU
 *   per hello request on one thread, HTTP included, against ~1.1 ms with jco's glue.
 *   A command (or `app.wasm#func`) gets lean glue too where it handles the component:
 *   there is one instance, but jco's glue is slow to load at every container start.
 *
 * Runner permissions (launcher install form) needed on a cache miss of a component with
 * jco's glue: jco's bindgen runs on preview2-shim's Node build, which reads the whole
 * environment (`--allow-env`) and its own `.wasm` files (read access to
 * `node_modules/@bytecodealliance/`). Lean glue needs neither; a cache hit needs only
 * read access to the cache directory.
 *
 * @module
 */

import { invalidArgument } from "../../errdefs/errors.ts";
import { DEFAULT_FUNC } from "../entrypoint.ts";
import type { GuestInit } from "../guest_init.ts";
import { endOf, EXIT_TRAP, findExportedFunction, runToEnd } from "./command.ts";
import { createHost, type HostConfig } from "./host/mod.ts";
import { discardSink, EMPTY_SOURCE } from "./host/io.ts";
import { runnerStdinReadable, StreamSource } from "./host/pipes.ts";
import { LocalProxy, type ProxyHostConfig, WorkerProxy } from "./http_workers.ts";
import { logLine, openStdio, tellContainer } from "./stdio.ts";
import {
  DENO_BACKLOG,
  type HttpConfig,
  httpConfigFromEnv,
  type IncomingHandler,
} from "./http_server.ts";
import {
  checkComponentImports,
  type ComponentKind,
  componentKind,
  inspectComponent,
  MalformedComponent,
} from "./inspect.ts";
import {
  DEFAULT_CACHE_DIR,
  instantiate,
  loadComponent,
  type LoadedComponent,
  type LoadTimings,
} from "./load.ts";

export { DEFAULT_CACHE_DIR };
export { REQUEST_ID_ENV } from "./http_workers.ts";

/** `KEY=VALUE` strings as ordered pairs; entries without `=` are dropped. */
export function envPairs(env: readonly string[]): [string, string][] {
  const out: [string, string][] = [];
  for (const entry of env) {
    const eq = entry.indexOf("=");
    if (eq > 0) out.push([entry.slice(0, eq), entry.slice(eq + 1)]);
  }
  return out;
}

const log = logLine;

/** The function names jco must call through JSPI for `kind`. */
function extraAsyncExports(kind: ComponentKind): string[] {
  if (kind.kind !== "func") return [];
  const hash = kind.func.lastIndexOf("#");
  if (hash < 0) return [kind.func];
  const iface = kind.func.slice(0, hash).replace(/@[^#]*$/, "");
  return [`${iface}#${kind.func.slice(hash + 1)}`];
}

/** Instantiates once to check the component links against this host. */
function instantiateOrExplain(
  component: LoadedComponent,
  config: HostConfig,
  path: string,
): { exports: Record<string, unknown>; dispose: () => void } {
  const host = createHost(config);
  try {
    return { exports: instantiate(component, host.imports), dispose: host.dispose };
  } catch (err) {
    host.dispose();
    const end = endOf(err);
    const why = end.kind === "trap" ? end.message : `it exited with code ${end.code}`;
    throw invalidArgument(`component ${path} cannot be instantiated: ${why}`);
  }
}

/** A prepared component (what {@linkcode prepare} returns). */
export interface PreparedComponent {
  /** How it runs. */
  kind: ComponentKind["kind"];
  /** Where the time of loading it went. */
  timings: LoadTimings;
  /** The address a proxy listens on (bound at prepare time). */
  addr?: Deno.NetAddr;
  /** Worker threads serving a proxy (0: its runner's main thread). */
  workers?: number;
  /** Runs it; resolves with the exit status. */
  run(): Promise<number>;
  /**
   * Stops a proxy as SIGINT would (drain, then `run` resolves 0), or as SIGTERM would
   * with `graceMs`. For tests and embedding; a command ignores it.
   */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Prepares a component to run in this guest runner process: reads its imports and
 * exports, transpiles it (or loads it from the cache), and instantiates it once to
 * check it links. For a wasi:http proxy it also binds the listener.
 *
 * @throws {ShimError} INVALID_ARGUMENT if the component cannot run here, saying why
 */
const MIB = 1024 * 1024;

export async function prepare(init: GuestInit, bytes: Uint8Array): Promise<PreparedComponent> {
  const path = init.guestPath;
  let shape;
  try {
    shape = inspectComponent(bytes);
  } catch (err) {
    if (!(err instanceof MalformedComponent)) throw err;
    throw invalidArgument(`component ${path} is malformed: ${err.message}`);
  }
  checkComponentImports(shape, path);
  const kind = componentKind(shape, init.func, DEFAULT_FUNC, path);
  const env = envPairs(init.env);
  // Parse the serving configuration before the (slow) transpile.
  const httpConfig = kind.kind === "http" ? httpConfigFromEnv(new Map(env), init.limits) : null;
  let root: string;
  try {
    root = await Deno.realPath(init.rootfs);
  } catch (err) {
    throw invalidArgument(`container root ${init.rootfs}: ${(err as Error).message}`);
  }
  const component = await loadComponent(bytes, {
    cacheDir: init.cacheDir ?? DEFAULT_CACHE_DIR,
    path,
    log,
    extraAsyncExports: extraAsyncExports(kind),
  });
  const t = component.timings;
  log(
    `component ${path}: ${kind.kind}; glue ${t.source === "hit" ? "from cache" : "transpiled"}` +
      ` (cache ${t.cacheMs.toFixed(0)} ms, transpile ${t.transpileMs.toFixed(0)} ms, ` +
      `glue ${t.glueMs.toFixed(0)} ms, compile ${t.compileMs.toFixed(0)} ms)`,
  );
  const base = { args: init.args, env, cwd: init.cwd || "/", root, network: init.network === true };
  if (kind.kind === "http") {
    return await prepareProxy(component, kind.export, base, httpConfig!, init, path);
  }
  const stdio = openStdio(init.stdout, init.stderr);
  // The server forwards the container's stdin FIFO to the runner's own stdin (as for
  // preview1 guests): reading the FIFO here too would race its pump, and by path it may
  // be out of reach once the runner is the spec's user.
  const stdin = init.stdin === "" ? EMPTY_SOURCE : new StreamSource(runnerStdinReadable());
  const instance = instantiateOrExplain(
    component,
    { ...base, stdin, stdout: stdio.stdout, stderr: stdio.stderr },
    path,
  );
  const fn = kind.kind === "command"
    ? findExportedFunction(instance.exports, `${kind.export}#run`, path)
    : findExportedFunction(instance.exports, kind.func, path);
  return {
    kind: kind.kind,
    timings: t,
    stop: () => Promise.resolve(),
    run: async () => {
      const end = await runToEnd(fn);
      instance.dispose();
      if (end.kind === "trap") {
        log(`component ${path}: ${end.message}`);
        await tellContainer(stdio, end.message, log);
      }
      await stdio.close();
      return end.kind === "exit" ? end.code : EXIT_TRAP;
    },
  };
}

/**
 * Prepares a component to run in this guest runner process (see {@linkcode prepare}).
 * The returned function runs it: a command resolves with its exit code; a proxy
 * serves until SIGINT (resolves 0) or SIGTERM (resolves 143).
 *
 * @throws {ShimError} INVALID_ARGUMENT if the component cannot run here, saying why
 */
export async function prepareComponent(
  init: GuestInit,
  bytes: Uint8Array,
): Promise<() => Promise<number>> {
  const prepared = await prepare(init, bytes);
  return () => prepared.run();
}

/** Checks a proxy instantiates, binds its listener, and returns what serves it. */
async function prepareProxy(
  component: LoadedComponent,
  exportName: string,
  base: Omit<HostConfig, "stdin" | "stdout" | "stderr">,
  http: HttpConfig,
  init: GuestInit,
  path: string,
): Promise<PreparedComponent> {
  const hostConfig: ProxyHostConfig = base;
  const check = instantiateOrExplain(
    component,
    { ...hostConfig, stdin: EMPTY_SOURCE, stdout: discardSink(), stderr: discardSink() },
    path,
  );
  check.dispose();
  if (typeof (check.exports[exportName] as IncomingHandler | undefined)?.handle !== "function") {
    throw invalidArgument(`component ${path}: ${exportName} has no handle function`);
  }
  const local = () => {
    const stdio = openStdio(init.stdout, init.stderr);
    return new LocalProxy(
      component,
      exportName,
      { ...hostConfig, stdin: EMPTY_SOURCE, stdout: stdio.stdout, stderr: stdio.stderr },
      http,
      stdio,
      log,
    );
  };
  let proxy: WorkerProxy | LocalProxy;
  let addr: Deno.NetAddr;
  try {
    if (http.workers === 0) {
      proxy = local();
      addr = await proxy.listen();
    } else {
      proxy = new WorkerProxy(
        {
          glue: component.glue,
          modules: component.modules,
          exportName,
          host: hostConfig,
          http,
          stdout: init.stdout,
          stderr: init.stderr,
          requestIds: new SharedArrayBuffer(4),
        },
        http.workers,
        log,
      );
      try {
        addr = await proxy.listen();
      } catch (err) {
        if (err instanceof Deno.errors.AddrInUse || err instanceof Deno.errors.AddrNotAvailable) {
          throw err;
        }
        log(
          `component ${path}: no worker threads (${(err as Error).message}); serving on one thread`,
        );
        proxy = local();
        addr = await proxy.listen();
      }
    }
  } catch (err) {
    throw invalidArgument(
      `component ${path}: cannot listen on ${http.hostname}:${http.port}: ${
        (err as Error).message
      }`,
    );
  }
  log(
    `component ${path}: serving wasi:http on ${addr.hostname}:${addr.port} with ` +
      `${proxy instanceof WorkerProxy ? `${http.workers} worker thread(s)` : "the main thread"}` +
      ` (backlog ${http.backlog} requested; Deno.serve uses its own, ${DENO_BACKLOG});` +
      ` limits: headers ${http.maxHeaderBytes} B, body ${
        http.maxBodyBytes ? `${http.maxBodyBytes} B` : "unlimited"
      },` +
      ` body timeout ${http.bodyTimeoutMs ? `${http.bodyTimeoutMs} ms` : "none"},` +
      ` grown-memory budget ${
        http.grownBudgetBytes ? `${(http.grownBudgetBytes / MIB).toFixed(1)} MiB` : "none"
      } per thread`,
  );
  const server = proxy;
  return {
    kind: "http",
    timings: component.timings,
    addr,
    workers: proxy instanceof WorkerProxy ? http.workers : 0,
    run: () => server.serveUntilSignal(),
    stop: async (graceMs?: number) => {
      const drained = await server.stop(graceMs);
      if (!drained) log(`component ${path}: requests still running after ${graceMs} ms`);
    },
  };
}
