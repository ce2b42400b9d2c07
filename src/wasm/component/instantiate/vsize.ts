/**
 * A virtual memory size: the prepare-time rewrite that lets an instance whose memory
 * grew be recycled (see `recycle.ts`).
 *
 * Why: V8 cannot shrink a memory, so a recycled instance whose memory grew would show
 * the bigger size to the next request (`memory.size`), and such instances used to be
 * dropped: a guest that grows its memory on every request (a .NET or Go runtime's
 * heap) then paid a fresh memory per request, and a page fault for every page it wrote
 * (~20 ms for 32 MiB here).
 *
 * How: a module that owns its memory (imported from the pool, see `memory.ts`) gets a
 * mutable global holding the size its code sees, in pages ({@linkcode VSIZE_EXPORT};
 * initially the declared minimum, and set back when an instance is recycled like
 * every global code writes). Its code is rewritten:
 * - `memory.size` reads that global;
 * - `memory.grow` calls an added function: the new size is the virtual size plus the
 *   delta; over the declared maximum (or 65,536 pages) it fails (-1); the real memory
 *   is grown only if the new size exceeds it (failing as before if that fails); then
 *   the global is set and the old virtual size returned;
 * - `memory.fill`, `memory.copy` and `memory.init` first call an added function that
 *   traps (out of bounds, as the instruction would) if a destination or source range
 *   reaches past the virtual size.
 *
 * Only the module that owns the memory is rewritten: `plan.ts` gives no module a virtual
 * size where another one sizes or grows a memory it imports (the two would disagree);
 * one that only reads, writes or copies through it (jco's preview1 adapter) is left as
 * it is, so its bulk instructions are bounded by the real size.
 *
 * What differs from a real memory of that size: plain loads and stores between the
 * virtual size and the real one (the high-water mark of earlier requests) do not trap;
 * they read zeros (the whole real memory is reset after every request) and write into
 * pages the next reset wipes. Wasm memory cannot be made inaccessible there: V8's trap
 * handler does not cover pages protected behind its back (`mprotect` there makes a load
 * crash the process). So nothing of one request is visible to another, but a guest
 * relying on an out-of-bounds trap there does not get it: the container's
 * `WASMTIME_HTTP_PROXY_RECYCLE_GROWN=0` drops grown instances instead (then the real
 * size always equals the virtual one, and the rewrite is exact).
 *
 * @module
 */

import { BinaryReader, moduleSections, type Section } from "../binary.ts";
import { type MemoryOps, scanMemoryOps } from "./code_scan.ts";
import { encodeName, encodeSigned, encodeU32 } from "../leb128.ts";
import type { ImportedMemory } from "./memory.ts";
import { concatBytes as concat } from "../../../sys/bytes.ts";

/** Export name of the virtual size global (pages) a rewritten module adds. */
export const VSIZE_EXPORT = "containerd-shim-wasmtime:vsize";

/** Most pages of a 32-bit memory. */
const MAX_PAGES = 65536;

/** Known section order (custom sections, id 0, stay where they are). */
const ORDER = [1, 2, 3, 4, 5, 6, 13, 7, 8, 9, 12, 10, 11];

const I32 = 0x7f;
const I64 = 0x7e;
const op = {
  end: 0x0b,
  if: 0x04,
  void: 0x40,
  return: 0x0f,
  drop: 0x1a,
  call: 0x10,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  globalGet: 0x23,
  globalSet: 0x24,
  i32Load8U: 0x2d,
  memorySize: 0x3f,
  memoryGrow: 0x40,
  i32Const: 0x41,
  i64Const: 0x42,
  i32Eq: 0x46,
  i64GtU: 0x56,
  i32Sub: 0x6b,
  i32Or: 0x72,
  i64Add: 0x7c,
  i64Shl: 0x86,
  i32WrapI64: 0xa7,
  i64ExtendI32U: 0xad,
} as const;

/** What {@linkcode virtualizeMemory} returns. */
export type Virtualized =
  | { kind: "rewritten"; bytes: Uint8Array }
  | { kind: "unchanged"; reason: string };

/**
 * `module` (after `importMemory`: it imports `memory` from the pool) rewritten to a
 * virtual memory size (see the module documentation), or unchanged with the reason:
 * its code never grows the memory (nothing to do), or could not be read.
 */
export function virtualizeMemory(module: Uint8Array, memory: ImportedMemory): Virtualized {
  const scanned = scanMemoryOps(module);
  if (scanned === null) return { kind: "unchanged", reason: "its code could not be read" };
  if (!scanned.ops.some((o) => o.kind === "grow")) {
    return { kind: "unchanged", reason: "its code never grows the memory" };
  }
  let bytes: Uint8Array;
  try {
    bytes = rewrite(module, memory, scanned);
  } catch (err) {
    return { kind: "unchanged", reason: `it could not be rewritten: ${(err as Error).message}` };
  }
  if (!WebAssembly.validate(bytes as BufferSource)) {
    return { kind: "unchanged", reason: "the rewritten module does not validate" };
  }
  return { kind: "rewritten", bytes };
}

/** Whether the code of `module` uses `memory.size` or `memory.grow` (null: unreadable). */
export function usesMemorySize(module: Uint8Array): boolean | null {
  const scanned = scanMemoryOps(module);
  if (scanned === null) return null;
  return scanned.ops.some((o) => o.kind === "size" || o.kind === "grow");
}

function section(id: number, body: ArrayLike<number>): Uint8Array {
  return concat([[id, ...encodeU32(body.length)], body]);
}

/** A vector section's body with `extra` entries appended (`existing` may be absent). */
function appended(
  module: Uint8Array,
  existing: Section | undefined,
  extra: ArrayLike<number>[],
): Uint8Array {
  if (existing === undefined) return concat([encodeU32(extra.length), ...extra]);
  const r = new BinaryReader(module, existing.body, existing.end);
  const n = r.u32();
  return concat([encodeU32(n + extra.length), module.subarray(r.offset, existing.end), ...extra]);
}

/** A function body: its locals, its code, then its size in front. */
function body(locals: [number, number][], code: number[]): number[] {
  const b = [
    ...encodeU32(locals.length),
    ...locals.flatMap(([n, t]) => [...encodeU32(n), t]),
    ...code,
  ];
  return [...encodeU32(b.length), ...b];
}

function rewrite(module: Uint8Array, memory: ImportedMemory, scanned: MemoryOps): Uint8Array {
  const sections = moduleSections(module);
  const find = (id: number) => sections.find((s) => s.id === id);
  const count = (id: number) => {
    const s = find(id);
    return s === undefined ? 0 : new BinaryReader(module, s.body, s.end).u32();
  };
  let importedFuncs = 0;
  let importedGlobals = 0;
  const imp = find(2);
  if (imp) {
    const s = new BinaryReader(module, imp.body, imp.end);
    for (let n = s.u32(); n > 0; n--) {
      s.skip(s.u32());
      s.skip(s.u32());
      const kind = s.byte();
      if (kind === 0x00) {
        s.u32();
        importedFuncs++;
      } else if (kind === 0x01) {
        s.byte();
        if (s.byte() & 0x01) s.u32();
        s.u32();
      } else if (kind === 0x02) {
        if (s.byte() & 0x01) s.u32();
        s.u32();
      } else if (kind === 0x03) {
        s.byte();
        s.byte();
        importedGlobals++;
      } else throw new Error(`import kind 0x${kind.toString(16)}`);
    }
  }
  const types = count(1);
  const funcs = importedFuncs + count(3);
  const vsize = importedGlobals + count(6);
  const tGrow = types;
  const tCheck = types + 1;
  const fGrow = funcs;
  const fCheck1 = funcs + 1; // fill, init: destination (param 0) and length (param 2)
  const fCheck2 = funcs + 2; // copy: destination, source (param 1) and length
  const max = Math.min(memory.maximum ?? MAX_PAGES, MAX_PAGES);

  // The code: every memory.size and memory.grow replaced, a check before bulk ops.
  const replacement = (kind: string): number[] => {
    switch (kind) {
      case "size":
        return [op.globalGet, ...encodeU32(vsize)];
      case "grow":
        return [op.call, ...encodeU32(fGrow)];
      case "copy":
        return [op.call, ...encodeU32(fCheck2)];
      default:
        return [op.call, ...encodeU32(fCheck1)];
    }
  };
  const bodies: ArrayLike<number>[] = [];
  let k = 0;
  const ops = scanned.ops;
  for (const { start, end } of scanned.bodies) {
    const parts: ArrayLike<number>[] = [];
    let at = start;
    for (; k < ops.length && ops[k].start < end; k++) {
      const o = ops[k];
      parts.push(module.subarray(at, o.start), replacement(o.kind));
      // A bulk op stays, after its check; size and grow are replaced.
      at = o.kind === "size" || o.kind === "grow" ? o.end : o.start;
    }
    parts.push(module.subarray(at, end));
    const b = concat(parts);
    bodies.push(encodeU32(b.length), b);
  }

  const v = encodeU32(vsize);
  // (delta) -> old virtual size, or -1. Locals: 1 the old size (i32), 2 the new (i64).
  // deno-fmt-ignore
  const grow = body([[1, I32], [1, I64]], [
    op.globalGet, ...v, op.localSet, 1,
    // new = old + delta (unsigned, in 64 bits); -1 past the maximum.
    op.localGet, 1, op.i64ExtendI32U, op.localGet, 0, op.i64ExtendI32U, op.i64Add,
    op.localTee, 2, op.i64Const, ...encodeSigned(max), op.i64GtU,
    op.if, op.void, op.i32Const, 0x7f, op.return, op.end,
    // Past the real size: grow the real memory to it (-1 if that fails).
    op.localGet, 2, op.memorySize, 0, op.i64ExtendI32U, op.i64GtU,
    op.if, op.void,
    op.localGet, 2, op.i32WrapI64, op.memorySize, 0, op.i32Sub, op.memoryGrow, 0,
    op.i32Const, 0x7f, op.i32Eq,
    op.if, op.void, op.i32Const, 0x7f, op.return, op.end,
    op.end,
    op.localGet, 2, op.i32WrapI64, op.globalSet, ...v,
    op.localGet, 1, op.end,
  ]);
  /** `[from + length > virtual size in bytes]` for params `from` and `length`. */
  // deno-fmt-ignore
  const past = (from: number, length: number) => [
    op.localGet, from, op.i64ExtendI32U, op.localGet, length, op.i64ExtendI32U, op.i64Add,
    op.globalGet, ...v, op.i64ExtendI32U, op.i64Const, 16, op.i64Shl, op.i64GtU,
  ];
  // A load at 2^32: out of bounds for any memory, so the same trap as the bulk op's.
  // deno-fmt-ignore
  const trapOutOfBounds = [
    op.if, op.void, op.i32Const, 0x7f, op.i32Load8U, 0, 1, op.drop, op.end,
  ];
  const passOn = [op.localGet, 0, op.localGet, 1, op.localGet, 2, op.end];
  const check1 = body([], [...past(0, 2), ...trapOutOfBounds, ...passOn]);
  const check2 = body([], [...past(0, 2), ...past(1, 2), op.i32Or, ...trapOutOfBounds, ...passOn]);

  const replaced = new Map<number, Uint8Array>();
  replaced.set(
    1,
    appended(module, find(1), [
      [0x60, 1, I32, 1, I32],
      [0x60, 3, I32, I32, I32, 3, I32, I32, I32],
    ]),
  );
  replaced.set(
    3,
    appended(module, find(3), [encodeU32(tGrow), encodeU32(tCheck), encodeU32(tCheck)]),
  );
  replaced.set(
    6,
    appended(module, find(6), [[I32, 1, op.i32Const, ...encodeSigned(memory.initial), op.end]]),
  );
  replaced.set(
    7,
    appended(module, find(7), [[...encodeName(VSIZE_EXPORT), 0x03, ...encodeU32(vsize)]]),
  );
  const code = concat([encodeU32(scanned.bodies.length + 3), ...bodies, grow, check1, check2]);
  replaced.set(10, code);

  const rank = (id: number) => ORDER.indexOf(id);
  const parts: ArrayLike<number>[] = [module.subarray(0, 8)];
  const pending = [...replaced.keys()].filter((id) => find(id) === undefined).sort((a, b) =>
    rank(a) - rank(b)
  );
  const flush = (before: number) => {
    while (pending.length > 0 && rank(pending[0]) < before) {
      const id = pending.shift()!;
      parts.push(section(id, replaced.get(id)!));
    }
  };
  for (const s of sections) {
    if (s.id !== 0) flush(rank(s.id));
    const body = replaced.get(s.id);
    parts.push(
      body === undefined || s.id === 0 ? module.subarray(s.start, s.end) : section(s.id, body),
    );
  }
  flush(Infinity);
  return concat(parts);
}
