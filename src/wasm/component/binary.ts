/**
 * The one reader of WebAssembly binaries (core modules and components) behind
 * `inspect.ts` and `instantiate/` (plan, shim, memory, image, vsize): bytes, LEB128
 * integers ({@linkcode ./leb128.ts}), names within one section's bounds, and a core
 * module's sections. Each caller reports malformed input in its own
 * terms, through the `fail` function it gives.
 *
 * @module
 */

import { readSigned, readU32 } from "./leb128.ts";

/** Reports malformed input at byte `offset` (never returns). */
export type Fail = (what: string, offset: number) => never;

/** The default {@linkcode Fail}: an Error naming the byte. */
export const failAt: Fail = (what, offset) => {
  throw new Error(`${what} at byte ${offset}`);
};

/** A cursor over `bytes[offset, end)`. */
export class BinaryReader {
  /** The whole binary (offsets are into it). */
  readonly bytes: Uint8Array;
  /** The next byte to read. */
  offset: number;
  /** Where this reader's bytes end (a section's end, or the binary's). */
  readonly end: number;
  #fail: Fail;
  #decoder = new TextDecoder("utf-8", { fatal: true });

  /** A reader of `bytes[offset, end)` that reports malformed input through `fail`. */
  constructor(bytes: Uint8Array, offset: number, end: number, fail: Fail = failAt) {
    this.bytes = bytes;
    this.offset = offset;
    this.end = end;
    this.#fail = fail;
  }

  /** True once every byte up to the end has been read. */
  get done(): boolean {
    return this.offset >= this.end;
  }

  /** A reader of the next `length` bytes (a section or a body), failing the same way. */
  sub(length: number): BinaryReader {
    return new BinaryReader(this.bytes, this.offset, this.offset + length, this.#fail);
  }

  /** Reports malformed input at the current byte. */
  fail(what: string): never {
    return this.#fail(what, this.offset);
  }

  /** The next byte. */
  byte(): number {
    if (this.offset >= this.end) this.fail("unexpected end");
    return this.bytes[this.offset++];
  }

  /** The next byte, not consumed. */
  peek(): number {
    if (this.offset >= this.end) this.fail("unexpected end");
    return this.bytes[this.offset];
  }

  /** An unsigned LEB128 u32. */
  u32(): number {
    return readU32(() => this.byte()) ?? this.fail("LEB128 u32 too long");
  }

  /** A signed LEB128 i32 (`i32.const` immediates). */
  s32(): number {
    return readSigned(() => this.byte(), 32) ?? this.fail("LEB128 s32 too long");
  }

  /** A signed LEB128 of up to 33 bits (the component model's type indices). */
  s33(): number {
    return readSigned(() => this.byte(), 33) ?? this.fail("LEB128 s33 too long");
  }

  /** Skips `length` bytes. */
  skip(length: number): void {
    if (this.offset + length > this.end) this.fail("unexpected end");
    this.offset += length;
  }

  /** A `name`: a u32 length, then that many bytes of UTF-8. */
  string(): string {
    const len = this.u32();
    if (this.offset + len > this.end) this.fail("string overruns");
    let text: string;
    try {
      text = this.#decoder.decode(this.bytes.subarray(this.offset, this.offset + len));
    } catch {
      this.fail("string is not UTF-8");
    }
    this.offset += len;
    return text;
  }
}

/** A section of a core module: its id, and where it, its body and it end. */
export interface Section {
  id: number;
  /** The section's first byte (its id). */
  start: number;
  /** Its body's first byte (after the id and size). */
  body: number;
  /** One past its last byte. */
  end: number;
}

/** The sections of a core module, in order (the 8-byte preamble is not checked). */
export function moduleSections(module: Uint8Array, fail: Fail = failAt): Section[] {
  const top = new BinaryReader(module, 8, module.length, fail);
  const sections: Section[] = [];
  while (!top.done) {
    const start = top.offset;
    const id = top.byte();
    const size = top.u32();
    const body = top.offset;
    top.skip(size);
    sections.push({ id, start, body, end: top.offset });
  }
  return sections;
}
