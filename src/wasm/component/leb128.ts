/**
 * LEB128 decoding shared by the component readers (`inspect.ts`, `instantiate/plan.ts`,
 * `instantiate/shim.ts`), each of which reports malformed input in its own terms; and the
 * encoding of the modules the glue makes (`instantiate/trampoline.ts`) and of tests.
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
