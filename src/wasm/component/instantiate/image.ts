/**
 * Prepare-time rewriting of a core module so that its instances can start from a
 * memory image and be recycled (see `recycle.ts`), and reading the image back.
 *
 * {@linkcode prepareImage} reads a core module (after `memory.ts`'s
 * `importMemory`, so a memory it owns is imported as {@linkcode MEMORY_IMPORT}) and
 * returns it rewritten:
 * - its active data segments become empty passive ones (every segment index and the
 *   data count stay valid), so V8 copies nothing into a new instance's memory; their
 *   bytes go, as `(offset, bytes)` runs, into a custom section of the same module
 *   ({@linkcode IMAGE_SECTION}), so the transpile cache and worker threads carry the
 *   image with the module, and the memory is filled from it (mapped or copied);
 * - every mutable global and every table it defines that code can write after
 *   instantiation (`code_scan.ts`) is exported under a reserved name
 *   ({@linkcode RESET_EXPORT_PREFIX}), so a recycled instance can be set back; one no
 *   code writes keeps what instantiation gave it, and is not set back.
 *
 * A module this does not understand, or whose state could not be set back exactly,
 * gets a reason instead and keeps today's path (a fresh instance per request, V8
 * copying its data). A module that is fine except for what makes recycling unsafe
 * (passive segments that `data.drop`/`elem.drop` change for good, a start function)
 * is rewritten, and marked so that its instances are made fresh (over an image).
 *
 * @module
 */

import { BinaryReader, moduleSections, type Section } from "../binary.ts";
import { type CodeWrites, scanWrites } from "./code_scan.ts";
import { encodeName, encodeU32, readSigned } from "../leb128.ts";
import { MEMORY_IMPORT } from "./memory.ts";

/** Name of the custom section that holds a rewritten module's memory image. */
export const IMAGE_SECTION = "containerd-shim-wasmtime:image";
/** Prefix of the exports added for mutable globals (`g<index>`) and tables (`t<index>`). */
export const RESET_EXPORT_PREFIX = "containerd-shim-wasmtime:reset:";
/** Most active data bytes taken into an image (more: today's path). */
export const MAX_IMAGE_BYTES = 256 << 20;

const PAGE = 65536;

/** What a rewritten module's instances need to be set back to where they started. */
export interface ResetPlan {
  /** Export names of its mutable globals that code can set. */
  globals: string[];
  /** Export names of its tables (funcref) that code can write. */
  tables: string[];
  /** Its active data moved to {@linkcode IMAGE_SECTION} (it owns a memory). */
  image: boolean;
  /** Why its instances cannot be recycled (they are made fresh, over the image), or null. */
  fresh: string | null;
  /**
   * Its code sees a virtual memory size (see `vsize.ts`): an instance whose memory grew
   * can be recycled (set by `plan.ts`).
   */
  virtualSize?: boolean;
}

/** One run of a memory's initial bytes. */
export interface ImageRun {
  offset: number;
  bytes: Uint8Array;
}

/** What {@linkcode prepareImage} returns. */
export type Prepared =
  | { kind: "prepared"; bytes: Uint8Array; reset: ResetPlan; imageBytes: number }
  | { kind: "fallback"; reason: string };

/** Options of {@linkcode prepareImage}. */
export interface PrepareOptions {
  /** Most active data bytes taken into an image; default {@linkcode MAX_IMAGE_BYTES}. */
  maxImageBytes?: number;
  /**
   * Whether the code of another module of the component writes tables (or sets
   * globals) it imports (see `code_scan.ts`): then every table (global) this module
   * exports may be written by it, and is set back. Default true for both.
   */
  writtenElsewhere?: { tables: boolean; globals: boolean };
  /** What its code writes, if already scanned (`scanWrites` of the same code). */
  writes?: CodeWrites;
}

/** A construct this rewrite does not take (the module keeps today's path). */
class Refused extends Error {}

const refuse = (what: string): never => {
  throw new Refused(what);
};

function skipValType(r: BinaryReader): number {
  const t = r.byte();
  if ((t >= 0x7c && t <= 0x7f) || t === 0x70 || t === 0x6f) return t;
  if (t === 0x7b) return t;
  return refuse(`value type 0x${t.toString(16)} (GC or typed references)`);
}

function skipConstExpr(r: BinaryReader): void {
  for (;;) {
    const op = r.byte();
    switch (op) {
      case 0x0b:
        return;
      case 0x41:
        r.s32();
        break;
      case 0x42:
        if (readSigned(() => r.byte(), 64) === undefined) refuse("a bad i64.const");
        break;
      case 0x43:
        r.skip(4);
        break;
      case 0x44:
        r.skip(8);
        break;
      case 0x23:
      case 0xd2:
        r.u32();
        break;
      case 0xd0:
        r.byte();
        break;
      case 0xfd:
        if (r.u32() !== 12) refuse("a SIMD opcode in a constant expression");
        r.skip(16);
        break;
      case 0x6a:
      case 0x6b:
      case 0x6c:
      case 0x7c:
      case 0x7d:
      case 0x7e:
        break;
      default:
        refuse(`opcode 0x${op.toString(16)} in a constant expression`);
    }
  }
}

function skipLimits(r: BinaryReader): number {
  const flag = r.byte();
  r.u32();
  if (flag & 0x01) r.u32();
  return flag;
}

function section(id: number, body: number[] | Uint8Array): Uint8Array {
  const head = [id, ...encodeU32(body.length)];
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

/** The custom section holding `runs`: a count, then per run its offset, length and bytes. */
function imageSection(runs: ImageRun[]): Uint8Array {
  const head = [...encodeName(IMAGE_SECTION), ...encodeU32(runs.length)];
  let size = head.length;
  const heads = runs.map((r) => [...encodeU32(r.offset), ...encodeU32(r.bytes.length)]);
  for (let i = 0; i < runs.length; i++) size += heads[i].length + runs[i].bytes.length;
  const body = new Uint8Array(size);
  body.set(head);
  let at = head.length;
  for (let i = 0; i < runs.length; i++) {
    body.set(heads[i], at);
    at += heads[i].length;
    body.set(runs[i].bytes, at);
    at += runs[i].bytes.length;
  }
  return section(0, body);
}

/**
 * The memory image a module rewritten by {@linkcode prepareImage} carries.
 *
 * @throws Error if the module has no image section, or a malformed one
 */
export function readImage(module: WebAssembly.Module): ImageRun[] {
  const sections = WebAssembly.Module.customSections(module, IMAGE_SECTION);
  if (sections.length !== 1) throw new Error(`the module has no ${IMAGE_SECTION} section`);
  const bytes = new Uint8Array(sections[0]);
  const r = new BinaryReader(bytes, 0, bytes.length);
  const runs: ImageRun[] = [];
  for (let n = r.u32(); n > 0; n--) {
    const offset = r.u32();
    const length = r.u32();
    const at = r.offset;
    r.skip(length);
    runs.push({ offset, bytes: bytes.subarray(at, at + length) });
  }
  return runs;
}

/**
 * Rewrites `module` for memory images and recycling (see the module documentation),
 * or says why it keeps today's path. Never throws for a module that validates.
 */
export function prepareImage(module: Uint8Array, options: PrepareOptions = {}): Prepared {
  try {
    return prepareOrRefuse(
      module,
      options.maxImageBytes ?? MAX_IMAGE_BYTES,
      options.writtenElsewhere ?? { tables: true, globals: true },
      options.writes,
    );
  } catch (err) {
    if (err instanceof Refused) return { kind: "fallback", reason: err.message };
    return { kind: "fallback", reason: `the module could not be read: ${(err as Error).message}` };
  }
}

function prepareOrRefuse(
  module: Uint8Array,
  maxImageBytes: number,
  elsewhere: { tables: boolean; globals: boolean },
  scanned: CodeWrites | undefined,
): Prepared {
  if (!WebAssembly.validate(module as BufferSource)) refuse("the module does not validate");
  const sections = moduleSections(module);
  const find = (id: number) => sections.find((s) => s.id === id);
  const reader = (s: Section) => new BinaryReader(module, s.body, s.end);

  let importedGlobals = 0;
  let importedTables = 0;
  let memories = 0;
  /** The memory it owns (imported as MEMORY_IMPORT by `importMemory`), in pages. */
  let owned: number | null = null;
  const imp = find(2);
  if (imp) {
    const s = reader(imp);
    for (let n = s.u32(); n > 0; n--) {
      const mod = s.string();
      const field = s.string();
      const kind = s.byte();
      if (kind === 0x00) s.u32();
      else if (kind === 0x01) {
        skipValType(s);
        skipLimits(s);
        importedTables++;
      } else if (kind === 0x02) {
        const flag = s.byte();
        const initial = s.u32();
        if (flag & 0x01) s.u32();
        memories++;
        if (mod === MEMORY_IMPORT.module && field === MEMORY_IMPORT.name) {
          if (flag & ~0x01) refuse("its memory is shared or 64-bit");
          owned = initial;
        }
      } else if (kind === 0x03) {
        skipValType(s);
        s.byte();
        importedGlobals++;
      } else refuse(`import kind 0x${kind.toString(16)}`);
    }
  }
  const memSec = find(5);
  if (memSec) {
    const s = reader(memSec);
    for (let n = s.u32(); n > 0; n--) {
      const flag = s.byte();
      if (flag & 0x02) refuse("its memory is shared (threads): it cannot be imaged");
      if (flag & 0x04) refuse("its memory is 64-bit (memory64): it cannot be imaged");
      if (flag & ~0x01) refuse(`memory flags 0x${flag.toString(16)}`);
      s.u32();
      if (flag & 0x01) s.u32();
      memories++;
    }
  }
  if (memories > 1) refuse(`it has ${memories} memories (multi-memory): it cannot be imaged`);
  // `importMemory` moves a single plain memory to an import: one still defined here
  // is one it did not take.
  if (memSec && memories === 1) refuse("its memory is not imported from the pool");
  const memoryBytes = owned === null ? 0 : owned * PAGE;

  let fresh: string | null = null;
  if (find(8)) fresh = "it has a start function (recycling would skip it)";

  // Data: active segments become empty passive ones; their bytes form the image.
  const runs: ImageRun[] = [];
  let imageBytes = 0;
  let dataSection: Uint8Array | null = null;
  const dataSec = find(11);
  if (dataSec) {
    const s = reader(dataSec);
    const count = s.u32();
    const out: (number[] | Uint8Array)[] = [encodeU32(count)];
    for (let n = 0; n < count; n++) {
      const flag = s.u32();
      if (flag === 1) {
        fresh ??= "it has passive data segments (data.drop changes them for good)";
        const at = s.offset;
        s.skip(s.u32());
        out.push([1], module.subarray(at, s.offset));
        continue;
      }
      if (flag === 2 && s.u32() !== 0) refuse("a data segment for memory > 0");
      if (flag !== 0 && flag !== 2) refuse(`data segment flag ${flag}`);
      if (s.byte() !== 0x41) refuse("a data segment's offset is not an i32.const");
      const offset = s.s32() >>> 0;
      if (s.byte() !== 0x0b) refuse("a data segment's offset is not an i32.const");
      const len = s.u32();
      const at = s.offset;
      s.skip(len);
      if (owned === null) refuse("active data segments for a memory another module owns");
      if (offset + len > memoryBytes) {
        refuse(`data segment ${n} ends past the initial memory (instantiation traps)`);
      }
      imageBytes += len;
      if (imageBytes > maxImageBytes) {
        refuse(`its data segments exceed ${maxImageBytes} bytes (the image limit)`);
      }
      if (len > 0) runs.push({ offset, bytes: module.subarray(at, at + len) });
      out.push([1, 0]);
    }
    const body = new Uint8Array(out.reduce((k, p) => k + p.length, 0));
    let at = 0;
    for (const p of out) {
      body.set(p, at);
      at += p.length;
    }
    dataSection = section(11, body);
  }

  // What can change after instantiation: what code writes, and what the module
  // exports if another module's code writes what it imports.
  const writes = scanned ?? scanWrites(module);
  const exported = { tables: new Set<number>(), globals: new Set<number>() };
  const expSec = find(7);
  if (expSec) {
    const s = reader(expSec);
    for (let n = s.u32(); n > 0; n--) {
      s.string();
      const kind = s.byte();
      const index = s.u32();
      if (kind === 0x01) exported.tables.add(index);
      else if (kind === 0x03) exported.globals.add(index);
    }
  }
  const written = (kind: "tables" | "globals", index: number) => {
    const set = writes[kind];
    return set === "all" || set.has(index) || (elsewhere[kind] && exported[kind].has(index));
  };

  const added: number[] = [];
  let addedCount = 0;
  const globals: string[] = [];
  const tables: string[] = [];
  const globSec = find(6);
  if (globSec) {
    const s = reader(globSec);
    const count = s.u32();
    for (let i = 0; i < count; i++) {
      const t = skipValType(s);
      const mutable = s.byte() === 1;
      skipConstExpr(s);
      if (!mutable || !written("globals", importedGlobals + i)) continue;
      if (t === 0x7b) refuse("a mutable v128 global (JavaScript cannot set it back)");
      const name = `${RESET_EXPORT_PREFIX}g${i}`;
      globals.push(name);
      added.push(...encodeName(name), 0x03, ...encodeU32(importedGlobals + i));
      addedCount++;
    }
  }
  const tabSec = find(4);
  if (tabSec) {
    const s = reader(tabSec);
    const count = s.u32();
    for (let i = 0; i < count; i++) {
      if (s.peek() === 0x40) refuse("a table with an initializer expression");
      const externref = skipValType(s) !== 0x70;
      skipLimits(s);
      if (!written("tables", importedTables + i)) continue;
      if (externref) refuse("a table of externref that code writes (only funcref is set back)");
      const name = `${RESET_EXPORT_PREFIX}t${i}`;
      tables.push(name);
      added.push(...encodeName(name), 0x01, ...encodeU32(importedTables + i));
      addedCount++;
    }
  }
  const elemSec = find(9);
  if (elemSec) {
    const s = reader(elemSec);
    for (let n = s.u32(); n > 0; n--) {
      const flag = s.u32();
      if (flag > 7) refuse(`element segment flag ${flag}`);
      if (flag === 1 || flag === 5) {
        fresh ??= "it has passive element segments (elem.drop changes them for good)";
      }
      if (flag === 2 || flag === 6) s.u32();
      if ((flag & 0x01) === 0) skipConstExpr(s);
      if (flag === 1 || flag === 2 || flag === 3) s.byte();
      if (flag === 5 || flag === 6 || flag === 7) skipValType(s);
      for (let k = s.u32(); k > 0; k--) {
        if (flag & 0x04) skipConstExpr(s);
        else s.u32();
      }
    }
  }

  // Assemble: exports extended (or added), data rewritten, the image appended.
  const parts: Uint8Array[] = [module.subarray(0, 8)];
  // Known section order (custom sections, id 0, stay where they are).
  const ORDER = [1, 2, 3, 4, 5, 6, 13, 7, 8, 9, 12, 10, 11];
  const rank = (id: number) => ORDER.indexOf(id);
  let exportsDone = addedCount === 0;
  const exportSection = (existing: Section | null) => {
    exportsDone = true;
    if (existing === null) return section(7, [...encodeU32(addedCount), ...added]);
    const s = reader(existing);
    const n = s.u32();
    const rest = module.subarray(s.offset, existing.end);
    const body = new Uint8Array([...encodeU32(n + addedCount), ...rest, ...added]);
    return section(7, body);
  };
  for (const sec of sections) {
    if (!exportsDone && sec.id !== 0 && sec.id !== 7 && rank(sec.id) > rank(7)) {
      parts.push(exportSection(null));
    }
    if (sec.id === 7 && !exportsDone) parts.push(exportSection(sec));
    else if (sec.id === 11 && dataSection !== null) parts.push(dataSection);
    else parts.push(module.subarray(sec.start, sec.end));
  }
  if (!exportsDone) parts.push(exportSection(null));
  const image = owned !== null;
  if (image) parts.push(imageSection(runs));
  const bytes = new Uint8Array(parts.reduce((k, p) => k + p.length, 0));
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  if (!WebAssembly.validate(bytes as BufferSource)) {
    refuse("the rewritten module does not validate (a construct not handled here)");
  }
  return { kind: "prepared", bytes, reset: { globals, tables, image, fresh }, imageBytes };
}

/** Size in bytes of a memory of `pages` pages. */
export function pagesToBytes(pages: number): number {
  return pages * PAGE;
}
