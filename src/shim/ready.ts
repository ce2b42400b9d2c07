/**
 * The one-line handshake between `start` and the server it spawns: the server
 * writes one of these on its stdout pipe once, then closes it.
 *
 * @module
 */

/** What the server writes on its stdout pipe to the `start` process. */
export const ReadyLine = {
  /** Listening; `start` may print the address. */
  READY: "ready",
  /** A live server of the same group already listens there; reuse it. */
  IN_USE: "inuse",
  /** Followed by a space and the reason. */
  ERROR: "error",
} as const;
