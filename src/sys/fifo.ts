/**
 * FIFOs opened non-blocking through libc, for the shim server.
 *
 * Deno reads and writes files on a small pool of blocking threads that every file
 * operation of the process shares; a read of an idle FIFO holds one of them until
 * data comes. A server with many containers would run out of them, so it never
 * blocks on a container's FIFO: it opens them `O_NONBLOCK` and polls.
 *
 * @module
 */

import { close, Errno, open, OpenFlag, read, SyscallError, unreadBytes, write } from "./libc.ts";

/** Longest pause between two reads of an idle FIFO. */
export const MAX_POLL_MS = 50;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A FIFO end opened `O_NONBLOCK`. */
export class NonBlockingFifo {
  #fd: number;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * Opens `path` read-write: never waits for the other end, and never sees end of
   * file (this end is a writer too), so the caller decides when the stream ends.
   */
  static openReadWrite(path: string): NonBlockingFifo {
    return new NonBlockingFifo(
      open(path, OpenFlag.O_RDWR | OpenFlag.O_NONBLOCK | OpenFlag.O_CLOEXEC),
    );
  }

  /**
   * Opens `path` for writing only if a reader has it open (or is opening it);
   * undefined when there is none yet (ENXIO).
   */
  static openWriterIfRead(path: string): NonBlockingFifo | undefined {
    try {
      return new NonBlockingFifo(
        open(path, OpenFlag.O_WRONLY | OpenFlag.O_NONBLOCK | OpenFlag.O_CLOEXEC),
      );
    } catch (err) {
      if (err instanceof SyscallError && err.errno === Errno.ENXIO) return undefined;
      throw err;
    }
  }

  /**
   * Reads what is there into `buf`: the count, 0 at end of file, or waits (polling,
   * backing off up to {@linkcode MAX_POLL_MS}) while the FIFO is empty and `more()`
   * is true; returns -1 when `more()` turned false first.
   */
  async read(buf: Uint8Array<ArrayBuffer>, more: () => boolean): Promise<number> {
    let pause = 1;
    while (more()) {
      try {
        return read(this.#fd, buf);
      } catch (err) {
        if (!(err instanceof SyscallError && err.errno === Errno.EAGAIN)) throw err;
      }
      await sleep(pause);
      pause = Math.min(pause * 2, MAX_POLL_MS);
    }
    return -1;
  }

  /** Writes as much of `bytes` as fits now; returns the count (0 when full). */
  writeSome(bytes: Uint8Array<ArrayBuffer>): number {
    try {
      return write(this.#fd, bytes);
    } catch (err) {
      if (err instanceof SyscallError && err.errno === Errno.EAGAIN) return 0;
      throw err;
    }
  }

  /** How many bytes sit in the FIFO, written and not yet read (0 once closed). */
  unread(): number {
    return this.#fd < 0 ? 0 : unreadBytes(this.#fd);
  }

  /** Closes the fd. Safe to call twice. */
  close(): void {
    if (this.#fd < 0) return;
    close(this.#fd);
    this.#fd = -1;
  }
}

/**
 * Holds a writer on each FIFO of `paths` ("" skipped) that has a reader now:
 * returns the held ends and the FIFOs still without a reader. A path that is not a
 * FIFO this process can open is in neither (the guest reports its own error).
 */
export function holdReadersNow(
  paths: readonly string[],
): { held: NonBlockingFifo[]; waiting: string[] } {
  const held: NonBlockingFifo[] = [];
  const waiting: string[] = [];
  for (const path of paths) {
    if (path === "") continue;
    let end: NonBlockingFifo | undefined;
    try {
      end = NonBlockingFifo.openWriterIfRead(path);
    } catch {
      continue;
    }
    if (end) held.push(end);
    else waiting.push(path);
  }
  return { held, waiting };
}

/**
 * Waits until every FIFO of `paths` ("" skipped) has a reader, for at most `ms`, and
 * holds a writer on each so that what a short-lived guest writes stays in the pipe
 * until the reader drains it. Returns the held ends (close them once the guest is
 * gone); a FIFO still without a reader after `ms` is given up on.
 */
export async function holdReaders(
  paths: readonly string[],
  ms: number,
): Promise<NonBlockingFifo[]> {
  const deadline = Date.now() + ms;
  const held: NonBlockingFifo[] = [];
  let waiting = paths;
  let pause = 1;
  for (;;) {
    const now = holdReadersNow(waiting);
    held.push(...now.held);
    waiting = now.waiting;
    if (waiting.length === 0 || Date.now() >= deadline) return held;
    await sleep(pause);
    pause = Math.min(pause * 2, MAX_POLL_MS);
  }
}

/**
 * Waits until the FIFOs of `ends` hold no unread bytes (their readers have taken
 * what was written), for at most `ms`. Resolves true if they did in time.
 */
export async function drainedBy(ends: readonly NonBlockingFifo[], ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  let pause = 1;
  for (;;) {
    let pending = false;
    for (const end of ends) {
      try {
        if (end.unread() > 0) pending = true;
      } catch { /* cannot tell: do not wait for it */ }
    }
    if (!pending) return true;
    if (Date.now() >= deadline) return false;
    await sleep(pause);
    pause = Math.min(pause * 2, MAX_POLL_MS);
  }
}
