import assert from "node:assert/strict";
import { MemoryImage, NotMappable } from "../../../sys/memory_image.ts";
import { encodeU32 } from "../leb128.ts";
import {
  IMAGE_SECTION,
  MAX_IMAGE_BYTES,
  prepareImage,
  readImage,
  RESET_EXPORT_PREFIX,
} from "./image.ts";
import { importMemory } from "./memory.ts";
import { ImageMemories, SHED_GROWN_EVERY } from "./recycle.ts";

const core = (name: string) =>
  Deno.readFileSync(new URL(`../testdata/image/${name}.wasm`, import.meta.url));

/** What `plan.ts` does to a core module: memory imported, then prepared. */
function prepare(bytes: Uint8Array, maxImageBytes?: number) {
  return prepareImage(importMemory(bytes)?.bytes ?? bytes, { maxImageBytes });
}

/** `(module (memory pages) (data (i32.const offset) <length bytes of 0x42>))`, built here. */
function moduleWithData(pages: number, offset: number, length: number): Uint8Array {
  const memory = [0x01, 0x00, ...encodeU32(pages)];
  const data = [0x01, 0x00, 0x41, ...encodeU32(offset), 0x0b, ...encodeU32(length)];
  const body = new Uint8Array(data.length + length).fill(0x42);
  body.set(data);
  return new Uint8Array([
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00,
    0x05,
    ...encodeU32(memory.length),
    ...memory,
    0x0b,
    ...encodeU32(body.length),
    ...body,
  ]);
}

Deno.test("prepareImage: modules it cannot image keep today's path, with the reason", () => {
  const cases: [string, RegExp][] = [
    ["two_memories", /2 memories \(multi-memory\)/],
    ["shared_memory", /shared \(threads\)/],
    ["memory64", /64-bit \(memory64\)/],
    ["global_offset", /offset is not an i32\.const/],
    ["externref_table", /externref/],
    ["v128_global", /v128 global/],
  ];
  for (const [name, reason] of cases) {
    const got = prepare(core(name));
    assert.equal(got.kind, "fallback", name);
    assert.match(got.kind === "fallback" ? got.reason : "", reason, name);
  }
  const bad = prepareImage(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 99]));
  assert.equal(bad.kind, "fallback");
});

Deno.test("prepareImage: no memory: only globals and tables to set back", () => {
  const got = prepare(core("no_memory"));
  assert.ok(got.kind === "prepared");
  assert.deepEqual(got.reset, {
    globals: [`${RESET_EXPORT_PREFIX}g0`],
    tables: [],
    image: false,
    fresh: null,
  });
  const instance = new WebAssembly.Instance(new WebAssembly.Module(got.bytes as BufferSource));
  assert.ok(instance.exports[`${RESET_EXPORT_PREFIX}g0`] instanceof WebAssembly.Global);
});

Deno.test("prepareImage: passive segments and start functions get fresh instances over the image", () => {
  const passive = prepare(core("passive"));
  assert.ok(passive.kind === "prepared");
  assert.match(passive.reset.fresh!, /passive data segments/);
  const start = prepare(core("start"));
  assert.ok(start.kind === "prepared");
  assert.match(start.reset.fresh!, /start function/);
  // The passive segment is intact, the active one is in the image.
  const module = new WebAssembly.Module(passive.bytes as BufferSource);
  const memories = new ImageMemories(
    { module: "m", name: "memory", initial: 1, maximum: null },
    readImage(module),
  );
  for (let i = 0; i < 3; i++) {
    const memory = memories.take();
    const ex = new WebAssembly.Instance(module, { "containerd-shim-wasmtime:lean": { memory } })
      .exports as { init(): number; drop(): void; peek(a: number): number };
    assert.equal(ex.peek(16), "a".charCodeAt(0), "active data comes from the image");
    assert.equal(ex.init(), "p".charCodeAt(0), "the passive segment is there");
    ex.drop();
    memories.give(memory);
  }
});

Deno.test("prepareImage: big data goes into the image up to the limit, past it today's path", () => {
  const bytes = moduleWithData(32, 65536, 256 << 10);
  const small = prepare(bytes, 65536);
  assert.equal(small.kind, "fallback");
  assert.match(small.kind === "fallback" ? small.reason : "", /exceed 65536 bytes/);
  const got = prepare(bytes);
  assert.ok(
    got.kind === "prepared" && got.imageBytes === 256 << 10 && MAX_IMAGE_BYTES > got.imageBytes,
  );
  assert.ok(got.bytes.length < bytes.length + 200, "the data moved, not copied");
  const module = new WebAssembly.Module(got.bytes as BufferSource);
  assert.equal(WebAssembly.Module.customSections(module, IMAGE_SECTION).length, 1);
  const memories = new ImageMemories(
    { module: "m", name: "memory", initial: 32, maximum: null },
    readImage(module),
  );
  assert.equal(memories.copyReason, null, "mapped copy-on-write");
  const memory = memories.take();
  new WebAssembly.Instance(module, { "containerd-shim-wasmtime:lean": { memory } });
  const view = new Uint8Array(memory.buffer);
  assert.deepEqual([view[65535], view[65536], view[65536 + 262143], view[65536 + 262144]], [
    0,
    0x42,
    0x42,
    0,
  ]);
  view[65536] = 1;
  view[30 << 16] = 1;
  assert.ok(memories.reset(memory));
  assert.deepEqual([view[65536], view[30 << 16]], [0x42, 0], "reset reads as the image again");
  memory.grow(1);
  assert.equal(memories.reset(memory), false, "a grown memory is not reset");
  // Data past the initial memory traps at instantiation: not imaged.
  const past = prepare(moduleWithData(1, 65530, 10));
  assert.equal(past.kind, "fallback");
});

Deno.test("MemoryImage: refuses shared and other-sized memories, keeps content across grow, resets a grown one", () => {
  const image = new MemoryImage(65536, [{ offset: 10, bytes: new Uint8Array([1, 2, 3]) }]);
  try {
    const shared = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
    assert.throws(() => image.mapOnto(shared.buffer), NotMappable);
    assert.throws(() => image.mapOnto(new WebAssembly.Memory({ initial: 2 }).buffer), NotMappable);
    const m = new WebAssembly.Memory({ initial: 1 });
    image.mapOnto(m.buffer);
    assert.deepEqual([...new Uint8Array(m.buffer, 9, 5)], [0, 1, 2, 3, 0]);
    const other = new WebAssembly.Memory({ initial: 1 });
    image.mapOnto(other.buffer);
    new Uint8Array(m.buffer)[10] = 9;
    assert.equal(new Uint8Array(other.buffer)[10], 1, "writes are private to each memory");
    m.grow(1);
    const b = new Uint8Array(m.buffer);
    assert.deepEqual([b[10], b[65536 + 10]], [9, 0]);
    // V8 grew it in place: the image is still mapped under the first page, and a reset
    // sets it back and zeroes the pages past it, whether kept resident or given back.
    for (const keepResident of [true, false]) {
      b[10] = 9;
      b[65536 + 10] = 7;
      b[2 * 65536 - 1] = 7;
      image.reset(m.buffer, keepResident);
      assert.deepEqual([b[10], b[65536 + 10], b[2 * 65536 - 1]], [1, 0, 0]);
    }
    assert.throws(() => image.reset(new WebAssembly.Memory({ initial: 0 }).buffer), NotMappable);
  } finally {
    image.close();
  }
});

Deno.test("ImageMemories: a memory that grew (into huge pages) reads as the image and zeros after a reset, only if allowed", () => {
  const decl = { module: "m", name: "memory", initial: 17, maximum: null };
  const run = { offset: 100, bytes: new Uint8Array([1, 2, 3]) };
  const refusing = new ImageMemories(decl, [run]);
  const grown = refusing.take();
  grown.grow(1);
  assert.equal(refusing.reset(grown), false, "grown memories are not reused by default");
  const memories = new ImageMemories(decl, [run], true);
  const memory = memories.take();
  const initial = 17 * 65536;
  // 8 MiB past the image: room for 2 MiB pages once the first reset asked for them.
  for (let round = 0; round < 3; round++) {
    if (memory.buffer.byteLength === initial) memory.grow(128);
    const bytes = new Uint8Array(memory.buffer);
    for (let at = initial; at < bytes.length; at += 4096) assert.equal(bytes[at], 0, `${at}`);
    bytes.fill(0xab, initial);
    bytes[100] = 9;
    assert.ok(memories.reset(memory));
    assert.equal(memory.buffer.byteLength, initial + 128 * 65536, "it stays grown");
    const after = new Uint8Array(memory.buffer);
    assert.equal(after[100], 1);
    assert.ok(
      after.subarray(initial).every((b) => b === 0),
      `round ${round}: zeros past the image`,
    );
  }
  memories.shedGrown(memory);
  assert.ok(new Uint8Array(memory.buffer).subarray(initial).every((b) => b === 0));
});

/** How many 4 KiB pages of `memory` from byte `from` on are resident (the page table). */
function residentPages(memory: WebAssembly.Memory, from: number): number {
  const base = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(memory.buffer)));
  const pages = (memory.buffer.byteLength - from) / 4096;
  const entries = new BigUint64Array(pages);
  using file = Deno.openSync("/proc/self/pagemap");
  file.seekSync(Number((base + BigInt(from)) / 4096n) * 8, Deno.SeekMode.Start);
  const bytes = new Uint8Array(entries.buffer);
  for (let got = 0; got < bytes.length;) got += file.readSync(bytes.subarray(got)) ?? 0;
  return entries.filter((e) => (e & (1n << 63n)) !== 0n).length;
}

Deno.test("ImageMemories: a grown memory gives back the grown pages its guest no longer writes, and keeps those it writes again", () => {
  const decl = { module: "m", name: "memory", initial: 17, maximum: null };
  const initial = 17 * 65536;
  const grownPages = 64 * 16; // 4 MiB
  const zeros = (memory: WebAssembly.Memory, what: string) => {
    const words = new Uint32Array(memory.buffer, initial);
    let any = 0;
    for (let i = 0; i < words.length; i++) any |= words[i];
    assert.equal(any, 0, what);
  };

  // Grew into 4 MiB and wrote it once, then writes one page per request.
  const memories = new ImageMemories(decl, [], true);
  const little = memories.take();
  little.grow(64);
  // The first reset after growing drops the grown pages (to fault them in as huge ones).
  for (let i = 0; i < 2; i++) {
    new Uint8Array(little.buffer).fill(0xab, initial);
    assert.ok(memories.reset(little));
  }
  assert.equal(residentPages(little, initial), grownPages, "zeroed, and resident");
  for (let round = 1; round <= SHED_GROWN_EVERY + 1; round++) {
    new Uint8Array(little.buffer)[initial + 5000] = round;
    assert.ok(memories.reset(little));
    assert.equal(new Uint8Array(little.buffer)[initial + 5000], 0, `round ${round}`);
  }
  const left = residentPages(little, initial);
  assert.ok(left <= 2, `only the page written since stays resident (${left})`);
  zeros(little, "zeros past the image");

  // Writes all of it every time: giving it back does not pay, so it is done ever less often.
  const all = memories.take();
  all.grow(64);
  let sheds = 0;
  for (let round = -1; round < 120; round++) {
    new Uint8Array(all.buffer).fill(round + 1, initial);
    assert.ok(memories.reset(all));
    const resident = residentPages(all, initial);
    if (round < 0) continue;
    if (resident === 0) sheds++;
    else assert.equal(resident, grownPages, `round ${round}`);
    // Reading maps the zero page where they were given back: not counted as resident.
    zeros(all, `round ${round}: zeros past the image`);
  }
  // At resets 16, 48 and 112 (every 16 would be 7 times).
  assert.ok(sheds >= 1 && sheds <= 3, `${sheds} times given back in 120 resets`);
});
