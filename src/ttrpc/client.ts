/**
 * A ttrpc client over a Unix socket (unary calls). Used to publish events to
 * containerd (`Events/Forward`) and in tests.
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
import { Code, RpcError, type StatusCode } from "./status.ts";
import { decodeResponse, encodeRequest, type KeyValue } from "./envelope.ts";
import { writeAll } from "../sys/write_all.ts";

/** Options of {@linkcode TtrpcClient.call}. */
export interface CallOptions {
  /** Deadline in milliseconds: sent as `timeout_nano`; the call rejects with DEADLINE_EXCEEDED. */
  timeoutMs?: number;
  /** Request metadata; an array value sends the key once per value. */
  metadata?: Record<string, string | string[]>;
}

/** Message of the error every pending and later call gets once the connection is gone. */
export const CLOSED_MESSAGE = "ttrpc: closed";

/** First stream id of a connection and the step between ids (client ids are odd). */
const FIRST_STREAM_ID = 1;
const STREAM_ID_STEP = 2;
/** Largest stream id (uint32). */
const STREAM_ID_MAX = 0xffff_ffff;
/** Size of the read buffer. */
const READ_BUFFER_SIZE = 64 * 1024;
/** Nanoseconds per millisecond. */
const NANOS_PER_MILLI = 1_000_000;
/** Largest setTimeout delay (about 24.8 days). */
const TIMER_MAX_MS = 0x7fff_ffff;

interface PendingCall {
  resolve: (payload: Uint8Array) => void;
  reject: (err: Error) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** A ttrpc client connection. Calls may be issued concurrently. */
export class TtrpcClient {
  readonly #conn: Deno.Conn;
  readonly #pending = new Map<number, PendingCall>();
  readonly #closed: Promise<void>;
  #nextStreamId = FIRST_STREAM_ID;
  #writeChain: Promise<void> = Promise.resolve();
  #isClosed = false;

  private constructor(conn: Deno.Conn) {
    this.#conn = conn;
    this.#closed = this.#readLoop();
  }

  /** Connects to the ttrpc server listening on the Unix socket `path` (an optional `unix://` is stripped). */
  static async connect(path: string): Promise<TtrpcClient> {
    const conn = await Deno.connect({ transport: "unix", path: path.replace(/^unix:\/\//, "") });
    return new TtrpcClient(conn);
  }

  /** Resolves once the connection is closed, by either side. */
  get closed(): Promise<void> {
    return this.#closed;
  }

  /**
   * Calls `service`/`method` with the serialized request `payload` and resolves
   * with the serialized response payload. Rejects with {@linkcode RpcError} when
   * the server answers with a non-OK status or the deadline passes
   * (DEADLINE_EXCEEDED; the late response is then ignored), and with
   * `Error("ttrpc: closed")` when the connection is or becomes closed.
   */
  call(
    service: string,
    method: string,
    payload: Uint8Array,
    options: CallOptions = {},
  ): Promise<Uint8Array> {
    if (this.#isClosed) return Promise.reject(new Error(CLOSED_MESSAGE));
    if (this.#nextStreamId > STREAM_ID_MAX) {
      return Promise.reject(
        new Error("ttrpc: stream ids of this connection are exhausted; reconnect"),
      );
    }
    const streamId = this.#nextStreamId;
    this.#nextStreamId += STREAM_ID_STEP;

    const metadata: KeyValue[] = [];
    for (const [key, value] of Object.entries(options.metadata ?? {})) {
      for (const v of Array.isArray(value) ? value : [value]) metadata.push({ key, value: v });
    }
    const timeoutMs = options.timeoutMs;
    const request = encodeRequest({
      service,
      method,
      payload,
      timeout_nano: timeoutMs !== undefined && timeoutMs > 0
        ? Math.round(timeoutMs * NANOS_PER_MILLI)
        : 0,
      metadata,
    });
    if (request.length > MESSAGE_LENGTH_MAX) {
      return Promise.reject(
        new RpcError(
          Code.RESOURCE_EXHAUSTED,
          `message length ${request.length} exceed maximum message size of ${MESSAGE_LENGTH_MAX}`,
        ),
      );
    }
    const frame = encodeFrame(streamId, MessageType.REQUEST, 0, request);

    return new Promise<Uint8Array>((resolve, reject) => {
      const call: PendingCall = { resolve, reject, timer: undefined };
      if (timeoutMs !== undefined && timeoutMs > 0) {
        call.timer = setTimeout(() => {
          this.#pending.delete(streamId);
          reject(new RpcError(Code.DEADLINE_EXCEEDED, "context deadline exceeded"));
        }, Math.min(Math.ceil(timeoutMs), TIMER_MAX_MS));
      }
      this.#pending.set(streamId, call);
      this.#writeChain = this.#writeChain.then(async () => {
        if (this.#isClosed) return;
        try {
          await writeAll(this.#conn, frame);
        } catch {
          this.close();
        }
      });
    });
  }

  /** Closes the connection; pending calls reject with `Error("ttrpc: closed")`. */
  close(): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
    for (const [streamId, call] of this.#pending) {
      this.#pending.delete(streamId);
      if (call.timer !== undefined) clearTimeout(call.timer);
      call.reject(new Error(CLOSED_MESSAGE));
    }
  }

  async #readLoop(): Promise<void> {
    const decoder = new FrameDecoder();
    const buf = new Uint8Array(READ_BUFFER_SIZE);
    try {
      while (!this.#isClosed) {
        const n = await this.#conn.read(buf);
        if (n === null) break;
        for (const frame of decoder.push(buf.subarray(0, n))) this.#onFrame(frame);
      }
    } catch {
      // Read error or garbage header: the connection is finished.
    } finally {
      this.close();
    }
  }

  /** Settles the call waiting on the frame's stream; frames for unknown streams are ignored. */
  #onFrame(frame: DecodedFrame): void {
    const call = this.#pending.get(frame.streamId);
    if (!call) return; // Inactive stream (e.g. timed out): ignored, as the Go client does.
    this.#pending.delete(frame.streamId);
    if (call.timer !== undefined) clearTimeout(call.timer);
    if (frame.oversize) {
      call.reject(
        new RpcError(
          Code.RESOURCE_EXHAUSTED,
          `message length ${frame.length} exceed maximum message size of ${MESSAGE_LENGTH_MAX}`,
        ),
      );
      return;
    }
    if (frame.type !== MessageType.RESPONSE) {
      call.reject(
        new Error(
          `ttrpc: unexpected message type ${frame.type} received on stream ${frame.streamId}` +
            `: protocol error`,
        ),
      );
      return;
    }
    let response;
    try {
      response = decodeResponse(frame.data);
    } catch (err) {
      call.reject(
        new Error(`ttrpc: cannot decode response on stream ${frame.streamId}: ${err}`),
      );
      return;
    }
    const status = response.status;
    if (status && status.code !== Code.OK) {
      call.reject(new RpcError(status.code as StatusCode, status.message));
    } else call.resolve(response.payload);
  }
}
