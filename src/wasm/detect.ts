/**
 * Tells a WebAssembly core module from a component by its header, and checks that a
 * compiled module can run here (the export to call exists, every import is provided).
 *
 * Header layout (WebAssembly core spec §5.5.16, component model binary format): the
 * magic `\0asm`, then a 4-byte little-endian field that is the version `1` for core
 * modules, or the version `0x0d` followed by the layer `1` for components.
 *
 * @module
 */

import { invalidArgument } from "../errdefs/errors.ts";

/** What a wasm binary is. */
export type WasmKind = "module" | "component";

/** The four magic bytes every WebAssembly binary starts with: `\0asm`. */
export const WASM_MAGIC: readonly number[] = [0x00, 0x61, 0x73, 0x6d];
/** Version field of a core module: version 1, layer 0. */
export const MODULE_VERSION: readonly number[] = [0x01, 0x00, 0x00, 0x00];
/** Version field of a component (pre-1.0 encoding): version 0x0d, layer 1. */
export const COMPONENT_VERSION: readonly number[] = [0x0d, 0x00, 0x01, 0x00];
/** How many bytes {@linkcode detectKind} looks at. */
export const HEADER_LENGTH = 8;

function startsWith(bytes: Uint8Array, prefix: readonly number[], offset = 0): boolean {
  if (bytes.length < offset + prefix.length) return false;
  return prefix.every((b, i) => bytes[offset + i] === b);
}

/** Renders up to the first 8 bytes as hex and as text, for error messages. */
export function describeStart(bytes: Uint8Array): string {
  if (bytes.length === 0) return "nothing: the file is empty";
  const head = bytes.subarray(0, HEADER_LENGTH);
  const hex = [...head].map((b) => b.toString(16).padStart(2, "0")).join(" ");
  const text = [...head].map((b) => b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")
    .join("");
  return `${hex} "${text}"`;
}

/**
 * Decides whether `bytes` is a core module or a component from its header.
 *
 * @param bytes the binary (only the first {@linkcode HEADER_LENGTH} bytes are read)
 * @param path the file's name, for the error message
 * @throws {ShimError} INVALID_ARGUMENT if it is neither
 */
export function detectKind(bytes: Uint8Array, path = "the entrypoint"): WasmKind {
  if (startsWith(bytes, WASM_MAGIC)) {
    if (startsWith(bytes, MODULE_VERSION, WASM_MAGIC.length)) return "module";
    if (startsWith(bytes, COMPONENT_VERSION, WASM_MAGIC.length)) return "component";
    throw invalidArgument(
      `${path} is not a WebAssembly module or component (it has the WebAssembly magic but ` +
        `an unsupported version/layer; starts with ${describeStart(bytes)})`,
    );
  }
  throw invalidArgument(
    `${path} is not a WebAssembly module or component (starts with ${describeStart(bytes)})`,
  );
}

/**
 * Checks that `module` exports a function named `func`.
 *
 * @throws {ShimError} INVALID_ARGUMENT naming the functions it does export
 */
export function checkExport(module: WebAssembly.Module, func: string, path: string): void {
  const exports = WebAssembly.Module.exports(module);
  if (exports.some((e) => e.name === func && e.kind === "function")) return;
  const functions = exports.filter((e) => e.kind === "function").map((e) => `"${e.name}"`);
  const other = exports.find((e) => e.name === func);
  const what = other ? ` ("${func}" is a ${other.kind}, not a function)` : "";
  const has = functions.length > 0
    ? `it exports ${functions.join(", ")}`
    : "it exports no functions";
  throw invalidArgument(`module ${path} has no exported function "${func}"${what}; ${has}`);
}

/**
 * Checks that every import of `module` is one the host provides.
 *
 * @param available provided names by import module, e.g. `{wasi_snapshot_preview1: [...]}`
 * @throws {ShimError} INVALID_ARGUMENT listing the imports that are missing
 */
export function checkImports(
  module: WebAssembly.Module,
  path: string,
  available: Readonly<Record<string, readonly string[]>>,
): void {
  const missing = WebAssembly.Module.imports(module)
    .filter((i) => !(Object.hasOwn(available, i.module) && available[i.module].includes(i.name)))
    .map((i) => `"${i.module}"."${i.name}" (${i.kind})`);
  if (missing.length === 0) return;
  const shown = missing.slice(0, 10).join(", ") + (missing.length > 10 ? ", …" : "");
  const provided = Object.keys(available).join(", ");
  throw invalidArgument(
    `module ${path} imports ${shown}, which this shim does not provide (it provides ${provided})`,
  );
}
