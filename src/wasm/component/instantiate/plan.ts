/**
 * Reads a component binary into a {@linkcode LeanPlan}: the component's core modules,
 * the order in which their instances are created and linked, the host functions they
 * import (with their WIT types and canonical ABI options) and the functions the
 * component exports. {@linkcode ./link.ts} turns a plan into an `instantiate` as cheap
 * as the component allows; see `./mod.ts` for why.
 *
 * Only what components built by wit-component for WASI 0.2 worlds use is read: imported
 * interface instances (their functions and resource types), core modules and instances,
 * aliases, `canon lift`/`lower`/`resource.drop`, exported instances and functions, and
 * nested components that only re-export what they are given (wit-component's export
 * shims). Anything else (component-defined resources, core types, async lifts and
 * lowers, streams, futures, start functions, values, nested components with code)
 * throws {@linkcode Unsupported}, and the caller uses jco's glue instead.
 *
 * @module
 */

import { scanWrites } from "./code_scan.ts";
import { prepareImage } from "./image.ts";
import { importMemory, MEMORY_IMPORT } from "./memory.ts";
import { usesMemorySize, virtualizeMemory } from "./vsize.ts";
import { elideShims } from "./shim.ts";
import { BinaryReader } from "../binary.ts";
import type {
  CoreRef,
  LeanPlan,
  PlanExport,
  PlanFunc,
  PlanLift,
  PlanLower,
  PlanOpts,
  PlanStep,
  PlanType,
  PrimKind,
} from "./plan_data.ts";

/** A construct this reader does not handle (the caller falls back to jco's glue). */
export class Unsupported extends Error {
  /** `what` is not handled. */
  constructor(what: string) {
    super(what);
    this.name = "Unsupported";
  }
}

/** Options of {@linkcode readComponent}. */
export interface ReadOptions {
  /**
   * Prepare core modules for memory images and recycling (`image.ts`); default true.
   * False gives every instance today's path (fresh core instances, data copied by V8).
   */
  images?: boolean;
}

/**
 * Version of the plan format and of what reading produces (part of the glue's header,
 * so of cache keys): bumped whenever either changes.
 */
export const PLAN_FORMAT = 6;

/** What {@linkcode readComponent} returns. */
export interface ReadComponent {
  plan: LeanPlan;
  /** Core module bytes by name. */
  cores: Map<string, Uint8Array>;
}

/** The name jco gives core module `index` (so both kinds of glue share cache layouts). */
export function coreModuleName(index: number): string {
  return `component.core${index === 0 ? "" : index + 1}.wasm`;
}

// ---- Types while reading ---------------------------------------------------------

interface Resource {
  k: "resource";
  iface: string;
  name: string;
}

type ValType =
  | { k: PrimKind }
  | { k: "record"; fields: [string, ValType][] }
  | { k: "variant"; cases: [string, ValType | null][] }
  | { k: "list"; elem: ValType; len?: number }
  | { k: "tuple"; types: ValType[] }
  | { k: "flags"; names: string[] }
  | { k: "enum"; names: string[] }
  | { k: "option"; type: ValType }
  | { k: "result"; ok: ValType | null; err: ValType | null }
  | { k: "own"; res: Resource }
  | { k: "borrow"; res: Resource };

interface FuncType {
  k: "func";
  params: [string, ValType][];
  result: ValType | null;
}

/** An instance type, re-read for every import of it (each import has fresh resources). */
interface InstanceType {
  k: "instance-type";
  bytes: Uint8Array;
  start: number;
  end: number;
  scope: Scope;
}

/** A component type (read past, never used). */
interface ComponentType {
  k: "component-type";
}

type TypeEntry = ValType | FuncType | Resource | InstanceType | ComponentType;

type Func =
  | { t: "host"; iface: string; name: string; type: FuncType }
  | { t: "lift"; core: CoreRef; type: FuncType; opts: Opts };

interface Opts {
  encoding: PlanOpts["encoding"];
  memory: CoreRef | null;
  realloc: CoreRef | null;
  postReturn: CoreRef | null;
}

type Item =
  | { sort: "func"; v: Func }
  | { sort: "type"; v: TypeEntry }
  | { sort: "instance"; v: Instance }
  | { sort: "component"; v: NestedComponent };

interface Instance {
  exports: Map<string, Item>;
}

interface NestedComponent {
  bytes: Uint8Array;
  start: number;
  end: number;
  scope: Scope;
}

/** Index spaces of one component, component type or instance type. */
class Scope {
  types: TypeEntry[] = [];
  funcs: Func[] = [];
  instances: Instance[] = [];
  components: NestedComponent[] = [];
  coreFuncs: CoreRef[] = [];
  coreMemories: CoreRef[] = [];
  coreTables: CoreRef[] = [];
  coreGlobals: CoreRef[] = [];
  coreModules: number[] = [];
  coreInstances: number[] = [];
  constructor(readonly parent: Scope | null, readonly top: boolean) {}

  outer(count: number): Scope {
    if (count === 0) return this;
    if (this.parent === null) throw new Unsupported(`outer alias ${count} leaves the component`);
    return this.parent.outer(count - 1);
  }
}

const PRIMS: Record<number, PrimKind> = {
  0x7f: "bool",
  0x7e: "s8",
  0x7d: "u8",
  0x7c: "s16",
  0x7b: "u16",
  0x7a: "s32",
  0x79: "u32",
  0x78: "s64",
  0x77: "u64",
  0x76: "f32",
  0x75: "f64",
  0x74: "char",
  0x73: "string",
};
const PRIM_TYPES = new Map<PrimKind, ValType>(
  Object.values(PRIMS).map((k) => [k, { k }]),
);

// ---- Reading -----------------------------------------------------------------------

/** The component binary reader, with the component model's names. */
class Reader extends BinaryReader {
  /** `importname'` / `exportname'` (and the current `nameattributes`). */
  name(): string {
    const tag = this.byte();
    if (tag === 0x00 || tag === 0x01) return this.string();
    if (tag === 0x02) {
      const name = this.string();
      const count = this.u32();
      for (let i = 0; i < count; i++) {
        const kind = this.byte();
        if (kind === 0x00 || kind === 0x01 || kind === 0x02) this.string();
        else throw new Unsupported(`name attribute 0x${kind.toString(16)}`);
      }
      return name;
    }
    throw new Unsupported(`name encoding 0x${tag.toString(16)}`);
  }
}

/** The function-level view of a value type entry (rejecting non-value types). */
function valType(entry: TypeEntry | undefined, what: string): ValType {
  if (entry === undefined) throw new Error(`${what}: no such type`);
  if (
    entry.k === "func" || entry.k === "resource" || entry.k === "instance-type" ||
    entry.k === "component-type"
  ) {
    throw new Error(`${what}: a ${entry.k} is not a value type`);
  }
  return entry;
}

function resourceOf(entry: TypeEntry | undefined, what: string): Resource {
  if (entry?.k !== "resource") throw new Error(`${what}: not a resource type`);
  return entry;
}

function readValType(r: Reader, scope: Scope): ValType {
  const v = r.s33();
  if (v < 0) {
    const prim = PRIMS[v + 0x80];
    if (prim === undefined) throw new Unsupported(`value type 0x${(v + 0x80).toString(16)}`);
    return PRIM_TYPES.get(prim)!;
  }
  return valType(scope.types[v], `type index ${v}`);
}

function readOptional<T>(r: Reader, read: () => T): T | null {
  const flag = r.byte();
  if (flag === 0x00) return null;
  if (flag === 0x01) return read();
  throw new Error(`bad option flag 0x${flag.toString(16)} at byte ${r.offset - 1}`);
}

function readFuncType(r: Reader, scope: Scope): FuncType {
  const params: [string, ValType][] = [];
  const count = r.u32();
  for (let i = 0; i < count; i++) params.push([r.string(), readValType(r, scope)]);
  let result: ValType | null = null;
  const tag = r.byte();
  if (tag === 0x00) result = readValType(r, scope);
  else if (tag !== 0x01 || r.u32() !== 0) throw new Unsupported("named function results");
  return { k: "func", params, result };
}

/** Reads a `deftype`. Instance types are read through (resources made in `scratch`). */
function readDefType(r: Reader, scope: Scope): TypeEntry {
  const code = r.peek();
  switch (code) {
    case 0x40:
      r.byte();
      return readFuncType(r, scope);
    case 0x43:
      throw new Unsupported("async function types");
    case 0x42: {
      r.byte();
      const start = r.offset;
      // Read once to find the end (and check it); each import reads it again.
      readInstanceDecls(r, new Scope(scope, false), "");
      return { k: "instance-type", bytes: r.bytes, start, end: r.offset, scope };
    }
    case 0x41: {
      r.byte();
      readComponentTypeDecls(r, new Scope(scope, false));
      return { k: "component-type" };
    }
    case 0x3f:
    case 0x3e:
      throw new Unsupported("resource types defined by the component");
  }
  r.byte();
  if (PRIMS[code] !== undefined) return PRIM_TYPES.get(PRIMS[code])!;
  switch (code) {
    case 0x72: {
      const fields: [string, ValType][] = [];
      const n = r.u32();
      for (let i = 0; i < n; i++) fields.push([r.string(), readValType(r, scope)]);
      return { k: "record", fields };
    }
    case 0x71: {
      const cases: [string, ValType | null][] = [];
      const n = r.u32();
      for (let i = 0; i < n; i++) {
        const name = r.string();
        const type = readOptional(r, () => readValType(r, scope));
        if (r.byte() !== 0x00) throw new Unsupported("variant case refinements");
        cases.push([name, type]);
      }
      return { k: "variant", cases };
    }
    case 0x70:
      return { k: "list", elem: readValType(r, scope) };
    case 0x67: {
      const elem = readValType(r, scope);
      return { k: "list", elem, len: r.u32() };
    }
    case 0x6f: {
      const types: ValType[] = [];
      const n = r.u32();
      for (let i = 0; i < n; i++) types.push(readValType(r, scope));
      return { k: "tuple", types };
    }
    case 0x6e:
    case 0x6d: {
      const names: string[] = [];
      const n = r.u32();
      for (let i = 0; i < n; i++) names.push(r.string());
      return code === 0x6e ? { k: "flags", names } : { k: "enum", names };
    }
    case 0x6b:
      return { k: "option", type: readValType(r, scope) };
    case 0x6a: {
      const ok = readOptional(r, () => readValType(r, scope));
      const err = readOptional(r, () => readValType(r, scope));
      return { k: "result", ok, err };
    }
    case 0x69:
    case 0x68: {
      const idx = r.u32();
      const res = resourceOf(scope.types[idx], `handle type index ${idx}`);
      return code === 0x69 ? { k: "own", res } : { k: "borrow", res };
    }
    default:
      throw new Unsupported(`type 0x${code.toString(16)} (streams, futures, maps, errors)`);
  }
}

/** What an instance type declares, in an import's terms. */
interface InstanceDecls {
  funcs: Map<string, FuncType>;
  types: Map<string, TypeEntry>;
}

/**
 * Reads instance type declarations into `scope`; with a non-empty `iface`, exported
 * resources belong to that interface (an import), else they are placeholders.
 */
function readInstanceDecls(r: Reader, scope: Scope, iface: string): InstanceDecls {
  return readDecls(r, scope, iface, "instance");
}

/** Reads component type declarations into `scope` (imports are read like exports). */
function readComponentTypeDecls(r: Reader, scope: Scope): void {
  readDecls(r, scope, "", "component");
}

/**
 * The declarations of an instance type or a component type: the same but for
 * imports (tag 0x03), which only a component type has.
 */
function readDecls(
  r: Reader,
  scope: Scope,
  iface: string,
  of: "instance" | "component",
): InstanceDecls {
  const out: InstanceDecls = { funcs: new Map(), types: new Map() };
  const count = r.u32();
  for (let i = 0; i < count; i++) {
    const tag = r.byte();
    switch (tag) {
      case 0x00:
        throw new Unsupported(`core types in ${of} types`);
      case 0x01:
        scope.types.push(readDefType(r, scope));
        break;
      case 0x02:
        readTypeAlias(r, scope);
        break;
      case 0x03:
      case 0x04:
        if (tag === 0x03 && of === "instance") throw badDecl(of, tag);
        readExportDecl(r, scope, iface, r.name(), out);
        break;
      default:
        throw badDecl(of, tag);
    }
  }
  return out;
}

function badDecl(of: string, tag: number): Error {
  return new Error(`bad ${of} declaration 0x${tag.toString(16)}`);
}

/** An `alias` inside a type: only outer aliases of types are meaningful here. */
function readTypeAlias(r: Reader, scope: Scope): void {
  const sort = r.byte();
  if (sort === 0x00) {
    r.byte();
    throw new Unsupported("core aliases in types");
  }
  const target = r.byte();
  if (target !== 0x02 || sort !== 0x03) throw new Unsupported("non-type aliases in types");
  const ct = r.u32();
  const idx = r.u32();
  const entry = scope.outer(ct).types[idx];
  if (entry === undefined) throw new Error(`outer alias ${ct} ${idx}: no such type`);
  scope.types.push(entry);
}

function readExportDecl(
  r: Reader,
  scope: Scope,
  iface: string,
  name: string,
  out: InstanceDecls,
): void {
  const kind = r.byte();
  switch (kind) {
    case 0x01: {
      const idx = r.u32();
      const type = scope.types[idx];
      if (type?.k !== "func") throw new Error(`export ${name}: type ${idx} is not a function`);
      out.funcs.set(name, type);
      return;
    }
    case 0x03: {
      const bound = r.byte();
      let entry: TypeEntry;
      if (bound === 0x00) {
        const idx = r.u32();
        entry = scope.types[idx];
        if (entry === undefined) throw new Error(`export ${name}: no type ${idx}`);
      } else if (bound === 0x01) {
        entry = { k: "resource", iface, name };
      } else {
        throw new Error(`bad type bound 0x${bound.toString(16)}`);
      }
      scope.types.push(entry);
      out.types.set(name, entry);
      return;
    }
    case 0x00:
      r.byte();
      r.u32();
      throw new Unsupported(`core module ${name} in a type`);
    case 0x02:
      throw new Unsupported(`value ${name} in a type`);
    case 0x04:
    case 0x05:
      r.u32();
      throw new Unsupported(`nested ${kind === 0x04 ? "component" : "instance"} ${name}`);
    default:
      throw new Error(`bad extern type 0x${kind.toString(16)}`);
  }
}

/** The instance an import of `type` named `iface` gives (host functions, fresh resources). */
function importInstance(type: InstanceType, iface: string): Instance {
  const r = new Reader(type.bytes, type.start, type.end);
  const decls = readInstanceDecls(r, new Scope(type.scope, false), iface);
  const exports = new Map<string, Item>();
  for (const [name, v] of decls.types) exports.set(name, { sort: "type", v });
  for (const [name, fn] of decls.funcs) {
    exports.set(name, { sort: "func", v: { t: "host", iface, name, type: fn } });
  }
  return { exports };
}

/** Mutable state of the top-level component being read. */
class Builder {
  modules: string[] = [];
  cores = new Map<string, Uint8Array>();
  steps: PlanStep[] = [];
  lowers: { iface: string; name: string; type: FuncType; opts: Opts }[] = [];
  resources: Resource[] = [];
  exports: { kind: "instance" | "func"; name: string; item: Item }[] = [];

  resourceIndex(res: Resource): number {
    if (res.iface === "") throw new Unsupported(`resource ${res.name} of no interface`);
    let i = this.resources.indexOf(res);
    if (i < 0) i = this.resources.push(res) - 1;
    return i;
  }
}

function readOpts(r: Reader, scope: Scope): Opts {
  const opts: Opts = { encoding: "utf8", memory: null, realloc: null, postReturn: null };
  const count = r.u32();
  for (let i = 0; i < count; i++) {
    const tag = r.byte();
    switch (tag) {
      case 0x00:
        opts.encoding = "utf8";
        break;
      case 0x01:
        opts.encoding = "utf16";
        break;
      case 0x02:
        opts.encoding = "latin1+utf16";
        break;
      case 0x03:
        opts.memory = coreItem(scope.coreMemories, r.u32(), "memory");
        break;
      case 0x04:
        opts.realloc = coreItem(scope.coreFuncs, r.u32(), "realloc");
        break;
      case 0x05:
        opts.postReturn = coreItem(scope.coreFuncs, r.u32(), "post-return");
        break;
      default:
        throw new Unsupported(`canonical option 0x${tag.toString(16)} (async, callback, gc)`);
    }
  }
  return opts;
}

function coreItem<T>(space: T[], idx: number, what: string): T {
  const item = space[idx];
  if (item === undefined) throw new Error(`no core ${what} ${idx}`);
  return item;
}

function readSortIdx(r: Reader, scope: Scope): Item {
  const sort = r.byte();
  if (sort === 0x00) {
    r.byte();
    r.u32();
    throw new Unsupported("core items in component instances");
  }
  const idx = r.u32();
  return itemAt(scope, sort, idx);
}

function itemAt(scope: Scope, sort: number, idx: number): Item {
  switch (sort) {
    case 0x01: {
      const v = scope.funcs[idx];
      if (v === undefined) throw new Error(`no func ${idx}`);
      return { sort: "func", v };
    }
    case 0x03: {
      const v = scope.types[idx];
      if (v === undefined) throw new Error(`no type ${idx}`);
      return { sort: "type", v };
    }
    case 0x04: {
      const v = scope.components[idx];
      if (v === undefined) throw new Error(`no component ${idx}`);
      return { sort: "component", v };
    }
    case 0x05: {
      const v = scope.instances[idx];
      if (v === undefined) throw new Error(`no instance ${idx}`);
      return { sort: "instance", v };
    }
    default:
      throw new Unsupported(`sort 0x${sort.toString(16)}`);
  }
}

function pushItem(scope: Scope, item: Item): void {
  switch (item.sort) {
    case "func":
      scope.funcs.push(item.v);
      break;
    case "type":
      scope.types.push(item.v);
      break;
    case "instance":
      scope.instances.push(item.v);
      break;
    case "component":
      scope.components.push(item.v);
      break;
  }
}

const SORT_CODES: Record<Item["sort"], number> = {
  func: 0x01,
  type: 0x03,
  component: 0x04,
  instance: 0x05,
};

/**
 * Reads one component's sections into `scope`. The top-level component (`b` given)
 * may hold core modules and instances; a nested one (`args` given) may only re-export.
 */
function readSections(
  r: Reader,
  scope: Scope,
  b: Builder | null,
  args: Map<string, Item> | null,
): Map<string, Item> {
  const exports = new Map<string, Item>();
  const needTop = (what: string) => {
    if (b === null) throw new Unsupported(`${what} in a nested component`);
    return b;
  };
  while (!r.done) {
    const id = r.byte();
    const size = r.u32();
    const end = r.offset + size;
    if (end > r.end) throw new Error(`section ${id} overruns`);
    const s = new Reader(r.bytes, r.offset, end);
    switch (id) {
      case 0:
        break;
      case 1: {
        const builder = needTop("core modules");
        const index = builder.modules.length;
        const name = coreModuleName(index);
        builder.modules.push(name);
        builder.cores.set(name, r.bytes.slice(r.offset, end));
        scope.coreModules.push(index);
        break;
      }
      case 2: {
        const builder = needTop("core instances");
        const count = s.u32();
        for (let i = 0; i < count; i++) readCoreInstance(s, scope, builder);
        break;
      }
      case 3:
        throw new Unsupported("core type sections");
      case 4: {
        // Read past it now; it is read for real when instantiated.
        const start = r.offset;
        scope.components.push({ bytes: r.bytes, start: start + 8, end, scope });
        break;
      }
      case 5: {
        const count = s.u32();
        for (let i = 0; i < count; i++) scope.instances.push(readInstance(s, scope));
        break;
      }
      case 6: {
        const count = s.u32();
        for (let i = 0; i < count; i++) readAlias(s, scope);
        break;
      }
      case 7: {
        const count = s.u32();
        for (let i = 0; i < count; i++) scope.types.push(readDefType(s, scope));
        break;
      }
      case 8: {
        const builder = needTop("canonical functions");
        const count = s.u32();
        for (let i = 0; i < count; i++) readCanon(s, scope, builder);
        break;
      }
      case 9:
        throw new Unsupported("start functions");
      case 10: {
        const count = s.u32();
        for (let i = 0; i < count; i++) readImport(s, scope, args);
        break;
      }
      case 11: {
        const count = s.u32();
        for (let i = 0; i < count; i++) {
          const name = s.name();
          const item = readSortIdx(s, scope);
          // An optional type ascription: it cannot change the ABI of what is exported.
          if (s.byte() === 0x01) skipExternDesc(s);
          exports.set(name, item);
          pushItem(scope, item);
          if (b !== null && (item.sort === "instance" || item.sort === "func")) {
            b.exports.push({ kind: item.sort, name, item });
          }
        }
        break;
      }
      case 12:
        throw new Unsupported("value sections");
      default:
        throw new Error(`unknown section ${id}`);
    }
    if (id !== 1 && id !== 4 && id !== 0 && !s.done) {
      throw new Error(`section ${id}: trailing bytes`);
    }
    r.offset = end;
  }
  return exports;
}

function skipExternDesc(r: Reader): void {
  const kind = r.byte();
  if (kind === 0x00) {
    r.byte();
    r.u32();
  } else if (kind === 0x02 || kind === 0x03) {
    if (r.byte() === 0x00) r.u32();
    else if (kind === 0x02) r.s33();
  } else {
    r.u32();
  }
}

function readImport(r: Reader, scope: Scope, args: Map<string, Item> | null): void {
  const name = r.name();
  const kind = r.byte();
  if (args !== null) {
    // A nested component: its imports are what it is instantiated with.
    const arg = args.get(name);
    if (arg === undefined) throw new Error(`nested component import ${name} not supplied`);
    if (kind === 0x03) {
      const bound = r.byte();
      if (bound === 0x00) {
        const idx = r.u32();
        const entry = scope.types[idx];
        if (entry === undefined) throw new Error(`import ${name}: no type ${idx}`);
      }
    } else if (kind === 0x00) {
      throw new Unsupported("core module imports");
    } else if (kind === 0x02) {
      throw new Unsupported("value imports");
    } else {
      r.u32();
    }
    pushItem(scope, arg);
    return;
  }
  switch (kind) {
    case 0x05: {
      const idx = r.u32();
      const type = scope.types[idx];
      if (type?.k !== "instance-type") throw new Error(`import ${name}: not an instance type`);
      scope.instances.push(importInstance(type, name));
      return;
    }
    case 0x03: {
      const bound = r.byte();
      if (bound !== 0x00) throw new Unsupported(`imported resource type ${name}`);
      const idx = r.u32();
      const entry = scope.types[idx];
      if (entry === undefined) throw new Error(`import ${name}: no type ${idx}`);
      scope.types.push(entry);
      return;
    }
    default:
      throw new Unsupported(`import ${name} of kind 0x${kind.toString(16)} (only instances)`);
  }
}

function readCoreInstance(r: Reader, scope: Scope, b: Builder): void {
  const tag = r.byte();
  if (tag === 0x00) {
    const module = coreItem(scope.coreModules, r.u32(), "module");
    const args: [string, number][] = [];
    const n = r.u32();
    for (let i = 0; i < n; i++) {
      const name = r.string();
      if (r.byte() !== 0x12) {
        throw new Unsupported("core instantiate arguments other than instances");
      }
      args.push([name, coreItem(scope.coreInstances, r.u32(), "instance")]);
    }
    scope.coreInstances.push(b.steps.push({ op: "instantiate", module, args }) - 1);
  } else if (tag === 0x01) {
    const items: [string, CoreRef][] = [];
    const n = r.u32();
    for (let i = 0; i < n; i++) {
      const name = r.string();
      const sort = r.byte();
      const idx = r.u32();
      items.push([name, coreSortItem(scope, sort, idx)]);
    }
    scope.coreInstances.push(b.steps.push({ op: "bag", items }) - 1);
  } else {
    throw new Error(`bad core instance 0x${tag.toString(16)}`);
  }
}

function coreSortItem(scope: Scope, sort: number, idx: number): CoreRef {
  switch (sort) {
    case 0x00:
      return coreItem(scope.coreFuncs, idx, "func");
    case 0x01:
      return coreItem(scope.coreTables, idx, "table");
    case 0x02:
      return coreItem(scope.coreMemories, idx, "memory");
    case 0x03:
      return coreItem(scope.coreGlobals, idx, "global");
    default:
      throw new Unsupported(`core sort 0x${sort.toString(16)}`);
  }
}

function readInstance(r: Reader, scope: Scope): Instance {
  const tag = r.byte();
  if (tag === 0x01) {
    const exports = new Map<string, Item>();
    const n = r.u32();
    for (let i = 0; i < n; i++) {
      const name = r.name();
      exports.set(name, readSortIdx(r, scope));
    }
    return { exports };
  }
  if (tag !== 0x00) throw new Error(`bad instance 0x${tag.toString(16)}`);
  const component = coreItem(scope.components, r.u32(), "component");
  const args = new Map<string, Item>();
  const n = r.u32();
  for (let i = 0; i < n; i++) {
    const name = r.string();
    args.set(name, readSortIdx(r, scope));
  }
  const nested = new Scope(component.scope, false);
  const body = new Reader(component.bytes, component.start, component.end);
  return { exports: readSections(body, nested, null, args) };
}

function readAlias(r: Reader, scope: Scope): void {
  const sort = r.byte();
  const coreSort = sort === 0x00 ? r.byte() : -1;
  const target = r.byte();
  if (target === 0x00) {
    const inst = coreItem(scope.instances, r.u32(), "component instance");
    const name = r.string();
    const item = inst.exports.get(name);
    if (item === undefined) throw new Error(`alias: instance has no export ${name}`);
    if (sort === 0x00 || SORT_CODES[item.sort] !== sort) {
      throw new Error(`alias of ${name}: sort mismatch`);
    }
    pushItem(scope, item);
    return;
  }
  if (target === 0x01) {
    if (sort !== 0x00) throw new Error("core export alias of a component sort");
    const inst = coreItem(scope.coreInstances, r.u32(), "instance");
    const ref: CoreRef = { t: "export", inst, name: r.string() };
    switch (coreSort) {
      case 0x00:
        scope.coreFuncs.push(ref);
        return;
      case 0x01:
        scope.coreTables.push(ref);
        return;
      case 0x02:
        scope.coreMemories.push(ref);
        return;
      case 0x03:
        scope.coreGlobals.push(ref);
        return;
      default:
        throw new Unsupported(`core alias of sort 0x${coreSort.toString(16)}`);
    }
  }
  if (target === 0x02) {
    const outer = scope.outer(r.u32());
    const idx = r.u32();
    if (sort === 0x03) {
      const entry = outer.types[idx];
      if (entry === undefined) throw new Error(`outer alias: no type ${idx}`);
      scope.types.push(entry);
      return;
    }
    if (sort === 0x04) {
      scope.components.push(coreItem(outer.components, idx, "component"));
      return;
    }
    throw new Unsupported(`outer alias of sort 0x${sort.toString(16)}`);
  }
  throw new Error(`bad alias target 0x${target.toString(16)}`);
}

function readCanon(r: Reader, scope: Scope, b: Builder): void {
  const tag = r.byte();
  switch (tag) {
    case 0x00: {
      if (r.byte() !== 0x00) throw new Error("bad canon lift");
      const core = coreItem(scope.coreFuncs, r.u32(), "func");
      const opts = readOpts(r, scope);
      const idx = r.u32();
      const type = scope.types[idx];
      if (type?.k !== "func") throw new Error(`canon lift: type ${idx} is not a function`);
      scope.funcs.push({ t: "lift", core, type, opts });
      return;
    }
    case 0x01: {
      if (r.byte() !== 0x00) throw new Error("bad canon lower");
      const fn = coreItem(scope.funcs, r.u32(), "func");
      const opts = readOpts(r, scope);
      if (fn.t !== "host") throw new Unsupported("lowering a function the component lifts");
      const i = b.lowers.push({ iface: fn.iface, name: fn.name, type: fn.type, opts }) - 1;
      scope.coreFuncs.push({ t: "lower", i });
      return;
    }
    case 0x03: {
      const idx = r.u32();
      const res = resourceOf(scope.types[idx], `resource.drop ${idx}`);
      scope.coreFuncs.push({ t: "drop", res: b.resourceIndex(res) });
      return;
    }
    default:
      throw new Unsupported(
        `canonical built-in 0x${tag.toString(16)} (resource.new/rep, async, threads)`,
      );
  }
}

// ---- Serialising -----------------------------------------------------------------

class Interner {
  types: PlanType[] = [];
  #index = new Map<ValType, number>();
  constructor(readonly b: Builder) {}

  type(t: ValType): number {
    const known = this.#index.get(t);
    if (known !== undefined) return known;
    let out: PlanType;
    switch (t.k) {
      case "record":
        out = { k: "record", fields: t.fields.map(([n, f]) => [n, this.type(f)]) };
        break;
      case "variant":
        out = {
          k: "variant",
          cases: t.cases.map(([n, c]) => [n, c === null ? null : this.type(c)]),
        };
        break;
      case "list":
        out = t.len === undefined
          ? { k: "list", elem: this.type(t.elem) }
          : { k: "list", elem: this.type(t.elem), len: t.len };
        break;
      case "tuple":
        out = { k: "tuple", types: t.types.map((x) => this.type(x)) };
        break;
      case "flags":
      case "enum":
        out = { k: t.k, names: [...t.names] };
        break;
      case "option":
        out = { k: "option", type: this.type(t.type) };
        break;
      case "result":
        out = {
          k: "result",
          ok: t.ok === null ? null : this.type(t.ok),
          err: t.err === null ? null : this.type(t.err),
        };
        break;
      case "own":
      case "borrow":
        out = { k: t.k, res: this.b.resourceIndex(t.res) };
        break;
      default:
        out = { k: t.k };
    }
    const i = this.types.push(out) - 1;
    this.#index.set(t, i);
    return i;
  }

  func(f: FuncType): PlanFunc {
    return {
      params: f.params.map(([n, t]) => [n, this.type(t)]),
      result: f.result === null ? null : this.type(f.result),
    };
  }
}

/** True if `t` holds a borrowed handle anywhere. */
function containsBorrow(t: ValType | null): boolean {
  if (t === null) return false;
  switch (t.k) {
    case "borrow":
      return true;
    case "record":
      return t.fields.some(([, f]) => containsBorrow(f));
    case "variant":
      return t.cases.some(([, c]) => containsBorrow(c));
    case "tuple":
      return t.types.some(containsBorrow);
    case "list":
      return containsBorrow(t.elem);
    case "option":
      return containsBorrow(t.type);
    case "result":
      return containsBorrow(t.ok) || containsBorrow(t.err);
    default:
      return false;
  }
}

function planLift(fn: Func, name: string, types: Interner): PlanLift {
  if (fn.t !== "lift") throw new Unsupported(`export ${name} re-exports an import`);
  // Lending a handle to the guest for one call needs scoped borrow tracking.
  if (fn.type.params.some(([, t]) => containsBorrow(t))) {
    throw new Unsupported(`export ${name} takes a borrowed handle`);
  }
  return { core: fn.core, type: types.func(fn.type), opts: fn.opts };
}

/**
 * Reads a component binary into a plan and its core modules.
 *
 * @throws {Unsupported} for constructs the lean linker does not handle
 * @throws Error for a binary that is not a well-formed component
 */
export function readComponent(bytes: Uint8Array, options: ReadOptions = {}): ReadComponent {
  if (
    bytes.length < 8 || bytes[0] !== 0x00 || bytes[1] !== 0x61 || bytes[2] !== 0x73 ||
    bytes[3] !== 0x6d
  ) {
    throw new Error("not a WebAssembly binary");
  }
  if (bytes[6] !== 0x01 || bytes[7] !== 0x00) throw new Error("not a component");
  if (bytes[4] !== 0x0d || bytes[5] !== 0x00) {
    throw new Unsupported(`component binary version ${bytes[4]}`);
  }
  const b = new Builder();
  const scope = new Scope(null, true);
  readSections(new Reader(bytes, 8, bytes.length), scope, b, null);
  const types = new Interner(b);
  const exports: PlanExport[] = [];
  for (const { kind, name, item } of b.exports) {
    if (kind === "func" && item.sort === "func") {
      exports.push({ kind: "func", name, func: planLift(item.v, name, types) });
    } else if (item.sort === "instance") {
      const funcs: [string, PlanLift][] = [];
      for (const [fname, e] of item.v.exports) {
        if (e.sort === "func") funcs.push([fname, planLift(e.v, `${name}#${fname}`, types)]);
        else if (e.sort !== "type") throw new Unsupported(`export ${name}#${fname} (${e.sort})`);
      }
      exports.push({ kind: "instance", name, funcs });
    }
  }
  const lowers: PlanLower[] = b.lowers.map((l) => ({
    iface: l.iface,
    name: l.name,
    type: types.func(l.type),
    opts: l.opts,
  }));
  const plan: LeanPlan = {
    format: PLAN_FORMAT,
    modules: b.modules,
    types: types.types,
    resources: b.resources.map((r) => ({ iface: r.iface, name: r.name })),
    lowers,
    steps: b.steps,
    exports,
  };
  elideShims(plan, b.cores);
  // Modules no instance is made of any more need not be stored or compiled.
  const used = new Set(plan.steps.flatMap((s) => s.op === "instantiate" ? [s.module] : []));
  const cores = new Map([...b.cores].filter(([name]) => used.has(plan.modules.indexOf(name))));
  // Whether any module's code writes tables or sets globals it imports: then what the
  // others export can change after instantiation too (see code_scan.ts).
  const elsewhere = { tables: false, globals: false };
  const scans = new Map([...cores].map(([name, bytes]) => [name, scanWrites(bytes)]));
  for (const writes of scans.values()) {
    elsewhere.tables ||= writes.importedTables;
    elsewhere.globals ||= writes.importedGlobals;
  }
  // A module that sizes or grows a memory it does not own (a preview1 adapter may)
  // would see the real size where its owner sees a virtual one: then no module's size
  // is virtual (see vsize.ts).
  for (const [name, bytes] of cores) {
    if (importMemory(bytes) === null && usesMemorySize(bytes) !== false) {
      plan.grownReason ??= `core module ${name} sizes or grows a memory it does not own`;
    }
  }
  for (const [index, name] of plan.modules.entries()) {
    const steps = plan.steps.filter((s) => s.op === "instantiate" && s.module === index);
    if (steps.length === 0) continue;
    if (
      steps.some((s) => s.op === "instantiate" && s.args.some(([n]) => n === MEMORY_IMPORT.module))
    ) {
      for (const s of steps) {
        if (s.op === "instantiate") s.noReset = "an instance argument is named like the pool";
      }
      continue;
    }
    const rewritten = importMemory(cores.get(name)!);
    let virtualSize = false;
    if (rewritten !== null) {
      cores.set(name, rewritten.bytes);
      for (const s of steps) if (s.op === "instantiate") s.memory = rewritten.memory;
      if (options.images !== false && plan.grownReason === undefined) {
        // Its code sees a virtual memory size, so that it can be recycled once its
        // memory grew (see vsize.ts).
        const virtualized = virtualizeMemory(rewritten.bytes, rewritten.memory);
        if (virtualized.kind === "rewritten") {
          cores.set(name, virtualized.bytes);
          virtualSize = true;
        }
      }
    }
    // Its data into an image, its globals and tables exported (see image.ts); the
    // virtual size rewrite added code, so its writes are scanned again.
    const prepared = options.images === false
      ? { kind: "fallback" as const, reason: "memory images are off" }
      : prepareImage(cores.get(name)!, {
        writtenElsewhere: elsewhere,
        writes: virtualSize ? undefined : scans.get(name),
      });
    if (prepared.kind === "prepared") cores.set(name, prepared.bytes);
    for (const s of steps) {
      if (s.op !== "instantiate") continue;
      if (prepared.kind === "prepared") s.reset = { ...prepared.reset, virtualSize };
      else s.noReset = prepared.reason;
    }
  }
  return { plan, cores };
}
