/**
 * A *plain attempt*: a request's `handle` entered without `WebAssembly.promising`.
 *
 * Entering a guest through `WebAssembly.promising` costs each call a suspender and
 * ~370 B of V8's long-lived heap (a full garbage collection per second under load),
 * though most requests never suspend: a blocking host call that completes at once
 * returns without suspending (see `instantiate/trampoline.ts`). So the request server
 * (`http_server.ts`) first calls `handle` plainly, with {@linkcode plainAttempt}
 * active, and runs the request again in a fresh instance, through `promising`, if the
 * guest needed more: it had to wait (its blocking host call returned a promise), or
 * it was about to do something visible outside its instance (write to stdout, touch
 * a file, open a socket, send a request). Those host functions throw
 * {@linkcode PlainAttemptAborted} before doing anything, so nothing the attempt did
 * can be seen twice: what it did stays in an instance that is then dropped.
 *
 * One thread runs one guest call at a time, and a plain call never yields to the
 * event loop, so one flag per thread is enough.
 *
 * @module
 */

/** Thrown by a host function a plain attempt may not run (see the module documentation). */
export class PlainAttemptAborted extends Error {
  constructor(what: string) {
    super(`${what}: not run in a plain attempt (the request runs again)`);
    this.name = "PlainAttemptAborted";
  }
}

/** This thread's plain attempt, if one is running. */
export const plainAttempt: {
  /** A plain attempt is running: the guest's async export is entered plainly. */
  active: boolean;
  /** The export was entered plainly (false: the glue has no plain entry). */
  entered: boolean;
  /** Why the attempt is abandoned (a host call had to wait, or had effects), or null. */
  aborted: string | null;
} = { active: false, entered: false, aborted: null };

/**
 * Guards a host function with effects outside the instance: throws
 * {@linkcode PlainAttemptAborted} (and marks the attempt abandoned, even if the guest
 * catches the exception) while a plain attempt runs.
 */
export function outsideEffect(what: string): void {
  if (!plainAttempt.active) return;
  plainAttempt.aborted ??= what;
  throw new PlainAttemptAborted(what);
}

/** Marks the running plain attempt abandoned because the guest has to wait for `what`. */
export function mustWait(what: string): PlainAttemptAborted {
  plainAttempt.aborted ??= `${what} waits`;
  return new PlainAttemptAborted(`${what} waits`);
}
