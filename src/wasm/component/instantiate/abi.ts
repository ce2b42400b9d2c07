/**
 * The canonical ABI (component model `CanonicalABI.md`, 32-bit memories) between core
 * wasm values and the JS values jco's glue uses, so the host in `../host/` works with
 * either glue unchanged:
 *
 * - integers are numbers (`u64`/`s64`: bigints), `char` a one-character string;
 * - `list<u8>` and other lists of numbers are typed arrays, other lists arrays;
 * - records are objects with camelCase keys, tuples arrays, flags objects of booleans;
 * - variants are `{ tag, val }` (no `val` key for a case without payload), enums their
 *   case name; results `{ tag: "ok" | "err", val }`;
 * - `option<T>` is `T` or `undefined`, except an option of an option, which is
 *   `{ tag: "some", val } | { tag: "none" }`;
 * - a resource is the host's object; the guest holds handles to it in per-instance,
 *   per-resource-type tables.
 *
 * Types are resolved once per plan ({@linkcode resolveTypes}), with their sizes,
 * alignments and flat core types; lifting and lowering then walk them.
 *
 * @module
 */

import type { CoreRef, PlanType } from "./plan_data.ts";
import { VSIZE_EXPORT } from "./vsize.ts";

/** Bytes in a wasm page. */
const PAGE = 65536;

/** A core value type. */
export type Flat = "i32" | "i64" | "f32" | "f64";

/** A core function type. */
export interface FuncSig {
  params: Flat[];
  results: Flat[];
}

/** The core signature of `canon resource.drop`: the handle, nothing back. */
export const RESOURCE_DROP_SIG: Readonly<FuncSig> = { params: ["i32"], results: [] };

/**
 * The core signature of a lowered function (canonical ABI `flatten_functype`, lower):
 * over 16 flat parameters pass one pointer, over 1 flat result an out-pointer.
 */
export function loweredSig(params: readonly RType[], result: RType | null): FuncSig {
  let flatParams: Flat[] = params.flatMap((t) => t.flat);
  let results: Flat[] = result === null ? [] : result.flat;
  if (flatParams.length > 16) flatParams = ["i32"];
  if (results.length > 1) {
    flatParams = [...flatParams, "i32"];
    results = [];
  }
  return { params: flatParams, results };
}

type NumericArray =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | BigUint64Array
  | BigInt64Array
  | Float32Array
  | Float64Array;
type NumericArrayClass = {
  new (buffer: ArrayBuffer): NumericArray;
  new (length: number): NumericArray;
  BYTES_PER_ELEMENT: number;
};

/** The canonical ABI layout every resolved type has. */
interface Layout {
  size: number;
  align: number;
  flat: Flat[];
}

/** A case of a variant-like type; `t` is its payload, if it has one. */
export interface RCase {
  name: string;
  t: RType | null;
}

/** record, tuple: fields with their byte offsets and JS keys. */
export interface RRecord extends Layout {
  k: "record" | "tuple";
  fields: { key: string | number; t: RType; offset: number }[];
}

/** variant, option, result (option and result despecialised): cases and their layout. */
export interface RVariant extends Layout {
  k: "variant" | "option" | "result";
  cases: RCase[];
  /** Bytes of the discriminant. */
  discSize: number;
  /** Where the payload starts. */
  payloadOffset: number;
  /** option: its payload is itself an option (then tagged, as jco). */
  nestedOption: boolean;
}

/** enum: a variant without payloads, with the case index of each name. */
export interface REnum extends Omit<RVariant, "k"> {
  k: "enum";
  enumIndex: Map<string, number>;
}

/** list: element type, fixed length; typed array class for numeric elements. */
export interface RList extends Layout {
  k: "list";
  elem: RType;
  len?: number;
  typed?: NumericArrayClass;
}

/** flags: JS keys. */
export interface RFlags extends Layout {
  k: "flags";
  keys: string[];
}

/** own, borrow: resource index. */
export interface RHandle extends Layout {
  k: "own" | "borrow";
  res: number;
}

/** Scalars and strings: nothing but their layout. */
export interface RScalar extends Layout {
  k: Exclude<PlanType["k"], (RRecord | RVariant | REnum | RList | RFlags | RHandle)["k"]>;
}

/** A resolved value type, discriminated by `k`. */
export type RType = RScalar | RRecord | RVariant | REnum | RList | RFlags | RHandle;

/** Turns WIT `kebab-case` into jco's `lowerCamelCase` (records, flags, functions). */
export function camelCase(name: string): string {
  const words = name.split("-");
  return words[0].toLowerCase() +
    words.slice(1).map((w) => w.charAt(0).toUpperCase() + w.slice(1).toLowerCase()).join("");
}

/** Turns WIT `kebab-case` into jco's `UpperCamelCase` (resources). */
export function pascalCase(name: string): string {
  const c = camelCase(name);
  return c.charAt(0).toUpperCase() + c.slice(1);
}

function alignTo(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

function join(a: Flat, b: Flat): Flat {
  if (a === b) return a;
  if ((a === "i32" && b === "f32") || (a === "f32" && b === "i32")) return "i32";
  return "i64";
}

const PRIM_LAYOUT: Record<string, [number, Flat[]]> = {
  bool: [1, ["i32"]],
  s8: [1, ["i32"]],
  u8: [1, ["i32"]],
  s16: [2, ["i32"]],
  u16: [2, ["i32"]],
  s32: [4, ["i32"]],
  u32: [4, ["i32"]],
  s64: [8, ["i64"]],
  u64: [8, ["i64"]],
  f32: [4, ["f32"]],
  f64: [8, ["f64"]],
  char: [4, ["i32"]],
};

const TYPED: Record<string, NumericArrayClass> = {
  u8: Uint8Array,
  s8: Int8Array,
  u16: Uint16Array,
  s16: Int16Array,
  u32: Uint32Array,
  s32: Int32Array,
  u64: BigUint64Array,
  s64: BigInt64Array,
  f32: Float32Array,
  f64: Float64Array,
};

/** The layout of a variant-like type with `cases`. */
function variantLayout(cases: RCase[]): Omit<RVariant, "k" | "nestedOption"> {
  const n = cases.length;
  const discSize = n <= 256 ? 1 : n <= 65536 ? 2 : 4;
  let caseAlign = 1;
  let caseSize = 0;
  const payload: Flat[] = [];
  for (const c of cases) {
    if (c.t === null) continue;
    caseAlign = Math.max(caseAlign, c.t.align);
    caseSize = Math.max(caseSize, c.t.size);
    c.t.flat.forEach((f, i) => payload[i] = i < payload.length ? join(payload[i], f) : f);
  }
  const align = Math.max(discSize, caseAlign);
  const payloadOffset = alignTo(discSize, caseAlign);
  return {
    cases,
    discSize,
    align,
    payloadOffset,
    size: alignTo(payloadOffset + caseSize, align),
    flat: ["i32", ...payload],
  };
}

/** Resolves one type of a plan, `resolve` giving the types it refers to. */
function resolveOne(p: PlanType, resolve: (i: number) => RType): RType {
  switch (p.k) {
    case "string":
      return { k: p.k, size: 8, align: 4, flat: ["i32", "i32"] };
    case "record":
    case "tuple": {
      const members: [string | number, RType][] = p.k === "record"
        ? p.fields.map(([name, ti]) => [camelCase(name), resolve(ti)])
        : p.types.map((ti, i) => [i, resolve(ti)]);
      const t: RRecord = { k: p.k, size: 0, align: 1, flat: [], fields: [] };
      let offset = 0;
      t.fields = members.map(([key, ft]) => {
        offset = alignTo(offset, ft.align);
        const field = { key, t: ft, offset };
        offset += ft.size;
        t.align = Math.max(t.align, ft.align);
        t.flat.push(...ft.flat);
        return field;
      });
      t.size = alignTo(offset, t.align);
      return t;
    }
    case "variant": {
      const cases = p.cases.map(([name, ti]) => ({ name, t: ti === null ? null : resolve(ti) }));
      return { k: p.k, ...variantLayout(cases), nestedOption: false };
    }
    case "enum":
      return {
        k: p.k,
        ...variantLayout(p.names.map((name) => ({ name, t: null }))),
        nestedOption: false,
        enumIndex: new Map(p.names.map((name, i) => [name, i])),
      };
    case "option": {
      const some = resolve(p.type);
      const cases = [{ name: "none", t: null }, { name: "some", t: some }];
      return { k: p.k, ...variantLayout(cases), nestedOption: some.k === "option" };
    }
    case "result": {
      const cases = [
        { name: "ok", t: p.ok === null ? null : resolve(p.ok) },
        { name: "err", t: p.err === null ? null : resolve(p.err) },
      ];
      return { k: p.k, ...variantLayout(cases), nestedOption: false };
    }
    case "list": {
      const elem = resolve(p.elem);
      if (p.len !== undefined) {
        const flat: Flat[] = [];
        for (let i = 0; i < p.len; i++) flat.push(...elem.flat);
        return { k: p.k, elem, len: p.len, align: elem.align, size: elem.size * p.len, flat };
      }
      return { k: p.k, elem, size: 8, align: 4, flat: ["i32", "i32"], typed: TYPED[elem.k] };
    }
    case "flags": {
      const n = p.names.length;
      if (n === 0 || n > 32) throw new Error(`lean glue: flags of ${n} names`);
      const size = n <= 8 ? 1 : n <= 16 ? 2 : 4;
      return { k: p.k, size, align: size, flat: ["i32"], keys: p.names.map(camelCase) };
    }
    case "own":
    case "borrow":
      return { k: p.k, size: 4, align: 4, flat: ["i32"], res: p.res };
    default: {
      const layout = PRIM_LAYOUT[p.k];
      if (layout === undefined) throw new Error(`lean glue: unknown type ${p.k}`);
      return { k: p.k, size: layout[0], align: layout[0], flat: layout[1] };
    }
  }
}

/** Resolves a plan's type table (indices become references, layouts computed). */
export function resolveTypes(types: PlanType[]): RType[] {
  const out: (RType | undefined)[] = new Array(types.length);
  const resolve = (i: number): RType => {
    const known = out[i];
    if (known !== undefined) return known;
    const p = types[i];
    if (p === undefined) throw new Error(`lean glue: no type ${i}`);
    const t = resolveOne(p, resolve);
    out[i] = t;
    return t;
  };
  for (let i = 0; i < types.length; i++) resolve(i);
  return out as RType[];
}

// ---- Handles --------------------------------------------------------------------------

const FREE = Symbol("free");

/**
 * The handles a guest holds to one resource type's host objects. Slot 0 is never a
 * handle; freed slots are reused. {@linkcode clear} empties it for a later instance
 * while keeping its arrays' room (a recycled instance's tables then cost nothing).
 */
export class HandleTable {
  #slots: unknown[] = [FREE];
  /** Slots in use or freed: handles are below this. */
  #end = 1;
  #free: number[] = [];
  #freeCount = 0;

  /** Adds `obj`; returns its handle. */
  insert(obj: unknown): number {
    if (this.#freeCount > 0) {
      const h = this.#free[--this.#freeCount];
      this.#slots[h] = obj;
      return h;
    }
    const h = this.#end++;
    this.#slots[h] = obj;
    return h;
  }

  /** The object behind `h` (a borrow). */
  get(h: number): unknown {
    const obj = h > 0 && h < this.#end ? this.#slots[h] : FREE;
    if (obj === FREE) throw trap(`unknown handle index ${h}`);
    return obj;
  }

  /** Removes `h`; returns its object (ownership leaves the guest). */
  remove(h: number): unknown {
    const obj = this.get(h);
    this.#slots[h] = FREE;
    this.#free[this.#freeCount++] = h;
    return obj;
  }

  /** Forgets every handle: the table is as new (handles start at 1 again). */
  clear(): void {
    this.#slots.fill(FREE, 1, this.#end);
    this.#end = 1;
    this.#freeCount = 0;
  }
}

/** A trap raised by the glue itself (as wasm would: a `WebAssembly.RuntimeError`). */
export function trap(message: string): WebAssembly.RuntimeError {
  return new WebAssembly.RuntimeError(`wasm trap: ${message}`);
}

// ---- Call context ------------------------------------------------------------------

/** An instance's handle tables, resource classes and core items, made on first use. */
export interface Handles {
  /** The table of resource `res`. */
  table(res: number): HandleTable;
  /** The host class of resource `res`, if the imports have one (for checks). */
  classOf(res: number): (abstract new (...args: never[]) => unknown) | undefined;
  /** The core item (memory, function) `ref` refers to. */
  core(ref: CoreRef): unknown;
  /** Export `name` of the core instance `ref` is an export of, if it has one. */
  sibling?(ref: CoreRef, name: string): unknown;
}

/** What one lift or lower works with: the instance's handles, its memory and realloc. */
export class Cx {
  // Made on first use: most calls of most instances never touch memory from the host.
  #buffer: ArrayBufferLike | null = null;
  #view: DataView | null = null;
  #bytes: Uint8Array | null = null;
  #memory: WebAssembly.Memory | null = null;
  /** The size (pages) the guest's code sees, where it is virtual (see `vsize.ts`). */
  #vsize: WebAssembly.Global | null = null;
  #realloc: ((...args: number[]) => number) | null = null;

  /**
   * @param handles the instance's handle tables and core items (a recycled instance's
   *   contexts are handed to the next instance in its slot, see `link.ts`)
   * @param memoryRef the canonical option `memory` (null: none); found on first use, as
   *   the memory's core instance may be created after the function is linked
   * @param reallocRef the canonical option `realloc` (null: none), likewise
   * @param encoding 0: utf8, 1: utf16, 2: latin1+utf16
   */
  constructor(
    public handles: Handles,
    readonly memoryRef: CoreRef | null,
    readonly reallocRef: CoreRef | null,
    readonly encoding: number,
  ) {}

  #refresh(): void {
    if (this.#memory === null) {
      if (this.memoryRef === null) throw trap("no memory to read or write values");
      this.#memory = this.handles.core(this.memoryRef) as WebAssembly.Memory;
      const vsize = this.handles.sibling?.(this.memoryRef, VSIZE_EXPORT);
      if (vsize instanceof WebAssembly.Global) this.#vsize = vsize;
    }
    const buffer = this.#memory.buffer;
    if (buffer !== this.#buffer) {
      this.#buffer = buffer;
      this.#view = new DataView(buffer);
      this.#bytes = new Uint8Array(buffer);
    }
  }

  /** A view of the memory (renewed after it grows). */
  view(): DataView {
    this.#refresh();
    return this.#view!;
  }

  /** The memory's bytes (renewed after it grows). */
  bytes(): Uint8Array {
    this.#refresh();
    return this.#bytes!;
  }

  /**
   * Checks `[ptr, ptr+len)` is inside the memory: inside the size the guest's code sees,
   * where that is virtual (the real memory may be bigger, see `vsize.ts`).
   */
  check(ptr: number, len: number, align: number): void {
    if (ptr % align !== 0) throw trap(`pointer ${ptr} not aligned to ${align}`);
    this.#refresh();
    const end = this.#vsize === null ? this.#bytes!.length : (this.#vsize.value as number) * PAGE;
    if (ptr + len > end) throw trap("out of bounds memory access");
  }

  /** Allocates in the guest's memory. */
  alloc(align: number, size: number): number {
    if (this.#realloc === null) {
      if (this.reallocRef === null) throw trap("no realloc to allocate values");
      this.#realloc = this.handles.core(this.reallocRef) as (...args: number[]) => number;
    }
    const ptr = this.#realloc(0, 0, align, size) >>> 0;
    this.check(ptr, size, align);
    return ptr;
  }
}

// ---- Lifting (wasm → JS) -------------------------------------------------------------

/** Flat core values being read. */
export class FlatIn {
  /** @param vals the core values, @param i where to start */
  constructor(public vals: ArrayLike<unknown>, public i = 0) {}
  /** The next value. */
  next(): unknown {
    return this.vals[this.i++];
  }
}

const decoder = new TextDecoder();
const f32Scratch = new DataView(new ArrayBuffer(8));

function coerce(v: unknown, have: Flat, want: Flat): unknown {
  if (have === want) return v;
  if (have === "i32" && want === "f32") {
    f32Scratch.setInt32(0, v as number, true);
    return f32Scratch.getFloat32(0, true);
  }
  if (have === "i64" && want === "i32") return Number(BigInt.asIntN(32, v as bigint));
  if (have === "i64" && want === "f32") {
    f32Scratch.setInt32(0, Number(BigInt.asIntN(32, v as bigint)), true);
    return f32Scratch.getFloat32(0, true);
  }
  if (have === "i64" && want === "f64") {
    f32Scratch.setBigInt64(0, v as bigint, true);
    return f32Scratch.getFloat64(0, true);
  }
  throw trap(`invalid variant payload coercion ${have} → ${want}`);
}

function liftChar(i: number): string {
  if (i >= 0x110000 || (i >= 0xd800 && i <= 0xdfff)) throw trap(`invalid char ${i}`);
  return String.fromCodePoint(i);
}

function loadString(cx: Cx, ptr: number, len: number): string {
  if (cx.encoding === 0) {
    cx.check(ptr, len, 1);
    return decoder.decode(cx.bytes().subarray(ptr, ptr + len));
  }
  let utf16 = cx.encoding === 1;
  if (cx.encoding === 2 && len & 0x8000_0000) {
    utf16 = true;
    len &= 0x7fff_ffff;
  }
  if (!utf16) {
    cx.check(ptr, len, 1);
    return latin1(cx.bytes().subarray(ptr, ptr + len));
  }
  cx.check(ptr, len * 2, 2);
  const units = new Uint16Array(cx.bytes().buffer.slice(ptr, ptr + len * 2));
  let out = "";
  for (let i = 0; i < units.length; i += 4096) {
    out += String.fromCharCode(...units.subarray(i, i + 4096));
  }
  return out;
}

function latin1(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    out += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
  return out;
}

/** The case of variant-like `t` numbered `index` (a trap if there is none). */
function caseOf(t: RVariant | REnum, index: number): RCase {
  const c = t.cases[index];
  if (c === undefined) throw trap(`invalid ${t.k} discriminant ${index}`);
  return c;
}

/** The JS value of case `c` of `t` with its lifted `payload` (undefined: none). */
function liftCase(t: RVariant | REnum, c: RCase, payload: unknown): unknown {
  switch (t.k) {
    case "enum":
      return c.name;
    case "option":
      if (c.t === null) return t.nestedOption ? { tag: "none" } : undefined;
      return t.nestedOption ? { tag: "some", val: payload } : payload;
    case "result":
      return { tag: c.name, val: payload };
    default:
      return c.t === null ? { tag: c.name } : { tag: c.name, val: payload };
  }
}

/**
 * Lifts the payload of case `c` of variant-like `t` from the flat values after the
 * discriminant, which are joined across cases: converted back where the case's own
 * core types differ.
 */
function liftPayload(cx: Cx, t: RVariant | REnum, c: RType, vi: FlatIn): unknown {
  const start = vi.i;
  let same = true;
  for (let j = 0; j < c.flat.length; j++) {
    if (c.flat[j] !== t.flat[j + 1]) {
      same = false;
      break;
    }
  }
  if (same) return liftFlat(cx, c, vi);
  const vals = c.flat.map((want, j) => coerce(vi.vals[start + j], t.flat[j + 1], want));
  return liftFlat(cx, c, new FlatIn(vals));
}

/** Lifts one value of type `t` from flat core values. */
export function liftFlat(cx: Cx, t: RType, vi: FlatIn): unknown {
  switch (t.k) {
    case "bool":
      return (vi.next() as number) !== 0;
    case "u8":
      return (vi.next() as number) & 0xff;
    case "s8":
      return ((vi.next() as number) << 24) >> 24;
    case "u16":
      return (vi.next() as number) & 0xffff;
    case "s16":
      return ((vi.next() as number) << 16) >> 16;
    case "u32":
      return (vi.next() as number) >>> 0;
    case "s32":
      return (vi.next() as number) | 0;
    case "u64":
      return BigInt.asUintN(64, vi.next() as bigint);
    case "s64":
      return BigInt.asIntN(64, vi.next() as bigint);
    case "f32":
    case "f64":
      return vi.next();
    case "char":
      return liftChar((vi.next() as number) >>> 0);
    case "string": {
      const ptr = (vi.next() as number) >>> 0;
      return loadString(cx, ptr, (vi.next() as number) >>> 0);
    }
    case "list": {
      if (t.len !== undefined) {
        const out: unknown[] = [];
        for (let i = 0; i < t.len; i++) out.push(liftFlat(cx, t.elem, vi));
        return out;
      }
      const ptr = (vi.next() as number) >>> 0;
      return loadList(cx, t, ptr, (vi.next() as number) >>> 0);
    }
    case "record":
    case "tuple": {
      const out = (t.k === "tuple" ? [] : {}) as Record<string | number, unknown>;
      for (const f of t.fields) out[f.key] = liftFlat(cx, f.t, vi);
      return out;
    }
    case "variant":
    case "enum":
    case "option":
    case "result": {
      const c = caseOf(t, (vi.next() as number) >>> 0);
      const start = vi.i;
      const payload = c.t === null ? undefined : liftPayload(cx, t, c.t, vi);
      vi.i = start + t.flat.length - 1;
      return liftCase(t, c, payload);
    }
    case "flags": {
      const bits = vi.next() as number;
      const out: Record<string, boolean> = {};
      t.keys.forEach((key, i) => out[key] = (bits & (1 << i)) !== 0);
      return out;
    }
    case "own":
      return cx.handles.table(t.res).remove(vi.next() as number);
    case "borrow":
      return cx.handles.table(t.res).get(vi.next() as number);
  }
  throw new Error(`lean glue: cannot lift ${(t as RType).k}`);
}

function loadList(cx: Cx, t: RList, ptr: number, len: number): unknown {
  const elem = t.elem;
  cx.check(ptr, len * elem.size, elem.align);
  if (t.typed !== undefined) {
    // A copy made as a new array of its own length, not from a slice of the memory's
    // buffer: V8 keeps a small one inside its heap, where a sliced ArrayBuffer is
    // memory outside it (each adds to the external memory that drives full GCs).
    const bytes = cx.bytes();
    if (t.typed === Uint8Array) return bytes.slice(ptr, ptr + len);
    const out = new t.typed(len);
    new Uint8Array(out.buffer, out.byteOffset, out.byteLength)
      .set(bytes.subarray(ptr, ptr + len * elem.size));
    return out;
  }
  const out: unknown[] = [];
  for (let i = 0; i < len; i++) out.push(load(cx, elem, ptr + i * elem.size));
  return out;
}

/** Loads one value of type `t` from the guest's memory at `ptr`. */
export function load(cx: Cx, t: RType, ptr: number): unknown {
  const dv = cx.view();
  switch (t.k) {
    case "bool":
      return dv.getUint8(ptr) !== 0;
    case "u8":
      return dv.getUint8(ptr);
    case "s8":
      return dv.getInt8(ptr);
    case "u16":
      return dv.getUint16(ptr, true);
    case "s16":
      return dv.getInt16(ptr, true);
    case "u32":
      return dv.getUint32(ptr, true);
    case "s32":
      return dv.getInt32(ptr, true);
    case "u64":
      return dv.getBigUint64(ptr, true);
    case "s64":
      return dv.getBigInt64(ptr, true);
    case "f32":
      return dv.getFloat32(ptr, true);
    case "f64":
      return dv.getFloat64(ptr, true);
    case "char":
      return liftChar(dv.getUint32(ptr, true));
    case "string":
      return loadString(cx, dv.getUint32(ptr, true), dv.getUint32(ptr + 4, true));
    case "list": {
      if (t.len !== undefined) {
        const out: unknown[] = [];
        for (let i = 0; i < t.len; i++) out.push(load(cx, t.elem, ptr + i * t.elem.size));
        return out;
      }
      return loadList(cx, t, dv.getUint32(ptr, true), dv.getUint32(ptr + 4, true));
    }
    case "record":
    case "tuple": {
      const out = (t.k === "tuple" ? [] : {}) as Record<string | number, unknown>;
      for (const f of t.fields) out[f.key] = load(cx, f.t, ptr + f.offset);
      return out;
    }
    case "variant":
    case "enum":
    case "option":
    case "result": {
      const index = t.discSize === 1
        ? dv.getUint8(ptr)
        : t.discSize === 2
        ? dv.getUint16(ptr, true)
        : dv.getUint32(ptr, true);
      const c = caseOf(t, index);
      return liftCase(t, c, c.t === null ? undefined : load(cx, c.t, ptr + t.payloadOffset));
    }
    case "flags": {
      const bits = t.size === 1
        ? dv.getUint8(ptr)
        : t.size === 2
        ? dv.getUint16(ptr, true)
        : dv.getUint32(ptr, true);
      const out: Record<string, boolean> = {};
      t.keys.forEach((key, i) => out[key] = (bits & (1 << i)) !== 0);
      return out;
    }
    case "own":
      return cx.handles.table(t.res).remove(dv.getUint32(ptr, true));
    case "borrow":
      return cx.handles.table(t.res).get(dv.getUint32(ptr, true));
  }
  throw new Error(`lean glue: cannot load ${(t as RType).k}`);
}

// ---- Lowering (JS → wasm) --------------------------------------------------------------

const encoder = new TextEncoder();

function utf8Length(s: string): number {
  let len = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) len += 1;
    else if (c < 0x800) len += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        len += 4;
        i++;
      } else {
        len += 3;
      }
    } else {
      len += 3;
    }
  }
  return len;
}

/**
 * The (tagged) length of what {@linkcode storeString} or {@linkcode storeList} stored
 * last: read right after the call, so that storing allocates nothing.
 */
let storedLength = 0;

/** Stores a string in newly allocated guest memory; returns its pointer (see `storedLength`). */
function storeString(cx: Cx, v: unknown): number {
  if (typeof v !== "string") throw new TypeError(`expected a string, got ${typeof v}`);
  if (cx.encoding === 0) {
    const len = utf8Length(v);
    const ptr = cx.alloc(1, len);
    if (len > 0) encoder.encodeInto(v, cx.bytes().subarray(ptr, ptr + len));
    storedLength = len;
    return ptr;
  }
  let latin = cx.encoding === 2;
  if (latin) {
    for (let i = 0; i < v.length; i++) {
      if (v.charCodeAt(i) > 0xff) {
        latin = false;
        break;
      }
    }
  }
  if (latin) {
    const ptr = cx.alloc(2, v.length);
    const bytes = cx.bytes();
    for (let i = 0; i < v.length; i++) bytes[ptr + i] = v.charCodeAt(i);
    storedLength = v.length;
    return ptr;
  }
  const ptr = cx.alloc(2, v.length * 2);
  const dv = cx.view();
  for (let i = 0; i < v.length; i++) dv.setUint16(ptr + i * 2, v.charCodeAt(i), true);
  storedLength = cx.encoding === 2 ? (v.length | 0x8000_0000) >>> 0 : v.length;
  return ptr;
}

/** Stores a list in newly allocated guest memory; returns its pointer (see `storedLength`). */
function storeList(cx: Cx, t: RList, v: unknown): number {
  const elem = t.elem;
  if (t.typed !== undefined && ArrayBuffer.isView(v)) {
    const view = v as NumericArray;
    const len = view.length;
    const ptr = cx.alloc(elem.align, len * elem.size);
    if (view instanceof t.typed) {
      cx.bytes().set(new Uint8Array(view.buffer, view.byteOffset, view.byteLength), ptr);
    } else {
      for (let i = 0; i < len; i++) store(cx, elem, view[i], ptr + i * elem.size);
    }
    storedLength = len;
    return ptr;
  }
  if (!Array.isArray(v)) throw new TypeError("expected an array");
  const ptr = cx.alloc(elem.align, v.length * elem.size);
  for (let i = 0; i < v.length; i++) store(cx, elem, v[i], ptr + i * elem.size);
  storedLength = v.length;
  return ptr;
}

/**
 * The payload of the case {@linkcode matchCase} last matched: read right after the
 * call (before anything else can match), so that matching allocates nothing.
 */
let matchedPayload: unknown;

/** The case index of a variant-like JS value; its payload is left in `matchedPayload`. */
function matchCase(t: RVariant | REnum, v: unknown): number {
  matchedPayload = undefined;
  switch (t.k) {
    case "enum": {
      const i = t.enumIndex.get(v as string);
      if (i === undefined) throw new TypeError(`invalid enum value ${String(v)}`);
      return i;
    }
    case "option":
      if (v === undefined || v === null) return 0;
      if (t.nestedOption) {
        const o = v as { tag?: string; val?: unknown };
        if (o.tag === "none") return 0;
        if (o.tag === "some") {
          matchedPayload = o.val;
          return 1;
        }
      }
      matchedPayload = v;
      return 1;
    case "result": {
      const r = v as { tag?: string; val?: unknown } | null | undefined;
      if (r?.tag === "ok" || r?.tag === "err") {
        matchedPayload = r.val;
        return r.tag === "ok" ? 0 : 1;
      }
      matchedPayload = v;
      return 0;
    }
    default: {
      const o = v as { tag?: string; val?: unknown } | null | undefined;
      const tag = o?.tag;
      for (let i = 0; i < t.cases.length; i++) {
        if (t.cases[i].name === tag) {
          matchedPayload = o!.val;
          return i;
        }
      }
      throw new TypeError(`invalid variant tag ${String(tag)}`);
    }
  }
}

function i32Of(v: unknown): number {
  return Number(v) | 0;
}

function bigOf(v: unknown): bigint {
  return typeof v === "bigint" ? v : BigInt(v as number);
}

function lowerOwn(cx: Cx, t: RHandle, v: unknown): number {
  const cls = cx.handles.classOf(t.res);
  if (v === undefined || v === null || (cls !== undefined && !(v instanceof cls))) {
    throw new TypeError(`Resource error: not a valid ${cls?.name ?? "resource"} resource`);
  }
  return cx.handles.table(t.res).insert(v);
}

function charOf(v: unknown): number {
  const s = String(v);
  const c = s.codePointAt(0);
  if (c === undefined || s.length !== (c > 0xffff ? 2 : 1)) {
    throw new TypeError(`expected a single character, got ${JSON.stringify(s)}`);
  }
  return c;
}

/** Lowers one value of type `t` into flat core values (appended to `out`). */
export function lowerFlat(cx: Cx, t: RType, v: unknown, out: unknown[]): void {
  switch (t.k) {
    case "bool":
      out.push(v ? 1 : 0);
      return;
    case "u8":
    case "s8":
    case "u16":
    case "s16":
    case "u32":
    case "s32":
      out.push(i32Of(v));
      return;
    case "u64":
    case "s64":
      out.push(BigInt.asIntN(64, bigOf(v)));
      return;
    case "f32":
    case "f64":
      out.push(Number(v));
      return;
    case "char":
      out.push(charOf(v));
      return;
    case "string": {
      const ptr = storeString(cx, v);
      out.push(ptr, storedLength);
      return;
    }
    case "list":
      if (t.len !== undefined) {
        const a = v as ArrayLike<unknown>;
        for (let i = 0; i < t.len; i++) lowerFlat(cx, t.elem, a[i], out);
      } else {
        const ptr = storeList(cx, t, v);
        out.push(ptr, storedLength);
      }
      return;
    case "record":
    case "tuple": {
      const o = v as Record<string | number, unknown>;
      for (const f of t.fields) lowerFlat(cx, f.t, o[f.key], out);
      return;
    }
    case "variant":
    case "enum":
    case "option":
    case "result": {
      const index = matchCase(t, v);
      const payload = matchedPayload;
      out.push(index);
      const c = t.cases[index].t;
      let n = 1;
      if (c !== null) {
        const start = out.length;
        lowerFlat(cx, c, payload, out);
        for (let j = 0; j < c.flat.length; j++) {
          if (c.flat[j] !== t.flat[j + 1]) {
            out[start + j] = widen(out[start + j], c.flat[j], t.flat[j + 1]);
          }
        }
        n += c.flat.length;
      }
      for (; n < t.flat.length; n++) out.push(t.flat[n] === "i64" ? 0n : 0);
      return;
    }
    case "flags": {
      const o = v as Record<string, unknown>;
      let bits = 0;
      t.keys.forEach((key, i) => {
        if (o?.[key]) bits |= 1 << i;
      });
      out.push(bits);
      return;
    }
    case "own":
      out.push(lowerOwn(cx, t, v));
      return;
    case "borrow":
      throw new Error("lean glue: borrowed handles cannot be given to the guest");
  }
  throw new Error(`lean glue: cannot lower ${(t as RType).k}`);
}

function widen(v: unknown, have: Flat, want: Flat): unknown {
  if (have === want) return v;
  if (have === "f32" && want === "i32") {
    f32Scratch.setFloat32(0, v as number, true);
    return f32Scratch.getInt32(0, true);
  }
  if (have === "i32" && want === "i64") return BigInt((v as number) >>> 0);
  if (have === "f32" && want === "i64") {
    f32Scratch.setFloat32(0, v as number, true);
    return BigInt(f32Scratch.getUint32(0, true));
  }
  if (have === "f64" && want === "i64") {
    f32Scratch.setFloat64(0, v as number, true);
    return f32Scratch.getBigInt64(0, true);
  }
  throw new Error(`lean glue: cannot widen ${have} to ${want}`);
}

/** Stores one value of type `t` at `ptr` in the guest's memory. */
export function store(cx: Cx, t: RType, v: unknown, ptr: number): void {
  switch (t.k) {
    case "bool":
      cx.view().setUint8(ptr, v ? 1 : 0);
      return;
    case "u8":
    case "s8":
      cx.view().setUint8(ptr, i32Of(v) & 0xff);
      return;
    case "u16":
    case "s16":
      cx.view().setUint16(ptr, i32Of(v) & 0xffff, true);
      return;
    case "u32":
    case "s32":
      cx.view().setInt32(ptr, i32Of(v), true);
      return;
    case "u64":
    case "s64":
      cx.view().setBigInt64(ptr, BigInt.asIntN(64, bigOf(v)), true);
      return;
    case "f32":
      cx.view().setFloat32(ptr, Number(v), true);
      return;
    case "f64":
      cx.view().setFloat64(ptr, Number(v), true);
      return;
    case "char":
      cx.view().setUint32(ptr, charOf(v), true);
      return;
    case "string": {
      // Allocate first: realloc may grow the memory (and renew the view).
      const p = storeString(cx, v);
      const len = storedLength;
      cx.view().setUint32(ptr, p, true);
      cx.view().setUint32(ptr + 4, len, true);
      return;
    }
    case "list": {
      if (t.len !== undefined) {
        const a = v as ArrayLike<unknown>;
        for (let i = 0; i < t.len; i++) store(cx, t.elem, a[i], ptr + i * t.elem.size);
        return;
      }
      const p = storeList(cx, t, v);
      const len = storedLength;
      cx.view().setUint32(ptr, p, true);
      cx.view().setUint32(ptr + 4, len, true);
      return;
    }
    case "record":
    case "tuple": {
      const o = v as Record<string | number, unknown>;
      for (const f of t.fields) store(cx, f.t, o[f.key], ptr + f.offset);
      return;
    }
    case "variant":
    case "enum":
    case "option":
    case "result": {
      const index = matchCase(t, v);
      const payload = matchedPayload;
      const dv = cx.view();
      if (t.discSize === 1) dv.setUint8(ptr, index);
      else if (t.discSize === 2) dv.setUint16(ptr, index, true);
      else dv.setUint32(ptr, index, true);
      const c = t.cases[index].t;
      if (c !== null) store(cx, c, payload, ptr + t.payloadOffset);
      return;
    }
    case "flags": {
      const o = v as Record<string, unknown>;
      let bits = 0;
      t.keys.forEach((key, i) => {
        if (o?.[key]) bits |= 1 << i;
      });
      const dv = cx.view();
      if (t.size === 1) dv.setUint8(ptr, bits);
      else if (t.size === 2) dv.setUint16(ptr, bits, true);
      else dv.setUint32(ptr, bits, true);
      return;
    }
    case "own":
      cx.view().setUint32(ptr, lowerOwn(cx, t, v), true);
      return;
    case "borrow":
      throw new Error("lean glue: borrowed handles cannot be given to the guest");
  }
  throw new Error(`lean glue: cannot store ${(t as RType).k}`);
}
