/**
 * Links wit-component's import shims away (a plan rewrite, done once per transpile).
 *
 * wit-component breaks the cycle "the main module imports host functions whose
 * lowering needs the main module's memory" with two tiny core modules: a *shim*
 * whose exported functions only `call_indirect` through its own table, instantiated
 * first and imported by the main module, and a *fixup* instantiated afterwards that
 * fills that table with the lowered functions. Here, a lowered host function is a JS
 * function that finds the memory when first called, so the main module can import it
 * directly: two core instances fewer per instance (a third of the instantiation time of
 * a small component, and of its garbage).
 *
 * The rewrite applies only when the binaries are exactly that shape (checked byte by
 * byte: each shim function is `local.get 0..n-1; i32.const k; call_indirect`, the
 * fixup only imports and has active element segments at constant offsets), every
 * table slot the shim uses is filled with a host function of the same core signature,
 * and nothing else refers to the shim. Otherwise the plan is left as it is (a
 * component whose shim also forwards to other core instances, such as one built with
 * the preview1 adapter, keeps it).
 *
 * @module
 */

import { BinaryReader } from "../binary.ts";
import {
  type Flat,
  type FuncSig,
  loweredSig,
  resolveTypes,
  RESOURCE_DROP_SIG,
  type RType,
} from "./abi.ts";
import type { CoreRef, LeanPlan, PlanFunc, PlanStep } from "./plan_data.ts";

class NotShim extends Error {}

function fail(why: string): never {
  throw new NotShim(why);
}

/** A reader of `bytes[offset, end)` whose malformed input means "not a shim". */
function reader(bytes: Uint8Array, offset: number, end: number): BinaryReader {
  return new BinaryReader(bytes, offset, end, fail);
}

const VALTYPES: Record<number, Flat> = { 0x7f: "i32", 0x7e: "i64", 0x7d: "f32", 0x7c: "f64" };

/** The parts of a core module the shapes here need. */
interface CoreModule {
  types: FuncSig[];
  funcImports: { module: string; name: string; type: number }[];
  tableImports: { module: string; name: string }[];
  funcs: number[];
  tables: number;
  exports: { name: string; kind: number; index: number }[];
  elems: { offset: number; funcs: number[] }[];
  bodies: Uint8Array[];
  /** Sections present besides types, imports, functions, tables, exports, elems, code. */
  other: Set<number>;
}

function readLimits(r: BinaryReader): void {
  const flag = r.byte();
  if (flag === 0x00) r.u32();
  else if (flag === 0x01) {
    r.u32();
    r.u32();
  } else fail("unusual limits");
}

function readTableType(r: BinaryReader): void {
  if (r.byte() !== 0x70) fail("table of other than funcref");
  readLimits(r);
}

function readCoreModule(bytes: Uint8Array): CoreModule {
  if (
    bytes.length < 8 || bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 ||
    bytes[3] !== 0x6d || bytes[4] !== 1 || bytes[5] !== 0 || bytes[6] !== 0 || bytes[7] !== 0
  ) {
    fail("not a core module");
  }
  const m: CoreModule = {
    types: [],
    funcImports: [],
    tableImports: [],
    funcs: [],
    tables: 0,
    exports: [],
    elems: [],
    bodies: [],
    other: new Set(),
  };
  const r = reader(bytes, 8, bytes.length);
  while (!r.done) {
    const id = r.byte();
    const size = r.u32();
    const end = r.offset + size;
    if (end > bytes.length) fail("section overruns");
    const s = reader(bytes, r.offset, end);
    switch (id) {
      case 0:
        break;
      case 1:
        for (let n = s.u32(); n > 0; n--) {
          if (s.byte() !== 0x60) fail("non-function type");
          const sig: FuncSig = { params: [], results: [] };
          for (let k = s.u32(); k > 0; k--) sig.params.push(VALTYPES[s.byte()] ?? fail("type"));
          for (let k = s.u32(); k > 0; k--) sig.results.push(VALTYPES[s.byte()] ?? fail("type"));
          m.types.push(sig);
        }
        break;
      case 2:
        for (let n = s.u32(); n > 0; n--) {
          const module = s.string();
          const name = s.string();
          const kind = s.byte();
          if (kind === 0x00) m.funcImports.push({ module, name, type: s.u32() });
          else if (kind === 0x01) {
            readTableType(s);
            m.tableImports.push({ module, name });
          } else fail("import of a memory, global or tag");
        }
        break;
      case 3:
        for (let n = s.u32(); n > 0; n--) m.funcs.push(s.u32());
        break;
      case 4:
        for (let n = s.u32(); n > 0; n--) {
          readTableType(s);
          m.tables++;
        }
        break;
      case 7:
        for (let n = s.u32(); n > 0; n--) {
          m.exports.push({ name: s.string(), kind: s.byte(), index: s.u32() });
        }
        break;
      case 9:
        for (let n = s.u32(); n > 0; n--) {
          if (s.u32() !== 0) fail("element segment other than active, table 0, funcrefs");
          if (s.byte() !== 0x41) fail("element offset other than i32.const");
          const offset = s.s32();
          if (s.byte() !== 0x0b) fail("element offset other than i32.const");
          const funcs: number[] = [];
          for (let k = s.u32(); k > 0; k--) funcs.push(s.u32());
          m.elems.push({ offset, funcs });
        }
        break;
      case 10:
        for (let n = s.u32(); n > 0; n--) {
          const len = s.u32();
          m.bodies.push(bytes.subarray(s.offset, s.offset + len));
          s.offset += len;
        }
        break;
      default:
        m.other.add(id);
    }
    if (id !== 0 && s.offset !== end) fail(`section ${id} has trailing bytes`);
    r.offset = end;
  }
  return m;
}

/**
 * The table slot a shim function calls, if its body is exactly
 * `local.get 0 … local.get n-1; i32.const slot; call_indirect (type t) 0; end`.
 */
function shimSlot(body: Uint8Array, params: number, type: number): number {
  const r = reader(body, 0, body.length);
  if (r.u32() !== 0) fail("shim function with locals");
  for (let i = 0; i < params; i++) {
    if (r.byte() !== 0x20 || r.u32() !== i) fail("shim function body");
  }
  if (r.byte() !== 0x41) fail("shim function body");
  const slot = r.s32();
  if (r.byte() !== 0x11 || r.u32() !== type || r.u32() !== 0) fail("shim function body");
  if (r.byte() !== 0x0b || !r.done) fail("shim function body");
  return slot;
}

/** Shim export name → [slot, core signature]; and the name of its table export. */
function readShim(bytes: Uint8Array): { slots: Map<string, [number, FuncSig]>; table: string } {
  const m = readCoreModule(bytes);
  if (m.other.size > 0 || m.funcImports.length > 0 || m.tableImports.length > 0) {
    fail("shim with more than functions and a table");
  }
  if (m.tables !== 1 || m.elems.length > 0 || m.bodies.length !== m.funcs.length) {
    fail("shim table");
  }
  const slots = new Map<string, [number, FuncSig]>();
  let table: string | null = null;
  for (const e of m.exports) {
    if (e.kind === 0x01) {
      table = e.name;
    } else if (e.kind === 0x00) {
      const type = m.funcs[e.index] ?? fail("shim export");
      const sig = m.types[type] ?? fail("shim type");
      slots.set(e.name, [shimSlot(m.bodies[e.index], sig.params.length, type), sig]);
    } else {
      fail("shim export of a memory or global");
    }
  }
  if (table === null) fail("shim without a table export");
  return { slots, table };
}

/** Fixup: table slot → its function import (module, name), and the table import. */
function readFixup(bytes: Uint8Array): {
  slots: Map<number, { module: string; name: string; sig: FuncSig }>;
  table: { module: string; name: string };
} {
  const m = readCoreModule(bytes);
  if (m.other.size > 0 || m.funcs.length > 0 || m.exports.length > 0 || m.tables > 0) {
    fail("fixup with more than imports and element segments");
  }
  if (m.tableImports.length !== 1) fail("fixup table");
  const slots = new Map<number, { module: string; name: string; sig: FuncSig }>();
  for (const seg of m.elems) {
    seg.funcs.forEach((f, i) => {
      const imp = m.funcImports[f] ?? fail("fixup element of a non-import");
      slots.set(seg.offset + i, { ...imp, sig: m.types[imp.type] ?? fail("fixup type") });
    });
  }
  return { slots, table: m.tableImports[0] };
}

function sameSig(a: FuncSig, b: FuncSig): boolean {
  return a.params.join() === b.params.join() && a.results.join() === b.results.join();
}

function sigOfRef(plan: LeanPlan, types: RType[], ref: CoreRef): FuncSig {
  if (ref.t === "lower") {
    const f: PlanFunc = plan.lowers[ref.i].type;
    return loweredSig(
      f.params.map(([, t]) => types[t]),
      f.result === null ? null : types[f.result],
    );
  }
  if (ref.t === "drop") return RESOURCE_DROP_SIG;
  return fail("a table slot filled from another core instance");
}

/** Every core reference of a plan, for rewriting in place. */
function forEachRef(plan: LeanPlan, fn: (ref: CoreRef) => CoreRef): void {
  for (const step of plan.steps) {
    if (step.op === "bag") step.items = step.items.map(([n, r]) => [n, fn(r)]);
  }
  const opts = (
    o: { memory: CoreRef | null; realloc: CoreRef | null; postReturn: CoreRef | null },
  ) => {
    if (o.memory) o.memory = fn(o.memory);
    if (o.realloc) o.realloc = fn(o.realloc);
    if (o.postReturn) o.postReturn = fn(o.postReturn);
  };
  for (const l of plan.lowers) opts(l.opts);
  for (const e of plan.exports) {
    const lifts = e.kind === "func" ? [e.func] : e.funcs.map(([, l]) => l);
    for (const l of lifts) {
      l.core = fn(l.core);
      opts(l.opts);
    }
  }
}

/** Empties bags nothing instantiates with or refers to any more (the fixup's). */
function dropUnusedBags(plan: LeanPlan): void {
  const used = new Set<number>();
  for (const st of plan.steps) {
    if (st.op === "instantiate") { for (const [, i] of st.args) used.add(i); }
  }
  forEachRef(plan, (ref) => {
    if (ref.t === "export") used.add(ref.inst);
    return ref;
  });
  plan.steps.forEach((st, i) => {
    if (st.op === "bag" && !used.has(i)) plan.steps[i] = NOTHING;
  });
}

/** An instance step that creates nothing (keeps later instance indices unchanged). */
const NOTHING: PlanStep = { op: "bag", items: [] };

/**
 * Rewrites `plan` in place to link each wit-component shim away where that is exactly
 * equivalent (see the module documentation); returns how many shims were removed.
 */
export function elideShims(plan: LeanPlan, cores: Map<string, Uint8Array>): number {
  const types = resolveTypes(plan.types);
  let removed = 0;
  for (let s = 0; s < plan.steps.length; s++) {
    const shimStep = plan.steps[s];
    if (shimStep.op !== "instantiate" || shimStep.args.length > 0) continue;
    const fixupIndex = plan.steps.findIndex((st) =>
      st.op === "instantiate" && st.args.some(([, inst]) => inst === s)
    );
    if (fixupIndex < 0) continue;
    const fixupStep = plan.steps[fixupIndex] as Extract<PlanStep, { op: "instantiate" }>;
    try {
      const shim = readShim(cores.get(plan.modules[shimStep.module]) ?? fail("no module"));
      const fixup = readFixup(cores.get(plan.modules[fixupStep.module]) ?? fail("no module"));
      const args = new Map(fixupStep.args);
      if (args.get(fixup.table.module) !== s || fixup.table.name !== shim.table) {
        fail("fixup fills another table");
      }
      // What each slot is filled with, checked against the shim's signature.
      const targets = new Map<string, CoreRef>();
      for (const [exportName, [slot, sig]] of shim.slots) {
        const imp = fixup.slots.get(slot) ?? fail(`slot ${slot} never filled`);
        const bag = plan.steps[args.get(imp.module) ?? fail("fixup argument")];
        if (bag.op !== "bag") fail("fixup argument is not a bag");
        const ref = bag.items.find(([n]) => n === imp.name)?.[1] ?? fail("fixup argument item");
        if (!sameSig(sig, imp.sig) || !sameSig(sig, sigOfRef(plan, types, ref))) {
          fail(`slot ${slot}: signatures differ`);
        }
        targets.set(exportName, ref);
      }
      // Nothing but the fixup may use the shim's table; nothing may use the fixup.
      let stray = false;
      forEachRef(plan, (ref) => {
        if (ref.t === "export" && ref.inst === fixupIndex) stray = true;
        if (ref.t === "export" && ref.inst === s && !targets.has(ref.name)) stray = true;
        return ref;
      });
      if (stray) fail("the shim or fixup is used elsewhere");
      if (
        plan.steps.some((st) =>
          st.op === "instantiate" && st !== fixupStep &&
          st.args.some(([, i]) => i === s || i === fixupIndex)
        )
      ) {
        fail("the shim or fixup is instantiated against elsewhere");
      }
      forEachRef(
        plan,
        (ref) => ref.t === "export" && ref.inst === s ? targets.get(ref.name)! : ref,
      );
      plan.steps[s] = NOTHING;
      plan.steps[fixupIndex] = NOTHING;
      removed++;
      dropUnusedBags(plan);
    } catch (err) {
      if (!(err instanceof NotShim)) throw err;
    }
  }
  return removed;
}
