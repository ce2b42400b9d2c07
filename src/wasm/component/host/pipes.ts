/**
 * Byte sources and sinks behind wasi:io streams: a `ReadableStream` (HTTP bodies,
 * FIFOs) as a source, an async writer (the container's stdout/stderr FIFOs) or a
 * `ReadableStream` being produced (HTTP response and request bodies) as a sink. Each
 * keeps a bounded buffer, so a guest that writes faster than the other side reads is
 * held back (`check-write` returns 0 and its pollable waits), never buffered without
 * limit.
 *
 * @module
 */

import { type ByteSink, type ByteSource, CLOSED, IoError } from "./io.ts";

const EMPTY = new Uint8Array(0);

/** A settable signal: `wait()` resolves at the next `wake()`. */
export class Signal {
  #waiters: (() => void)[] = [];

  /** Resolves at the next {@linkcode wake}. */
  wait(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Wakes every waiter. */
  wake(): void {
    const waiters = this.#waiters;
    if (waiters.length === 0) return;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}

/**
 * A byte source over a `ReadableStream` (an HTTP body, a FIFO): one read in flight at
 * a time, started when the guest wants bytes, so the stream's own backpressure holds.
 */
export class StreamSource implements ByteSource {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #chunk: Uint8Array | null = null;
  #offset = 0;
  #done = false;
  #error: IoError | null = null;
  #reading: Promise<void> | null = null;
  #closed = false;
  #describe: (err: unknown) => IoError;

  /**
   * @param stream the bytes
   * @param describe turns a read failure into the error the guest sees
   */
  constructor(
    stream: ReadableStream<Uint8Array>,
    describe: (err: unknown) => IoError = (err) =>
      new IoError(err instanceof Error ? err.message : String(err)),
  ) {
    this.#reader = stream.getReader();
    this.#describe = describe;
  }

  take(max: number): Uint8Array | null {
    if (this.#chunk !== null) {
      const chunk = this.#chunk;
      const end = Math.min(chunk.length, this.#offset + max);
      const out = this.#offset === 0 && end === chunk.length
        ? chunk
        : chunk.subarray(this.#offset, end);
      this.#offset = end;
      if (end >= chunk.length) this.#chunk = null;
      return out;
    }
    if (this.#error) throw this.#error;
    if (this.#done) return null;
    this.#pull();
    return EMPTY;
  }

  readable(): boolean {
    return this.#chunk !== null || this.#done || this.#error !== null;
  }

  whenReadable(): Promise<void> {
    if (this.readable()) return Promise.resolve();
    return this.#pull();
  }

  #pull(): Promise<void> {
    if (this.#reading) return this.#reading;
    this.#reading = (async () => {
      try {
        while (true) {
          const { done, value } = await this.#reader.read();
          if (done) {
            this.#done = true;
            break;
          }
          if (value.length > 0) {
            this.#chunk = value;
            this.#offset = 0;
            break;
          }
        }
      } catch (err) {
        if (!this.#closed) this.#error = this.#describe(err);
        this.#done = true;
      } finally {
        this.#reading = null;
      }
    })();
    return this.#reading;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#chunk = null;
    this.#reader.cancel().catch(() => {});
  }

  /** True once the stream ended and every byte was taken. */
  get finished(): boolean {
    return this.#done && this.#chunk === null;
  }
}

/** Default bound of a sink's buffer, in bytes. */
export const SINK_BUFFER_BYTES = 64 * 1024;

/** Writes some bytes somewhere; resolves with how many were written. */
export type Writer = (bytes: Uint8Array) => Promise<number>;

/**
 * A sink that queues up to `limit` bytes and writes them out in order with an async
 * writer (the container's stdout or stderr FIFO). A write error is kept and reported
 * by the next operation, as WASI's `last-operation-failed`.
 */
export class QueueSink implements ByteSink {
  #write: Writer;
  #limit: number;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #flushing = false;
  #error: IoError | null = null;
  #pumping: Promise<void> | null = null;
  #changed = new Signal();

  /**
   * @param write writes bytes out (may write fewer than given)
   * @param limit how many bytes may wait in the queue
   */
  constructor(write: Writer, limit = SINK_BUFFER_BYTES) {
    this.#write = write;
    this.#limit = limit;
  }

  capacity(): number {
    if (this.#error) throw this.#error;
    if (this.#flushing) return 0;
    return Math.max(0, this.#limit - this.#queued);
  }

  write(bytes: Uint8Array): void {
    if (this.#error) throw this.#error;
    if (bytes.length === 0) return;
    this.#queue.push(bytes);
    this.#queued += bytes.length;
    this.#pumping ??= this.#pump();
  }

  flush(): void {
    if (this.#error) throw this.#error;
    if (this.#queued > 0) this.#flushing = true;
  }

  writable(): boolean {
    return this.#error !== null || (!this.#flushing && this.#queued < this.#limit);
  }

  whenWritable(): Promise<void> {
    return this.writable() ? Promise.resolve() : this.#changed.wait();
  }

  /** Dropping one guest handle does not stop the bytes already queued. */
  close(): void {}

  /** Resolves once every queued byte was written out (or writing failed). */
  async drained(): Promise<void> {
    while (this.#pumping) await this.#pumping;
  }

  async #pump(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const head = this.#queue[0];
        let rest = head;
        while (rest.length > 0) {
          const n = await this.#write(rest);
          rest = rest.subarray(n);
        }
        this.#queue.shift();
        this.#queued -= head.length;
        if (this.#queue.length === 0) this.#flushing = false;
        this.#changed.wake();
      }
    } catch (err) {
      this.#error = err instanceof IoError
        ? err
        : new IoError(err instanceof Error ? err.message : String(err));
      this.#queue = [];
      this.#queued = 0;
      this.#flushing = false;
    } finally {
      this.#pumping = null;
      this.#changed.wake();
    }
  }
}

/**
 * A sink that produces a `ReadableStream` (an HTTP body), holding at most `limit`
 * bytes that the reader has not taken yet.
 *
 * The stream is made when first asked for. Until then the bytes wait here (within the
 * same limit), so a body that has ended by the time it is sent can be sent whole
 * ({@linkcode BodySink.takeWhole}): for a small response, Deno serves bytes at about
 * half the cost of a stream (measured: 6.7 vs 13.5 µs of CPU per request).
 */
export class BodySink implements ByteSink {
  #limit: number;
  #onCancel: ((reason: unknown) => void) | undefined;
  #stream: ReadableStream<Uint8Array> | null = null;
  #controller: ReadableStreamDefaultController<Uint8Array> | null = null;
  /** Bytes written before the stream was made (handed to it when it is). */
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #taken = false;
  /** Made when first waited on: most bodies are written without waiting. */
  #changed: Signal | null = null;
  #cancelled: IoError | null = null;
  #ended = false;
  #abortReason: { reason: unknown } | null = null;
  #whenEnded: PromiseWithResolvers<void> | null = null;
  #bytes = 0;

  /**
   * @param limit how many unread bytes may wait
   * @param onCancel called if the reader goes away (the client disconnected)
   */
  constructor(limit = SINK_BUFFER_BYTES, onCancel?: (reason: unknown) => void) {
    this.#limit = limit;
    this.#onCancel = onCancel;
  }

  /** The bytes written, for whoever sends them (made on first use). */
  get stream(): ReadableStream<Uint8Array> {
    if (this.#taken) throw new Error("the body was already taken whole");
    this.#stream ??= new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.#controller = controller;
        for (const chunk of this.#pending) controller.enqueue(chunk);
        this.#pending = [];
        this.#pendingBytes = 0;
        if (this.#abortReason) controller.error(this.#abortReason.reason);
        else if (this.#ended) controller.close();
      },
      pull: () => this.#changed?.wake(),
      cancel: (reason) => {
        this.#cancelled = new IoError(
          `the body's reader went away${reason === undefined ? "" : `: ${reason}`}`,
        );
        this.#changed?.wake();
        this.#onCancel?.(reason);
      },
    }, new ByteLengthQueuingStrategy({ highWaterMark: this.#limit }));
    return this.#stream;
  }

  /**
   * The whole body, if it ended normally before its stream was asked for (and then
   * never again); else null, and the body is to be sent as {@linkcode stream}.
   */
  takeWhole(): Uint8Array | null {
    if (!this.#ended || this.#abortReason || this.#stream !== null || this.#taken) return null;
    this.#taken = true;
    const chunks = this.#pending;
    this.#pending = [];
    if (chunks.length === 1) return chunks[0];
    const whole = new Uint8Array(this.#pendingBytes);
    let offset = 0;
    for (const chunk of chunks) {
      whole.set(chunk, offset);
      offset += chunk.length;
    }
    return whole;
  }

  /** Resolves once the body has ended, normally or not. */
  whenEnded(): Promise<void> {
    if (this.#ended) return Promise.resolve();
    this.#whenEnded ??= Promise.withResolvers<void>();
    return this.#whenEnded.promise;
  }

  #room(): number {
    return this.#controller !== null
      ? Math.max(0, this.#controller.desiredSize ?? 0)
      : Math.max(0, this.#limit - this.#pendingBytes);
  }

  capacity(): number {
    if (this.#cancelled) throw this.#cancelled;
    if (this.#ended) throw CLOSED;
    return this.#room();
  }

  write(bytes: Uint8Array): void {
    if (this.#cancelled) throw this.#cancelled;
    if (this.#ended) throw CLOSED;
    this.#bytes += bytes.length;
    if (this.#controller !== null) {
      this.#controller.enqueue(bytes);
    } else {
      this.#pending.push(bytes);
      this.#pendingBytes += bytes.length;
    }
  }

  flush(): void {}

  writable(): boolean {
    return this.#cancelled !== null || this.#ended || this.#room() > 0;
  }

  whenWritable(): Promise<void> {
    return this.writable() ? Promise.resolve() : (this.#changed ??= new Signal()).wait();
  }

  /** Dropping the output-stream does not end the body; `outgoing-body.finish` does. */
  close(): void {}

  /** How many bytes were written. */
  get bytesWritten(): number {
    return this.#bytes;
  }

  /** True once the reader went away. */
  get cancelled(): boolean {
    return this.#cancelled !== null;
  }

  #finish(): void {
    this.#ended = true;
    this.#whenEnded?.resolve();
    this.#changed?.wake();
  }

  /** True once the body has ended, normally or not. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Ends the body normally. */
  end(): void {
    if (this.#ended) return;
    if (this.#controller !== null && !this.#cancelled) this.#controller.close();
    this.#finish();
  }

  /** Ends the body with an error: the reader sees it fail (the response is cut). */
  abort(reason: unknown): void {
    if (this.#ended) return;
    this.#abortReason = { reason };
    this.#pending = [];
    this.#pendingBytes = 0;
    if (this.#controller !== null && !this.#cancelled) this.#controller.error(reason);
    this.#finish();
  }
}

/** A sink that shares `sink` but ignores drops (one FIFO, many guest handles). */
export function sharedSink(sink: ByteSink): ByteSink {
  return {
    capacity: () => sink.capacity(),
    write: (bytes) => sink.write(bytes),
    flush: () => sink.flush(),
    writable: () => sink.writable(),
    whenWritable: () => sink.whenWritable(),
    close: () => {},
  };
}

/** Read size for FIFOs. */
const FIFO_READ_BYTES = 64 * 1024;

/**
 * The runner process's own stdin, read when the guest reads: what the shim server
 * forwards of the container's stdin FIFO (after the start line), ending when the server
 * closes it (the client's CloseIO, or the end of the guest).
 */
export function runnerStdinReadable(): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const buf = new Uint8Array(FIFO_READ_BYTES);
      const n = await Deno.stdin.read(buf);
      if (n === null) controller.close();
      else controller.enqueue(buf.subarray(0, n));
    },
  }, { highWaterMark: 0 });
}

/** The writable end of a FIFO (or file) at `path`, opened for appending when needed. */
export class FileWriter {
  #path: string;
  #file: Promise<Deno.FsFile> | undefined;

  /** A writer for `path` (nothing is opened yet). */
  constructor(path: string) {
    this.#path = path;
  }

  /**
   * Opens the file now rather than at the first write. A container's FIFO readers
   * (containerd, CRI's log copier) wait for a writer to appear and see EOF only once
   * it has come and gone, so a guest that never writes must still open its FIFOs.
   */
  open(): void {
    if (this.#file) return;
    // Read-write, so that opening a FIFO never waits for a reader; synchronous, so that
    // it is open before the runner leaves uid 0 (the FIFOs are root's).
    try {
      this.#file = Promise.resolve(
        Deno.openSync(this.#path, { read: true, write: true, append: true }),
      );
    } catch (err) {
      this.#file = Promise.reject(err);
      this.#file.catch(() => {}); // reported by the first write
    }
  }

  /** Writes some of `bytes`; resolves with how many. */
  write: Writer = async (bytes) => {
    this.open();
    const file = await this.#file!;
    return await file.write(bytes);
  };

  /** Closes the file if it was opened. */
  async close(): Promise<void> {
    const file = this.#file;
    this.#file = undefined;
    if (file) (await file.catch(() => null))?.close();
  }
}
