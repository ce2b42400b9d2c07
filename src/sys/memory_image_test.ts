import assert from "node:assert/strict";
import { allowPageScan, MemoryImage, pageScanInUse, residentWins } from "./memory_image.ts";

const PAGE = 65536;
const OS_PAGE = 4096;

/** The minor page faults of the calling thread so far. */
function minorFaults(): number {
  // Not the process's: V8's helper threads fault too, whenever they run.
  return Number(Deno.readTextFileSync("/proc/thread-self/stat").split(") ")[1].split(" ")[7]);
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
  // Word by word (a 64 MiB memory byte by byte through a callback takes seconds).
  const words = new Uint32Array(memory.buffer);
  const want = new Uint32Array(expected.buffer, expected.byteOffset, expected.length / 4);
  let first = -1;
  for (let i = 0; i < words.length; i++) {
    if (words[i] !== want[i]) {
      first = i * 4;
      break;
    }
  }
  assert.equal(first, -1, `${what}: bytes from ${first} differ from the image`);
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
  // Big memory, few pages written: copied back (found by PAGEMAP_SCAN), or, reading
  // the whole page table, after the first reset (which learns the count) madvise is
  // cheaper; either way the memory reads as the image.
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

/** Offsets of one byte in each of `pages` 4 KiB pages spread over the memory's 2 MiB blocks. */
function spread(bytes: number, seed: number): number[] {
  const at: number[] = [];
  for (let block = 0; block < bytes / (2 << 20); block++) {
    at.push(block * (2 << 20) + ((block * 131 + seed * 17) % 512) * OS_PAGE + seed);
  }
  return at;
}

for (const scan of [true, false]) {
  const how = scan ? "PAGEMAP_SCAN" : "the pagemap read";
  Deno.test(`MemoryImage.reset by ${how}: writes anywhere in 64 MiB, above any earlier ones`, () => {
    allowPageScan(scan);
    try {
      if (scan) assert.ok(pageScanInUse(), "this kernel has PAGEMAP_SCAN (Linux 6.7+)");
      const { image, memory, expected } = mapped(1024);
      const bytes = new Uint8Array(memory.buffer);
      // A few pages low down first (what a hello writes), then pages far above them:
      // in every 2 MiB block, the last page, one byte in the image data, and a page
      // read (not written) that must stay the image.
      const rounds = [
        [0, 5 * OS_PAGE, 9 * OS_PAGE],
        spread(bytes.length, 1),
        [
          bytes.length - 1,
          bytes.length - 3 * OS_PAGE + 5,
          bytes.length / 2 + 12345,
        ],
        spread(bytes.length, 2),
        [100, 4000, 33 * OS_PAGE + 1],
        // More separate runs than one scan returns (every other page, 600 of them).
        Array.from({ length: 600 }, (_, i) => (1000 + 2 * i) * OS_PAGE + 7),
      ];
      let read = 0;
      for (const [round, offsets] of rounds.entries()) {
        read += bytes[40 * OS_PAGE + round];
        for (const at of offsets) bytes[at] = 0xa5 ^ round;
        image.reset(memory.buffer);
        assertImage(memory, expected, `${how}, round ${round}`);
      }
      assert.equal(read, 0);
      // Pages written again after a copy-back do not fault again.
      for (const at of spread(bytes.length, 3)) bytes[at] = 1;
      image.reset(memory.buffer);
      const before = minorFaults();
      for (const at of spread(bytes.length, 3)) bytes[at] = 1;
      if (scan) assert.ok(minorFaults() - before < 8, "written pages stayed resident");
      image.reset(memory.buffer);
      assertImage(memory, expected, `${how}, resident pages written again`);
      // Given back (madvise), then written: still found.
      image.reset(memory.buffer, false);
      bytes[bytes.length - 2 * OS_PAGE] = 3;
      image.reset(memory.buffer);
      assertImage(memory, expected, `${how}, after pages were given back`);
      image.close();
    } finally {
      allowPageScan(true);
    }
  });
}

for (const scan of [true, false]) {
  const how = scan ? "PAGEMAP_SCAN" : "the pagemap read";
  Deno.test(`MemoryImage.reset by ${how}: counts the grown pages it zeroed; those only read (the zero page) ${scan ? "it leaves" : "too"}`, () => {
    allowPageScan(scan);
    const { image, memory, expected } = mapped(2);
    try {
      memory.grow(1);
      const bytes = new Uint8Array(memory.buffer);
      let sum = 0;
      for (let at = 2 * PAGE; at < bytes.length; at += OS_PAGE) sum += bytes[at];
      assert.equal(sum, 0);
      bytes[2 * PAGE + 5 * OS_PAGE + 1] = 1;
      bytes[2 * PAGE + 9 * OS_PAGE] = 2;
      // The page-table read cannot tell the zero page (its frame numbers need privileges).
      const zeroed = image.reset(memory.buffer);
      assert.equal(zeroed, scan && pageScanInUse() ? 2 : PAGE / OS_PAGE);
      assert.ok(new Uint8Array(memory.buffer, 2 * PAGE).every((b) => b === 0));
      assert.deepEqual(new Uint8Array(memory.buffer, 0, 2 * PAGE), expected);
      // Zeroing all past the image at once (the pages there are resident anyway).
      new Uint8Array(memory.buffer).fill(0xcd, 2 * PAGE);
      new Uint8Array(memory.buffer)[10] = 0xcd;
      assert.equal(image.reset(memory.buffer, true, true), PAGE / OS_PAGE);
      assert.ok(new Uint8Array(memory.buffer, 2 * PAGE).every((b) => b === 0));
      assert.deepEqual(new Uint8Array(memory.buffer, 0, 2 * PAGE), expected);
      assert.equal(image.reset(memory.buffer, false), 0, "given back, none zeroed");
    } finally {
      image.close();
      allowPageScan(true);
    }
  });
}
