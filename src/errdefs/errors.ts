/**
 * The errors every layer of the shim reports, by kind, as containerd's `errdefs`
 * package has them: a layer says what went wrong (not found, invalid argument, …),
 * and only the task API (`src/task/task_api.ts`) turns a kind into the gRPC status
 * code containerd receives. Kinds also cross the pipe from a guest runner to the
 * server (`src/wasm/runner_protocol.ts`).
 *
 * @module
 */

/** What kind of failure an error is; each becomes one gRPC code at the task API. */
export const Kind = {
  UNKNOWN: "unknown",
  CANCELLED: "cancelled",
  INVALID_ARGUMENT: "invalid argument",
  DEADLINE_EXCEEDED: "deadline exceeded",
  NOT_FOUND: "not found",
  ALREADY_EXISTS: "already exists",
  RESOURCE_EXHAUSTED: "resource exhausted",
  FAILED_PRECONDITION: "failed precondition",
  UNIMPLEMENTED: "not implemented",
  INTERNAL: "internal",
  UNAVAILABLE: "unavailable",
  DATA_LOSS: "data loss",
} as const;

/** One of the {@linkcode Kind} values. */
export type ErrorKind = typeof Kind[keyof typeof Kind];

const KINDS: ReadonlySet<string> = new Set(Object.values(Kind));

/** True if `value` is one of the {@linkcode Kind} values (e.g. read from a runner). */
export function isErrorKind(value: unknown): value is ErrorKind {
  return typeof value === "string" && KINDS.has(value);
}

/** An error of a known {@linkcode Kind}. Any other error counts as {@linkcode Kind.UNKNOWN}. */
export class ShimError extends Error {
  /** What kind of failure this is. */
  readonly kind: ErrorKind;

  /** Creates an error of `kind` saying `message`. */
  constructor(kind: ErrorKind, message: string) {
    super(message);
    this.name = "ShimError";
    this.kind = kind;
  }
}

/** An id (container or exec), file or object that does not exist: NOT_FOUND. */
export function notFound(message: string): ShimError {
  return new ShimError(Kind.NOT_FOUND, `${message}: not found`);
}

/** A request that is not allowed in the current state: FAILED_PRECONDITION. */
export function failedPrecondition(message: string): ShimError {
  return new ShimError(Kind.FAILED_PRECONDITION, `${message}: failed precondition`);
}

/** A request whose arguments are wrong: INVALID_ARGUMENT. */
export function invalidArgument(message: string): ShimError {
  return new ShimError(Kind.INVALID_ARGUMENT, `${message}: invalid argument`);
}

/** Something that already exists: ALREADY_EXISTS. */
export function alreadyExists(message: string): ShimError {
  return new ShimError(Kind.ALREADY_EXISTS, `${message}: already exists`);
}

/** Something this shim does not implement: UNIMPLEMENTED (containerd's ErrNotImplemented). */
export function unimplemented(message: string): ShimError {
  return new ShimError(Kind.UNIMPLEMENTED, `${message}: not implemented`);
}

/** The kind of any thrown value: a {@linkcode ShimError}'s own, else UNKNOWN. */
export function kindOf(err: unknown): ErrorKind {
  return err instanceof ShimError ? err.kind : Kind.UNKNOWN;
}

/** A thrown value's text; never throws (a value may have no string form at all). */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message;
  try {
    return String(err);
  } catch {
    return Object.prototype.toString.call(err);
  }
}
