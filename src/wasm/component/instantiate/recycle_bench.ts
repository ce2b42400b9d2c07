// Per-instance memory cost against memory size (1, 8, 64 MiB; data over 1/8 of it; 32
// pages touched per request): a recycled memory reset from its image, against today's
// pooled memory (zeroed, data copied by V8 at instantiation); and a guest that grows 32
// MiB per request. `deno bench -A` here.
import { encodeU32 } from "../leb128.ts";
import { prepareImage, readImage } from "./image.ts";
import { importMemory, MemoryPool } from "./memory.ts";
import { ImageMemories, restoreSlot, snapshotSlot } from "./recycle.ts";
import { virtualizeMemory } from "./vsize.ts";

function moduleWithData(pages: number, length: number): Uint8Array {
  const memory = [0x01, 0x00, ...encodeU32(pages)];
  const data = [0x01, 0x00, 0x41, 0x00, 0x0b, ...encodeU32(length)];
  const body = new Uint8Array(data.length + length).fill(0x42);
  body.set(data);
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...[0x05, ...encodeU32(memory.length), ...memory],
    ...[0x0b, ...encodeU32(body.length)],
    ...body,
  ]);
}

const touch = (memory: WebAssembly.Memory) => {
  const bytes = new Uint8Array(memory.buffer);
  for (let p = 0; p < 32; p++) bytes[p * 4096 * 7] = p;
};

for (const mib of [1, 8, 64]) {
  const pages = mib * 16;
  const rewritten = importMemory(moduleWithData(pages, (mib << 20) / 8))!;
  const today = new WebAssembly.Module(rewritten.bytes as BufferSource);
  const pool = new MemoryPool(rewritten.memory);
  Deno.bench(
    `${mib} MiB: today (pooled or new memory, data copied)`,
    { group: `${mib} MiB` },
    () => {
      const memory = pool.take();
      new WebAssembly.Instance(today, { [rewritten.memory.module]: { memory } });
      touch(memory);
      pool.give(memory);
    },
  );
  const prepared = prepareImage(rewritten.bytes);
  if (prepared.kind !== "prepared") throw new Error(prepared.reason);
  const imaged = new WebAssembly.Module(prepared.bytes as BufferSource);
  const memories = new ImageMemories(rewritten.memory, readImage(imaged));
  const kept = memories.take();
  new WebAssembly.Instance(imaged, { [rewritten.memory.module]: { memory: kept } });
  Deno.bench(`${mib} MiB: recycled (image reset)`, { group: `${mib} MiB`, baseline: true }, () => {
    touch(kept);
    memories.reset(kept);
  });
}

// A guest that grows its memory by 32 MiB and writes all of it per request (as the .NET
// runtime's heap does): recycled with a virtual memory size (vsize.ts; the memory reset,
// its size set back), against a fresh memory per request, dropped after it.
// (module (memory 17) (func (export "run")
//   (memory.fill (i32.shl (memory.grow (i32.const 512)) (i32.const 16)) (i32.const 0xab)
//     (i32.const 33554432))))
// deno-fmt-ignore
const GROW = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  0x01, 0x04, 0x01, 0x60, 0x00, 0x00,
  0x03, 0x02, 0x01, 0x00,
  0x05, 0x03, 0x01, 0x00, 0x11,
  0x07, 0x07, 0x01, 0x03, 0x72, 0x75, 0x6e, 0x00, 0x00,
  0x0a, 0x17, 0x01, 0x15, 0x00, 0x41, 0x80, 0x04, 0x40, 0x00, 0x41, 0x10, 0x74,
  0x41, 0xab, 0x01, 0x41, 0x80, 0x80, 0x80, 0x10, 0xfc, 0x0b, 0x00, 0x0b,
]);
{
  const rewritten = importMemory(GROW)!;
  const virtual = virtualizeMemory(rewritten.bytes, rewritten.memory);
  if (virtual.kind !== "rewritten") throw new Error(virtual.reason);
  const prepared = prepareImage(virtual.bytes);
  if (prepared.kind !== "prepared") throw new Error(prepared.reason);
  const module = new WebAssembly.Module(prepared.bytes as BufferSource);
  const imports = (memory: WebAssembly.Memory) => ({ [rewritten.memory.module]: { memory } });
  const memories = new ImageMemories(rewritten.memory, readImage(module), true);
  const kept = memories.take();
  const instance = new WebAssembly.Instance(module, imports(kept));
  const snapshot = snapshotSlot([{ exports: instance.exports, ...prepared.reset }]);
  const run = instance.exports.run as () => void;
  Deno.bench("grows 32 MiB and writes it: recycled (virtual size)", {
    group: "grow",
    baseline: true,
  }, () => {
    run();
    memories.reset(kept);
    restoreSlot(snapshot);
  });
  const fresh = new ImageMemories(rewritten.memory, readImage(module));
  Deno.bench("grows 32 MiB and writes it: a fresh memory, dropped", { group: "grow" }, () => {
    const memory = fresh.take();
    (new WebAssembly.Instance(module, imports(memory)).exports.run as () => void)();
    fresh.give(memory);
  });
}
