/**
 * Serves a wasi:http proxy from several threads: each `Worker` runs its own
 * {@linkcode ProxyServer} on the same address (SO_REUSEPORT, so the kernel spreads
 * connections between them), with its own instances, created from the glue and the
 * compiled core modules this thread hands it (compiled code is shared, not
 * recompiled). `REQUEST_ID`s come from one shared counter, so they stay unique and
 * increasing across threads.
 *
 * The main thread only coordinates (signals, stop, drain). The proxy is served on the
 * main thread instead with 0 workers, without `--unstable-net` (Deno's `reusePort` is
 * unstable; using it without the flag exits the process, so it is never tried), or if
 * a worker cannot start (e.g. a `deno compile`d binary built without
 * `--include src/wasm/component/http_worker.ts`).
 *
 * @module
 */

import { type Host, type HostConfig, hostFactory } from "./host/mod.ts";
import {
  END_INSTANCE,
  GROWN_BYTES,
  idleInstances,
  type LeanInstantiate,
  type LinkStats,
  linkStats,
  plainEntry,
  recycleGrown,
} from "./instantiate/mod.ts";
import {
  EXIT_SIGTERM,
  type HttpConfig,
  type IncomingHandler,
  type InstanceFactory,
  type ProxyInstance,
  ProxyServer,
  untilSignal,
} from "./http_server.ts";
import { instantiate, type LoadedComponent } from "./load.ts";
import type { Stdio } from "./stdio.ts";

/** Environment variable added to each wasi:http request's instance. */
export const REQUEST_ID_ENV = "REQUEST_ID";
/** How long a worker may take to start and bind. */
const WORKER_START_TIMEOUT_MS = 30_000;

/**
 * True if this process may bind with `reusePort` (it was started with
 * `--unstable-net`, which is also what exposes `Deno.listenDatagram`).
 */
export function canSharePorts(): boolean {
  return typeof (Deno as { listenDatagram?: unknown }).listenDatagram === "function";
}

/**
 * The host configuration of a proxy's instances, minus stdio: the same for every
 * thread, and structured-cloneable (a proxy's stdin is always empty).
 */
export type ProxyHostConfig = Omit<HostConfig, "stdin" | "stdout" | "stderr">;

/**
 * Creates the instances of one proxy (one thread's). An instance's `host.dispose()`
 * ends it: call it only once its `handle` call has settled (or if it never ran), as
 * lean glue may then recycle its core instances, or reuse its memory, reset, for a
 * later instance (see `instantiate/recycle.ts`); `discard()` first (a timed-out
 * request) keeps them from being recycled.
 */
export function instanceFactory(
  component: Pick<LoadedComponent, "instantiate" | "modules">,
  exportName: string,
  config: HostConfig,
  log?: (line: string) => void,
  options: { recycleGrown?: boolean } = {},
): InstanceFactory {
  if (options.recycleGrown !== undefined) {
    try {
      recycleGrown(component.instantiate as LeanInstantiate, options.recycleGrown);
    } catch {
      // jco's glue: a fresh instance per request, whatever its memory does.
    }
  }
  const env = config.env;
  const newHost = hostFactory(config);
  let logged = log === undefined;
  const glue = component.instantiate as LeanInstantiate;
  let idle: (() => number) | undefined;
  try {
    idleInstances(glue);
    idle = () => idleInstances(glue);
  } catch {
    // jco's glue: nothing is recycled.
  }
  const factory: InstanceFactory = (requestId) => {
    // Made if the guest asks for its environment (most requests do not).
    const host = newHost(() => [...env, [REQUEST_ID_ENV, String(requestId)]]);
    let exports: Record<string | symbol, unknown>;
    try {
      exports = instantiate(component, host.imports);
    } catch (err) {
      host.dispose();
      throw err;
    }
    if (!logged) {
      logged = true;
      const why = reuseNote(component.instantiate);
      if (why !== null) log!(`wasi:http: ${why}`);
    }
    const handler = exports[exportName] as IncomingHandler;
    const end = exports[END_INSTANCE] as ((reusable?: boolean) => void) | undefined;
    if (end === undefined) return { requestId, host, handler };
    return new LeanInstance(
      requestId,
      handler,
      host,
      end,
      exports[GROWN_BYTES] as () => number,
    );
  };
  factory.idle = idle;
  factory.plain = () => plainEntry(glue);
  return factory;
}

/** An instance of lean glue: its host's end also ends the instance (see `link.ts`). */
class LeanInstance implements ProxyInstance, Host {
  #reusable = true;

  constructor(
    readonly requestId: number,
    readonly handler: IncomingHandler,
    readonly inner: Host,
    readonly end: (reusable?: boolean) => void,
    readonly grownBytes: () => number,
  ) {}

  get host(): Host {
    return this;
  }

  get imports(): Host["imports"] {
    return this.inner.imports;
  }

  dispose(): void {
    this.inner.dispose();
    this.end(this.#reusable);
  }

  discard(): void {
    this.#reusable = false;
  }
}

/**
 * Why instances of lean glue are not recycled over mapped memory images (the path
 * whose cost does not grow with the guest, see `instantiate/recycle.ts`), or null if
 * they are, or the glue is jco's.
 */
function reuseNote(glue: LoadedComponent["instantiate"]): string | null {
  let stats: LinkStats;
  try {
    stats = linkStats(glue as LeanInstantiate);
  } catch {
    return null;
  }
  if (!stats.reuse.recycled) {
    return `a fresh instance per request (not recycled): ${stats.reuse.reason}`;
  }
  if (stats.imagesCopied !== null) return `memory images are copied: ${stats.imagesCopied}`;
  if (!stats.reuse.grownRecycled) {
    return `an instance whose memory grew is not recycled: ${stats.reuse.grownReason}`;
  }
  return null;
}

/** Everything a worker needs to serve the proxy (structured-cloneable). */
export interface WorkerSpec {
  glue: string;
  modules: Map<string, WebAssembly.Module>;
  exportName: string;
  host: ProxyHostConfig;
  http: HttpConfig;
  /** FIFO paths of the container's stdout and stderr ("" for none). */
  stdout: string;
  stderr: string;
  /** `Int32Array` over this: [0] is the last REQUEST_ID handed out. */
  requestIds: SharedArrayBuffer;
}

/** Messages from a worker. */
export type FromWorker =
  | { type: "listening"; hostname: string; port: number }
  | { type: "failed"; message: string }
  | {
    type: "stopped";
    drained: boolean;
    /** The thread's counts (`metricsSummary`), for the runner's log. */
    metrics?: string;
  };

/** Messages to a worker. */
export type ToWorker =
  | { type: "init"; spec: WorkerSpec }
  | { type: "start" }
  | { type: "stop"; graceMs: number | null };

/** A proxy served by worker threads. */
export class WorkerProxy {
  #spec: WorkerSpec;
  #count: number;
  #log: (line: string) => void;
  #workers: Worker[] = [];
  #messages = new Map<Worker, (msg: FromWorker) => void>();
  #stopped = Promise.withResolvers<number>();
  #stopping: Promise<boolean> | null = null;

  /**
   * @param spec what each worker serves
   * @param count how many workers
   * @param log the runner's stderr
   */
  constructor(spec: WorkerSpec, count: number, log: (line: string) => void) {
    this.#spec = spec;
    this.#count = count;
    this.#log = log;
  }

  #next(worker: Worker, timeoutMs = Infinity): Promise<FromWorker> {
    return new Promise((resolve, reject) => {
      const timer = timeoutMs === Infinity ? undefined : setTimeout(
        () => reject(new Error(`no answer from a wasi:http worker within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.#messages.set(worker, (msg) => {
        clearTimeout(timer);
        resolve(msg);
      });
    });
  }

  #spawned = 0;

  async #spawn(spec: WorkerSpec): Promise<{ worker: Worker; addr: Deno.NetAddr }> {
    // Named, so that each thread's metrics are a series of their own (see http_server.ts).
    const worker = new Worker(new URL("./http_worker.ts", import.meta.url), {
      type: "module",
      name: `wasi-http-${++this.#spawned}`,
    });
    worker.onmessage = (e: MessageEvent<FromWorker>) => {
      const handler = this.#messages.get(worker);
      this.#messages.delete(worker);
      handler?.(e.data);
    };
    const failed = new Promise<never>((_, reject) => {
      worker.onerror = (e) => {
        e.preventDefault();
        reject(new Error(`wasi:http worker failed: ${e.message}`));
      };
    });
    const reply = this.#next(worker, WORKER_START_TIMEOUT_MS);
    worker.postMessage({ type: "init", spec } satisfies ToWorker);
    let msg: FromWorker;
    try {
      msg = await Promise.race([reply, failed]);
    } catch (err) {
      worker.terminate();
      throw err;
    }
    if (msg.type !== "listening") {
      worker.terminate();
      throw new Error(msg.type === "failed" ? msg.message : `unexpected ${msg.type}`);
    }
    worker.onerror = (e) => {
      e.preventDefault();
      this.#log(`wasi:http: a worker thread failed: ${e.message}`);
    };
    return { worker, addr: { transport: "tcp", hostname: msg.hostname, port: msg.port } };
  }

  /**
   * Starts the workers and binds the address in each (the first binds a requested port
   * 0, the others share the port it got). Requests wait until {@linkcode start}.
   */
  async listen(): Promise<Deno.NetAddr> {
    if (!canSharePorts()) {
      throw new Error("sharing a port between threads needs Deno's --unstable-net");
    }
    const { hostname, port } = this.#spec.http;
    if (port !== 0) {
      // Workers bind with SO_REUSEPORT, which would quietly share the port with another
      // process doing the same; an exclusive bind first makes a busy port an error.
      Deno.listen({ hostname, port }).close();
    }
    const first = await this.#spawn(this.#spec);
    this.#workers.push(first.worker);
    const shared = { ...this.#spec, http: { ...this.#spec.http, port: first.addr.port } };
    try {
      const rest = await Promise.all(
        Array.from({ length: this.#count - 1 }, () => this.#spawn(shared)),
      );
      for (const r of rest) this.#workers.push(r.worker);
    } catch (err) {
      for (const w of this.#workers) w.terminate();
      this.#workers = [];
      throw err;
    }
    return first.addr;
  }

  /** Lets requests through. */
  start(): void {
    for (const w of this.#workers) w.postMessage({ type: "start" } satisfies ToWorker);
  }

  /** Stops every worker (drain, at most `graceMs`); resolves true if all drained. */
  stop(graceMs = Infinity): Promise<boolean> {
    this.#stopping ??= (async () => {
      const replies = this.#workers.map((w) => this.#next(w));
      for (const w of this.#workers) {
        w.postMessage(
          { type: "stop", graceMs: graceMs === Infinity ? null : graceMs } satisfies ToWorker,
        );
      }
      const results = await Promise.all(replies.map((r) => r.catch(() => null)));
      for (const w of this.#workers) w.terminate();
      // Each thread counted its own requests: their totals, where an operator looks.
      results.forEach((r, i) => {
        if (r?.type === "stopped" && r.metrics) {
          this.#log(`wasi:http thread ${i + 1}: metrics: ${r.metrics}`);
        }
      });
      this.#stopped.resolve(graceMs === Infinity ? 0 : EXIT_SIGTERM);
      return results.every((r) => r?.type === "stopped" && r.drained);
    })();
    return this.#stopping;
  }

  /** As {@linkcode ProxyServer.serveUntilSignal}, for the workers. */
  async serveUntilSignal(): Promise<number> {
    this.start();
    return await untilSignal((grace) => this.stop(grace), this.#stopped.promise, this.#log);
  }
}

/** A proxy served on this thread, with the same interface as {@linkcode WorkerProxy}. */
export class LocalProxy {
  #server: ProxyServer;
  #stdio: Stdio;

  /** Serves `component` here. */
  constructor(
    component: LoadedComponent,
    exportName: string,
    config: HostConfig,
    http: HttpConfig,
    stdio: Stdio,
    log: (line: string) => void,
  ) {
    this.#server = new ProxyServer(
      instanceFactory(component, exportName, config, log, { recycleGrown: http.recycleGrown }),
      http,
      log,
    );
    this.#stdio = stdio;
  }

  /** Binds the address. */
  listen(): Promise<Deno.NetAddr> {
    return Promise.resolve(this.#server.listen());
  }

  /** Lets requests through. */
  start(): void {
    this.#server.start();
  }

  /** Stops (drain, at most `graceMs`). */
  async stop(graceMs = Infinity): Promise<boolean> {
    const drained = await this.#server.stop(graceMs);
    await this.#stdio.close();
    return drained;
  }

  /** Serves until SIGINT/SIGTERM or stop. */
  async serveUntilSignal(): Promise<number> {
    const code = await this.#server.serveUntilSignal();
    await this.#stdio.close();
    return code;
  }
}
