/**
 * The plan of a component's instantiation that `plan.ts` reads and `link.ts` links:
 * plain data (JSON and structured-clone safe), kept apart so that the readers and
 * the linker share its types without importing each other.
 *
 * @module
 */

import type { ResetPlan } from "./image.ts";
import type { ImportedMemory } from "./memory.ts";

/** Primitive value types. */
export type PrimKind =
  | "bool"
  | "s8"
  | "u8"
  | "s16"
  | "u16"
  | "s32"
  | "u32"
  | "s64"
  | "u64"
  | "f32"
  | "f64"
  | "char"
  | "string";

/** A value type; `number`s are indices into {@linkcode LeanPlan.types}. */
export type PlanType =
  | { k: PrimKind }
  | { k: "record"; fields: [string, number][] }
  | { k: "variant"; cases: [string, number | null][] }
  | { k: "list"; elem: number; len?: number }
  | { k: "tuple"; types: number[] }
  | { k: "flags"; names: string[] }
  | { k: "enum"; names: string[] }
  | { k: "option"; type: number }
  | { k: "result"; ok: number | null; err: number | null }
  | { k: "own"; res: number }
  | { k: "borrow"; res: number };

/** A function type: named parameters, at most one result. */
export interface PlanFunc {
  params: [string, number][];
  result: number | null;
}

/** A resource type a host interface defines. */
export interface PlanResource {
  /** The interface's import name, e.g. `wasi:http/types@0.2.12`. */
  iface: string;
  /** The resource's WIT name, e.g. `incoming-request`. */
  name: string;
}

/** A core item: a core instance's export, a lowered host function, a resource drop. */
export type CoreRef =
  | { t: "export"; inst: number; name: string }
  | { t: "lower"; i: number }
  | { t: "drop"; res: number };

/** Canonical ABI options of a lift or lower. */
export interface PlanOpts {
  encoding: "utf8" | "utf16" | "latin1+utf16";
  memory: CoreRef | null;
  realloc: CoreRef | null;
  postReturn: CoreRef | null;
}

/** A host function lowered into a core function. */
export interface PlanLower {
  /** Import name of its interface (with version). */
  iface: string;
  /** Its name in the interface, e.g. `[method]fields.get`. */
  name: string;
  type: PlanFunc;
  opts: PlanOpts;
}

/** A core function lifted into a component function. */
export interface PlanLift {
  core: CoreRef;
  type: PlanFunc;
  opts: PlanOpts;
}

/** One core instance, in creation order. */
export type PlanStep =
  | {
    op: "instantiate";
    module: number;
    args: [string, number][];
    /** The memory the module was rewritten to import (see `memory.ts`). */
    memory?: ImportedMemory;
    /** How its instances are set back for reuse (see `image.ts`), if they can be. */
    reset?: ResetPlan;
    /** Why its module keeps today's path (no image, no recycling), if it does. */
    noReset?: string;
  }
  | { op: "bag"; items: [string, CoreRef][] };

/** One export of the component. */
export type PlanExport =
  | { kind: "instance"; name: string; funcs: [string, PlanLift][] }
  | { kind: "func"; name: string; func: PlanLift };

/** Everything needed to instantiate a component, minus the compiled core modules. */
export interface LeanPlan {
  format: number;
  /** Core module names by module index (`component.core.wasm`, `component.core2.wasm`…). */
  modules: string[];
  types: PlanType[];
  resources: PlanResource[];
  lowers: PlanLower[];
  steps: PlanStep[];
  exports: PlanExport[];
  /**
   * Exports called through JSPI besides the linker's own list (`iface#func` unversioned,
   * or `func`): a function a command runs by name (`app.wasm#func`).
   */
  asyncExports?: string[];
  /**
   * Why instances whose memory grew cannot be recycled even where their modules have a
   * virtual memory size (see `vsize.ts`), if so: a module sizes or grows a memory
   * another one owns.
   */
  grownReason?: string;
}
