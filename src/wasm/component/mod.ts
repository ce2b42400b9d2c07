/**
 * Running WebAssembly components (WASI 0.2) in a guest runner process.
 *
 * Design (measured with Deno 2.9.6, jco-transpile 0.15.0 on a 2-core machine; see
 * the README's component section for the figures):
 *
 * - **Host: our own WASI 0.2 host (`host/`), not preview2-shim.** preview2-shim's Node
 *   build is process-global (real stdio, `process.exit`, the whole environment). Its
 *   browser build is per-instance for CLI only: its HTTP types buffer whole request and
 *   response bodies (no streaming, no backpressure), it has no server-side incoming
 *   handler for `Deno.serve`, no real stdin, and no disk filesystem confined to a root.
 *   Those are most of what a container needs, so the host is written here: every
 *   instance gets its own arguments, environment, stdio streams, preopen and resource
 *   objects; nothing is shared between instances but stateless classes.
 * - **Blocking calls through JSPI.** The glue is transpiled with `asyncMode: "jspi"`;
 *   `poll`, `pollable.block` and the `blocking-*` stream methods are async functions
 *   over Deno streams and timers, so many instances run concurrently on one thread and
 *   a guest waiting on I/O never blocks the event loop.
 * - **Transpile once per component and options, cached on disk** (`cache.ts`): one
 *   verified file per entry under `<cacheDir>/components/`, written by atomic rename.
 *   `cacheDir` defaults to {@linkcode DEFAULT_CACHE_DIR}; an unwritable directory only
 *   costs the cache.
 * - **Glue evaluated with `new Function`** (`transpile.ts`), which works in a
 *   `deno compile`d binary (no import of run-time files, no `blob:` URL); core modules
 *   are compiled once per process.
 * - **wasi:http: a fresh instance per request, from a small pool created ahead of
 *   requests** (`http_server.ts`).
 *
 * Runner permissions (launcher install form) needed on a cache miss: jco's bindgen runs
 * on preview2-shim's Node build, which reads the whole environment (`--allow-env`) and
 * its own `.wasm` files (read access to the jco-transpile package directory). A cache
 * hit needs only read access to the cache directory.
 *
 * @module
 */

import { invalidArgument } from "../../protocol/status.ts";
import { DEFAULT_FUNC } from "../entrypoint.ts";
import type { GuestInit } from "../types.ts";
import { endOf, EXIT_TRAP, findExportedFunction, runToEnd } from "./command.ts";
import { createHost, type HostConfig } from "./host/mod.ts";
import { discardSink, EMPTY_SOURCE, type ByteSink } from "./host/io.ts";
import { FileWriter, fileReadable, QueueSink, StreamSource } from "./host/pipes.ts";
import { httpConfigFromEnv, type IncomingHandler, ProxyServer } from "./http_server.ts";
import {
  checkComponentImports,
  type ComponentKind,
  componentKind,
  inspectComponent,
  MalformedComponent,
} from "./inspect.ts";
import { DEFAULT_CACHE_DIR, instantiate, type LoadedComponent, loadComponent } from "./load.ts";

export { DEFAULT_CACHE_DIR };

/** Environment variable added to each wasi:http request's instance. */
export const REQUEST_ID_ENV = "REQUEST_ID";

const encoder = new TextEncoder();

/** Writes one line to the runner's own stderr (the shim's log, never the container's). */
function log(line: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(line.endsWith("\n") ? line : `${line}\n`));
  } catch {
    // nowhere to log
  }
}

/** `KEY=VALUE` strings as ordered pairs; entries without `=` are dropped. */
export function envPairs(env: readonly string[]): [string, string][] {
  const out: [string, string][] = [];
  for (const entry of env) {
    const eq = entry.indexOf("=");
    if (eq > 0) out.push([entry.slice(0, eq), entry.slice(eq + 1)]);
  }
  return out;
}

/** The container's stdout or stderr FIFO as a sink (nothing: everything is dropped). */
function fifoSink(path: string): { sink: ByteSink; close: () => Promise<void> } {
  if (path === "") return { sink: discardSink(), close: () => Promise.resolve() };
  const writer = new FileWriter(path);
  const sink = new QueueSink(writer.write);
  return {
    sink,
    close: async () => {
      await sink.drained();
      await writer.close();
    },
  };
}

/** Everything about the container's stdio a guest needs. */
interface Stdio {
  stdout: ByteSink;
  stderr: ByteSink;
  /** Waits for queued output to reach the FIFOs, then closes them. */
  close(): Promise<void>;
}

function openStdio(init: GuestInit): Stdio {
  const out = fifoSink(init.stdout);
  const err = fifoSink(init.stderr);
  return {
    stdout: out.sink,
    stderr: err.sink,
    close: async () => {
      await Promise.all([out.close(), err.close()]);
    },
  };
}

/** Writes a line to the container's stderr and waits for it. */
async function tellContainer(stdio: Stdio, message: string): Promise<void> {
  try {
    const bytes = encoder.encode(`${message}\n`);
    for (let at = 0; at < bytes.length;) {
      while (!stdio.stderr.writable()) await stdio.stderr.whenWritable();
      const n = Math.min(stdio.stderr.capacity(), bytes.length - at);
      stdio.stderr.write(bytes.slice(at, at + n));
      at += n;
    }
  } catch (err) {
    log(`cannot write to the container's stderr: ${(err as Error).message}`);
  }
}

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

/**
 * Prepares a component to run in this guest runner process: reads its imports and
 * exports, transpiles it (or loads it from the cache), and instantiates it once to
 * check it links. For a wasi:http proxy it also binds the listener. The returned
 * function runs it: a command resolves with its exit code; a proxy serves until SIGINT
 * (resolves 0) or SIGTERM (resolves 143).
 *
 * @throws {RpcError} INVALID_ARGUMENT if the component cannot run here, saying why
 */
export async function prepareComponent(
  init: GuestInit,
  bytes: Uint8Array,
): Promise<() => Promise<number>> {
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
  const httpConfig = kind.kind === "http" ? httpConfigFromEnv(new Map(env)) : null;
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
  const stdio = openStdio(init);
  const base = { args: init.args, cwd: init.cwd || "/", root, stdout: stdio.stdout, stderr: stdio.stderr };

  if (kind.kind === "http") {
    return prepareProxy(component, kind.export, { ...base, env, stdin: EMPTY_SOURCE }, httpConfig!, stdio, path);
  }
  const stdin = init.stdin === "" ? EMPTY_SOURCE : new StreamSource(fileReadable(init.stdin));
  const instance = instantiateOrExplain(component, { ...base, env, stdin }, path);
  const fn = kind.kind === "command"
    ? findExportedFunction(instance.exports, `${kind.export}#run`, path)
    : findExportedFunction(instance.exports, kind.func, path);
  return async () => {
    const end = await runToEnd(fn);
    instance.dispose();
    if (end.kind === "trap") {
      log(`component ${path}: ${end.message}`);
      await tellContainer(stdio, end.message);
    }
    await stdio.close();
    return end.kind === "exit" ? end.code : EXIT_TRAP;
  };
}

/** Checks a proxy instantiates, binds its listener, and returns what serves it. */
function prepareProxy(
  component: LoadedComponent,
  exportName: string,
  config: HostConfig,
  httpConfig: ReturnType<typeof httpConfigFromEnv>,
  stdio: Stdio,
  path: string,
): () => Promise<number> {
  const check = instantiateOrExplain(component, config, path);
  check.dispose();
  if (typeof (check.exports[exportName] as IncomingHandler | undefined)?.handle !== "function") {
    throw invalidArgument(`component ${path}: ${exportName} has no handle function`);
  }
  const env = config.env;
  const server = new ProxyServer((requestId) => {
    const host = createHost({ ...config, env: [...env, [REQUEST_ID_ENV, String(requestId)]] });
    try {
      const exports = instantiate(component, host.imports);
      return { requestId, host, handler: exports[exportName] as IncomingHandler };
    } catch (err) {
      host.dispose();
      throw err;
    }
  }, httpConfig, log);
  let addr: Deno.NetAddr;
  try {
    addr = server.listen();
  } catch (err) {
    throw invalidArgument(
      `component ${path}: cannot listen on ${httpConfig.hostname}:${httpConfig.port}: ` +
        (err as Error).message,
    );
  }
  log(
    `component ${path}: serving wasi:http on ${addr.hostname}:${addr.port} (backlog ` +
      `${httpConfig.backlog} requested; Deno.serve uses its own, 511)`,
  );
  return async () => {
    const code = await server.serveUntilSignal();
    await stdio.close();
    return code;
  };
}
