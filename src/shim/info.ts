/**
 * `-v` (human-readable version) and `-info` (a `containerd.types.RuntimeInfo`
 * protobuf on stdout, which containerd 2.2+ asks for on the first Create).
 *
 * @module
 */

import { encodeRuntimeInfo } from "../proto/gen/types.ts";
import { BINARY_NAME, revision, RUNTIME_NAME, VERSION } from "./version.ts";

/** The text `-v` prints, in the reference shim's layout. */
export function versionText(): string {
  return `${BINARY_NAME}:\n  Runtime: deno ${Deno.version.deno} (v8 ${Deno.version.v8})\n  Version: ${VERSION}\n  Revision: ${revision()}\n`;
}

/** The RuntimeInfo bytes `-info` prints. */
export function runtimeInfo(): Uint8Array {
  return encodeRuntimeInfo({
    name: RUNTIME_NAME,
    version: { version: VERSION, revision: revision() },
  });
}
