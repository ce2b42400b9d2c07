/**
 * Reusing linear memories between instances, zeroed: a plan rewrite (done once per
 * transpile) and a per-thread pool.
 *
 * Why: with V8's trap handler, every `WebAssembly.Memory` reserves a 10 GiB guard
 * region; allocating one and freeing it (at the next full GC) costs five system calls
 * with a TLB shootdown, and the external memory drives frequent full GCs. For a small
 * component that was a quarter of the server's CPU per request (measured with `strace`
 * and `perf`, see `bench/RESULTS.md`).
 *
 * How: a core module that defines one plain memory (not shared, 32-bit, default page
 * size) is rewritten to import it instead ({@linkcode importMemory}); the instance's
 * memory is then supplied when it is created ({@linkcode MemoryPool}).
 *
 * Why that keeps an instance fresh (a request never sees another request's memory):
 * - a memory goes back to the pool only when its instance has *ended* (its export calls
 *   settled: nothing can run in it again; the instance is marked dead, so its exports
 *   refuse to run), and only if it never grew: a grown memory is dropped;
 * - it is zeroed, all of it, right before it is given to a new instance, which then
 *   writes its data segments as any instantiation does, so the new instance starts from
 *   exactly the state a newly allocated memory gives (same size, same bytes);
 * - each memory is in the pool at most once and leaves it to exactly one instance.
 *
 * @module
 */

import { BinaryReader } from "../binary.ts";
import { encodeName, encodeU32 } from "../leb128.ts";

/** Where the rewritten module imports its memory from. */
export const MEMORY_IMPORT = { module: "containerd-shim-wasmtime:lean", name: "memory" } as const;

/** Largest memory kept for reuse (zeroing a bigger one costs more than a new one). */
export const MAX_POOLED_MEMORY_BYTES = 4 << 20;
/** Most bytes of memories kept for reuse per component and thread. */
export const MAX_POOL_BYTES = 64 << 20;

const PAGE = 65536;

/** The memory a rewritten module imports: its declared limits. */
export interface ImportedMemory {
  module: string;
  name: string;
  /** Pages. */
  initial: number;
  maximum: number | null;
}

/**
 * `module` rewritten to import its one memory (same limits) from
 * {@linkcode MEMORY_IMPORT}, or null if it does not define exactly one plain memory
 * (then it keeps its own).
 */
export function importMemory(
  module: Uint8Array,
): { bytes: Uint8Array; memory: ImportedMemory } | null {
  const sections: { id: number; start: number; end: number }[] = [];
  let memory: ImportedMemory | null = null;
  try {
    const c = new BinaryReader(module, 8, module.length);
    while (!c.done) {
      const start = c.offset;
      const id = c.byte();
      const size = c.u32();
      const end = c.offset + size;
      if (end > module.length) return null;
      if (id === 2) {
        // An imported memory: the module already takes one (or two, then it is left).
        const s = c.sub(size);
        for (let n = s.u32(); n > 0; n--) {
          for (let k = 0; k < 2; k++) s.skip(s.u32());
          const kind = s.byte();
          if (kind === 0x02) return null;
          if (kind === 0x00) s.u32();
          else if (kind === 0x01) {
            s.byte();
            skipLimits(s);
          } else if (kind === 0x03) s.skip(2);
          else return null;
        }
        // A section read other than exactly means a construct not understood here.
        if (!s.done) return null;
      }
      if (id === 5) {
        const s = c.sub(size);
        if (s.u32() !== 1) return null;
        const flag = s.byte();
        if (flag !== 0x00 && flag !== 0x01) return null;
        const initial = s.u32();
        const maximum = flag === 0x01 ? s.u32() : null;
        if (!s.done) return null;
        memory = { ...MEMORY_IMPORT, initial, maximum };
      }
      sections.push({ id, start, end });
      c.offset = end;
    }
  } catch {
    return null;
  }
  if (memory === null) return null;
  const entry = [
    ...encodeName(memory.module),
    ...encodeName(memory.name),
    0x02,
    ...(memory.maximum === null
      ? [0x00, ...encodeU32(memory.initial)]
      : [0x01, ...encodeU32(memory.initial), ...encodeU32(memory.maximum)]),
  ];
  // Pieces of the output, joined once: a module of megabytes (a componentize-js guest's
  // is 13 MB) built as a number[] costs ~1 s and half a gigabyte of JS heap.
  const parts: Uint8Array[] = [module.subarray(0, 8)];
  let imported = false;
  const addImports = (existing: Uint8Array | null) => {
    const s = existing ? new BinaryReader(existing, 0, existing.length) : null;
    const count = s ? s.u32() : 0;
    const rest = existing && s ? existing.subarray(s.offset) : new Uint8Array(0);
    const head = encodeU32(count + 1);
    const size = head.length + rest.length + entry.length;
    parts.push(new Uint8Array([2, ...encodeU32(size), ...head]), rest, new Uint8Array(entry));
    imported = true;
  };
  for (const { id, start, end } of sections) {
    if (id === 5) continue;
    if (id === 2) {
      const body = new BinaryReader(module, start + 1, end);
      body.u32();
      addImports(module.subarray(body.offset, end));
      continue;
    }
    // No import section: it goes after the type section, before any later known one.
    if (!imported && id !== 0 && id !== 1) addImports(null);
    parts.push(module.subarray(start, end));
  }
  if (!imported) addImports(null);
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return WebAssembly.validate(bytes) ? { bytes, memory } : null;
}

function skipLimits(s: BinaryReader): void {
  const flag = s.byte();
  s.u32();
  if (flag & 0x01) s.u32();
}

/** Zeroed memories of one declared size, for reuse by later instances (see above). */
export class MemoryPool {
  #free: WebAssembly.Memory[] = [];
  #pooled = new WeakSet<WebAssembly.Memory>();
  #bytes: number;
  #limit: number;

  /** A pool for memories declared as `memory`. */
  constructor(readonly memory: ImportedMemory, limitBytes = MAX_POOL_BYTES) {
    this.#bytes = memory.initial * PAGE;
    this.#limit = this.#bytes > MAX_POOLED_MEMORY_BYTES
      ? 0
      : Math.floor(limitBytes / Math.max(this.#bytes, PAGE));
  }

  /** A memory for a new instance: a pooled one, zeroed, or a new one. */
  take(): WebAssembly.Memory {
    const pooled = this.#free.pop();
    if (pooled !== undefined) {
      this.#pooled.delete(pooled);
      new Uint8Array(pooled.buffer).fill(0);
      return pooled;
    }
    const { initial, maximum } = this.memory;
    return new WebAssembly.Memory(
      maximum === null ? { initial } : { initial, maximum },
    );
  }

  /**
   * Takes back the memory of an instance that has ended (nothing can run in it any
   * more); one that grew, or one too many, is left to the garbage collector.
   */
  give(memory: WebAssembly.Memory): void {
    if (memory.buffer.byteLength !== this.#bytes || this.#free.length >= this.#limit) return;
    if (this.#pooled.has(memory)) throw new Error("lean glue: a memory was given back twice");
    this.#pooled.add(memory);
    this.#free.push(memory);
  }

  /** Memories waiting for reuse. */
  get size(): number {
    return this.#free.length;
  }

  /** Size of the memories (their initial size). */
  get byteLength(): number {
    return this.#bytes;
  }
}
