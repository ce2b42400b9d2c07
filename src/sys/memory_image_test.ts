import assert from "node:assert/strict";
import { MemoryImage, residentWins } from "./memory_image.ts";

const PAGE = 65536;
const OS_PAGE = 4096;

/** The minor page faults of this process so far. */
function minorFaults(): number {
  return Number(Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ")[7]);
}

/** A memory of `pages` wasm pages with `image` mapped over it, and what it must read as. */
function mapped(pages: number) {
  const bytes = pages * PAGE;
  const runs = [
    { offset: 100, bytes: new Uint8Array(5000).fill(7) },
    { offset: bytes - 3 * OS_PAGE, bytes: new Uint8Array(OS_PAGE).fill(9) },
  ];
  const image = new MemoryImage(bytes, runs);
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages + 1 });
  image.mapOnto(memory.buffer);
  const expected = new Uint8Array(bytes);
  for (const run of runs) expected.set(run.bytes, run.offset);
  return { image, memory, expected };
}

/** Writes to `count` 4 KiB pages spread over the memory (image pages and zero pages). */
function scribble(memory: WebAssembly.Memory, count: number, seed: number): void {
  const bytes = new Uint8Array(memory.buffer);
  const osPages = bytes.length / OS_PAGE;
  for (let i = 0; i < count; i++) bytes[((i * 37 + seed) % osPages) * OS_PAGE + (i % 97)] = 0xee;
}

function assertImage(memory: WebAssembly.Memory, expected: Uint8Array, what: string): void {
  const bytes = new Uint8Array(memory.buffer);
  const first = bytes.findIndex((b, i) => b !== expected[i]);
  assert.equal(first, -1, `${what}: byte ${first} differs from the image`);
}

Deno.test("MemoryImage.reset: the image again after writes, by page table and by madvise", () => {
  // Small memory, many pages written: private pages are copied back (and stay).
  const small = mapped(4);
  for (let round = 0; round < 5; round++) {
    scribble(small.memory, 40, round);
    small.image.reset(small.memory.buffer);
    assertImage(small.memory, small.expected, `small, round ${round}`);
  }
  // Copied back, the pages written again do not fault again.
  scribble(small.memory, 40, 0);
  small.image.reset(small.memory.buffer);
  const before = minorFaults();
  scribble(small.memory, 40, 0);
  assert.ok(minorFaults() - before < 10, "written pages stayed resident");
  small.image.reset(small.memory.buffer);
  assertImage(small.memory, small.expected, "small, resident pages written again");
  // Big memory, few pages written: after the first reset (which learns the count),
  // madvise is cheaper; either way the memory reads as the image.
  assert.equal(residentWins(64 * 16 * 16, 3), false);
  const big = mapped(1024);
  for (let round = 0; round < 3; round++) {
    scribble(big.memory, 3, round);
    big.image.reset(big.memory.buffer);
    assertImage(big.memory, big.expected, `big, round ${round}`);
  }
  small.image.close();
  big.image.close();
});

Deno.test("residentWins: copying back wins for few pages of table or many written pages", () => {
  assert.equal(residentWins(256, 1), true); // 1 MiB
  assert.equal(residentWins(2320, 116), true); // the componentize-js guest
  assert.equal(residentWins(16384, 7), false); // 64 MiB, a hello
  assert.equal(residentWins(16384, 100), true);
});
