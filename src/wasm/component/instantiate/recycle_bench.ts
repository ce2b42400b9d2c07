// Per-instance memory cost against memory size (1, 8, 64 MiB; data over 1/8 of it; 32
// pages touched per request): a recycled memory reset from its image, against today's
// pooled memory (zeroed, data copied by V8 at instantiation). `deno bench -A` here.
import { encodeU32 } from "../leb128.ts";
import { prepareImage, readImage } from "./image.ts";
import { importMemory, MemoryPool } from "./memory.ts";
import { ImageMemories } from "./recycle.ts";

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
