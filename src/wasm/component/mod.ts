/**
 * Running WebAssembly components (placeholder until the component runner lands).
 *
 * @module
 */

import { invalidArgument } from "../../protocol/status.ts";
import type { GuestInit } from "../types.ts";

/**
 * Prepares a component to run in this guest runner process; the returned function
 * runs it and resolves with its exit code.
 *
 * @throws {RpcError} INVALID_ARGUMENT: components are not supported yet
 */
export function prepareComponent(
  init: GuestInit,
  _bytes: Uint8Array,
): Promise<() => Promise<number>> {
  return Promise.reject(
    invalidArgument(`${init.guestPath}: WASI components are not supported yet`),
  );
}
