/**
 * What recycling an instance needs at run time: memories that start from an image
 * ({@linkcode ImageMemories}), and setting a kept instance's globals and tables back
 * ({@linkcode snapshotSlot}).
 *
 * Why: a new instance costs V8 work that grows with the guest (data segments copied
 * into every new memory, per-instance tables and dispatch for every function, garbage
 * that drives full GCs): milliseconds for a componentize-js guest. A recycled
 * instance costs its reset: per memory, the image copied back over the pages written
 * (or one `madvise`, then a page fault per page the next request writes; see
 * `sys/memory_image.ts`), and the mutable globals and tables code can write set back.
 *
 * Why that keeps a request from seeing what another left: after the reset every
 * piece of state a core instance has is what a new instance would have — its memory
 * reads as the image (the bytes its data segments write; pages past them read as
 * zeros), its mutable globals hold the values they had right after instantiation, its
 * tables the entries they had then (element segments of every core instance of the
 * component applied). Nothing else in a core instance can change (immutable globals,
 * code), and host state (handle tables, streams, bodies) is made per request. An
 * instance whose table grew is never reset: it is dropped. One whose memory grew is
 * reset only if its module's code sees a virtual memory size (`vsize.ts`, set back
 * with the other globals): then every page past the initial size reads as zeros
 * again, and the code sees the initial size.
 *
 * @module
 */

import {
  discardPages,
  hugePagesPast,
  MemoryImage,
  NotMappable,
} from "../../../sys/memory_image.ts";
import type { ImageRun } from "./image.ts";
import type { ImportedMemory } from "./memory.ts";

const PAGE = 65536;
const OS_PAGE = 4096;

/** Where a memory's bytes are (needs FFI, as a mapped image does). */
function addressOf(memory: WebAssembly.Memory): number | bigint {
  return Deno.UnsafePointer.value(Deno.UnsafePointer.of(memory.buffer));
}

/** Most memories (not held by an idle instance) kept for reuse per memory. */
export const MAX_LOOSE_MEMORIES = 16;
/**
 * Most idle instances (and, apart, loose memories) per pool whose written pages stay
 * resident after a reset (see `sys/memory_image.ts`): both are reused last in, first
 * out, so those below the top few wait long; their pages go back to the OS.
 */
export const RESIDENT_IDLE = 4;
/**
 * Of those, how many keep resident the pages their memory grew into (a guest that grows
 * 32 MiB per request would otherwise keep 4 × 32 MiB per pool and thread resident while
 * idle): the others give them back, and fault them in again (as huge pages, ~5 ms for
 * 32 MiB) when reused.
 */
export const RESIDENT_GROWN_IDLE = 1;

/**
 * Resets between two in which a memory that grew gives its grown pages back instead of
 * zeroing them (see {@linkcode ImageMemories.reset}): the fewest, while that pays off...
 */
export const SHED_GROWN_EVERY = 16;
/** ...and the most, for a guest that writes again all it grew into. */
export const SHED_GROWN_EVERY_MAX = 1024;

/** When a memory that grew next gives its grown pages back (see `ImageMemories.reset`). */
interface GrownShedding {
  /** Resets since it last gave them back. */
  since: number;
  /** Resets between two times it gives them back. */
  every: number;
  /** Pages past the initial size the last reset found resident (and zeroed). */
  resident: number;
  /** Those the reset before giving them back found (0: not just given back). */
  before: number;
}

/**
 * Memories of one declared size that start from an image: mapped copy-on-write from a
 * memfd where the system allows it (O(1) to set up and to reset), else copied.
 */
export class ImageMemories {
  #decl: ImportedMemory;
  #runs: ImageRun[];
  #image: MemoryImage | null = null;
  #bytes: number;
  #free: WebAssembly.Memory[] = [];
  /** Each memory's address when it was made (a grown one must not have moved). */
  #bases = new WeakMap<WebAssembly.Memory, number | bigint>();
  /** How far each grown memory has huge pages asked for (see `hugePagesPast`). */
  #huge = new WeakMap<WebAssembly.Memory, number>();
  /** When each grown memory next gives its grown pages back. */
  #shedding = new WeakMap<WebAssembly.Memory, GrownShedding>();
  /** Why the image is copied rather than mapped (null: mapped). */
  readonly copyReason: string | null;
  /**
   * Whether a memory that grew is reset and reused too: its module's code sees a
   * virtual size (see `vsize.ts`), and the container allows it.
   */
  grown: boolean;

  /**
   * @param grown whether memories that grew are reset and reused (see
   *   {@linkcode ImageMemories.grown})
   */
  constructor(decl: ImportedMemory, runs: ImageRun[], grown = false) {
    this.grown = grown;
    this.#decl = decl;
    this.#runs = runs;
    this.#bytes = decl.initial * PAGE;
    let reason: string | null = null;
    if (this.#bytes === 0) reason = "the memory has no initial pages";
    else {
      try {
        this.#image = new MemoryImage(this.#bytes, runs);
        // Probe once: a V8 whose memories cannot be mapped over copies from now on.
        const probe = this.#new();
        this.#image.mapOnto(probe.buffer);
        this.#free.push(probe);
        // The memfd holds the image now; the runs (views of a copy of the module's
        // image section: megabytes, per thread) only serve copying it.
        this.#runs = [];
      } catch (err) {
        this.#image?.close();
        this.#image = null;
        reason = `no copy-on-write image (${(err as Error).message})`;
      }
    }
    this.copyReason = reason;
  }

  #new(): WebAssembly.Memory {
    const { initial, maximum } = this.#decl;
    const memory = new WebAssembly.Memory(maximum === null ? { initial } : { initial, maximum });
    if (this.#image !== null) this.#bases.set(memory, addressOf(memory));
    return memory;
  }

  /**
   * Whether `memory` (one {@linkcode take} gave) can be reset: it has its initial size,
   * or it grew, in place, and grown memories are reused.
   */
  resettable(memory: WebAssembly.Memory): boolean {
    const length = memory.buffer.byteLength;
    if (length === this.#bytes) return true;
    // A copied image resets every byte; a mapped one only where it is still mapped.
    return this.grown && length > this.#bytes &&
      (this.#image === null || this.#bases.get(memory) === addressOf(memory));
  }

  /** Writes the image into a zeroed memory (the path without a mapped image). */
  #copy(memory: WebAssembly.Memory): void {
    const bytes = new Uint8Array(memory.buffer);
    for (const run of this.#runs) bytes.set(run.bytes, run.offset);
  }

  /** A memory reading as the image: a kept one (already reset) or a new one. */
  take(): WebAssembly.Memory {
    const kept = this.#free.pop();
    if (kept !== undefined) return kept;
    const memory = this.#new();
    if (this.#image !== null) this.#image.mapOnto(memory.buffer);
    else this.#copy(memory);
    return memory;
  }

  /**
   * Sets `memory` (one {@linkcode take} gave, whose instance has ended) back to the
   * image (and pages past it, if it grew, to zeros). False if it cannot be: it grew
   * and grown memories are not reused (drop it, see {@linkcode drop}).
   */
  reset(memory: WebAssembly.Memory): boolean {
    if (!this.resettable(memory)) return false;
    const buffer = memory.buffer;
    if (this.#image !== null) {
      try {
        // Grown further than before: huge pages from here on (see hugePagesPast).
        const huge = this.#huge.get(memory) ?? this.#bytes;
        if (buffer.byteLength > huge) {
          hugePagesPast(buffer, huge);
          this.#huge.set(memory, buffer.byteLength);
        }
        if (buffer.byteLength === this.#bytes) this.#image.reset(buffer);
        else this.#resetGrown(memory, buffer);
      } catch (err) {
        if (err instanceof NotMappable) return false;
        throw err;
      }
      return true;
    }
    new Uint8Array(buffer).fill(0);
    this.#copy(memory);
    return true;
  }

  /**
   * Resets a memory that grew. A reset zeroes the grown pages it finds resident, and
   * they stay resident: so a guest that grew once into 32 MiB but writes 1 MiB per
   * request would pay a 32 MiB write per reset. Which of them a request wrote is not
   * known without a fault per page (userfaultfd's write-protection splits the huge
   * pages, and costs ~1.5 µs a page: ten times the writes it saves for a guest that
   * writes them all), so every {@linkcode SHED_GROWN_EVERY} resets the grown pages are
   * given back instead (`madvise`: they read as zeros), and the next reset finds only
   * those written since. If that one request wrote again at least half of what was
   * resident, giving them back did not pay (the guest writes all it grew into, and
   * faulted them in again): the interval doubles, up to {@linkcode SHED_GROWN_EVERY_MAX}.
   */
  #resetGrown(memory: WebAssembly.Memory, buffer: ArrayBufferLike): void {
    let s = this.#shedding.get(memory);
    if (s === undefined) {
      s = { since: 0, every: SHED_GROWN_EVERY, resident: 0, before: 0 };
      this.#shedding.set(memory, s);
    }
    const shed = s.resident > 0 && ++s.since >= s.every;
    if (shed) {
      try {
        discardPages(buffer, this.#bytes);
      } catch {
        // Left resident: the reset below zeroes them.
      }
    }
    // All of them resident (a guest that writes all it grew into, as grow.wasm): zeroed
    // at once, without asking the page table which (~20–60 µs for 32 MiB).
    const whole = !shed && s.resident === (buffer.byteLength - this.#bytes) / OS_PAGE;
    const resident = this.#image!.reset(buffer, true, whole);
    if (shed) {
      s.before = s.resident;
      s.since = 0;
    } else if (s.before > 0) {
      s.every = resident * 2 >= s.before
        ? Math.min(s.every * 2, SHED_GROWN_EVERY_MAX)
        : SHED_GROWN_EVERY;
      s.before = 0;
    }
    s.resident = resident;
  }

  /** Takes back the memory of an ended instance (reset), or drops it. */
  give(memory: WebAssembly.Memory): void {
    if (this.#free.length >= MAX_LOOSE_MEMORIES || !this.reset(memory)) {
      this.drop(memory);
      return;
    }
    this.#free.push(memory);
    const sunk = this.#free[this.#free.length - 1 - RESIDENT_IDLE];
    if (sunk !== undefined) this.shed(sunk);
    const below = this.#free[this.#free.length - 1 - RESIDENT_GROWN_IDLE];
    if (below !== undefined) this.shedGrown(below);
  }

  /**
   * Gives back to the OS the pages a reset memory grew into past its initial size (they
   * read as zeros again); the rest stays as it is.
   */
  shedGrown(memory: WebAssembly.Memory): void {
    if (memory.buffer.byteLength <= this.#bytes) return;
    const shedding = this.#shedding.get(memory);
    if (shedding !== undefined) shedding.resident = 0;
    try {
      discardPages(memory.buffer, this.#bytes);
    } catch {
      // Left resident: still zeros.
    }
  }

  /**
   * Gives the pages a reset memory kept resident back to the OS (a memory mapped from
   * the image): it still reads as the image.
   */
  shed(memory: WebAssembly.Memory): void {
    if (this.#image === null || !this.resettable(memory)) return;
    try {
      this.#image.reset(memory.buffer, false);
    } catch {
      // Left resident: still the image.
    }
  }

  /** Gives a memory that will not be used again back to the OS now (RSS falls at once). */
  drop(memory: WebAssembly.Memory): void {
    try {
      discardPages(memory.buffer);
    } catch {
      // Without FFI the garbage collector frees it.
    }
  }

  /** Size of the memories (their initial size). */
  get byteLength(): number {
    return this.#bytes;
  }

  /** True if memories are mapped from a memfd (else the image is copied). */
  get mapped(): boolean {
    return this.#image !== null;
  }

  /** Memories kept for reuse (not counting those idle instances hold). */
  get size(): number {
    return this.#free.length;
  }
}

/** The values a recycled instance is set back to. */
export interface SlotSnapshot {
  globals: [WebAssembly.Global, unknown][];
  tables: { table: WebAssembly.Table; length: number; restore: () => void }[];
}

// (module (import "t" "dst" (table 0 funcref)) (import "t" "src" (table 0 funcref))
//   (func (export "copy") (param i32) (table.copy 0 1 (i32.const 0) (i32.const 0) (local.get 0))))
const TABLE_COPY = new Uint8Array([
  0x00,
  0x61,
  0x73,
  0x6d,
  0x01,
  0x00,
  0x00,
  0x00,
  0x01,
  0x05,
  0x01,
  0x60,
  0x01,
  0x7f,
  0x00,
  0x02,
  0x15,
  0x02,
  0x01,
  0x74,
  0x03,
  0x64,
  0x73,
  0x74,
  0x01,
  0x70,
  0x00,
  0x00,
  0x01,
  0x74,
  0x03,
  0x73,
  0x72,
  0x63,
  0x01,
  0x70,
  0x00,
  0x00,
  0x03,
  0x02,
  0x01,
  0x00,
  0x07,
  0x08,
  0x01,
  0x04,
  0x63,
  0x6f,
  0x70,
  0x79,
  0x00,
  0x00,
  0x0a,
  0x0e,
  0x01,
  0x0c,
  0x00,
  0x41,
  0x00,
  0x41,
  0x00,
  0x20,
  0x00,
  0xfc,
  0x0e,
  0x00,
  0x01,
  0x0b,
]);
let tableCopy: WebAssembly.Module | null = null;

/**
 * A function that copies `table`'s current entries back into it: a pristine copy
 * restored with one `table.copy` (from wasm: entry by entry from JS is ~5x slower).
 */
function tableRestorer(table: WebAssembly.Table): () => void {
  const length = table.length;
  const backup = new WebAssembly.Table({ element: "anyfunc", initial: length });
  for (let i = 0; i < length; i++) backup.set(i, table.get(i));
  tableCopy ??= new WebAssembly.Module(TABLE_COPY);
  const copy = new WebAssembly.Instance(tableCopy, { t: { dst: table, src: backup } })
    .exports.copy as (n: number) => void;
  return () => copy(length);
}

/**
 * What `exports` (named by `globals` and `tables`, see `image.ts`) hold now: taken
 * right after every core instance of a slot was made, so it is the state a fresh
 * instance starts from.
 */
export function snapshotSlot(
  parts: { exports: WebAssembly.Exports; globals: string[]; tables: string[] }[],
): SlotSnapshot {
  const snapshot: SlotSnapshot = { globals: [], tables: [] };
  for (const { exports, globals, tables } of parts) {
    for (const name of globals) {
      const g = exports[name] as WebAssembly.Global;
      snapshot.globals.push([g, g.value]);
    }
    for (const name of tables) {
      const table = exports[name] as WebAssembly.Table;
      snapshot.tables.push({ table, length: table.length, restore: tableRestorer(table) });
    }
  }
  return snapshot;
}

/** False if a table grew (the instance is dropped); checked before anything is reset. */
export function tablesIntact(snapshot: SlotSnapshot): boolean {
  return snapshot.tables.every((t) => t.table.length === t.length);
}

/** Sets the globals and tables of a slot back to `snapshot`. */
export function restoreSlot(snapshot: SlotSnapshot): void {
  for (const [g, v] of snapshot.globals) g.value = v;
  for (const t of snapshot.tables) t.restore();
}
