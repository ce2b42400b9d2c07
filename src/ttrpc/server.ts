/**
 * A ttrpc server over Unix sockets (unary calls only, which is all the task API
 * uses). Every Request is dispatched concurrently and answered on its own stream
 * id in completion order; frame writes are serialized per connection.
 *
 * @module
 */

import {
  type DecodedFrame,
  encodeFrame,
  FrameDecoder,
  MESSAGE_LENGTH_MAX,
  MessageType,
} from "./frame.ts";
import { Code, RpcError, type StatusCode, toStatus } from "./status.ts";
import { decodeRequest, encodeResponse, type TtrpcRequest } from "./envelope.ts";
import { writeAll } from "../sys/write_all.ts";

/** What a handler learns about its call. */
export interface CallContext {
  /** Request metadata; keys lower-cased, repeated keys collected in order. */
  metadata: Map<string, string[]>;
  /** The caller's deadline minus now in nanoseconds when the request was sent; 0 = none. */
  timeoutNano: number;
  /** Fully-qualified service name of the call. */
  service: string;
  /** Method name of the call. */
  method: string;
  /**
   * Aborted when the connection closes or the deadline (`timeoutNano`) passes.
   * The reason is an {@linkcode RpcError} (CANCELLED or DEADLINE_EXCEEDED).
   */
  signal: AbortSignal;
}

/** Serves one method: gets the request payload, returns the response payload. */
export type Handler = (payload: Uint8Array, ctx: CallContext) => Promise<Uint8Array>;

/** Options of {@linkcode TtrpcServer}. */
export interface TtrpcServerOptions {
  /** Largest number of unanswered requests per connection; more get RESOURCE_EXHAUSTED. */
  maxInFlight?: number;
  /** Called after a connection is closed, with the number of connections still open. */
  onConnectionClosed?: (remaining: number) => void;
}

/** Default of {@linkcode TtrpcServerOptions.maxInFlight}. */
export const DEFAULT_MAX_IN_FLIGHT = 1024;

/** Queued frames per connection beyond which reading pauses until the peer drains them. */
const MAX_QUEUED_WRITES = 1024;
/** How long {@linkcode TtrpcServer.close} waits for queued responses to be written. */
const CLOSE_FLUSH_TIMEOUT_MS = 1000;
/** Size of the per-connection read buffer. */
const READ_BUFFER_SIZE = 64 * 1024;
/** First and last delay when `accept` fails for a reason other than the listener closing. */
const ACCEPT_BACKOFF_MIN_MS = 5;
const ACCEPT_BACKOFF_MAX_MS = 1000;
/** Nanoseconds per millisecond. */
const NANOS_PER_MILLI = 1_000_000;
/** Largest setTimeout delay (about 24.8 days); longer deadlines are not armed. */
const TIMER_MAX_MS = 0x7fff_ffff;

/** Error texts of the ttrpc server (doc §1.3, §1.6). */
const ERR_EVEN_STREAM_ID = "StreamID must be odd for client initiated streams";
const ERR_REUSED_STREAM_ID = "StreamID cannot be re-used and must increment";

/** Whether `err` means "the resource was closed under us" rather than a real failure. */
function isClosedError(err: unknown): boolean {
  return err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted;
}

/** Collects request metadata into a map with lower-cased keys. */
function metadataMap(req: TtrpcRequest): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const { key, value } of req.metadata) {
    const k = key.toLowerCase();
    const values = map.get(k);
    if (values) values.push(value);
    else map.set(k, [value]);
  }
  return map;
}

/** Finds the handler of a call, or returns the UNIMPLEMENTED message when there is none. */
type Lookup = (service: string, method: string) => Handler | string;

/** An empty payload. */
const EMPTY = new Uint8Array(0);

/** One accepted connection: its read loop, write queue and in-flight calls. */
class Connection {
  readonly #conn: Deno.Conn;
  readonly #lookup: Lookup;
  readonly #maxInFlight: number;
  readonly #abort = new AbortController();
  #lastStreamId = 0;
  #inFlight = 0;
  #queuedWrites = 0;
  #writeChain: Promise<void> = Promise.resolve();
  #closed = false;
  #draining = false;
  /** Resolved when the read loop has finished and the connection is closed. */
  readonly done: Promise<void>;

  constructor(conn: Deno.Conn, lookup: Lookup, maxInFlight: number) {
    this.#conn = conn;
    this.#lookup = lookup;
    this.#maxInFlight = maxInFlight;
    this.done = this.#readLoop();
  }

  /**
   * Closes after flushing the responses already queued (bounded by
   * {@linkcode CLOSE_FLUSH_TIMEOUT_MS}), so that e.g. the answer to the Shutdown
   * call that triggered the close still reaches the caller. Requests arriving
   * meanwhile are ignored.
   */
  async closeGracefully(): Promise<void> {
    this.#draining = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) =>
      timer = setTimeout(resolve, CLOSE_FLUSH_TIMEOUT_MS)
    );
    await Promise.race([this.#writeChain, timeout]);
    clearTimeout(timer);
    this.close();
  }

  /** Closes the socket; pending reads end, later responses are dropped. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#abort.abort(new RpcError(Code.CANCELLED, "ttrpc: connection closed"));
    try {
      this.#conn.close();
    } catch {
      // Already closed by the runtime.
    }
  }

  async #readLoop(): Promise<void> {
    const decoder = new FrameDecoder();
    const buf = new Uint8Array(READ_BUFFER_SIZE);
    try {
      while (!this.#closed) {
        const n = await this.#conn.read(buf);
        if (n === null) break;
        for (const frame of decoder.push(buf.subarray(0, n))) this.#onFrame(frame);
        // Backpressure: a peer that does not read its responses stops being read.
        while (this.#queuedWrites > MAX_QUEUED_WRITES && !this.#closed) await this.#writeChain;
      }
    } catch {
      // Read error or garbage header: this connection only is finished.
    } finally {
      this.close();
    }
  }

  #onFrame(frame: DecodedFrame): void {
    if (this.#draining) return;
    if (frame.oversize) {
      this.#send(
        frame.streamId,
        Code.RESOURCE_EXHAUSTED,
        `message length ${frame.length} exceed maximum message size of ${MESSAGE_LENGTH_MAX}`,
      );
      return;
    }
    if (frame.type !== MessageType.REQUEST) return; // Data and unknown types: ignored.
    const streamId = frame.streamId;
    if (streamId % 2 !== 1) return this.#send(streamId, Code.INVALID_ARGUMENT, ERR_EVEN_STREAM_ID);
    if (streamId <= this.#lastStreamId) {
      return this.#send(streamId, Code.INVALID_ARGUMENT, ERR_REUSED_STREAM_ID);
    }
    this.#lastStreamId = streamId;
    let req: TtrpcRequest;
    try {
      req = decodeRequest(frame.data);
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      return this.#send(streamId, Code.INVALID_ARGUMENT, `unmarshal request error: ${why}`);
    }
    if (this.#inFlight >= this.#maxInFlight) {
      return this.#send(
        streamId,
        Code.RESOURCE_EXHAUSTED,
        `too many requests in flight on this connection (maximum ${this.#maxInFlight})`,
      );
    }
    this.#inFlight++;
    this.#dispatch(streamId, req)
      .catch((err) => {
        // Last resort: a rejection here would be unhandled and end the whole process.
        try {
          const why = err instanceof Error ? `: ${err.message}` : "";
          this.#send(streamId, Code.INTERNAL, `ttrpc: answering the call failed${why}`);
        } catch {
          this.close();
        }
      })
      .finally(() => this.#inFlight--);
  }

  async #dispatch(streamId: number, req: TtrpcRequest): Promise<void> {
    const handler = this.#lookup(req.service, req.method);
    if (typeof handler === "string") return this.#send(streamId, Code.UNIMPLEMENTED, handler);
    const { signal, dispose } = this.#callSignal(req.timeout_nano);
    const ctx: CallContext = {
      metadata: metadataMap(req),
      timeoutNano: req.timeout_nano,
      service: req.service,
      method: req.method,
      signal,
    };
    try {
      const payload = await handler(req.payload, ctx);
      if (payload !== undefined && !(payload instanceof Uint8Array)) {
        throw new RpcError(
          Code.INTERNAL,
          `ttrpc: the ${req.service}/${req.method} handler returned ${typeof payload}, not bytes`,
        );
      }
      this.#enqueue(streamId, encodeResponse({ payload: payload ?? EMPTY }));
    } catch (err) {
      const status = toStatus(err);
      this.#send(streamId, status.code, status.message);
    } finally {
      dispose();
    }
  }

  /** The call's abort signal: the connection's, plus a deadline timer when one is set. */
  #callSignal(timeoutNano: number): { signal: AbortSignal; dispose: () => void } {
    const connSignal = this.#abort.signal;
    if (timeoutNano <= 0) return { signal: connSignal, dispose: () => {} };
    const controller = new AbortController();
    const onConnAbort = () => controller.abort(connSignal.reason);
    connSignal.addEventListener("abort", onConnAbort, { once: true });
    const ms = Math.ceil(timeoutNano / NANOS_PER_MILLI);
    const timer = ms <= TIMER_MAX_MS
      ? setTimeout(() => {
        controller.abort(new RpcError(Code.DEADLINE_EXCEEDED, "context deadline exceeded"));
      }, ms)
      : undefined;
    return {
      signal: controller.signal,
      dispose: () => {
        clearTimeout(timer);
        connSignal.removeEventListener("abort", onConnAbort);
      },
    };
  }

  /** Answers `streamId` with an error status. */
  #send(streamId: number, code: StatusCode, message: string): void {
    this.#enqueue(
      streamId,
      encodeResponse({ status: { code, message, details: [] }, payload: EMPTY }),
    );
  }

  /** Queues a Response frame; frames are written whole, one at a time, in queue order. */
  #enqueue(streamId: number, response: Uint8Array): void {
    if (this.#closed) return;
    let frame: Uint8Array;
    try {
      frame = encodeFrame(streamId, MessageType.RESPONSE, 0, response);
    } catch (err) {
      // The handler's response is too large to send: tell the caller instead.
      const message = err instanceof Error ? err.message : String(err);
      frame = encodeFrame(
        streamId,
        MessageType.RESPONSE,
        0,
        encodeResponse({
          status: { code: Code.RESOURCE_EXHAUSTED, message, details: [] },
          payload: EMPTY,
        }),
      );
    }
    this.#queuedWrites++;
    this.#writeChain = this.#writeChain.then(async () => {
      try {
        if (!this.#closed) await writeAll(this.#conn, frame);
      } catch {
        this.close();
      } finally {
        this.#queuedWrites--;
      }
    });
  }
}

/**
 * A ttrpc server: {@linkcode TtrpcServer.register} services, then
 * {@linkcode TtrpcServer.serve} one or more Unix listeners.
 */
export class TtrpcServer {
  readonly #services = new Map<string, Map<string, Handler>>();
  readonly #connections = new Set<Connection>();
  readonly #listeners = new Set<Deno.Listener>();
  readonly #serving = new Set<Promise<void>>();
  readonly #maxInFlight: number;
  #closing = false;
  /** Called after a connection is closed, with the number of connections still open. */
  onConnectionClosed: ((remaining: number) => void) | undefined;

  /** Creates a server; see {@linkcode TtrpcServerOptions}. */
  constructor(options: TtrpcServerOptions = {}) {
    this.#maxInFlight = options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    this.onConnectionClosed = options.onConnectionClosed;
  }

  /** Number of open connections. */
  get connections(): number {
    return this.#connections.size;
  }

  /**
   * Registers the methods of `service` (e.g. `containerd.task.v2.Task`); methods
   * registered earlier for the same service are kept unless redefined.
   */
  register(service: string, methods: Record<string, Handler>): void {
    let table = this.#services.get(service);
    if (!table) this.#services.set(service, table = new Map());
    for (const [name, handler] of Object.entries(methods)) table.set(name, handler);
  }

  #lookup = (service: string, method: string): Handler | string => {
    const table = this.#services.get(service);
    if (!table) return `service ${service}`;
    return table.get(method) ?? `method ${method}`;
  };

  /**
   * Accepts connections on `listener` until it is closed (by the caller or by
   * {@linkcode TtrpcServer.close}), then returns. Connections stay open.
   */
  async serve(listener: Deno.Listener): Promise<void> {
    if (this.#closing) {
      listener.close();
      return;
    }
    this.#listeners.add(listener);
    let backoff = 0;
    try {
      while (!this.#closing) {
        let conn: Deno.Conn;
        try {
          conn = await listener.accept();
        } catch (err) {
          if (this.#closing || isClosedError(err)) return;
          // E.g. EMFILE: wait and retry, as Go servers do for temporary errors.
          backoff = Math.min(ACCEPT_BACKOFF_MAX_MS, Math.max(ACCEPT_BACKOFF_MIN_MS, backoff * 2));
          await new Promise((resolve) => setTimeout(resolve, backoff));
          continue;
        }
        backoff = 0;
        if (this.#closing) {
          conn.close();
          return;
        }
        this.#track(new Connection(conn, this.#lookup, this.#maxInFlight));
      }
    } finally {
      this.#listeners.delete(listener);
    }
  }

  #track(connection: Connection): void {
    this.#connections.add(connection);
    const done = connection.done.then(() => {
      this.#connections.delete(connection);
      this.#serving.delete(done);
      this.onConnectionClosed?.(this.#connections.size);
    });
    this.#serving.add(done);
  }

  /**
   * Stops accepting (closes every listener given to {@linkcode TtrpcServer.serve}),
   * closes every connection once the responses already queued on it are written
   * (at most 1 s), and resolves when all of them are finished. Handlers still
   * running complete in the background; their responses are dropped.
   */
  async close(): Promise<void> {
    this.#closing = true;
    for (const listener of this.#listeners) {
      try {
        listener.close();
      } catch {
        // Already closed.
      }
    }
    await Promise.all([...this.#connections].map((c) => c.closeGracefully()));
    await Promise.all(this.#serving);
  }
}
