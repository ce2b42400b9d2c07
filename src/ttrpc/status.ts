/**
 * gRPC status codes as carried in ttrpc `Response.status` (`google.rpc.Status`),
 * and the error type that crosses the RPC boundary.
 *
 * containerd maps these codes to its own error classes (`errdefs.FromGRPC`), so the
 * code chosen here decides how `ctr`, CRI and containerd itself react.
 *
 * @module
 */

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
 * An error with a gRPC status code. Thrown by task handlers and returned to the
 * caller as `Response.status`; any other error thrown by a handler becomes
 * {@linkcode Code.UNKNOWN} with its message.
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

/** An id (container or exec) that this shim does not know: NOT_FOUND. */
export function notFound(message: string): RpcError {
  return new RpcError(Code.NOT_FOUND, `${message}: not found`);
}

/** A request that is not allowed in the current state: FAILED_PRECONDITION. */
export function failedPrecondition(message: string): RpcError {
  return new RpcError(Code.FAILED_PRECONDITION, `${message}: failed precondition`);
}

/** A request whose arguments are wrong: INVALID_ARGUMENT. */
export function invalidArgument(message: string): RpcError {
  return new RpcError(Code.INVALID_ARGUMENT, `${message}: invalid argument`);
}

/** Something that already exists: ALREADY_EXISTS. */
export function alreadyExists(message: string): RpcError {
  return new RpcError(Code.ALREADY_EXISTS, `${message}: already exists`);
}

/** An RPC this shim does not implement: UNIMPLEMENTED (containerd's ErrNotImplemented). */
export function unimplemented(message: string): RpcError {
  return new RpcError(Code.UNIMPLEMENTED, `${message}: not implemented`);
}

/** Converts any thrown value into the status sent on the wire. */
export function toStatus(err: unknown): { code: StatusCode; message: string } {
  if (err instanceof RpcError) return { code: err.code, message: err.message };
  if (err instanceof Deno.errors.NotFound) {
    return { code: Code.NOT_FOUND, message: err.message };
  }
  if (err instanceof Deno.errors.AlreadyExists) {
    return { code: Code.ALREADY_EXISTS, message: err.message };
  }
  return { code: Code.UNKNOWN, message: describe(err) };
}

/** A thrown value's text; never throws (a value may have no string form at all). */
function describe(err: unknown): string {
  if (err instanceof Error) return err.message;
  try {
    return String(err);
  } catch {
    return Object.prototype.toString.call(err);
  }
}
