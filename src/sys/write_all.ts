/**
 * Writes that loop over short writes.
 *
 * @module
 */

/** Writes all of `bytes` to `target` (stdout, stderr, a file), looping over short writes. */
export function writeAllSync(
  target: { writeSync(p: Uint8Array): number },
  bytes: Uint8Array,
): void {
  for (let off = 0; off < bytes.length;) off += target.writeSync(bytes.subarray(off));
}

/** Writes all of `data` to `conn` (a socket), looping over short writes. */
export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let written = 0;
  while (written < data.length) written += await conn.write(data.subarray(written));
}
