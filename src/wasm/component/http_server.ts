/**
 * Serves a `wasi:http/proxy` component with `Deno.serve`: a fresh instance for every
 * request, never reused.
 *
 * - Instances are created ahead of requests into a small pool (each is still used for
 *   exactly one request), refilled one per event-loop turn, so instantiation is mostly
 *   off the request's path.
 * - Instances in flight are capped per thread (each holds its memory's dirty pages
 *   until it ends): past the cap a request waits in a queue, and past the queue's
 *   limit, or once it has waited the request timeout, it is answered 503 with
 *   `retry-after` and one line on stderr. Memory then stays bounded under any load
 *   instead of growing with the number of connections.
 * - Memory grown past its initial size is budgeted per thread too: a request waits
 *   while the instances in flight hold at least the budget of it (a guest that grows
 *   tens of MiB per request and waits on I/O would otherwise hold that per concurrent
 *   request), and one instance always runs, however much it grows. Waiting requests
 *   are admitted one at a time, each after the previous one's instance ran its
 *   synchronous part (what it grew then counts).
 * - The response streams what the guest writes, with backpressure both ways (see
 *   `host/pipes.ts`). A trap, an error code or a missing response answers 500 for that
 *   request only; a request that runs longer than the timeout answers 504 (or, if the
 *   response had started, has its body cut). One line per failed request goes to the
 *   runner's stderr.
 * - SIGINT: stop accepting, let in-flight requests finish, exit 0. SIGTERM: the same
 *   within a grace period, exit 143 (128+15).
 * - Listen backlog: `Deno.serve` has no backlog option; Deno listens with a fixed backlog
 *   of 511 (measured with `ss -ltn`, Deno 2.9.6). The configured value is validated and
 *   reported, but cannot be applied.
 * - Limits (`http_limits.ts`), checked before an instance is taken: request headers over
 *   the limit answer 431, a `content-length` over the body limit 413. A body that grows
 *   over the limit while the guest reads it, or stalls longer than the body timeout,
 *   fails the guest's read and answers 413 or 408, or cuts the response if it had
 *   started. Malformed requests and heads over 64 KiB get hyper's own 400.
 *
 * @module
 */

import { type Deadline, Deadlines, type Expiring } from "./deadlines.ts";
import { plainAttempt } from "./plain_attempt.ts";
import { invalidArgument } from "../../errdefs/errors.ts";
import type { ContainerLimits } from "../../oci/spec.ts";
import {
  activeSpan,
  type Attributes,
  counter,
  type CounterSeries,
  histogram,
} from "../../sys/telemetry.ts";
import { GuestExit } from "./host/cli.ts";
import {
  BodyCut,
  type ErrorCode,
  incomingCallTo,
  type OutgoingResponse,
  type ResponseTarget,
} from "./host/http.ts";
import type { Host } from "./host/mod.ts";
import {
  type BodyRefused,
  contentLength,
  DENO_MAX_HEAD_BYTES,
  headerBytes,
  limitBody,
  type LimitedBody,
} from "./http_limits.ts";

/** Default listen address (as wasmtime serve and runwasi). */
export const DEFAULT_SOCKET_ADDR = "0.0.0.0:8080";
/** Default listen backlog (runwasi's documented default). */
export const DEFAULT_BACKLOG = 100;
/** The backlog Deno.serve actually uses (not configurable). */
export const DENO_BACKLOG = 511;
/** Default time a request may take, from arrival to the end of its instance. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 60_000;
/** Default number of instances created ahead of requests. */
export const DEFAULT_POOL_SIZE = 4;
/** Largest pool accepted. */
const MAX_POOL_SIZE = 1024;
/**
 * Default most instances in flight per thread (more requests wait). Not lower: a
 * request whose client sends its body slowly holds its instance while the guest reads
 * (up to the body timeout between bytes), so a small cap would let a few slow clients
 * stall everyone else; set it from the memory a node can give each instance.
 */
export const DEFAULT_MAX_INSTANCES = 128;
/**
 * Default budget, per thread, of memory grown past its initial size by the instances in
 * flight, in MiB, for a container without a memory limit: a request waits while they
 * hold at least this much (one instance always runs).
 */
export const DEFAULT_GROWN_BUDGET_MIB = 32;
/**
 * With a memory limit, the default budget is the limit divided by this and by the
 * serving threads: a quarter of the limit for memory grown in flight, the rest for the
 * runner itself (~130–170 MB with two threads), the instances idle between requests and
 * the memory images. 256 MiB and two threads give the 32 MiB above.
 */
export const GROWN_BUDGET_SHARE = 4;
/** Largest grown-memory budget accepted, in MiB. */
const MAX_GROWN_BUDGET_MIB = 1024 * 1024;
const MIB = 1024 * 1024;
/** Default most requests waiting for an instance per thread (more: 503). */
export const DEFAULT_MAX_QUEUED = 1024;
/** Seconds a client is told to wait after a 503 (`retry-after`). */
export const RETRY_AFTER_SECONDS = 1;
/** How long in-flight requests get to finish after SIGTERM. */
export const SIGTERM_GRACE_MS = 10_000;
/** Exit status after SIGTERM (128 + 15). */
export const EXIT_SIGTERM = 143;
/** Default limit of request header names and values together, in bytes. */
export const DEFAULT_MAX_HEADER_BYTES = 32 * 1024;
/** Smallest header limit accepted (room for ordinary headers). */
const MIN_MAX_HEADER_BYTES = 1024;
/** Default limit of a request body, in bytes. */
export const DEFAULT_MAX_BODY_BYTES = 100 * 1024 * 1024;
/** Default wait for a client's next request body bytes. */
export const DEFAULT_BODY_TIMEOUT_MS = 30_000;
/** Longest timer Deno can arm (about 24.8 days). */
const MAX_TIMER_MS = 0x7fff_ffff;

/** Spec environment variables read here. */
export const ENV = {
  addr: "WASMTIME_HTTP_PROXY_SOCKET_ADDR",
  backlog: "WASMTIME_HTTP_PROXY_BACKLOG",
  backlogAlias: "WASMTIME_HTTP_BACKLOG",
  timeout: "WASMTIME_HTTP_PROXY_REQUEST_TIMEOUT",
  pool: "WASMTIME_HTTP_PROXY_PREINSTANTIATE",
  workers: "WASMTIME_HTTP_PROXY_WORKERS",
  maxInstances: "WASMTIME_HTTP_PROXY_MAX_INSTANCES",
  maxQueued: "WASMTIME_HTTP_PROXY_MAX_QUEUED",
  grownBudget: "WASMTIME_HTTP_PROXY_GROWN_BUDGET_MIB",
  maxHeaderBytes: "WASMTIME_HTTP_MAX_HEADER_BYTES",
  maxBodyBytes: "WASMTIME_HTTP_MAX_BODY_BYTES",
  bodyTimeout: "WASMTIME_HTTP_BODY_TIMEOUT_MS",
  recycleGrown: "WASMTIME_HTTP_PROXY_RECYCLE_GROWN",
  plainEntry: "WASMTIME_HTTP_PROXY_PLAIN_ENTRY",
} as const;

/** Most worker threads used by default (each costs ~10 MB plus its instances). */
export const MAX_DEFAULT_WORKERS = 4;
/** Most worker threads accepted. */
const MAX_WORKERS = 64;

/** How the proxy is served. */
export interface HttpConfig {
  hostname: string;
  port: number;
  /** Requested backlog (validated; see the module documentation). */
  backlog: number;
  /** 0: no timeout. */
  requestTimeoutMs: number;
  /** Instances created ahead of requests (per thread). */
  poolSize: number;
  /** Worker threads serving requests; 0 serves on the runner's main thread. */
  workers: number;
  /** Most instances in flight per thread; more requests wait (see the module doc). */
  maxInstances: number;
  /** Most requests waiting for an instance per thread; more answer 503. */
  maxQueued: number;
  /**
   * Requests wait while the instances in flight on a thread hold at least this many
   * bytes of memory grown past its initial size (one always runs); 0: no budget.
   */
  grownBudgetBytes: number;
  /** Most bytes of request header names and values (more: 431). */
  maxHeaderBytes: number;
  /** Most request body bytes (more: 413); 0: no limit. */
  maxBodyBytes: number;
  /** Longest wait for the client's next body bytes (then 408); 0: none. */
  bodyTimeoutMs: number;
  /**
   * Recycle instances whose memory grew (see `instantiate/vsize.ts`); false drops them,
   * for guests that rely on a trap past their memory's size.
   */
  recycleGrown: boolean;
  /**
   * Try body-less requests without `WebAssembly.promising` first (see
   * `plain_attempt.ts`); false: every request is entered through `promising`.
   */
  plainEntry: boolean;
}

/** Parses `host:port`, `[v6]:port`. @throws {ShimError} INVALID_ARGUMENT */
export function parseSocketAddr(value: string): { hostname: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw invalidArgument(
      `${ENV.addr}="${value}" is not an address: expected host:port (e.g. 0.0.0.0:8080 or ` +
        `[::]:8080), port 0-65535`,
    );
  }
  return { hostname: m[1] ?? m[2], port };
}

function parseCount(name: string, value: string, min: number, max: number): number {
  const n = /^\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!(n >= min && n <= max)) {
    throw invalidArgument(`${name}="${value}" is not a whole number from ${min} to ${max}`);
  }
  return n;
}

function parseSwitch(name: string, value: string): boolean {
  const v = value.trim();
  if (v !== "0" && v !== "1") throw invalidArgument(`${name}="${value}" is not 0 (off) or 1 (on)`);
  return v === "1";
}

function parseHeaderLimit(value: string): number {
  const n = parseCount(ENV.maxHeaderBytes, value, MIN_MAX_HEADER_BYTES, Number.MAX_SAFE_INTEGER);
  if (n > DENO_MAX_HEAD_BYTES) {
    throw invalidArgument(
      `${ENV.maxHeaderBytes}="${value}" is over ${DENO_MAX_HEAD_BYTES}: Deno.serve itself ` +
        `answers 400 to request heads over ${DENO_MAX_HEAD_BYTES} bytes, so a larger limit ` +
        `could never apply`,
    );
  }
  return n;
}

/** Parses a duration: seconds (`60`, `2.5`) or with a unit (`500ms`, `30s`, `2m`). */
export function parseDuration(name: string, value: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(value.trim());
  if (!m) {
    throw invalidArgument(
      `${name}="${value}" is not a duration: expected seconds (60) or 500ms, 30s, 2m; 0 disables`,
    );
  }
  const scale = m[2] === "ms" ? 1 : m[2] === "m" ? 60_000 : 1000;
  return Math.round(Number(m[1]) * scale);
}

/**
 * The serving configuration from the container's environment (spec `process.env`);
 * where a variable is not set, the defaults of the serving threads and the grown-memory
 * budget follow the container's `limits` (see {@linkcode GROWN_BUDGET_SHARE}).
 *
 * @throws {ShimError} INVALID_ARGUMENT naming the variable and what it accepts
 */
export function httpConfigFromEnv(
  env: ReadonlyMap<string, string>,
  limits: ContainerLimits = {},
): HttpConfig {
  const { hostname, port } = parseSocketAddr(env.get(ENV.addr) ?? DEFAULT_SOCKET_ADDR);
  const backlogName = env.has(ENV.backlog) ? ENV.backlog : ENV.backlogAlias;
  // By default one serving thread per CPU the container may use (its CFS quota, rounded
  // up), as many as the node has, at most MAX_DEFAULT_WORKERS.
  const workers = env.has(ENV.workers)
    ? parseCount(ENV.workers, env.get(ENV.workers)!, 0, MAX_WORKERS)
    : Math.max(
      1,
      Math.min(
        navigator.hardwareConcurrency || 1,
        MAX_DEFAULT_WORKERS,
        Math.ceil(limits.cpus ?? Infinity),
      ),
    );
  const backlogValue = env.get(backlogName);
  return {
    hostname,
    port,
    backlog: backlogValue === undefined
      ? DEFAULT_BACKLOG
      : parseCount(backlogName, backlogValue, 1, 65535),
    requestTimeoutMs: env.has(ENV.timeout)
      ? parseDuration(ENV.timeout, env.get(ENV.timeout)!)
      : DEFAULT_REQUEST_TIMEOUT_MS,
    poolSize: env.has(ENV.pool)
      ? parseCount(ENV.pool, env.get(ENV.pool)!, 0, MAX_POOL_SIZE)
      : DEFAULT_POOL_SIZE,
    workers,
    maxInstances: env.has(ENV.maxInstances)
      ? parseCount(ENV.maxInstances, env.get(ENV.maxInstances)!, 1, MAX_POOL_SIZE)
      : DEFAULT_MAX_INSTANCES,
    maxQueued: env.has(ENV.maxQueued)
      ? parseCount(ENV.maxQueued, env.get(ENV.maxQueued)!, 0, Number.MAX_SAFE_INTEGER)
      : DEFAULT_MAX_QUEUED,
    grownBudgetBytes: env.has(ENV.grownBudget)
      ? MIB * parseCount(ENV.grownBudget, env.get(ENV.grownBudget)!, 0, MAX_GROWN_BUDGET_MIB)
      : limits.memoryBytes === undefined
      ? MIB * DEFAULT_GROWN_BUDGET_MIB
      : Math.floor(limits.memoryBytes / (GROWN_BUDGET_SHARE * Math.max(1, workers))),
    maxHeaderBytes: env.has(ENV.maxHeaderBytes)
      ? parseHeaderLimit(env.get(ENV.maxHeaderBytes)!)
      : DEFAULT_MAX_HEADER_BYTES,
    maxBodyBytes: env.has(ENV.maxBodyBytes)
      ? parseCount(ENV.maxBodyBytes, env.get(ENV.maxBodyBytes)!, 0, Number.MAX_SAFE_INTEGER)
      : DEFAULT_MAX_BODY_BYTES,
    bodyTimeoutMs: env.has(ENV.bodyTimeout)
      ? parseCount(ENV.bodyTimeout, env.get(ENV.bodyTimeout)!, 0, MAX_TIMER_MS)
      : DEFAULT_BODY_TIMEOUT_MS,
    recycleGrown: env.has(ENV.recycleGrown)
      ? parseSwitch(ENV.recycleGrown, env.get(ENV.recycleGrown)!)
      : true,
    plainEntry: env.has(ENV.plainEntry)
      ? parseSwitch(ENV.plainEntry, env.get(ENV.plainEntry)!)
      : true,
  };
}

/** The guest's `wasi:http/incoming-handler` export. */
export interface IncomingHandler {
  handle(request: unknown, outparam: unknown): Promise<void>;
}

/** A fresh instance, ready for one request. */
export interface ProxyInstance {
  /** The `REQUEST_ID` its environment carries. */
  requestId: number;
  handler: IncomingHandler;
  host: Host;
  /**
   * Marks it as not to be reused once disposed (its request timed out): whatever it
   * runs in is dropped rather than recycled for a later request.
   */
  discard?(): void;
  /**
   * Bytes its memories hold past their initial size (they grew, now or in an earlier
   * request of a recycled memory); absent: none counted.
   */
  grownBytes?(): number;
}

/** Creates a fresh instance whose environment has `REQUEST_ID=requestId`. */
export type InstanceFactory = ((requestId: number) => ProxyInstance) & {
  /**
   * How many instances it holds ready without instantiating (recycled, see
   * `instantiate/recycle.ts`); while any, none are created ahead of requests.
   */
  idle?: () => number;
  /**
   * Whether its instances' `handle` can be entered plainly, in a plain attempt (see
   * `plain_attempt.ts`); absent: never.
   */
  plain?: () => boolean;
};

/**
 * Plain attempts abandoned (the guest had to wait, or was about to do something
 * outside its instance) after which a server makes no more: such a guest then costs
 * what it would without them, plus at most as many wasted attempts.
 */
export const MAX_ABANDONED_PLAIN_ATTEMPTS = 8;

/** Options of a {@linkcode ProxyServer}. */
export interface ProxyServerOptions {
  /** Bind with SO_REUSEPORT (several servers, one per worker, share the port). */
  reusePort?: boolean;
  /** The next `REQUEST_ID` (shared between workers); default: a local counter. */
  nextId?: () => number;
}

type GuestResult = { tag: "ok"; val: OutgoingResponse } | { tag: "err"; val: ErrorCode };
type Outcome =
  | { kind: "response"; result: GuestResult }
  | { kind: "returned" }
  | { kind: "trapped"; error: unknown }
  | { kind: "timeout" }
  | { kind: "refused"; error: BodyRefused };

/** The outcome of every request that ran out of time. */
const TIMED_OUT: Outcome = { kind: "timeout" };
/** The outcome of every call that returned. */
const RETURNED: Outcome = { kind: "returned" };

/** Why a request failed, for the log. */
export function describeGuestError(err: unknown): string {
  if (err instanceof GuestExit) return `the component called exit(${err.code})`;
  if (err instanceof WebAssembly.RuntimeError) {
    return err.message.startsWith("wasm trap:") ? err.message : `wasm trap: ${err.message}`;
  }
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return `error ${JSON.stringify(err) ?? String(err)}`;
}

/** Reason phrases of the statuses this server answers itself. */
const STATUS_TEXT: Record<number, string> = {
  408: "Request Timeout",
  413: "Content Too Large",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

function plain(status: number, text: string): Response {
  const headers: Record<string, string> = { "content-type": "text/plain; charset=utf-8" };
  if (status === 503) headers["retry-after"] = String(RETRY_AFTER_SECONDS);
  return new Response(`${text}\n`, { status, headers });
}

const requests = counter("wasi_http.requests", { description: "wasi:http requests answered" });
const requestErrors = counter("wasi_http.errors", {
  description: "wasi:http requests answered with a 5xx status by the shim or the guest",
});
const requestDuration = histogram("wasi_http.request.duration", {
  description: "time from a request's arrival to its response's head",
  unit: "ms",
});
const instantiation = histogram("wasi_http.instantiation.duration", {
  description: "time to create a component instance (a request's own, or one made ahead)",
  unit: "ms",
});
const inFlight = counter("wasi_http.requests.in_flight", {
  description: "wasi:http requests being served (one instance each)",
}, true);

/**
 * The thread serving (a worker's name, see `http_workers.ts`, or `main`): every thread
 * exports its own counts, which must be series of their own to add up.
 */
const THREAD = (globalThis as { name?: string }).name || "main";

/** The request counters' series of one method and status (see `Counter.series`). */
interface RequestSeries {
  /** The attributes of the series. */
  labels: Attributes;
  requests: CounterSeries;
  errors: CounterSeries | undefined;
}

/** The series by status, then method (no key to build per request). */
const requestSeries = new Map<number, Map<string, RequestSeries>>();
let inFlightSeries: CounterSeries | undefined;

/**
 * The methods a metric names; any other is `_OTHER` (OpenTelemetry's HTTP conventions):
 * a client must not be able to make series without end.
 */
const KNOWN_METHODS = new Set([
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "DELETE",
  "CONNECT",
  "OPTIONS",
  "TRACE",
  "PATCH",
]);
const OTHER_METHOD = "_OTHER";

/** The series of requests of method `given` answered `status`, made at the first one. */
function requestSeriesOf(given: string, status: number): RequestSeries {
  const method = KNOWN_METHODS.has(given) ? given : OTHER_METHOD;
  let byMethod = requestSeries.get(status);
  if (byMethod === undefined) requestSeries.set(status, byMethod = new Map());
  let series = byMethod.get(method);
  if (series === undefined) {
    const labels = {
      "http.request.method": method,
      "http.response.status_code": status,
      thread: THREAD,
    };
    series = {
      labels,
      requests: requests.series(labels),
      errors: status >= 500 ? requestErrors.series(labels) : undefined,
    };
    byMethod.set(method, series);
  }
  return series;
}

/** What one request's span and metrics learn while it is served. */
interface RequestTimes {
  /**
   * Waiting for the container's Start (requests that come before it wait) and for an
   * instance under the cap; 0 for a request that waited for neither.
   */
  queueMs: number;
  /** The instance this request ran was created for it (not taken from the pool). */
  fresh: boolean;
}

/** What an {@linkcode Exchange} needs of its server (one object per server). */
interface ExchangeHooks {
  /** The request timeout in ms, for messages. */
  readonly timeoutMs: number;
  /** Logs one line about a failed request (and counts it). */
  failLog(req: Request, id: number, why: string): void;
  /** The exchange's instance has ended: its place under the cap is free. */
  done(instance: ProxyInstance): void;
}

/**
 * Where an {@linkcode Exchange} is in ending its instance: its answer is not decided
 * yet; answered, waiting for the guest's call to settle (or the request timeout);
 * timed out after its answer, waiting for the call to settle to release it; over.
 */
type Ending = "answering" | "waiting" | "timed-out" | "done";

/**
 * One request's run in its instance: what happens first (the guest sets its response,
 * its call settles, the request timeout passes, or the request body is refused), then
 * the end of the instance. Events arrive as calls, not promises: the guest answers a
 * small request within its `handle` call (it never waits), and such a request is
 * answered and its instance ended without waiting for anything, at the cost of this
 * object and its call's promise.
 */
class Exchange implements ResponseTarget, Expiring {
  /** The first event, once there is one. */
  first: Outcome | null = null;
  /** How the guest's call settled, once it has. */
  #ended: Outcome | null = null;
  #timedOut = false;
  #deadline: Deadline | undefined;
  #wake: ((first: Outcome) => void) | null = null;
  #settled: PromiseWithResolvers<void> | null = null;
  #ending: Ending = "answering";
  #response: OutgoingResponse | undefined;
  #req: Request | undefined;
  #refusal: BodyRefused | null = null;

  /**
   * @param hooks the server's side
   * @param instance the request's instance
   * @param body the request body the guest reads, under the server's limits
   * @param deadlines the request timeout, if there is one
   */
  constructor(
    readonly hooks: ExchangeHooks,
    readonly instance: ProxyInstance,
    readonly body: LimitedBody | null,
    deadlines: Deadlines | undefined,
  ) {
    this.#deadline = deadlines?.start(this);
  }

  /** Calls the guest's `handle`; it may answer (and end) before this returns. */
  run(request: unknown, outparam: unknown): void {
    let handled: Promise<void>;
    try {
      handled = Promise.resolve(this.instance.handler.handle(request, outparam));
    } catch (err) {
      handled = Promise.reject(err);
    }
    handled.then(() => this.#end(RETURNED), (error) => this.#end({ kind: "trapped", error }));
    this.body?.refused.then((error) => this.#refused(error));
  }

  /** The first event: now, or once it comes. */
  next(): Outcome | Promise<Outcome> {
    return this.first ?? new Promise((resolve) => this.#wake = resolve);
  }

  /** Resolves once the guest's call has settled. */
  settled(): Promise<void> {
    if (this.#ended !== null) return Promise.resolve();
    return (this.#settled ??= Promise.withResolvers<void>()).promise;
  }

  /** `response-outparam.set`: the guest's answer. */
  set(result: GuestResult): void {
    this.#event({ kind: "response", result });
  }

  /** The request timeout has passed. */
  expire(): void {
    this.#timedOut = true;
    this.#event(TIMED_OUT);
    if (this.#ending === "waiting") this.#timeOut();
  }

  #end(outcome: Outcome): void {
    this.#ended = outcome;
    this.#settled?.resolve();
    this.#event(outcome);
    if (this.#ending === "waiting") {
      this.#deadline?.cancel();
      this.#close(outcome);
      this.#release();
    } else if (this.#ending === "timed-out") {
      this.#release();
    }
  }

  #refused(error: BodyRefused): void {
    if (this.first === null) {
      this.#event({ kind: "refused", error });
      return;
    }
    // Too late for a status: a response already sent is cut, and the connection is
    // aborted (Deno aborts it only once the request body is cancelled too).
    this.#refusal = error;
    if (this.#response !== undefined) this.#cut();
  }

  #cut(): void {
    this.body!.cancel();
    this.#response!.outgoingBody?.abandon(this.#refusal!.message);
  }

  #event(outcome: Outcome): void {
    if (this.first !== null) return;
    this.first = outcome;
    const wake = this.#wake;
    this.#wake = null;
    wake?.(outcome);
  }

  /**
   * The answer is decided (`response`, if it is the guest's, and its request): the
   * instance ends once its call settles (then a body left unfinished is cut), or, if
   * the request timeout passes first, its body is cut and it is not reused.
   */
  finish(response?: OutgoingResponse, req?: Request): void {
    this.#response = response;
    this.#req = req;
    if (response !== undefined && this.#refusal !== null) this.#cut();
    this.#ending = "waiting";
    if (this.#ended !== null) {
      this.#deadline?.cancel();
      this.#close(this.#ended);
      this.#release();
    } else if (this.#timedOut) {
      this.#timeOut();
    }
  }

  #timeOut(): void {
    this.#ending = "timed-out";
    this.#close(TIMED_OUT);
    this.instance.discard?.();
  }

  /** Stops reading the request body; cuts a response body the guest left unfinished. */
  #close(last: Outcome): void {
    this.body?.dispose();
    const req = this.#req;
    const id = this.instance.requestId;
    const body = this.#response?.outgoingBody;
    if (body && !body.ended) {
      const why = last.kind === "trapped"
        ? describeGuestError(last.error)
        : last.kind === "timeout"
        ? `still running after ${this.hooks.timeoutMs} ms`
        : "the component returned without finishing the body";
      body.abandon(why);
      if (req) this.hooks.failLog(req, id, `response body cut: ${why}`);
    } else if (body?.cut && req) {
      this.hooks.failLog(req, id, `response body cut: ${body.cut}`);
    } else if (last.kind === "trapped" && req && !(last.error instanceof GuestExit)) {
      this.hooks.failLog(req, id, `after the response: ${describeGuestError(last.error)}`);
    }
  }

  /**
   * Drops an abandoned plain attempt (see `plain_attempt.ts`) without answering: its
   * instance, and whatever the guest set in it (a response), go; the request runs
   * again in another. Its place under the cap stays taken for that.
   */
  abandon(): void {
    this.#ending = "done";
    this.#deadline?.cancel();
    this.instance.discard?.();
    this.instance.host.dispose();
  }

  #release(): void {
    this.#ending = "done";
    this.instance.host.dispose();
    this.hooks.done(this.instance);
  }
}

/** A running `Deno.serve` for one proxy component. */
export class ProxyServer {
  #factory: InstanceFactory;
  #config: HttpConfig;
  #log: (line: string) => void;
  #server: Deno.HttpServer<Deno.NetAddr> | null = null;
  #pool: ProxyInstance[] = [];
  #nextId: () => number;
  #reusePort: boolean;
  #refilling = false;
  /** Exchanges whose instance has not ended yet. */
  #exchanges = 0;
  /** Resolved when `#exchanges` drops to 0, while {@linkcode stop} waits for that. */
  #idle: PromiseWithResolvers<void> | null = null;
  #hooks: ExchangeHooks;
  #stopping = false;
  #isStarted = false;
  #started!: () => void;
  #startedPromise = new Promise<void>((resolve) => this.#started = resolve);
  #failures = 0;
  #served = 0;
  #stopped = Promise.withResolvers<number>();
  /** The request timeouts (one timer for all), unless there is no timeout. */
  #deadlines: Deadlines | undefined;
  /** Instances taken and not yet ended. */
  #inFlight = 0;
  /** Requests waiting for an instance, first come first served. */
  #queue: { admit: () => void }[] = [];
  /** Instances in flight that can tell their grown memory (see `grownBytes`). */
  #running = new Set<ProxyInstance>();
  /** A request was taken from the queue and has not started its instance yet. */
  #admitting = false;
  /**
   * An instance's memory has grown: until then (most guests never grow) the budget is
   * not summed on every request.
   */
  #grew = false;
  #rejected = 0;
  /** Plain attempts are made (see `plain_attempt.ts`) until too many are abandoned. */
  #plainOn: boolean;
  #plainServed = 0;
  #plainAbandoned = 0;

  /**
   * @param factory creates fresh instances
   * @param config address, timeout, pool size
   * @param log one line per failed request (the runner's stderr)
   * @param options port sharing and request ids
   */
  constructor(
    factory: InstanceFactory,
    config: HttpConfig,
    log: (line: string) => void,
    options: ProxyServerOptions = {},
  ) {
    this.#factory = factory;
    this.#config = config;
    this.#plainOn = config.plainEntry;
    this.#log = log;
    this.#reusePort = options.reusePort ?? false;
    if (config.requestTimeoutMs > 0) this.#deadlines = new Deadlines(config.requestTimeoutMs);
    this.#hooks = {
      timeoutMs: config.requestTimeoutMs,
      failLog: (req, id, why) => this.#failLog(req, id, why),
      done: (instance) => {
        this.#leave(instance);
        if (--this.#exchanges === 0) this.#idle?.resolve();
      },
    };
    let id = 0;
    this.#nextId = options.nextId ?? (() => ++id);
  }

  /**
   * Requests answered, how many of them failed (of those, how many were refused for
   * want of an instance: 503), instances in flight and requests waiting for one.
   */
  get stats(): {
    served: number;
    failed: number;
    rejected: number;
    inFlight: number;
    queued: number;
    plainServed: number;
    plainAbandoned: number;
  } {
    return {
      served: this.#served,
      failed: this.#failures,
      rejected: this.#rejected,
      inFlight: this.#inFlight,
      queued: this.#queue.length,
      plainServed: this.#plainServed,
      plainAbandoned: this.#plainAbandoned,
    };
  }

  /**
   * Binds the listener (so a busy address fails before the container starts) and fills
   * the pool. Requests wait until {@linkcode start}.
   */
  listen(): Deno.NetAddr {
    const { hostname, port } = this.#config;
    this.#server = Deno.serve({
      hostname,
      port,
      reusePort: this.#reusePort,
      onListen: () => {},
      onError: (err) => {
        // A cut body was logged where it was cut.
        if (!(err instanceof BodyCut)) this.#log(`wasi:http: ${describeGuestError(err)}`);
        return plain(500, "Internal Server Error");
      },
    }, (req) => this.#observe(req));
    this.#refill();
    return this.#server.addr;
  }

  /** Lets requests through. */
  start(): void {
    this.#isStarted = true;
    this.#started();
  }

  /**
   * Stops accepting, waits for in-flight requests (at most `graceMs`), then closes.
   * Resolves true if every request finished in time. {@linkcode serveUntilSignal} then
   * resolves as if SIGINT (no grace period) or SIGTERM (a grace period) had arrived.
   */
  async stop(graceMs = Infinity): Promise<boolean> {
    if (this.#stopping) {
      await this.#stopped.promise;
      return true;
    }
    this.#stopping = true;
    this.start();
    const server = this.#server;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const drained = (async () => {
      await server?.shutdown();
      while (this.#exchanges > 0) {
        this.#idle = Promise.withResolvers<void>();
        await this.#idle.promise;
      }
      this.#idle = null;
      return true;
    })();
    const result = await (graceMs === Infinity ? drained : Promise.race([
      drained,
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), graceMs)),
    ]));
    clearTimeout(timer);
    // Every request finished: no timeout is pending, and the timer must not hold the loop.
    if (result) this.#deadlines?.close();
    for (const instance of this.#pool.splice(0)) instance.host.dispose();
    this.#stopped.resolve(graceMs === Infinity ? 0 : EXIT_SIGTERM);
    return result;
  }

  /**
   * Serves until SIGINT (resolves 0 once drained) or SIGTERM (resolves 143 once drained
   * or after {@linkcode SIGTERM_GRACE_MS}), or until {@linkcode stop} is called.
   */
  async serveUntilSignal(): Promise<number> {
    this.start();
    return await untilSignal((grace) => this.stop(grace), this.#stopped.promise, this.#log);
  }

  /** Creates pool instances, one per event-loop turn, until the pool is full. */
  #refill(): void {
    if (this.#refilling || this.#stopping) return;
    if (this.#pool.length >= this.#config.poolSize) return;
    // Taking a recycled instance costs nothing to hide; taking one ahead would keep it
    // (and its pages that may be resident, such as 32 MiB it grew into) out of the
    // reuse order that lets only the most recent idle ones stay resident, and the next
    // request would run in an older one.
    if ((this.#factory.idle?.() ?? 0) > 0) return;
    this.#refilling = true;
    setTimeout(() => {
      this.#refilling = false;
      if (this.#stopping || this.#pool.length >= this.#config.poolSize) return;
      if ((this.#factory.idle?.() ?? 0) > 0) return;
      try {
        const started = performance.now();
        this.#pool.push(this.#factory(this.#nextId()));
        instantiation.record(performance.now() - started, { pooled: true, thread: THREAD });
      } catch (err) {
        this.#log(`wasi:http: cannot create an instance ahead of time: ${describeGuestError(err)}`);
        return;
      }
      this.#refill();
    }, 0);
  }

  #take(times?: RequestTimes): ProxyInstance {
    let instance = this.#pool.shift();
    if (instance === undefined) {
      const started = performance.now();
      instance = this.#factory(this.#nextId());
      instantiation.record(performance.now() - started, { pooled: false, thread: THREAD });
      if (times) times.fresh = true;
    }
    this.#refill();
    return instance;
  }

  /**
   * Bytes of memory grown past its initial size that the instances in flight hold
   * (see {@linkcode HttpConfig.grownBudgetBytes}).
   */
  #grownInFlight(): number {
    let bytes = 0;
    for (const instance of this.#running) bytes += instance.grownBytes!();
    return bytes;
  }

  /** Whether one more request may take an instance now (see the module documentation). */
  #free(): boolean {
    if (this.#inFlight >= this.#config.maxInstances) return false;
    const budget = this.#config.grownBudgetBytes;
    return this.#inFlight === 0 || budget === 0 || !this.#grew ||
      this.#grownInFlight() < budget;
  }

  /**
   * Waits for an instance to be free under the cap and the grown-memory budget (see
   * the module documentation): null once the request may take one, else why it is
   * refused (503). A request taken from the queue must call `#ranQueued` once its
   * instance ran (or failed to start).
   */
  #admit(): Promise<string | null> | null {
    if (this.#queue.length === 0 && !this.#admitting && this.#free()) {
      this.#inFlight++;
      return null;
    }
    const { maxInstances, maxQueued, requestTimeoutMs } = this.#config;
    const busy = this.#inFlight >= maxInstances
      ? `${maxInstances} instances in flight (${ENV.maxInstances})`
      : `${this.#inFlight} instances in flight holding ${
        Math.round(this.#grownInFlight() / MIB)
      } MiB of grown memory (${ENV.grownBudget})`;
    if (this.#queue.length >= maxQueued) {
      return Promise.resolve(
        `${busy} and ${this.#queue.length} requests waiting (${ENV.maxQueued})`,
      );
    }
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const waiter = {
        admit: () => {
          clearTimeout(timer);
          this.#inFlight++;
          this.#admitting = true;
          resolve(null);
        },
      };
      this.#queue.push(waiter);
      if (requestTimeoutMs > 0) {
        timer = setTimeout(() => {
          const at = this.#queue.indexOf(waiter);
          if (at >= 0) this.#queue.splice(at, 1);
          resolve(`${busy}: none free within the request timeout of ${requestTimeoutMs} ms`);
        }, requestTimeoutMs);
      }
    });
  }

  /**
   * Admits the next waiting request if one may take an instance now. One at a time: the
   * next is decided only once this one's instance ran its synchronous part (and grew).
   */
  #pump(): void {
    if (this.#admitting || this.#queue.length === 0 || !this.#free()) return;
    this.#queue.shift()!.admit();
  }

  /** A request taken from the queue has started its instance (or failed to). */
  #ranQueued(): void {
    this.#admitting = false;
    this.#pump();
  }

  /** An instance in flight ended: the next waiting request may take one. */
  #leave(instance?: ProxyInstance): void {
    this.#inFlight--;
    if (instance) this.#running.delete(instance);
    this.#pump();
  }

  /**
   * Serves a request, and records its metrics and the attributes of its span (Deno's
   * span of the `Deno.serve` request being served, active here when telemetry is on).
   * A request the guest answers within its `handle` call is answered synchronously.
   */
  #observe(req: Request): Response | Promise<Response> {
    const started = performance.now();
    const times: RequestTimes = { queueMs: 0, fresh: false };
    inFlightSeries ??= inFlight.series({ thread: THREAD });
    inFlightSeries.add(1);
    let answer: Response | Promise<Response>;
    try {
      answer = this.#serve(req, started, times);
    } catch (err) {
      this.#observed(req, started, times, 500);
      throw err;
    }
    if (answer instanceof Response) {
      this.#observed(req, started, times, answer.status);
      return answer;
    }
    return answer.then((response) => {
      this.#observed(req, started, times, response.status);
      return response;
    }, (err) => {
      this.#observed(req, started, times, 500);
      throw err;
    });
  }

  #observed(req: Request, started: number, times: RequestTimes, status: number): void {
    inFlightSeries!.add(-1);
    const ms = performance.now() - started;
    const series = requestSeriesOf(req.method, status);
    series.requests.add(1);
    series.errors?.add(1);
    requestDuration.record(ms, series.labels);
    activeSpan()?.setAttributes({
      "http.response.status_code": status,
      "wasi_http.queue_ms": times.queueMs,
      "wasi_http.instance_ms": ms - times.queueMs,
      "wasi_http.instance.fresh": times.fresh,
    });
  }

  /**
   * @param arrived when the request arrived
   * @param waited it waited for the server to start
   */
  #serve(
    req: Request,
    arrived: number,
    times: RequestTimes,
    waited = false,
  ): Response | Promise<Response> {
    if (!this.#isStarted) {
      return this.#startedPromise.then(() => this.#serve(req, arrived, times, true));
    }
    this.#served++;
    const refusal = this.#refuse(req);
    if (refusal) return refusal;
    const waiting = this.#admit();
    if (waiting === null) {
      // Waiting for the server to start and for an instance under the cap.
      if (waited) times.queueMs = performance.now() - arrived;
      return this.#run(req, times);
    }
    return waiting.then((why) => {
      if (why !== null) {
        this.#rejected++;
        return this.#fail(req, 0, 503, why);
      }
      times.queueMs = performance.now() - arrived;
      return this.#run(req, times, true);
    });
  }

  /**
   * Runs an admitted request in an instance. One without a body is first tried
   * plainly (see `plain_attempt.ts`); if that is abandoned, it runs again, from the
   * start, in another instance.
   */
  #run(req: Request, times: RequestTimes, queued = false): Response | Promise<Response> {
    let instance: ProxyInstance;
    let exchange: Exchange | null = null;
    const plain = req.body === null && this.#plainOn && this.#factory.plain?.() === true;
    let abandoned: ProxyInstance | null = null;
    for (let attempt = plain ? 0 : 1; exchange === null; attempt++) {
      try {
        // Run again, it keeps its REQUEST_ID: the guest sees one request.
        instance = abandoned === null ? this.#take(times) : this.#factory(abandoned.requestId);
      } catch (err) {
        this.#leave();
        if (queued) this.#ranQueued();
        return this.#fail(req, 0, 500, `cannot create an instance: ${describeGuestError(err)}`);
      }
      if (instance.grownBytes) this.#running.add(instance);
      exchange = attempt === 0 ? this.#attempt(req, instance) : this.#enter(req, instance);
      if (exchange === null) abandoned = instance;
    }
    instance = exchange.instance;
    // Its synchronous part ran: what it grew counts for the next waiting request.
    if (!this.#grew && instance.grownBytes) this.#grew = instance.grownBytes() > 0;
    if (queued) this.#ranQueued();
    const first = exchange.next();
    const entered = exchange;
    return first instanceof Promise
      ? first.then((first) => this.#answer(req, entered, first))
      : this.#answer(req, entered, first);
  }

  /** Starts `req` in `instance` as it always runs: entered through `promising`. */
  #enter(req: Request, instance: ProxyInstance): Exchange {
    const { maxBodyBytes, bodyTimeoutMs } = this.#config;
    const body = req.body && (maxBodyBytes > 0 || bodyTimeoutMs > 0)
      ? limitBody(req.body, { maxBytes: maxBodyBytes, idleTimeoutMs: bodyTimeoutMs })
      : null;
    const exchange = new Exchange(this.#hooks, instance, body, this.#deadlines);
    this.#exchanges++;
    const call = incomingCallTo(req, body ? body.stream : req.body, exchange);
    exchange.run(call.request, call.outparam);
    return exchange;
  }

  /**
   * A plain attempt of `req` (it has no body) in `instance`: its exchange, or null if
   * it was abandoned (the instance is dropped, nothing was answered).
   */
  #attempt(req: Request, instance: ProxyInstance): Exchange | null {
    plainAttempt.entered = false;
    plainAttempt.aborted = null;
    plainAttempt.active = true;
    let exchange: Exchange;
    try {
      // As any request starts (no body: nothing is read or limited); the flag makes the
      // glue enter it plainly.
      exchange = this.#enter(req, instance);
    } finally {
      plainAttempt.active = false;
    }
    const aborted = plainAttempt.aborted;
    plainAttempt.aborted = null;
    if (!plainAttempt.entered) {
      // No plain entry after all (it ran as any request): no more attempts.
      this.#plainOn = false;
      return exchange;
    }
    if (aborted === null) {
      this.#plainServed++;
      return exchange;
    }
    exchange.abandon();
    this.#exchanges--;
    this.#running.delete(instance);
    if (++this.#plainAbandoned >= MAX_ABANDONED_PLAIN_ATTEMPTS) {
      this.#plainOn = false;
      this.#log(
        `wasi:http: requests are no longer tried without JSPI first: ` +
          `${MAX_ABANDONED_PLAIN_ATTEMPTS} such attempts had to run again (the last: ` +
          `${aborted})`,
      );
    }
    return null;
  }

  /** The answer to a request, from what happened first in its instance. */
  #answer(req: Request, exchange: Exchange, first: Outcome): Response | Promise<Response> {
    const id = exchange.instance.requestId;
    if (first.kind !== "response") {
      exchange.finish();
      if (first.kind === "refused") {
        return this.#fail(req, id, first.error.status, first.error.message);
      }
      if (first.kind === "timeout") {
        return this.#fail(req, id, 504, `no response within ${this.#config.requestTimeoutMs} ms`);
      }
      if (first.kind === "trapped") {
        return this.#fail(req, id, 500, describeGuestError(first.error));
      }
      return this.#fail(req, id, 500, "the component returned without setting a response");
    }
    if (first.result.tag === "err") {
      exchange.finish();
      return this.#fail(
        req,
        id,
        500,
        `the component answered error-code ${JSON.stringify(first.result.val, bigints)}`,
      );
    }
    const outgoing = first.result.val;
    // A small body usually ends right after the response is set: waiting for that (at
    // most one event-loop turn) lets it be sent whole, which Deno does at half the cost
    // of a stream. One that has ended already is sent now.
    if (outgoing.complete) return this.#send(req, exchange, outgoing);
    return outgoing.ready(exchange.settled()).then(() => this.#send(req, exchange, outgoing));
  }

  #send(req: Request, exchange: Exchange, outgoing: OutgoingResponse): Response {
    let response: Response;
    try {
      response = outgoing.toResponse();
    } catch (err) {
      outgoing.outgoingBody?.abandon("the response could not be sent");
      exchange.finish();
      return this.#fail(req, exchange.instance.requestId, 500, describeGuestError(err));
    }
    exchange.finish(outgoing, req);
    return response;
  }

  /** The answer to a request refused before it reaches an instance, or null. */
  #refuse(req: Request): Response | null {
    const { maxHeaderBytes, maxBodyBytes } = this.#config;
    const headers = headerBytes(req.headers);
    if (headers > maxHeaderBytes) {
      return this.#fail(
        req,
        0,
        431,
        `request headers of ${headers} bytes are over the limit of ${maxHeaderBytes}`,
      );
    }
    const length = maxBodyBytes > 0 ? contentLength(req.headers) : null;
    if (length !== null && length > maxBodyBytes) {
      return this.#fail(
        req,
        0,
        413,
        `content-length ${length} is over the request body limit of ${maxBodyBytes} bytes`,
      );
    }
    return null;
  }

  #failLog(req: Request, id: number, why: string): void {
    this.#failures++;
    let path = req.url;
    try {
      const url = new URL(req.url);
      path = url.pathname + url.search;
    } catch {
      // keep the raw URL
    }
    this.#log(`wasi:http: request ${id} ${req.method} ${path}: ${why}`);
  }

  #fail(req: Request, id: number, status: number, why: string): Response {
    this.#failLog(req, id, why);
    return plain(status, STATUS_TEXT[status] ?? STATUS_TEXT[500]);
  }
}

function bigints(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

/**
 * Waits for SIGINT (then `stop()`, drained: 0) or SIGTERM (then `stop(grace)`:
 * 143), or for `stopped` to settle first; shared by the one-thread server and the
 * worker pool.
 */
export async function untilSignal(
  stop: (graceMs?: number) => Promise<boolean>,
  stopped: Promise<number>,
  log: (line: string) => void,
): Promise<number> {
  const { promise, resolve } = Promise.withResolvers<Deno.Signal>();
  const onInt = () => resolve("SIGINT");
  const onTerm = () => resolve("SIGTERM");
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onTerm);
  try {
    const first = await Promise.race([promise, stopped]);
    if (typeof first === "number") return first;
    if (first === "SIGINT") {
      await stop();
      return 0;
    }
    const drained = await stop(SIGTERM_GRACE_MS);
    if (!drained) log(`wasi:http: requests still running after SIGTERM grace period`);
    return EXIT_SIGTERM;
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGTERM", onTerm);
  }
}
