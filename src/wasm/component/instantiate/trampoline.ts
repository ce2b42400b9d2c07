/**
 * Host functions imported as wasm functions.
 *
 * Every `new WebAssembly.Instance` links each imported JS function anew: V8 resolves
 * the callable, picks its wasm-to-JS wrapper and allocates the import's data in its
 * long-lived heap, ~0.45 µs and some garbage per import and instance (measured: a
 * core module importing 12 JS functions instantiates in 7.9–8.5 µs, the same module
 * importing 12 wasm functions in 3.6–4.5 µs, an empty one in 2 µs). A wasm import
 * from another instance is linked by reference.
 *
 * So the host functions of one instance slot (see `link.ts`: they are made once per
 * slot) are imported once into a small *trampoline* instance whose exports call
 * them, and a component's core instances import those exports instead. A trampoline
 * export only forwards its arguments and results (`local.get 0..n-1; call k`); a
 * host function that suspends (JSPI) suspends through it like through any wasm frame.
 *
 * A blocking host function (JSPI) whose results go to memory can be *tried first*:
 * JSPI suspends the guest at every call of a `WebAssembly.Suspending` import, even one
 * that returns no promise (a stack switch and a round trip through the microtask
 * queue). Its trampoline export calls a plain import `"t<k>"` with the same arguments
 * first, which does the call and answers 1 if it completed (it wrote the results), or
 * 0 if it started something to wait for; only then does it call the suspending import
 * `"k"`, which waits for that and writes the results.
 *
 * (Tried and dropped: entering async exports through one `WebAssembly.promising`
 * wrapper per slot, by `call_ref` through a typed global. It cut V8's long-lived
 * garbage per request by 13% but measured no better under load.)
 *
 * @module
 */

import type { Flat, FuncSig } from "./abi.ts";
import { encodeU32 } from "../leb128.ts";

/** The module name the trampoline imports its host functions from. */
export const TRAMPOLINE_IMPORTS = "host";

const VALTYPE: Record<Flat, number> = { i32: 0x7f, i64: 0x7e, f32: 0x7d, f64: 0x7c };
const MAGIC_VERSION = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
const SECTION = { type: 1, import: 2, function: 3, export: 7, code: 10 } as const;
const OP = { localGet: 0x20, call: 0x10, end: 0x0b, if: 0x04, i32Eqz: 0x45 } as const;
const BLOCK_VOID = 0x40;
/** The signature a tried-first function's plain import adds: its parameters, an i32 back. */
const TRY_RESULTS = ["i32"] as const;
const FUNC_TYPE = 0x60;
const EXTERN_FUNC = 0x00;

/**
 * The module name of the trampoline modules (in their name section): V8 names their
 * frames `wasm://wasm/<name>-<hash>`, which trap backtraces leave out (see
 * `command.ts`): a guest's trap reads the same whether its host functions are
 * imported through a trampoline or not.
 */
export const GLUE_MODULE_NAME = "containerd-shim-wasmtime-glue";
const CUSTOM_SECTION = 0;
const NAME_MODULE = 0;

function u32(out: number[], n: number): void {
  out.push(...encodeU32(n));
}

function name(out: number[], s: string): void {
  const bytes = new TextEncoder().encode(s);
  u32(out, bytes.length);
  out.push(...bytes);
}

function section(out: number[], id: number, body: number[]): void {
  out.push(id);
  u32(out, body.length);
  out.push(...body);
}

/** The name section naming the module {@linkcode GLUE_MODULE_NAME}. */
function nameSection(out: number[]): void {
  const moduleName: number[] = [];
  name(moduleName, GLUE_MODULE_NAME);
  const body: number[] = [];
  name(body, "name");
  body.push(NAME_MODULE);
  u32(body, moduleName.length);
  body.push(...moduleName);
  section(out, CUSTOM_SECTION, body);
}

/** The import name of function `k`'s plain import when it is tried first. */
export function tryImportName(k: number): string {
  return `t${k}`;
}

/**
 * The binary of a trampoline module for functions of signatures `sigs`: function
 * `k` is imported as `TRAMPOLINE_IMPORTS`/`"k"` and exported as `"k"`, a wasm
 * function of the same signature that calls it; if `tryFirst[k]` (a function without
 * results), it calls `TRAMPOLINE_IMPORTS`/`"t<k>"` first, and `"k"` only if that
 * answered 0 (see the module documentation).
 */
export function trampolineModule(
  sigs: readonly FuncSig[],
  tryFirst: readonly boolean[] = [],
): Uint8Array<ArrayBuffer> {
  const types: number[] = [];
  const typeOf = new Map<string, number>();
  const typeIndexOf = (sig: FuncSig): number => {
    const key = `${sig.params.join()}>${sig.results.join()}`;
    let index = typeOf.get(key);
    if (index === undefined) {
      typeOf.set(key, index = typeOf.size);
      funcType(types, sig);
    }
    return index;
  };
  const typeIndex = sigs.map(typeIndexOf);
  const tried: number[] = [];
  sigs.forEach((sig, k) => {
    if (!tryFirst[k]) return;
    if (sig.results.length > 0) {
      throw new Error(`trampoline ${k}: only a function without results is tried first`);
    }
    tried.push(k);
  });
  const tryType = tried.map((k) =>
    typeIndexOf({ params: sigs[k].params, results: [...TRY_RESULTS] })
  );
  const typeSection: number[] = [];
  u32(typeSection, typeOf.size);
  typeSection.push(...types);

  const importCount = sigs.length + tried.length;
  const imports: number[] = [];
  const funcs: number[] = [];
  const exports: number[] = [];
  const code: number[] = [];
  u32(imports, importCount);
  for (const list of [funcs, exports, code]) u32(list, sigs.length);
  sigs.forEach((_, k) => {
    name(imports, TRAMPOLINE_IMPORTS);
    name(imports, String(k));
    imports.push(EXTERN_FUNC);
    u32(imports, typeIndex[k]);
  });
  tried.forEach((k, j) => {
    name(imports, TRAMPOLINE_IMPORTS);
    name(imports, tryImportName(k));
    imports.push(EXTERN_FUNC);
    u32(imports, tryType[j]);
  });
  sigs.forEach((sig, k) => {
    u32(funcs, typeIndex[k]);
    name(exports, String(k));
    exports.push(EXTERN_FUNC);
    u32(exports, importCount + k);
    const body: number[] = [0]; // no locals
    const forward = (callee: number) => {
      for (let i = 0; i < sig.params.length; i++) {
        body.push(OP.localGet);
        u32(body, i);
      }
      body.push(OP.call);
      u32(body, callee);
    };
    const j = tried.indexOf(k);
    if (j >= 0) {
      forward(sigs.length + j);
      body.push(OP.i32Eqz, OP.if, BLOCK_VOID);
      forward(k);
      body.push(OP.end);
    } else {
      forward(k);
    }
    body.push(OP.end);
    u32(code, body.length);
    code.push(...body);
  });

  const out = [...MAGIC_VERSION];
  section(out, SECTION.type, typeSection);
  section(out, SECTION.import, imports);
  section(out, SECTION.function, funcs);
  section(out, SECTION.export, exports);
  section(out, SECTION.code, code);
  nameSection(out);
  return new Uint8Array(out);
}

function funcType(out: number[], sig: FuncSig): void {
  out.push(FUNC_TYPE);
  u32(out, sig.params.length);
  for (const t of sig.params) out.push(VALTYPE[t]);
  u32(out, sig.results.length);
  for (const t of sig.results) out.push(VALTYPE[t]);
}
