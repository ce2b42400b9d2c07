import assert from "node:assert/strict";
import { encodeName, encodeSigned, encodeU32, readSigned, readU32 } from "./leb128.ts";

/** `next()` over `bytes`. */
const from = (bytes: number[]) => {
  let i = 0;
  return () => bytes[i++];
};

Deno.test("readU32 reads what encodeU32 writes; more than 5 bytes is refused", () => {
  for (const n of [0, 1, 127, 128, 624485, 2 ** 32 - 1]) {
    assert.equal(readU32(from(encodeU32(n))), n, String(n));
  }
  assert.equal(readU32(from([0x80, 0x80, 0x80, 0x80, 0x80, 0x00])), undefined);
});

Deno.test("readSigned: s32 and s33 values, sign-extended; over-long encodings refused", () => {
  assert.equal(readSigned(from([0x7f]), 32), -1);
  assert.equal(readSigned(from([0x3f]), 32), 63);
  assert.equal(readSigned(from([0xc0, 0xbb, 0x78]), 32), -123456);
  assert.equal(readSigned(from([0x80, 0x80, 0x80, 0x80, 0x78]), 32), -(2 ** 31));
  assert.equal(readSigned(from([0xff, 0xff, 0xff, 0xff, 0x07]), 32), 2 ** 31 - 1);
  assert.equal(readSigned(from([0xff, 0xff, 0xff, 0xff, 0x0f]), 33), 2 ** 32 - 1);
  assert.equal(readSigned(from([0x80, 0x80, 0x80, 0x80, 0x70]), 33), -(2 ** 32));
  assert.equal(readSigned(from([0x80, 0x80, 0x80, 0x80, 0x80, 0x00]), 33), undefined);
});

Deno.test("encodeName: length, then UTF-8", () => {
  assert.deepEqual(encodeName("é"), [2, 0xc3, 0xa9]);
});

Deno.test("readSigned reads what encodeSigned writes", () => {
  for (const n of [0, 1, -1, 63, 64, -64, -65, 65536, 2 ** 31 - 1, -(2 ** 31), 2 ** 32]) {
    assert.equal(readSigned(from(encodeSigned(n)), 64), n, String(n));
  }
  assert.deepEqual(encodeSigned(-1), [0x7f]);
  assert.deepEqual(encodeSigned(64), [0xc0, 0x00]);
});
