/**
 * Request limits of the wasi:http server, applied before and while a guest reads a
 * request (see `http_server.ts` for where, and the component README for the settings).
 *
 * What `Deno.serve` (hyper) already does, measured with Deno 2.9.6 over raw TCP:
 *
 * - A request head (request line and headers) over 64 KiB, more than 128 header
 *   lines, or bytes that are not HTTP/1.x: 400 Bad Request, connection closed. So
 *   {@linkcode headerBytes}'s limit is accepted only up to {@linkcode DENO_MAX_HEAD_BYTES}:
 *   above that, hyper's 400 would always come first.
 * - No timeout at all while reading a request head, a request body, or between
 *   keep-alive requests: a client that never finishes its request keeps its connection
 *   (one file descriptor) open until it goes away. Requests on other connections are
 *   not slowed down; the process's open-file limit is the bound. {@linkcode limitBody}
 *   adds the one timeout the server can apply, on body reads.
 * - A response sent before the request body was read (a 413 or 408 from here) gets
 *   `connection: close`, but hyper then reads and discards the rest of the body until
 *   the client has sent it all or closes: the connection is not cut, no guest sees it.
 *
 * @module
 */

import { IncomingBodyError } from "./host/http.ts";

/** The largest request head `Deno.serve` accepts (measured: larger heads answer 400). */
export const DENO_MAX_HEAD_BYTES = 64 * 1024;

/** Sum of the lengths of header names and values, as Fetch presents them. */
export function headerBytes(headers: Headers): number {
  let total = 0;
  // forEach, not for…of: no iterator and no entry arrays per request.
  headers.forEach((value, name) => total += name.length + value.length);
  return total;
}

/**
 * The request's `content-length`, or null without one (chunked). hyper has already
 * refused a malformed or conflicting one.
 */
export function contentLength(headers: Headers): number | null {
  const value = headers.get("content-length");
  if (value === null) return null;
  const n = Number(value);
  return Number.isSafeInteger(n) && n >= 0 ? n : null;
}

/** A request body refused while the guest was reading it, with the status it earns. */
export class BodyRefused extends IncomingBodyError {
  /** 413 (too large) or 408 (the client stopped sending). */
  readonly status: 413 | 408;

  /** Refused with `status` because of `message`; the guest's read fails with `code`. */
  constructor(status: 413 | 408, message: string, code: IncomingBodyError["code"]) {
    super(message, code);
    this.name = "BodyRefused";
    this.status = status;
  }
}

/** Limits of {@linkcode limitBody}; 0 disables either. */
export interface BodyLimits {
  /** Most body bytes read. */
  maxBytes: number;
  /** Longest wait for the client's next body bytes while the guest waits for them. */
  idleTimeoutMs: number;
}

/** A request body as the guest reads it, under {@linkcode BodyLimits}. */
export interface LimitedBody {
  /** What the guest reads: the body's bytes, failing with a {@linkcode BodyRefused}. */
  stream: ReadableStream<Uint8Array>;
  /** Resolves if (and only if) the body was refused. */
  refused: Promise<BodyRefused>;
  /** Stops the idle timer (the request is over). */
  dispose(): void;
  /**
   * Stops reading from the client. Deno then aborts the connection if the response
   * fails; otherwise it keeps a response that already failed waiting for the body.
   */
  cancel(): void;
}

const TIMED_OUT = Symbol("timed out");

/**
 * Wraps `body` so that reading more than `maxBytes`, or waiting longer than
 * `idleTimeoutMs` for the client's next bytes while the guest asks for them, fails the
 * read (the guest sees `HTTP-request-body-size` or `connection-read-timeout`) and stops
 * reading from the client. Nothing is read ahead of the guest, so the body keeps its
 * backpressure, and a guest that reads slowly never times out the client.
 */
export function limitBody(body: ReadableStream<Uint8Array>, limits: BodyLimits): LimitedBody {
  const reader = body.getReader();
  const refusal = Promise.withResolvers<BodyRefused>();
  let received = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let disposed = false;
  const refuse = (
    controller: ReadableStreamDefaultController<Uint8Array>,
    error: BodyRefused,
  ): void => {
    // The client's body is left unread, not cancelled: a response sent now then gets
    // `connection: close` (a cancelled body would let Deno keep the connection alive).
    controller.error(error);
    if (!disposed) refusal.resolve(error);
  };
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const read = reader.read();
      let result: ReadableStreamReadResult<Uint8Array> | typeof TIMED_OUT;
      if (limits.idleTimeoutMs > 0 && !disposed) {
        const idle = new Promise<typeof TIMED_OUT>((resolve) => {
          timer = setTimeout(() => resolve(TIMED_OUT), limits.idleTimeoutMs);
        });
        try {
          result = await Promise.race([read, idle]);
        } finally {
          clearTimeout(timer);
          timer = undefined;
        }
      } else {
        result = await read;
      }
      if (result === TIMED_OUT) {
        read.catch(() => {});
        return refuse(
          controller,
          new BodyRefused(
            408,
            `no request body bytes for ${limits.idleTimeoutMs} ms`,
            { tag: "connection-read-timeout" },
          ),
        );
      }
      if (result.done) return controller.close();
      received += result.value.length;
      if (limits.maxBytes > 0 && received > limits.maxBytes) {
        return refuse(
          controller,
          new BodyRefused(
            413,
            `request body over the limit of ${limits.maxBytes} bytes`,
            { tag: "HTTP-request-body-size", val: BigInt(received) },
          ),
        );
      }
      controller.enqueue(result.value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  return {
    stream,
    refused: refusal.promise,
    dispose: () => {
      disposed = true;
      clearTimeout(timer);
    },
    cancel: () => {
      reader.cancel().catch(() => {});
    },
  };
}
