/**
 * Byte arrays joined: the one copy of the loop the tar writer, the module rewriter and
 * the ttrpc tests all need.
 *
 * @module
 */

/** `parts` one after another in a new array. */
export function concatBytes(parts: readonly ArrayLike<number>[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
