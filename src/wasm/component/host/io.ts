/**
 * `wasi:io@0.2.x` (error, poll, streams) for one component instance.
 *
 * Streams are thin resource objects over a {@linkcode ByteSource} or {@linkcode ByteSink}
 * that the caller supplies (a FIFO, a file, an HTTP body), so nothing here is shared
 * between instances. The blocking calls (`poll`, `pollable.block`, `blocking-*`) return
 * promises: the glue is transpiled with JSPI, so they suspend only the calling instance.
 *
 * Errors follow jco's conventions: a WIT `result` error is thrown as its payload (a plain
 * object such as `{ tag: "closed" }`), and a thrown `Error` is a trap.
 *
 * @module
 */

import { outsideEffect } from "../plain_attempt.ts";

/** Largest single read a guest can ask for (it is told how much it got). */
export const MAX_READ = 1 << 20;
/** The most bytes `blocking-write-and-flush` and friends accept (WASI's contract). */
export const MAX_BLOCKING_WRITE = 4096;

const EMPTY = new Uint8Array(0);

/** The `wasi:io/error.error` resource: a description of a failed stream operation. */
export class IoError {
  #message: string;

  /** Wraps a host error message. */
  constructor(message: string) {
    this.#message = message;
  }

  /** The `to-debug-string` method. */
  toDebugString(): string {
    return this.#message;
  }

  /** The wrapped message, for host code (`filesystem-error-code`, `http-error-code`). */
  get message(): string {
    return this.#message;
  }

  /** A payload attached by the host (an `error-code` of wasi:filesystem or wasi:http). */
  code?: unknown;
}

/** Something a {@linkcode Pollable} waits for. */
export interface Readiness {
  /** True when the event has happened (never blocks). */
  ready(): boolean;
  /** Resolves once `ready()` is true (may resolve early; callers re-check). */
  wait(): Promise<void>;
}

const ALWAYS: Readiness = { ready: () => true, wait: () => Promise.resolve() };

/** How many consecutive already-ready polls run before one yields to the event loop. */
const POLLS_BEFORE_YIELD = 64;

/** Yields to the event loop (timers, I/O), not just the microtask queue. */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** The `wasi:io/poll.pollable` resource. */
export class Pollable {
  #source: Readiness;

  /** A pollable for `source`; without one, a pollable that is always ready. */
  constructor(source: Readiness = ALWAYS) {
    this.#source = source;
  }

  /** The `ready` method. */
  ready(): boolean {
    return this.#source.ready();
  }

  /** The `block` method (suspends the instance until ready). */
  async block(): Promise<void> {
    while (!this.#source.ready()) await this.#source.wait();
  }
}

/** The state behind `wasi:io/poll.poll` for one instance (a fairness counter). */
export class Poller {
  #readyStreak = 0;

  /** The `poll` function: resolves with the indices of the ready pollables. */
  poll = async (list: Pollable[]): Promise<Uint32Array> => {
    if (list.length === 0) throw new Error("wasi:io/poll.poll: the list of pollables is empty");
    let ready = readyIndices(list);
    if (ready.length > 0) {
      // A guest spinning on ready pollables would otherwise starve the event loop.
      if (++this.#readyStreak >= POLLS_BEFORE_YIELD) {
        this.#readyStreak = 0;
        await yieldToEventLoop();
      }
      return ready;
    }
    this.#readyStreak = 0;
    do {
      await Promise.race(list.map((p) => p.block()));
      ready = readyIndices(list);
    } while (ready.length === 0);
    return ready;
  };
}

function readyIndices(list: Pollable[]): Uint32Array {
  const out: number[] = [];
  for (let i = 0; i < list.length; i++) if (list[i].ready()) out.push(i);
  return new Uint32Array(out);
}

/** Where an input stream's bytes come from. */
export interface ByteSource {
  /**
   * Takes up to `max` bytes that are available now: an empty array if none are yet,
   * `null` at the end. Throws an {@linkcode IoError} if the source failed.
   */
  take(max: number): Uint8Array | null;
  /** True when `take` would return bytes, the end, or an error. */
  readable(): boolean;
  /** Resolves once `readable()` is true. */
  whenReadable(): Promise<void>;
  /** The guest dropped the stream. */
  close(): void;
}

/** Where an output stream's bytes go. */
export interface ByteSink {
  /**
   * How many bytes `write` accepts now (0 while full or flushing). Throws an
   * {@linkcode IoError} if the sink failed, or `CLOSED` if it is closed.
   */
  capacity(): number;
  /** Accepts at most `capacity()` bytes (the array is the sink's to keep). */
  write(bytes: Uint8Array): void;
  /** Starts pushing buffered bytes out; `capacity()` is 0 until that is done. */
  flush(): void;
  /** True when `capacity()` would be non-zero, or throw. */
  writable(): boolean;
  /** Resolves once `writable()` is true. */
  whenWritable(): Promise<void>;
  /** The guest dropped the stream. */
  close(): void;
}

/** The `stream-error.closed` payload. */
export const CLOSED = Object.freeze({ tag: "closed" });

/** A `stream-error.last-operation-failed` payload for `err`. */
export function lastOperationFailed(err: unknown): { tag: "last-operation-failed"; val: IoError } {
  return {
    tag: "last-operation-failed",
    val: err instanceof IoError
      ? err
      : new IoError(err instanceof Error ? err.message : String(err)),
  };
}

/** Rethrows a source/sink failure as the stream-error payload jco expects. */
function streamError(err: unknown): never {
  if (err === CLOSED) throw CLOSED;
  if (err instanceof IoError) throw lastOperationFailed(err);
  throw err;
}

function lengthOf(len: bigint): number {
  if (typeof len !== "bigint" || len < 0n) throw new TypeError(`invalid stream length ${len}`);
  return len > BigInt(MAX_READ) ? MAX_READ : Number(len);
}

/** The `wasi:io/streams.input-stream` resource. */
export class InputStream {
  #source: ByteSource;
  #open = true;
  #outside: string | undefined;

  /**
   * A stream reading `source`; `outside` names it if reading it is seen outside the
   * instance (stdin, a file, a socket: see `plain_attempt.ts`), else (an HTTP body) it
   * is undefined.
   */
  constructor(source: ByteSource, outside?: string) {
    this.#source = source;
    this.#outside = outside;
  }

  #take(len: bigint): Uint8Array {
    if (this.#outside !== undefined) outsideEffect(`reading ${this.#outside}`);
    if (!this.#open) throw CLOSED;
    const n = lengthOf(len);
    if (n === 0) return EMPTY;
    let bytes: Uint8Array | null;
    try {
      bytes = this.#source.take(n);
    } catch (err) {
      streamError(err);
    }
    if (bytes === null) throw CLOSED;
    return bytes;
  }

  /** The `read` method: what is available now, possibly nothing. */
  read(len: bigint): Uint8Array {
    return this.#take(len);
  }

  /** The `blocking-read` method: waits for at least one byte or the end. */
  blockingRead(len: bigint): Promise<Uint8Array> {
    // Before anything starts a read.
    if (this.#outside !== undefined) outsideEffect(`reading ${this.#outside}`);
    return this.#blockingRead(len);
  }

  async #blockingRead(len: bigint): Promise<Uint8Array> {
    if (len > 0n) {
      while (this.#open && !this.#source.readable()) await this.#source.whenReadable();
    }
    return this.#take(len);
  }

  /** The `skip` method. */
  skip(len: bigint): bigint {
    return BigInt(this.#take(len).length);
  }

  /** The `blocking-skip` method. */
  async blockingSkip(len: bigint): Promise<bigint> {
    return BigInt((await this.blockingRead(len)).length);
  }

  /** The `subscribe` method. */
  subscribe(): Pollable {
    const source = this.#source;
    return new Pollable({
      ready: () => !this.#open || source.readable(),
      wait: () => source.whenReadable(),
    });
  }

  /** Resource drop. */
  [Symbol.dispose](): void {
    if (!this.#open) return;
    this.#open = false;
    this.#source.close();
  }
}

/** The `wasi:io/streams.output-stream` resource. */
export class OutputStream {
  #sink: ByteSink;
  #open = true;
  #permit = 0;
  #outside: string | undefined;

  /**
   * A stream writing to `sink`; `outside` names it if writing to it is seen outside
   * the instance (stdout, a file, a socket: see `plain_attempt.ts`), else (an HTTP
   * body, which the request server sends or drops) it is undefined.
   */
  constructor(sink: ByteSink, outside?: string) {
    this.#sink = sink;
    this.#outside = outside;
  }

  #capacity(): number {
    if (!this.#open) throw CLOSED;
    try {
      return this.#sink.capacity();
    } catch (err) {
      streamError(err);
    }
  }

  /** The `check-write` method: how many bytes `write` may take now. */
  checkWrite(): bigint {
    this.#permit = this.#capacity();
    return BigInt(this.#permit);
  }

  /** The `write` method: at most what `check-write` allowed. */
  write(contents: Uint8Array): void {
    if (!this.#open) throw CLOSED;
    if (contents.length > this.#permit) {
      // A guest bug in WASI's terms: it must trap, not silently lose data.
      throw new Error(
        `output-stream.write of ${contents.length} bytes exceeds the ${this.#permit} ` +
          `allowed by check-write`,
      );
    }
    this.#permit -= contents.length;
    this.#put(contents);
  }

  #put(contents: Uint8Array): void {
    if (this.#outside !== undefined) outsideEffect(`writing to ${this.#outside}`);
    if (contents.length === 0) return;
    try {
      this.#sink.write(contents);
    } catch (err) {
      streamError(err);
    }
  }

  /** Waits until the sink takes bytes again (or fails, which the next call reports). */
  async #writable(): Promise<void> {
    while (this.#open && !this.#sink.writable()) await this.#sink.whenWritable();
  }

  /**
   * The `blocking-write-and-flush` method. When the sink takes the bytes and flushes at
   * once (an HTTP body under its buffer limit), it completes without a promise: each
   * promise is a round trip through the microtask queue, and a small response is
   * mostly this call.
   */
  blockingWriteAndFlush(contents: Uint8Array): Promise<void> | void {
    if (this.#outside !== undefined) outsideEffect(`writing to ${this.#outside}`);
    if (contents.length > MAX_BLOCKING_WRITE) {
      return Promise.reject(
        new Error(
          `output-stream.blocking-write-and-flush of ${contents.length} bytes exceeds ` +
            `${MAX_BLOCKING_WRITE}`,
        ),
      );
    }
    try {
      if (this.#open && this.#sink.writable() && this.#capacity() >= contents.length) {
        this.#put(contents);
        if (this.#sink.writable()) {
          this.flush();
          if (this.#sink.writable()) {
            this.#capacity();
            return;
          }
          return this.#writable().then(() => void this.#capacity());
        }
        return this.#writeAndFlush(contents, contents.length);
      }
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#writeAndFlush(contents, 0);
  }

  /** `blocking-write-and-flush` from `offset` on, waiting as needed. */
  async #writeAndFlush(contents: Uint8Array, offset: number): Promise<void> {
    while (true) {
      await this.#writable();
      const room = this.#capacity();
      if (offset >= contents.length) break;
      if (room === 0) continue;
      const end = Math.min(contents.length, offset + room);
      this.#put(offset === 0 && end === contents.length ? contents : contents.slice(offset, end));
      offset = end;
    }
    await this.blockingFlush();
  }

  /** The `flush` method: starts a flush; `check-write` is 0 until it completes. */
  flush(): void {
    if (this.#outside !== undefined) outsideEffect(`flushing ${this.#outside}`);
    if (!this.#open) throw CLOSED;
    this.#permit = 0;
    try {
      this.#sink.flush();
    } catch (err) {
      streamError(err);
    }
  }

  /** The `blocking-flush` method. */
  async blockingFlush(): Promise<void> {
    this.flush();
    await this.#writable();
    this.#capacity();
  }

  /** The `write-zeroes` method. */
  writeZeroes(len: bigint): void {
    this.write(new Uint8Array(lengthOf(len)));
  }

  /** The `blocking-write-zeroes-and-flush` method. */
  blockingWriteZeroesAndFlush(len: bigint): Promise<void> | void {
    return this.blockingWriteAndFlush(new Uint8Array(lengthOf(len)));
  }

  /** The `splice` method: moves what both sides allow now. */
  splice(src: InputStream, len: bigint): bigint {
    if (this.#outside !== undefined) outsideEffect(`writing to ${this.#outside}`);
    const room = this.checkWrite();
    const bytes = src.read(len < room ? len : room);
    this.write(bytes);
    return BigInt(bytes.length);
  }

  /** The `blocking-splice` method: waits for room, then for input. */
  blockingSplice(src: InputStream, len: bigint): Promise<bigint> {
    if (this.#outside !== undefined) outsideEffect(`writing to ${this.#outside}`);
    return this.#blockingSplice(src, len);
  }

  async #blockingSplice(src: InputStream, len: bigint): Promise<bigint> {
    await this.#writable();
    const room = this.checkWrite();
    const bytes = await src.blockingRead(len < room ? len : room);
    this.write(bytes);
    return BigInt(bytes.length);
  }

  /** The `subscribe` method: ready when `check-write` is non-zero or would fail. */
  subscribe(): Pollable {
    const sink = this.#sink;
    return new Pollable({
      ready: () => !this.#open || sink.writable(),
      wait: () => sink.whenWritable(),
    });
  }

  /** Resource drop. */
  [Symbol.dispose](): void {
    if (!this.#open) return;
    this.#open = false;
    this.#sink.close();
  }
}

/** A source that is at its end from the start (a container without stdin). */
export const EMPTY_SOURCE: ByteSource = {
  take: () => null,
  readable: () => true,
  whenReadable: () => Promise.resolve(),
  close: () => {},
};

/** A sink that accepts and drops everything. */
export function discardSink(): ByteSink {
  return {
    capacity: () => MAX_READ,
    write: () => {},
    flush: () => {},
    writable: () => true,
    whenWritable: () => Promise.resolve(),
    close: () => {},
  };
}
