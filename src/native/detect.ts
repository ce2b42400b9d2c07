/**
 * Tells a native Linux executable from everything else by its first bytes: an ELF
 * binary (`\x7fELF`) or an interpreter script (`#!`). Such an entrypoint runs as a
 * normal Linux container through runc (see `runc_guest.ts`) instead of as Wasm.
 *
 * @module
 */

/** What kind of native executable a file is. */
export type NativeKind = "elf" | "script";

/** The four bytes every ELF file starts with: `\x7fELF`. */
export const ELF_MAGIC: readonly number[] = [0x7f, 0x45, 0x4c, 0x46];
/** The two bytes an interpreter script starts with: `#!`. */
export const SHEBANG: readonly number[] = [0x23, 0x21];
/** How many bytes {@linkcode detectNative} needs. */
export const NATIVE_HEADER_LENGTH = ELF_MAGIC.length;

function startsWith(bytes: Uint8Array, prefix: readonly number[]): boolean {
  return bytes.length >= prefix.length && prefix.every((b, i) => bytes[i] === b);
}

/**
 * Decides whether a file that starts with `header` is a native executable.
 *
 * @param header the file's first bytes (at least {@linkcode NATIVE_HEADER_LENGTH} for ELF)
 * @returns `"elf"`, `"script"`, or undefined for anything else (Wasm included)
 */
export function detectNative(header: Uint8Array): NativeKind | undefined {
  if (startsWith(header, ELF_MAGIC)) return "elf";
  if (startsWith(header, SHEBANG)) return "script";
  return undefined;
}
