import assert from "node:assert/strict";
import { detectNative } from "./detect.ts";

const bytes = (...b: number[]) => new Uint8Array(b);
const text = (s: string) => new TextEncoder().encode(s);

Deno.test("ELF files are native", () => {
  assert.equal(detectNative(bytes(0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0)), "elf");
  assert.equal(detectNative(bytes(0x7f, 0x45, 0x4c, 0x46)), "elf");
});

Deno.test("#! scripts are native, with or without a space after #!", () => {
  assert.equal(detectNative(text("#!/bin/sh\necho hi\n")), "script");
  assert.equal(detectNative(text("#! /usr/bin/env python3")), "script");
  assert.equal(detectNative(text("#!")), "script");
});

Deno.test("wasm, text, truncated and empty files are not native", () => {
  assert.equal(detectNative(bytes(0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0)), undefined);
  assert.equal(detectNative(bytes(0x00, 0x61, 0x73, 0x6d, 0x0d, 0, 1, 0)), undefined);
  assert.equal(detectNative(text("hello from a file\n")), undefined);
  assert.equal(detectNative(text("# comment, not a shebang")), undefined);
  assert.equal(detectNative(bytes(0x7f, 0x45, 0x4c)), undefined, "a truncated ELF magic");
  assert.equal(detectNative(text("#")), undefined);
  assert.equal(detectNative(bytes()), undefined);
  assert.equal(detectNative(bytes(0x7e, 0x45, 0x4c, 0x46)), undefined);
});
