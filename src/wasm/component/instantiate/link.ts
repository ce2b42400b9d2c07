/**
 * Turns a {@linkcode LeanPlan} into an `instantiate(getCoreModule, imports)` with the
 * same contract as jco's sync-instantiation JSPI glue (see `./mod.ts`).
 *
 * Everything that does not depend on an instance is done once, in {@linkcode link}:
 * types are resolved, each host function's shape is worked out. An instance then costs
 * its core instances and a few small objects: the functions it imports are made once
 * per registry slot and find their instance through it; its handle tables, call
 * contexts and host callees are made when first used. Instances share nothing a guest
 * can observe: host functions, immutable descriptions and (between one instance's end
 * and the next one's start) zeroed memories, see `memory.ts`.
 *
 * @module
 */

import {
  camelCase,
  Cx,
  FlatIn,
  type FuncSig,
  type Handles,
  HandleTable,
  liftFlat,
  load,
  loweredSig,
  lowerFlat,
  pascalCase,
  resolveTypes,
  RESOURCE_DROP_SIG,
  type RType,
  store,
  trap,
} from "./abi.ts";
import { mustWait, outsideEffect, plainAttempt, PlainAttemptAborted } from "../plain_attempt.ts";
import { readImage } from "./image.ts";
import { MemoryPool } from "./memory.ts";
import {
  ImageMemories,
  RESIDENT_GROWN_IDLE,
  RESIDENT_IDLE,
  restoreSlot,
  type SlotSnapshot,
  snapshotSlot,
  tablesIntact,
} from "./recycle.ts";
import { TRAMPOLINE_IMPORTS, trampolineModule, tryImportName } from "./trampoline.ts";
import type { CoreRef, LeanPlan, PlanFunc, PlanLift, PlanLower, PlanOpts } from "./plan_data.ts";

/**
 * Key of the function on an instance's exports that ends the instance: call it once
 * its export calls have settled. Its core instances may then be set back to where they
 * started and serve a later instance (see `recycle.ts`), or its memory be reused,
 * reset, for a new one (see `memory.ts`); the instance's exports refuse to run
 * afterwards. Called with `false` (its request timed out, or was abandoned), its core
 * instances are dropped rather than recycled.
 */
export const END_INSTANCE: unique symbol = Symbol("lean glue: end instance");

/**
 * An instance's exports carry, under this key, a function returning how many bytes its
 * memories hold past their declared initial size: the size they grew to (in this or,
 * for a recycled memory, an earlier request), which a request server budgets (see
 * `http_server.ts`).
 */
export const GROWN_BYTES: unique symbol = Symbol("lean glue: grown bytes");

/** The `instantiate` of a linked plan (jco's sync-instantiation signature). */
export type LeanInstantiate = (
  getCoreModule: (name: string) => WebAssembly.Module,
  imports: Record<string, Record<string, unknown>>,
) => Record<string, unknown>;

/** JSPI's import wrapper (not in Deno's WebAssembly typings yet). */
const Suspending = (WebAssembly as unknown as { Suspending: new (f: unknown) => unknown })
  .Suspending;

const MAX_FLAT_PARAMS = 16;
const MAX_FLAT_RESULTS = 1;

/** Which functions go through JSPI (`iface#name`, unversioned, as jco's options). */
export interface LinkOptions {
  /** Host functions that may block (they suspend only the calling instance). */
  asyncImports: readonly string[];
  /** Exports called with `WebAssembly.promising` (they resolve when the guest is done). */
  asyncExports: readonly string[];
}

/** V8's core trap messages as wasmtime (and jco's glue) word them. */
const TRAP_MESSAGES = new Map([
  ["unreachable", "wasm trap: wasm `unreachable` instruction executed"],
  ["memory access out of bounds", "wasm trap: out of bounds memory access"],
  ["divide by zero", "wasm trap: integer divide by zero"],
  ["remainder by zero", "wasm trap: integer divide by zero"],
  ["divide result unrepresentable", "wasm trap: integer overflow"],
  ["float unrepresentable in integer range", "wasm trap: invalid conversion to integer"],
  ["table index is out of bounds", "wasm trap: undefined element: out of bounds table access"],
  ["function signature mismatch", "wasm trap: indirect call type mismatch"],
  ["call stack exhausted", "wasm trap: call stack exhausted"],
]);

/** Rewords a core trap as jco's glue does (so logs read the same with either glue). */
export function normalizeTrap(err: unknown): unknown {
  if (err instanceof WebAssembly.RuntimeError) {
    const message = TRAP_MESSAGES.get(err.message);
    if (message !== undefined) err.message = message;
  }
  return err;
}

/**
 * What host function `iface#name` does outside the instance, that a plain attempt may
 * not do (see `plain_attempt.ts`), or null: sockets and name lookups, files (reads
 * too: the filesystem is shared), outgoing requests. Listing the preopened
 * directories only hands out descriptors.
 */
function outsideOf(iface: string, name: string): string | null {
  if (iface.startsWith("wasi:sockets/")) return `${iface}#${name} (sockets)`;
  if (iface.startsWith("wasi:filesystem/") && iface !== "wasi:filesystem/preopens") {
    return `${iface}#${name} (files)`;
  }
  if (iface === "wasi:http/outgoing-handler") return `${iface}#${name} (an outgoing request)`;
  return null;
}

function unversioned(iface: string): string {
  const at = iface.indexOf("@");
  return at < 0 ? iface : iface.slice(0, at);
}

/** Which host callable a WIT function name is, in jco's naming. */
type Callee =
  | { kind: "method"; cls: string; fn: string }
  | { kind: "static"; cls: string; fn: string }
  | { kind: "constructor"; cls: string }
  | { kind: "free"; fn: string };

function calleeOf(name: string): Callee {
  const m = /^\[(method|static|constructor)\]([^.]+)(?:\.(.+))?$/.exec(name);
  if (m === null) return { kind: "free", fn: camelCase(name) };
  const cls = pascalCase(m[2]);
  if (m[1] === "constructor") return { kind: "constructor", cls };
  return { kind: m[1] as "method" | "static", cls, fn: camelCase(m[3] ?? "") };
}

/** A lowered function's shape, worked out once per plan. */
interface LowerShape {
  lower: PlanLower;
  callee: Callee;
  iface: string;
  params: RType[];
  /** Parameters arrive as one pointer to a tuple in memory. */
  paramsInMemory: RType | null;
  result: RType | null;
  /** The result is written through a pointer passed as the last argument. */
  resultInMemory: boolean;
  /** The host signals a `result` error by throwing its payload (jco's convention). */
  resultIsResult: boolean;
  async: boolean;
  /**
   * What it does outside the instance (see `plain_attempt.ts`: a plain attempt may not
   * call it), or null. Streams guard themselves (only some are seen outside).
   */
  outside: string | null;
  /** Index of the lowered function in the plan. */
  index: number;
  /** Index of its canonical options in `Linked.opts`. */
  optsKey: number;
}

/** A lifted export's shape. */
interface LiftShape {
  lift: PlanLift;
  /** Its name on the exports (jco's camelCase). */
  key: string;
  params: RType[];
  paramsInMemory: RType | null;
  result: RType | null;
  resultInMemory: boolean;
  async: boolean;
  optsKey: number;
}

function tupleOf(types: RType[]): RType {
  let offset = 0;
  let align = 1;
  const fields = types.map((t, i) => {
    offset = Math.ceil(offset / t.align) * t.align;
    const f = { key: i, t, offset };
    offset += t.size;
    align = Math.max(align, t.align);
    return f;
  });
  return {
    k: "tuple",
    size: Math.ceil(offset / align) * align,
    align,
    flat: types.flatMap((t) => t.flat),
    fields,
  };
}

function funcShape(types: RType[], f: PlanFunc) {
  const params = f.params.map(([, t]) => types[t]);
  const result = f.result === null ? null : types[f.result];
  const flatParams = params.reduce((n, t) => n + t.flat.length, 0);
  return {
    params,
    paramsInMemory: flatParams > MAX_FLAT_PARAMS ? tupleOf(params) : null,
    result,
    resultInMemory: result !== null && result.flat.length > MAX_FLAT_RESULTS,
  };
}

function encodingOf(opts: PlanOpts): number {
  return opts.encoding === "utf8" ? 0 : opts.encoding === "utf16" ? 1 : 2;
}

/** The error payload of a host throw, or a rethrow if it is a trap (as jco). */
function errorPayload(e: unknown): unknown {
  if (e instanceof WebAssembly.RuntimeError) throw e;
  if (e !== null && typeof e === "object" && Object.hasOwn(e, "payload")) {
    return (e as { payload: unknown }).payload;
  }
  if (e instanceof Error) throw e;
  return e;
}

function asResult(ret: unknown): unknown {
  if (
    ret !== null && typeof ret === "object" &&
    ((ret as { tag?: unknown }).tag === "ok" || (ret as { tag?: unknown }).tag === "err")
  ) {
    return ret;
  }
  return { tag: "ok", val: ret };
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && (typeof v === "object" || typeof v === "function") &&
    typeof (v as { then?: unknown }).then === "function";
}

function refKey(ref: CoreRef | null): string {
  if (ref === null) return "-";
  return ref.t === "export"
    ? `${ref.inst}.${ref.name}`
    : ref.t === "lower"
    ? `l${ref.i}`
    : `d${ref.res}`;
}

/**
 * `obj[name]` if it is a function of `obj`'s own (not one every object inherits, such
 * as `constructor`): a component names the host functions it imports, and must get
 * only the ones an interface defines.
 */
function ownFunction(obj: unknown, name: string): ((...a: unknown[]) => unknown) | undefined {
  if (obj === null || (typeof obj !== "object" && typeof obj !== "function")) return undefined;
  if (!Object.hasOwn(obj, name)) return undefined;
  const fn = (obj as Record<string, unknown>)[name];
  return typeof fn === "function" ? fn as (...a: unknown[]) => unknown : undefined;
}

/** `cls.prototype[name]` if it is a method the class defines (or inherits from a class). */
function methodOf(cls: unknown, name: string): boolean {
  if (typeof cls !== "function" || name === "constructor" || name in Object.prototype) return false;
  return typeof (cls.prototype as Record<string, unknown> | undefined)?.[name] === "function";
}

/**
 * The host function `shape` calls, from one instance's imports (jco's naming).
 *
 * @throws Error if the imports lack it
 */
function hostCallable(
  shape: LowerShape,
  imports: Record<string, Record<string, unknown>>,
): (args: unknown[]) => unknown {
  const iface = imports[shape.iface];
  const c = shape.callee;
  const what = `${shape.lower.iface}#${shape.lower.name}`;
  const missing = () => new Error(`lean glue: the host has no ${what}`);
  if (iface === undefined) throw missing();
  switch (c.kind) {
    case "free": {
      const fn = ownFunction(iface, c.fn);
      if (fn === undefined) throw missing();
      return (args) => fn(...args);
    }
    case "constructor": {
      const cls = ownFunction(iface, c.cls) as (new (...a: unknown[]) => unknown) | undefined;
      if (cls === undefined) throw missing();
      return (args) => new cls(...args);
    }
    case "static": {
      const cls = ownFunction(iface, c.cls);
      const fn = ownFunction(cls, c.fn);
      if (fn === undefined) throw missing();
      return (args) => fn.apply(cls, args);
    }
    case "method": {
      if (!methodOf(ownFunction(iface, c.cls), c.fn)) throw missing();
      const fn = c.fn;
      return (args) => {
        const self = args[0] as Record<string, (...a: unknown[]) => unknown>;
        return self[fn](...args.slice(1));
      };
    }
  }
}

/**
 * One instance's state. Only the functions V8 keeps for the instance's imports must
 * not reach it (see {@linkcode link}): they find it in the thread's registry.
 */
class InstanceState implements Handles {
  /** The instance has ended (see {@linkcode END_INSTANCE}). */
  ended = false;
  cores: (WebAssembly.Instance | Record<string, unknown>)[] = [];
  /** Handle tables, classes, host callees, call contexts: made on first use. */
  tables: (HandleTable | undefined)[] = [];
  classes: ((abstract new (...args: never[]) => unknown) | null | undefined)[] = [];
  callees: (((args: unknown[]) => unknown) | undefined)[] = [];
  contexts: (Cx | undefined)[] = [];
  memories: [MemoryPool | ImageMemories, WebAssembly.Memory][] = [];
  /** The core instances it runs in, kept for later instances if they can be recycled. */
  kept: KeptSlot | null = null;
  /** False once a call trapped or it was ended as not reusable: its core instances go. */
  reusable = true;

  /** Export calls in progress (the guest may run, or resume, while this is non-zero). */
  active = 0;
  /** What a blocking host call tried first left to wait for (see {@linkcode callHostTry}). */
  pending: PromiseLike<unknown> | null = null;

  constructor(
    readonly linked: Linked,
    readonly imports: Record<string, Record<string, unknown>>,
    readonly slot: number,
  ) {}

  table(res: number): HandleTable {
    return this.tables[res] ??= new HandleTable();
  }

  classOf(res: number): (abstract new (...args: never[]) => unknown) | undefined {
    let cls = this.classes[res];
    if (cls === undefined) {
      const r = this.linked.resources[res];
      const found = this.imports[r.iface]?.[r.cls];
      cls = this.classes[res] = typeof found === "function"
        ? found as abstract new (...args: never[]) => unknown
        : null;
    }
    return cls ?? undefined;
  }

  /** The call context of canonical options number `key` (see `Linked.optsKeys`). */
  cx(key: number): Cx {
    let cx = this.contexts[key];
    if (cx === undefined) {
      const opts = this.linked.opts[key];
      const { memory, realloc } = opts;
      cx = this.contexts[key] = new Cx(this, memory, realloc, encodingOf(opts));
    }
    return cx;
  }

  /** A core item, by reference. */
  core(ref: CoreRef): unknown {
    switch (ref.t) {
      case "export": {
        const inst = this.cores[ref.inst];
        // Only if the guest calls a host function while its memory's instance is still
        // being created (a start function): wasm would trap there too.
        if (inst === undefined) throw trap(`core instance ${ref.inst} used before it exists`);
        const item = inst instanceof WebAssembly.Instance ? inst.exports[ref.name] : inst[ref.name];
        if (item === undefined) {
          throw new Error(`lean glue: core instance has no export ${ref.name}`);
        }
        return item;
      }
      case "lower":
        return this.linked.hostImport(ref.i, this.slot);
      case "drop":
        return this.linked.hostImport(this.linked.lowers.length + ref.res, this.slot);
    }
  }

  /** Export `name` of the core instance `ref` is an export of, if it has one. */
  sibling(ref: CoreRef, name: string): unknown {
    if (ref.t !== "export") return undefined;
    const inst = this.cores[ref.inst];
    return inst instanceof WebAssembly.Instance ? inst.exports[name] : inst?.[name];
  }

  /** The host function lowered as number `i`. */
  callee(i: number): (args: unknown[]) => unknown {
    return this.callees[i] ??= this.linked.callee(i, this.imports);
  }
}

/** A host call from the guest: lifts the arguments, calls, lowers the result. */
function callHost(shape: LowerShape, state: InstanceState, flat: unknown[]): unknown {
  if (shape.outside !== null) outsideEffect(shape.outside);
  const cx = state.cx(shape.optsKey);
  const args = liftArgs(shape, cx, flat);
  let ret: unknown;
  if (shape.resultIsResult) {
    try {
      ret = asResult(state.callee(shape.index)(args));
    } catch (e) {
      ret = { tag: "err", val: errorPayload(e) };
    }
  } else {
    ret = state.callee(shape.index)(args);
  }
  if (isThenable(ret)) {
    (ret as Promise<unknown>).then?.(undefined, () => {});
    throw trap(`${shape.lower.iface}#${shape.lower.name} blocked, but is not called through JSPI`);
  }
  return lowerResult(shape, cx, ret, flat);
}

/**
 * A blocking host call (JSPI): suspends only this instance until the host settles. A
 * host function that completes at once (no promise: a write an HTTP body's buffer
 * takes) returns its result without suspending: a suspension is a stack switch and
 * a round trip through the microtask queue.
 */
function callHostAsync(shape: LowerShape, state: InstanceState, flat: unknown[]): unknown {
  if (shape.outside !== null) outsideEffect(shape.outside);
  const cx = state.cx(shape.optsKey);
  const args = liftArgs(shape, cx, flat);
  let ret: unknown;
  try {
    ret = state.callee(shape.index)(args);
  } catch (e) {
    if (!shape.resultIsResult) throw e;
    return lowerResult(shape, cx, { tag: "err", val: errorPayload(e) }, flat);
  }
  if (isThenable(ret)) return settleHostAsync(shape, state, cx, ret, flat);
  return lowerResult(shape, cx, shape.resultIsResult ? asResult(ret) : ret, flat);
}

/**
 * A blocking host call tried first (see `trampoline.ts`): 1 if it completed (its
 * result is written), else 0, and the promise it returned waits in `state.pending`
 * for {@linkcode resumeHost}, which the guest's trampoline calls next.
 */
function callHostTry(shape: LowerShape, state: InstanceState, flat: unknown[]): number {
  if (shape.outside !== null) outsideEffect(shape.outside);
  const cx = state.cx(shape.optsKey);
  const args = liftArgs(shape, cx, flat);
  let ret: unknown;
  try {
    ret = state.callee(shape.index)(args);
  } catch (e) {
    if (!shape.resultIsResult) throw e;
    lowerResult(shape, cx, { tag: "err", val: errorPayload(e) }, flat);
    return 1;
  }
  if (isThenable(ret)) {
    if (plainAttempt.active) {
      // Not entered through `promising`: it cannot suspend (see `plain_attempt.ts`).
      (ret as Promise<unknown>).then?.(undefined, () => {});
      throw mustWait(`${shape.lower.iface}#${shape.lower.name}`);
    }
    state.pending = ret;
    return 0;
  }
  lowerResult(shape, cx, shape.resultIsResult ? asResult(ret) : ret, flat);
  return 1;
}

/** The suspending half of a call {@linkcode callHostTry} left pending. */
function resumeHost(shape: LowerShape, state: InstanceState, flat: unknown[]): Promise<unknown> {
  const pending = state.pending;
  state.pending = null;
  if (pending === null) throw trap(`${shape.lower.iface}#${shape.lower.name} resumed, not started`);
  return settleHostAsync(shape, state, state.cx(shape.optsKey), pending, flat);
}

/** The rest of {@linkcode callHostAsync} once the host's promise settles. */
async function settleHostAsync(
  shape: LowerShape,
  state: InstanceState,
  cx: Cx,
  pending: PromiseLike<unknown>,
  flat: unknown[],
): Promise<unknown> {
  let ret: unknown;
  if (shape.resultIsResult) {
    try {
      ret = asResult(await pending);
    } catch (e) {
      ret = { tag: "err", val: errorPayload(e) };
    }
  } else {
    ret = await pending;
  }
  // Never write into the memory of an instance that has ended (it may be reused).
  if (state.ended) throw trap("the instance has ended");
  return lowerResult(shape, cx, ret, flat);
}

/** `ptr` from the guest, checked to hold a `t` inside its memory. */
function pointerTo(cx: Cx, t: RType, ptr: unknown): number {
  const p = (ptr as number) >>> 0;
  cx.check(p, t.size, t.align);
  return p;
}

function liftArgs(shape: LowerShape, cx: Cx, flat: unknown[]): unknown[] {
  const tuple = shape.paramsInMemory;
  if (tuple !== null) return load(cx, tuple, pointerTo(cx, tuple, flat[0])) as unknown[];
  const vi = new FlatIn(flat);
  const { params } = shape;
  const args = new Array(params.length);
  for (let i = 0; i < params.length; i++) args[i] = liftFlat(cx, params[i], vi);
  return args;
}

function lowerResult(shape: LowerShape, cx: Cx, ret: unknown, flat: unknown[]): unknown {
  const { result } = shape;
  if (result === null) return undefined;
  if (shape.resultInMemory) {
    store(cx, result, ret, pointerTo(cx, result, flat[flat.length - 1]));
    return undefined;
  }
  const out: unknown[] = [];
  lowerFlat(cx, result, ret, out);
  return out[0];
}

function dropHandle(state: InstanceState, res: number, handle: number): void {
  const obj = state.table(res).remove(handle) as { [Symbol.dispose]?: () => void };
  obj?.[Symbol.dispose]?.();
}

/** One instance's call of a lifted export: lowers arguments, enters, lifts the result. */
class ExportCall {
  constructor(
    readonly state: InstanceState,
    readonly shape: LiftShape,
    readonly cx: Cx,
    readonly enter: (...flat: unknown[]) => unknown,
    readonly postReturn: ((...flat: unknown[]) => unknown) | null,
    /** An async export's core function, entered plainly in a plain attempt; or null. */
    readonly plain: ((...flat: unknown[]) => unknown) | null = null,
  ) {}

  lower(args: unknown[]): unknown[] {
    const { cx, shape: { params, paramsInMemory } } = this;
    if (paramsInMemory !== null) {
      const ptr = cx.alloc(paramsInMemory.align, paramsInMemory.size);
      store(cx, paramsInMemory, args, ptr);
      return [ptr];
    }
    const flat: unknown[] = [];
    for (let i = 0; i < params.length; i++) lowerFlat(cx, params[i], args[i], flat);
    return flat;
  }

  lift(ret: unknown): unknown {
    const { cx, shape: { result, resultInMemory } } = this;
    if (result === null) return undefined;
    const value = resultInMemory
      ? load(cx, result, pointerTo(cx, result, ret))
      : liftFlat(cx, result, new FlatIn([ret]));
    this.postReturn?.(ret);
    // As jco: an exported function returning a `result` returns `ok` and throws `err`.
    if (result.k === "result") {
      const r = value as { tag: string; val: unknown };
      if (r.tag === "err") throw r.val;
      return r.val;
    }
    return value;
  }

  /** A call through JSPI: the guest may block (suspending only itself). */
  callAsync(args: unknown[]): Promise<unknown> {
    const { state } = this;
    if (state.ended) return Promise.reject(endedTrap());
    if (plainAttempt.active) {
      if (this.plain !== null) return this.#callPlain(args);
      // Without a plain entry, nothing may abort it.
      plainAttempt.active = false;
    }
    state.active++;
    let entered: Promise<unknown>;
    try {
      entered = this.enter(...this.lower(args)) as Promise<unknown>;
    } catch (err) {
      state.reusable = false;
      state.linked.left(state);
      return Promise.reject(normalizeTrap(err));
    }
    return entered.then((ret) => {
      state.linked.left(state);
      return this.lift(ret);
    }, (err) => {
      state.reusable = false;
      state.linked.left(state);
      throw normalizeTrap(err);
    });
  }

  /**
   * An async export entered plainly, in a plain attempt (see `plain_attempt.ts`): a
   * host call that would suspend, or has effects outside, throws instead.
   */
  #callPlain(args: unknown[]): Promise<unknown> {
    plainAttempt.entered = true;
    this.state.linked.plainCalls++;
    try {
      return Promise.resolve(this.#callWith(this.plain!, args, throwIfAbandoned));
    } catch (err) {
      if (err instanceof SuspendError) plainAttempt.aborted ??= "a host call suspended";
      return Promise.reject(err);
    }
  }

  /** A synchronous call. */
  call(args: unknown[]): unknown {
    return this.#callWith(this.enter, args);
  }

  /**
   * Calls `enter` (a core function of the export) synchronously: lowers the arguments,
   * calls, runs `returned` (which may throw: a failed call), lifts the results.
   */
  #callWith(
    enter: (...flat: unknown[]) => unknown,
    args: unknown[],
    returned?: () => void,
  ): unknown {
    const { state } = this;
    if (state.ended) throw endedTrap();
    state.active++;
    let ret: unknown;
    try {
      ret = enter(...this.lower(args));
      returned?.();
    } catch (err) {
      state.reusable = false;
      state.linked.left(state);
      throw normalizeTrap(err);
    }
    try {
      return this.lift(ret);
    } catch (err) {
      throw normalizeTrap(err);
    } finally {
      state.linked.left(state);
    }
  }
}

/**
 * After a plain call returned: if the attempt was abandoned meanwhile (the guest caught
 * what aborted it), what it did next is dropped with it.
 */
function throwIfAbandoned(): void {
  if (plainAttempt.aborted !== null) throw new PlainAttemptAborted(plainAttempt.aborted);
}

/** A core instance that exports nothing (a step a plan rewrite emptied). */
const EMPTY_BAG: Record<string, unknown> = Object.freeze({});

function endedTrap(): WebAssembly.RuntimeError {
  return trap("the instance has ended; it cannot be called again");
}

/** What a JSPI import throws when called outside `promising` (not in Deno's typings yet). */
const SuspendError = (WebAssembly as unknown as { SuspendError: new () => Error }).SuspendError;

const promising = (WebAssembly as unknown as {
  promising(f: unknown): (...a: unknown[]) => Promise<unknown>;
}).promising;

/**
 * A component function calling lifted core function `shape` for one instance, entered
 * through `enter` (its core function, or `WebAssembly.promising` of it if async).
 */
function exported(
  state: InstanceState,
  shape: LiftShape,
  cx: Cx,
  enter: (...flat: unknown[]) => unknown,
  postReturn: ((...flat: unknown[]) => unknown) | null,
  plain: ((...flat: unknown[]) => unknown) | null,
): (...args: unknown[]) => unknown {
  const call = new ExportCall(state, shape, cx, enter, postReturn, plain);
  // As jco's functions: `length` is the parameter count (a command's entrypoint is
  // refused if it takes any). Written out for the usual counts: redefining `length`
  // costs every instance a property store of its own.
  if (shape.async) {
    switch (shape.params.length) {
      case 0:
        return () => call.callAsync([]);
      case 1:
        return (a: unknown) => call.callAsync([a]);
      case 2:
        return (a: unknown, b: unknown) => call.callAsync([a, b]);
    }
  }
  const fn = shape.async
    ? (...args: unknown[]) => call.callAsync(args)
    : (...args: unknown[]) => call.call(args);
  if (shape.params.length > 0) {
    Object.defineProperty(fn, "length", { value: shape.params.length });
  }
  return fn;
}

/**
 * Core instances kept between instances of a component (see `recycle.ts`), with what
 * the glue made for them that no guest can tell from new: emptied handle tables, call
 * contexts over the same memory and functions, and the JSPI entries of their exports.
 */
interface KeptSlot {
  slot: number;
  cores: (WebAssembly.Instance | Record<string, unknown>)[];
  memories: [MemoryPool | ImageMemories, WebAssembly.Memory][];
  snapshot: SlotSnapshot;
  /** The handle tables, emptied when the slot is recycled. */
  tables: (HandleTable | undefined)[];
  contexts: (Cx | undefined)[];
  /** Each lifted export's entry (`WebAssembly.promising` of its core function, if async). */
  enters: Map<LiftShape, (...flat: unknown[]) => unknown>;
}

/** Most idle recycled instances kept per component and thread. */
export const MAX_IDLE_INSTANCES = 32;

/** How a linked plan makes instances (see {@linkcode LinkStats.reuse}). */
export interface ReusePolicy {
  /** Ended instances' core instances are set back and serve later instances. */
  recycled: boolean;
  /** Why not (the first module that prevents it), or null. */
  reason: string | null;
  /**
   * Instances whose memory grew are recycled too (their modules' code sees a virtual
   * memory size, see `vsize.ts`); else they are dropped.
   */
  grownRecycled: boolean;
  /** Why not, or null. */
  grownReason: string | null;
}

/** What {@linkcode link} prepares once per plan and thread. */
class Linked {
  lowers: LowerShape[];
  /** Exports: a function (`key`), or an interface's functions (under each of `keys`). */
  exports: { key: string | null; keys: string[]; funcs: LiftShape[] }[];
  resources: { iface: string; cls: string }[];
  /** The distinct canonical options of lowers and lifts (their call contexts). */
  opts: PlanOpts[] = [];
  /** Per step: its memories (image ones made on first use, from the compiled module). */
  pools: (MemoryPool | ImageMemories | undefined)[];
  reuse: ReusePolicy;
  /** Whether instances whose memory grew may be recycled (see {@linkcode recycleGrown}). */
  #recycleGrown = true;
  /** Recycled core instances waiting for an instance (see `recycle.ts`). */
  #idle: KeptSlot[] = [];
  /** Live instances by slot: what the functions they import find them by. */
  #live: (InstanceState | undefined)[] = [];
  #freeSlots: number[] = [];
  /** Each slot's import functions, made once and imported by every instance in it. */
  #slotFunctions: unknown[][] = [];
  /** Callees of shared interfaces, by interface object and lowered function. */
  #sharedCallees = new WeakMap<object, ((args: unknown[]) => unknown)[]>();
  /** Import objects (or their shared prototypes) known to have every host function. */
  #checked = new WeakSet<object>();
  /** Core signatures of the host functions: lowers, then resource drops. */
  #hostSigs: FuncSig[];
  /** Host functions whose trampolines try them first (blocking, results in memory). */
  #tryFirst: boolean[];
  /** Every blocking host function is tried first (a plain entry may be offered). */
  #allTried: boolean;
  /** Async exports entered plainly (see {@linkcode LinkStats.plainCalls}). */
  plainCalls = 0;
  /**
   * The trampoline module of the host functions (see `trampoline.ts`): undefined until
   * first needed, null if core modules do not link to it (then they import the JS
   * functions themselves).
   */
  #trampolineModule: WebAssembly.Module | null | undefined;
  /** Whether an instance linked to trampolines yet (before that, a LinkError turns them off). */
  #trampolinesLinked = false;
  /** Each slot's trampoline exports. */
  #slotTrampolines: (WebAssembly.Exports | undefined)[] = [];

  constructor(readonly plan: LeanPlan, options: LinkOptions) {
    const types = resolveTypes(plan.types);
    const asyncImports = new Set(options.asyncImports);
    const asyncExports = new Set(options.asyncExports);
    const optsKeys = new Map<string, number>();
    const optsKey = (opts: PlanOpts): number => {
      const key = `${refKey(opts.memory)} ${refKey(opts.realloc)} ${opts.encoding}`;
      let k = optsKeys.get(key);
      if (k === undefined) optsKeys.set(key, k = this.opts.push(opts) - 1);
      return k;
    };
    this.lowers = plan.lowers.map((lower, index) => {
      const iface = unversioned(lower.iface);
      const f = funcShape(types, lower.type);
      return {
        lower,
        index,
        iface,
        callee: calleeOf(lower.name),
        ...f,
        resultIsResult: f.result?.k === "result",
        async: asyncImports.has(`${iface}#${lower.name}`),
        outside: outsideOf(iface, lower.name),
        optsKey: optsKey(lower.opts),
      };
    });
    this.exports = plan.exports.map((e) => {
      const shapeOf = (name: string, lift: PlanLift): LiftShape => ({
        lift,
        key: camelCase(name),
        ...funcShape(types, lift.type),
        async: asyncExports.has(e.kind === "instance" ? `${unversioned(e.name)}#${name}` : name),
        optsKey: optsKey(lift.opts),
      });
      if (e.kind === "func") {
        return { key: camelCase(e.name), keys: [], funcs: [shapeOf(e.name, e.func)] };
      }
      // As jco: under the full name, and under the camelCase interface name.
      const slash = e.name.lastIndexOf("/");
      const keys = [
        e.name,
        ...(slash >= 0 ? [camelCase(unversioned(e.name.slice(slash + 1)))] : []),
      ];
      return { key: null, keys, funcs: e.funcs.map(([n, l]) => shapeOf(n, l)) };
    });
    this.resources = plan.resources.map((r) => ({
      iface: unversioned(r.iface),
      cls: pascalCase(r.name),
    }));
    this.#hostSigs = [
      ...this.lowers.map((l) => loweredSig(l.params, l.result)),
      ...this.resources.map(() => RESOURCE_DROP_SIG),
    ];
    this.#tryFirst = this.#hostSigs.map((sig, k) =>
      k < this.lowers.length && this.lowers[k].async && sig.results.length === 0
    );
    this.#allTried = this.lowers.every((l, k) => !l.async || this.#tryFirst[k]);
    this.pools = plan.steps.map((step) =>
      step.op === "instantiate" && step.memory !== undefined && !step.reset?.image
        ? new MemoryPool(step.memory)
        : undefined
    );
    this.reuse = this.#policy();
  }

  /**
   * The callee of lowered function `i` from `imports`. One from an interface the
   * imports inherit (a host factory's shared, stateless part) is made once for every
   * instance sharing it.
   */
  callee(
    i: number,
    imports: Record<string, Record<string, unknown>>,
  ): (args: unknown[]) => unknown {
    const shape = this.lowers[i];
    if (Object.hasOwn(imports, shape.iface)) return hostCallable(shape, imports);
    const iface = imports[shape.iface];
    let callees = this.#sharedCallees.get(iface);
    if (callees === undefined) this.#sharedCallees.set(iface, callees = []);
    return callees[i] ??= hostCallable(shape, imports);
  }

  /** Whether step `i`'s memories are reused once they grew (see {@linkcode recycleGrown}). */
  #grows(i: number): boolean {
    const step = this.plan.steps[i];
    return this.reuse.grownRecycled && step.op === "instantiate" &&
      step.reset?.virtualSize === true;
  }

  /** See {@linkcode recycleGrown}. */
  setRecycleGrown(on: boolean): void {
    this.#recycleGrown = on;
    this.reuse = this.#policy();
    this.pools.forEach((pool, i) => {
      if (pool instanceof ImageMemories) pool.grown = this.#grows(i);
    });
  }

  #policy(): ReusePolicy {
    const { plan } = this;
    let reason: string | null = null;
    for (const step of plan.steps) {
      if (step.op !== "instantiate") continue;
      const why = step.noReset ?? step.reset?.fresh ??
        (step.reset === undefined ? "its module was not prepared for recycling" : null);
      if (why !== null) {
        reason = `core module ${plan.modules[step.module]}: ${why}`;
        break;
      }
    }
    const grownReason = reason !== null
      ? "instances are not recycled"
      : plan.grownReason ?? (this.#recycleGrown ? null : "turned off for this container");
    return { recycled: reason === null, reason, grownRecycled: grownReason === null, grownReason };
  }

  /**
   * Whether async exports have a plain entry (see `plain_attempt.ts`): only if every
   * blocking host function is tried first through a trampoline, where a call that
   * would suspend can throw before it reaches its `WebAssembly.Suspending` import.
   */
  get plainEntry(): boolean {
    return this.#allTried && this.#trampolineModule !== null;
  }

  /** Idle recycled instances (see {@linkcode idleInstances}). */
  get idleCount(): number {
    return this.#idle.length;
  }

  /** See {@linkcode linkStats}. */
  stats(): LinkStats {
    const pooledMemories: number[] = [];
    let copied: string | null = null;
    this.plan.steps.forEach((step, i) => {
      if (step.op !== "instantiate" || step.memory === undefined) return;
      const pool = this.pools[i];
      pooledMemories.push((pool?.size ?? 0) + this.#idle.length);
      if (pool instanceof ImageMemories) copied ??= pool.copyReason;
    });
    return {
      pooledMemories,
      liveInstances: this.#live.filter((s) => s !== undefined).length,
      idleInstances: this.#idle.length,
      trampolines: this.#trampolineModule !== null,
      reuse: this.reuse,
      imagesCopied: copied,
      plainEntry: this.plainEntry,
      plainCalls: this.plainCalls,
    };
  }

  /** The live instance in `slot` (a trap once it has ended). */
  stateAt(slot: number): InstanceState {
    const state = this.#live[slot];
    if (state === undefined || state.ended) throw trap("the instance has ended");
    return state;
  }

  /**
   * The function an instance in `slot` imports for lowered function `i`. It finds the
   * instance by its slot rather than holding it, and is made once per slot: V8 keeps
   * an instance's imports in its long-lived heap, so functions made per instance (and
   * anything they reach) outlive the request there, which was most of the garbage
   * collector's work (measured, see `bench/RESULTS.md`). A slot is reused only once
   * nothing can run in its previous instance any more (see {@linkcode Linked.left}).
   */
  importFunction(i: number, slot: number): unknown {
    const fns = this.#slotFunctions[slot] ??= [];
    let fn = fns[i];
    if (fn === undefined) {
      const shape = this.lowers[i];
      fn = fns[i] = shape.async
        ? new Suspending((...flat: unknown[]) => callHostAsync(shape, this.stateAt(slot), flat))
        : (...flat: unknown[]) => callHost(shape, this.stateAt(slot), flat);
    }
    return fn;
  }

  /** The function an instance in `slot` imports to drop a handle of resource `res`. */
  dropFunction(res: number, slot: number): unknown {
    const fns = this.#slotFunctions[slot] ??= [];
    const i = this.lowers.length + res;
    return fns[i] ??= (handle: number) => dropHandle(this.stateAt(slot), res, handle);
  }

  /** The JS function of host function `k` (a lowered function, else a drop) for `slot`. */
  #hostFunction(k: number, slot: number): unknown {
    const n = this.lowers.length;
    return k < n ? this.importFunction(k, slot) : this.dropFunction(k - n, slot);
  }

  /**
   * What the core instances in `slot` import for host function `k` (a lowered
   * function, or past the lowers a resource drop): the slot's trampoline export (see
   * `trampoline.ts`), or the JS function itself if trampolines are off.
   */
  hostImport(k: number, slot: number): unknown {
    if (this.#trampolineModule === null) return this.#hostFunction(k, slot);
    let exports = this.#slotTrampolines[slot];
    if (exports === undefined) {
      this.#trampolineModule ??= new WebAssembly.Module(
        trampolineModule(this.#hostSigs, this.#tryFirst),
      );
      const host: WebAssembly.ModuleImports = {};
      for (let i = 0; i < this.#hostSigs.length; i++) {
        if (this.#tryFirst[i]) {
          const shape = this.lowers[i];
          host[tryImportName(i)] = (...flat: unknown[]) =>
            callHostTry(shape, this.stateAt(slot), flat);
          host[i] = new Suspending((...flat: unknown[]) =>
            resumeHost(shape, this.stateAt(slot), flat)
          ) as WebAssembly.ImportValue;
        } else {
          host[i] = this.#hostFunction(i, slot) as WebAssembly.ImportValue;
        }
      }
      exports = this.#slotTrampolines[slot] = new WebAssembly.Instance(
        this.#trampolineModule,
        { [TRAMPOLINE_IMPORTS]: host },
      ).exports;
    }
    return exports[k];
  }

  instantiate(
    getCoreModule: (name: string) => WebAssembly.Module,
    imports: Record<string, Record<string, unknown>>,
  ): Record<string, unknown> {
    this.#check(imports);
    const kept = this.#idle.pop();
    if (kept !== undefined) {
      const state = new InstanceState(this, imports, kept.slot);
      state.cores = kept.cores;
      state.memories = kept.memories;
      state.tables = kept.tables;
      state.contexts = kept.contexts;
      for (const cx of kept.contexts) if (cx !== undefined) cx.handles = state;
      state.kept = kept;
      this.#live[kept.slot] = state;
      return this.#exportsOf(state);
    }
    const slot = this.#freeSlots.pop() ?? this.#live.length;
    const state = new InstanceState(this, imports, slot);
    this.#live[slot] = state;
    try {
      const exports = this.#create(state, getCoreModule);
      this.#trampolinesLinked ||= this.#trampolineModule !== null;
      return exports;
    } catch (err) {
      // Nothing of it can run (no export escaped), but what a failed instantiation
      // touched is not reused: its memories are left to the garbage collector.
      state.ended = true;
      state.memories = [];
      this.#release(state);
      if (
        err instanceof WebAssembly.LinkError && this.#trampolineModule !== null &&
        !this.#trampolinesLinked
      ) {
        // A core signature computed here differs from the module's own (it should
        // not): link the JS functions directly, as without trampolines.
        this.#trampolineModule = null;
        this.#slotTrampolines = [];
        return this.instantiate(getCoreModule, imports);
      }
      throw err;
    }
  }

  /**
   * Checks the imports have every host function the component imports, once per
   * shape of imports (a host factory's instances share one prototype): host functions
   * are looked up on first call, but a missing one must fail instantiation, as with
   * jco's glue.
   */
  #check(imports: Record<string, Record<string, unknown>>): void {
    const proto = Object.getPrototypeOf(imports);
    const key = proto === Object.prototype || proto === null ? imports : proto;
    if (this.#checked.has(key)) return;
    for (const shape of this.lowers) hostCallable(shape, imports);
    this.#checked.add(key);
  }

  /** Ends `state` (see {@linkcode END_INSTANCE}); released once nothing runs in it. */
  #end(state: InstanceState, reusable: boolean): void {
    if (state.ended) return;
    state.ended = true;
    if (!reusable) state.reusable = false;
    // Ended early (an export call still in progress): its host calls trap from now on,
    // and its slot and memory are released only when that call settles.
    if (state.active === 0) this.#release(state);
  }

  /** An export call of `state` settled. */
  left(state: InstanceState): void {
    state.active--;
    if (state.ended && state.active === 0) this.#release(state);
  }

  #release(state: InstanceState): void {
    if (this.#live[state.slot] !== state) return;
    this.#live[state.slot] = undefined;
    const kept = state.kept;
    if (
      kept !== null && state.reusable && this.#idle.length < MAX_IDLE_INSTANCES &&
      this.#reset(kept)
    ) {
      // The slot stays with its core instances: its import functions find the next
      // instance that takes them. What the guest held goes with this instance.
      for (const table of kept.tables) table?.clear();
      this.#idle.push(kept);
      // Reused last in, first out: the one this pushes below the top few may wait
      // long, so its written pages go back to the OS (it still reads as the image).
      const sunk = this.#idle[this.#idle.length - 1 - RESIDENT_IDLE];
      for (const [pool, memory] of sunk?.memories ?? []) (pool as ImageMemories).shed(memory);
      // Pages a memory grew into are many more: only the top one keeps them.
      const below = this.#idle[this.#idle.length - 1 - RESIDENT_GROWN_IDLE];
      for (const [pool, memory] of below?.memories ?? []) {
        (pool as ImageMemories).shedGrown(memory);
      }
      return;
    }
    this.#freeSlots.push(state.slot);
    for (const [pool, memory] of state.memories) pool.give(memory);
    state.memories = [];
  }

  /**
   * Sets a slot's core instances back to the state they were made in (see
   * `recycle.ts`); false if they cannot be (a memory or table grew).
   */
  #reset(kept: KeptSlot): boolean {
    for (const [pool, memory] of kept.memories) {
      if (!(pool instanceof ImageMemories) || !pool.resettable(memory)) return false;
    }
    if (!tablesIntact(kept.snapshot)) return false;
    try {
      for (const [pool, memory] of kept.memories) {
        if (!(pool as ImageMemories).reset(memory)) return false;
      }
      restoreSlot(kept.snapshot);
    } catch {
      // The memories go back through their pools, which reset them again or drop them.
      return false;
    }
    return true;
  }

  #create(
    state: InstanceState,
    getCoreModule: (name: string) => WebAssembly.Module,
  ): Record<string, unknown> {
    const { plan } = this;
    for (let i = 0; i < plan.steps.length; i++) {
      const step = plan.steps[i];
      if (step.op === "bag") {
        if (step.items.length === 0) {
          state.cores.push(EMPTY_BAG);
          continue;
        }
        const bag: Record<string, unknown> = {};
        for (const [name, ref] of step.items) bag[name] = state.core(ref);
        state.cores.push(bag);
        continue;
      }
      const importObject: WebAssembly.Imports = {};
      for (const [name, inst] of step.args) {
        const core = state.cores[inst];
        importObject[name] =
          (core instanceof WebAssembly.Instance ? core.exports : core) as WebAssembly.ModuleImports;
      }
      const module = getCoreModule(plan.modules[step.module]);
      if (step.memory !== undefined && step.reset?.image) {
        this.pools[i] ??= new ImageMemories(step.memory, readImage(module), this.#grows(i));
      }
      const pool = this.pools[i];
      if (pool !== undefined && step.memory !== undefined) {
        const memory = pool.take();
        importObject[step.memory.module] = { [step.memory.name]: memory };
        state.memories.push([pool, memory]);
      }
      let instance: WebAssembly.Instance;
      try {
        instance = new WebAssembly.Instance(module, importObject);
      } catch (err) {
        throw normalizeTrap(err);
      }
      state.cores.push(instance);
    }
    if (this.reuse.recycled) {
      const parts = [];
      for (let i = 0; i < plan.steps.length; i++) {
        const step = plan.steps[i];
        if (step.op !== "instantiate" || step.reset === undefined) continue;
        const { exports } = state.cores[i] as WebAssembly.Instance;
        parts.push({ exports, globals: step.reset.globals, tables: step.reset.tables });
      }
      state.kept = {
        slot: state.slot,
        cores: state.cores,
        memories: state.memories,
        snapshot: snapshotSlot(parts),
        tables: state.tables,
        contexts: state.contexts,
        enters: new Map(),
      };
    }
    return this.#exportsOf(state);
  }

  /** The component-level exports of `state`, over its core instances. */
  #exportsOf(state: InstanceState): Record<string, unknown> {
    const out: Record<string | symbol, unknown> = {};
    for (const e of this.exports) {
      const funcs: Record<string, unknown> = {};
      for (const shape of e.funcs) {
        let enter = state.kept?.enters.get(shape);
        if (enter === undefined) {
          const core = state.core(shape.lift.core) as (...a: unknown[]) => unknown;
          enter = shape.async ? promising(core) : core;
          state.kept?.enters.set(shape, enter);
        }
        const post = shape.lift.opts.postReturn === null
          ? null
          : state.core(shape.lift.opts.postReturn) as (...a: unknown[]) => unknown;
        // Looked up per instance (an export of a core instance): cheap, unlike `promising`.
        const plain = shape.async && this.plainEntry
          ? state.core(shape.lift.core) as (...a: unknown[]) => unknown
          : null;
        const fn = exported(state, shape, state.cx(shape.optsKey), enter, post, plain);
        if (e.key !== null) out[e.key] = fn;
        else funcs[shape.key] = fn;
      }
      if (e.key === null) { for (const key of e.keys) out[key] = funcs; }
    }
    out[END_INSTANCE] = (reusable = true) => this.#end(state, reusable);
    out[GROWN_BYTES] = () => {
      let bytes = 0;
      for (const [pool, memory] of state.memories) {
        bytes += Math.max(0, memory.buffer.byteLength - pool.byteLength);
      }
      return bytes;
    };
    return out;
  }
}

/**
 * Prepares `plan` once (types, shapes) and returns its `instantiate`. The result (and
 * its memory pools and instance registry) belongs to the calling thread.
 *
 * @throws Error if the plan is malformed
 */
export function link(plan: LeanPlan, options: LinkOptions): LeanInstantiate {
  const linked = new Linked(plan, options);
  const instantiate: LeanInstantiate = (getCoreModule, imports) =>
    linked.instantiate(getCoreModule, imports);
  linkedOf.set(instantiate, linked);
  return instantiate;
}

const linkedOf = new WeakMap<LeanInstantiate, Linked>();

/** What a linked plan holds for reuse, for tests and diagnostics. */
export interface LinkStats {
  /** Memories waiting for reuse, per pool. */
  pooledMemories: number[];
  /** Instances not yet released (running, or ended while a call was in progress). */
  liveInstances: number;
  /** Idle recycled instances (their core instances, set back, waiting for a request). */
  idleInstances: number;
  /** Core instances import the host functions through trampolines (see `trampoline.ts`). */
  trampolines: boolean;
  /** Whether instances are recycled, and if not why. */
  reuse: ReusePolicy;
  /** Why memory images are copied rather than mapped copy-on-write, or null. */
  imagesCopied: string | null;
  /**
   * Async exports can be entered without `WebAssembly.promising` in a plain attempt
   * (see `plain_attempt.ts`): every blocking host function is tried first through a
   * trampoline.
   */
  plainEntry: boolean;
  /** Async export calls entered plainly so far (attempts abandoned included). */
  plainCalls: number;
}

/**
 * Whether instances whose memory grew are recycled (default true, where their modules
 * have a virtual memory size: see `vsize.ts`). Off, they are dropped, and a guest's
 * loads and stores past its memory's size trap exactly as on a fresh instance; on, one
 * between the size its code sees and the largest an earlier request grew it to reads
 * zeros instead (nothing another request wrote).
 *
 * @throws Error if `instantiate` is not lean glue
 */
export function recycleGrown(instantiate: LeanInstantiate, on: boolean): void {
  const linked = linkedOf.get(instantiate);
  if (linked === undefined) throw new Error("not lean glue");
  linked.setRecycleGrown(on);
}

/**
 * How many recycled instances `instantiate` holds idle: the next as many instantiations
 * only take one (O(1), its pages possibly still resident), so creating instances ahead
 * of requests gains nothing then.
 *
 * @throws Error if `instantiate` is not lean glue
 */
export function idleInstances(instantiate: LeanInstantiate): number {
  const linked = linkedOf.get(instantiate);
  if (linked === undefined) throw new Error("not lean glue");
  return linked.idleCount;
}

/**
 * Whether `instantiate`'s async exports have a plain entry for plain attempts (see
 * `plain_attempt.ts` and {@linkcode LinkStats.plainEntry}); false for jco's glue.
 */
export function plainEntry(instantiate: LeanInstantiate): boolean {
  return linkedOf.get(instantiate)?.plainEntry ?? false;
}

/** The reuse state of an `instantiate` made by {@linkcode link}. */
export function linkStats(instantiate: LeanInstantiate): LinkStats {
  const linked = linkedOf.get(instantiate);
  if (linked === undefined) throw new Error("not lean glue");
  return linked.stats();
}
