/**
 * LEB128, as the WebAssembly binary format encodes integers: the one decoder and
 * encoder set of the component readers and writers. Reading goes through
 * {@linkcode ./binary.ts}'s `BinaryReader`; the encoders serve the modules the glue
 * makes (`instantiate/trampoline.ts`, `instantiate/memory.ts`) and tests.
 *
 * @module
 */

/**
 * Decodes an unsigned LEB128 `u32` from the bytes `next()` yields, one per call.
 * Returns undefined if the encoding runs past the 5 bytes a u32 may take.
 */
export function readU32(next: () => number): number | undefined {
  let result = 0;
  for (let shift = 0; shift <= 28; shift += 7) {
    const b = next();
    result += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) return result;
  }
  return undefined;
}

/**
 * Decodes a signed LEB128 integer of at most `bits` bits (32 for `s32`, 33 for the
 * component model's `s33`) from the bytes `next()` yields. Returns undefined if the
 * encoding runs past the `ceil(bits / 7)` bytes such an integer may take.
 */
export function readSigned(next: () => number, bits: number): number | undefined {
  const maxShift = Math.ceil(bits / 7) * 7;
  let result = 0;
  let shift = 0;
  let b: number;
  do {
    if (shift >= maxShift) return undefined;
    b = next();
    // Arithmetic, not bitwise: 33-bit values do not fit JavaScript's 32-bit operators.
    result += (b & 0x7f) * 2 ** shift;
    shift += 7;
  } while (b & 0x80);
  return (b & 0x40) ? result - 2 ** shift : result;
}

/** The unsigned LEB128 encoding of `n` (a u32). */
export function encodeU32(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

/** A wasm `name`: its UTF-8 bytes after their length as a u32. */
export function encodeName(name: string): number[] {
  const bytes = new TextEncoder().encode(name);
  return [...encodeU32(bytes.length), ...bytes];
}

/** The signed LEB128 encoding of `n` (a safe integer: an `i32.const` or `i64.const`). */
export function encodeSigned(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = ((n % 128) + 128) % 128;
    n = Math.floor(n / 128);
    const done = (n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0);
    out.push(done ? b : b | 0x80);
    if (done) return out;
  }
}
