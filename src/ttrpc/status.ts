/**
 * gRPC status codes as carried in ttrpc `Response.status` (`google.rpc.Status`),
 * and the error type that crosses the RPC boundary.
 *
 * containerd maps these codes to its own error classes (`errdefs.FromGRPC`), so the
 * code chosen here decides how `ctr`, CRI and containerd itself react.
 *
 * @module
 */

import { describeError } from "../errdefs/errors.ts";

/** gRPC status codes (google.rpc.Code). */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

/** One of the {@linkcode Code} values. */
export type StatusCode = typeof Code[keyof typeof Code];

/**
 * An error with a gRPC status code: thrown by a handler, it is returned to the
 * caller as `Response.status` (any other error becomes {@linkcode Code.UNKNOWN} with
 * its message); a client rejects with one when a call fails.
 */
export class RpcError extends Error {
  /** The gRPC status code sent to the caller. */
  readonly code: StatusCode;

  /** Creates an error that will be answered with `code` and `message`. */
  constructor(code: StatusCode, message: string) {
    super(message);
    this.name = "RpcError";
    this.code = code;
  }
}

/**
 * Converts any thrown value into the status sent on the wire: an
 * {@linkcode RpcError}'s own, else UNKNOWN with the value's text. A service decides
 * its errors' codes itself before they reach the server (see `src/task/task_api.ts`).
 */
export function toStatus(err: unknown): { code: StatusCode; message: string } {
  if (err instanceof RpcError) return { code: err.code, message: err.message };
  return { code: Code.UNKNOWN, message: describeError(err) };
}
