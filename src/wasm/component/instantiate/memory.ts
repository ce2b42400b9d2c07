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

class Cursor {
  constructor(readonly b: Uint8Array, public i: number) {}
  u32(): number {
    let result = 0;
    let shift = 0;
    while (true) {
      if (this.i >= this.b.length) throw new Error("truncated");
      const x = this.b[this.i++];
      result += (x & 0x7f) * 2 ** shift;
      if ((x & 0x80) === 0) return result;
      shift += 7;
      if (shift > 28) throw new Error("bad LEB128");
    }
  }
}

function leb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}

function nameBytes(s: string): number[] {
  const b = new TextEncoder().encode(s);
  return [...leb(b.length), ...b];
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
    const c = new Cursor(module, 8);
    while (c.i < module.length) {
      const start = c.i;
      const id = module[c.i++];
      const size = c.u32();
      const end = c.i + size;
      if (end > module.length) return null;
      if (id === 2) {
        // An imported memory: the module already takes one (or two, then it is left).
        const s = new Cursor(module, c.i);
        for (let n = s.u32(); n > 0; n--) {
          for (let k = 0; k < 2; k++) {
            const len = s.u32();
            s.i += len;
          }
          const kind = module[s.i++];
          if (kind === 0x02) return null;
          if (kind === 0x00) s.u32();
          else if (kind === 0x01) {
            s.i++;
            skipLimits(s);
          } else if (kind === 0x03) s.i += 2;
          else return null;
        }
        // A section read other than exactly means a construct not understood here.
        if (s.i !== end) return null;
      }
      if (id === 5) {
        const s = new Cursor(module, c.i);
        if (s.u32() !== 1) return null;
        const flag = module[s.i++];
        if (flag !== 0x00 && flag !== 0x01) return null;
        const initial = s.u32();
        const maximum = flag === 0x01 ? s.u32() : null;
        if (s.i !== end) return null;
        memory = { ...MEMORY_IMPORT, initial, maximum };
      }
      sections.push({ id, start, end });
      c.i = end;
    }
  } catch {
    return null;
  }
  if (memory === null) return null;
  const entry = [
    ...nameBytes(memory.module),
    ...nameBytes(memory.name),
    0x02,
    ...(memory.maximum === null
      ? [0x00, ...leb(memory.initial)]
      : [0x01, ...leb(memory.initial), ...leb(memory.maximum)]),
  ];
  const out: number[] = [...module.subarray(0, 8)];
  let imported = false;
  const addImports = (existing: Uint8Array | null) => {
    const s = existing ? new Cursor(existing, 0) : null;
    const count = s ? s.u32() : 0;
    const body = [...leb(count + 1), ...(existing ? existing.subarray(s!.i) : []), ...entry];
    out.push(2, ...leb(body.length), ...body);
    imported = true;
  };
  for (const { id, start, end } of sections) {
    if (id === 5) continue;
    if (id === 2) {
      const body = new Cursor(module, start + 1);
      body.u32();
      addImports(module.subarray(body.i, end));
      continue;
    }
    // No import section: it goes after the type section, before any later known one.
    if (!imported && id !== 0 && id !== 1) addImports(null);
    for (let i = start; i < end; i++) out.push(module[i]);
  }
  if (!imported) addImports(null);
  const bytes = new Uint8Array(out);
  return WebAssembly.validate(bytes) ? { bytes, memory } : null;
}

function skipLimits(s: Cursor): void {
  const flag = s.b[s.i++];
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
}
