/**
 * Turns a component into JS glue plus core modules, and loads that glue.
 *
 * - A `wasi:http/proxy` or `wasi:cli/command` component, or one run by a function's
 *   name, gets lean glue (`instantiate/`): our own instantiation, made for an instance per
 *   request and cheap to load (see `instantiate/mod.ts` for why and what it covers). One using
 *   something the lean glue does not handle gets jco's glue, as below; `glue: "jco"`
 *   asks for jco's glue regardless.
 * - jco's glue is generated in "sync instantiation" mode with JSPI: it exports
 *   `instantiate(getCoreModule, imports)`, which the caller runs once per instance with
 *   a fresh host, and the blocking WASI calls listed in {@linkcode ASYNC_IMPORTS} may
 *   return promises (they suspend only their own instance).
 * - Only jco's bindgen component (`@bytecodealliance/jco-transpile/component`) is
 *   imported, lazily, on a cache miss: the package's `transpile()` would also load a
 *   native minifier (FFI), binaryen and wasm-tools, none of which is needed here.
 * - The glue is evaluated with `new Function` (its only module syntax is the `export`
 *   of two declarations, rewritten here), which a `deno compile`d binary allows, and is
 *   ~20× faster than importing it from a `data:` URL (5 ms vs 100 ms for 300 KB,
 *   measured). Glue of another shape falls back to a `data:` URL import. Never a file
 *   path or a `blob:` URL.
 *
 * @module
 */

import { isLeanGlue, LEAN_GLUE_HEADER, leanTranspile, loadLeanGlue } from "./instantiate/mod.ts";

/** Version of `@bytecodealliance/jco-transpile` this code was written and tested with. */
export const JCO_TRANSPILE_VERSION = "0.15.0";

/** The blocking WASI imports that the host implements as async functions (JSPI). */
export const ASYNC_IMPORTS: readonly string[] = [
  "wasi:io/poll#poll",
  "wasi:io/poll#[method]pollable.block",
  "wasi:io/streams#[method]input-stream.blocking-read",
  "wasi:io/streams#[method]input-stream.blocking-skip",
  "wasi:io/streams#[method]output-stream.blocking-flush",
  "wasi:io/streams#[method]output-stream.blocking-write-and-flush",
  "wasi:io/streams#[method]output-stream.blocking-write-zeroes-and-flush",
  "wasi:io/streams#[method]output-stream.blocking-splice",
];

/** The exports the host calls as async (JSPI-promising) functions. */
export const ASYNC_EXPORTS: readonly string[] = [
  "wasi:cli/run#run",
  "wasi:http/incoming-handler#handle",
];

/** Name of the generated glue (its core modules are `component.core*.wasm`). */
const GLUE_NAME = "component";

/**
 * Edits made to the generated glue, as [pattern, replacement]. The host never wants
 * jco's debug log:
 * - its logger reads `process.env.JCO_DEBUG` on every call, which throws in a runner
 *   without env access (and costs ~1 µs per host call);
 * - its ~130 call sites build their arguments (object literals, strings) before the
 *   logger returns, on every host call; `false &&` skips that. Every call site is a
 *   statement of its own, so the rewrite keeps the code valid.
 */
const GLUE_PATCHES: readonly [string | RegExp, string][] = [
  ["globalThis?.process?.env?.JCO_DEBUG", "false"],
  [/^(\s*)_debugLog\(/gm, "$1false && _debugLog("],
];

/** Bumped whenever the transpile options or glue patches change (part of cache keys). */
export const GLUE_FORMAT = 3;

/** The output of a transpile. */
export interface Transpiled {
  /** The glue's JS source. */
  glue: string;
  /** Core modules by the name the glue asks for. */
  cores: Map<string, Uint8Array>;
  /** Exports of the component as jco lists them (name, kind). */
  exports: [string, string][];
}

/** The transpile options (and so part of the cache key) for a component. */
export interface TranspileOptions {
  /** Exports called through JSPI besides {@linkcode ASYNC_EXPORTS} (`iface#func`, `func`). */
  extraAsyncExports?: readonly string[];
  /**
   * Which glue: `auto` (default) is lean glue for a wasi:http proxy, a wasi:cli command
   * or a component run by a function's name, if the lean glue handles it, else jco's;
   * `jco` is always jco's.
   */
  glue?: "auto" | "jco";
}

/** The options that identify a transpile's output (for cache keys). */
export function optionsFingerprint(options: TranspileOptions): string {
  return JSON.stringify({
    jco: JCO_TRANSPILE_VERSION,
    format: GLUE_FORMAT,
    asyncImports: ASYNC_IMPORTS,
    asyncExports: [...ASYNC_EXPORTS, ...(options.extraAsyncExports ?? [])],
    patches: GLUE_PATCHES.map(([from, to]) => [String(from), to]),
    glue: options.glue ?? "auto",
    lean: LEAN_GLUE_HEADER,
  });
}

/** Applies {@linkcode GLUE_PATCHES}. */
export function patchGlue(source: string): string {
  let out = source;
  for (const [from, to] of GLUE_PATCHES) {
    out = typeof from === "string" ? out.replaceAll(from, to) : out.replace(from, to);
  }
  return out;
}

interface Bindgen {
  $init: Promise<void>;
  generate(
    component: Uint8Array,
    options: Record<string, unknown>,
  ): { files: [string, Uint8Array][]; imports: string[]; exports: [string, string][] };
}

let bindgen: Promise<Bindgen> | undefined;

/** Loads jco's bindgen once (it starts a worker thread of its own; see module doc). */
function loadBindgen(): Promise<Bindgen> {
  bindgen ??= (async () => {
    const mod = await import("@bytecodealliance/jco-transpile/component") as unknown as Bindgen;
    await mod.$init;
    return mod;
  })();
  return bindgen;
}

/** The exports that make a component a wasi:http proxy or a command (lean glue's scope). */
const LEAN_EXPORTS = /^wasi:(http\/incoming-handler|cli\/run)@0\.2\.\d+/;

/**
 * Lean glue for `component` if the lean glue handles it and it is a wasi:http proxy, a
 * wasi:cli command, or run by a function's name (`extraAsyncExports`), else null (then
 * jco's glue is used). Never throws: anything unexpected means jco's glue.
 */
export function tryLeanTranspile(
  component: Uint8Array,
  options: TranspileOptions = {},
): Transpiled | null {
  if (options.glue === "jco") return null;
  const extraAsyncExports = options.extraAsyncExports ?? [];
  let lean;
  try {
    lean = leanTranspile(component, { extraAsyncExports });
  } catch {
    return null;
  }
  if (extraAsyncExports.length === 0 && !lean.exports.some(([name]) => LEAN_EXPORTS.test(name))) {
    return null;
  }
  return lean;
}

/**
 * Transpiles `component`: lean glue where it handles the component, else jco's glue
 * (see the module documentation).
 *
 * @throws Error with jco's message if the binary is not a valid component
 */
export async function transpile(
  component: Uint8Array,
  options: TranspileOptions = {},
): Promise<Transpiled> {
  return tryLeanTranspile(component, options) ?? await jcoTranspile(component, options);
}

/**
 * Transpiles `component` with jco.
 *
 * @throws Error with jco's message if the binary is not a valid component
 */
export async function jcoTranspile(
  component: Uint8Array,
  options: TranspileOptions = {},
): Promise<Transpiled> {
  const { generate } = await loadBindgen();
  const out = generate(component, {
    name: GLUE_NAME,
    instantiation: { tag: "sync" },
    asyncMode: {
      tag: "jspi",
      val: {
        imports: [...ASYNC_IMPORTS],
        exports: [...ASYNC_EXPORTS, ...(options.extraAsyncExports ?? [])],
      },
    },
    map: [],
    noTypescript: true,
    noNodejsCompat: true,
    tlaCompat: false,
    base64Cutoff: 0,
    validLiftingOptimization: false,
    tracing: false,
    noComponentErrorWrapping: true,
    noNamespacedExports: false,
    multiMemory: false,
  });
  let glue: string | undefined;
  const cores = new Map<string, Uint8Array>();
  for (const [name, bytes] of out.files) {
    if (name === `${GLUE_NAME}.js`) glue = patchGlue(new TextDecoder().decode(bytes));
    else if (name.endsWith(".wasm")) cores.set(name, bytes);
  }
  if (glue === undefined) throw new Error("jco produced no JS glue");
  return { glue, cores, exports: out.exports };
}

/** The glue's `instantiate` (sync instantiation mode). */
export type Instantiate = (
  getCoreModule: (name: string) => WebAssembly.Module,
  imports: Record<string, Record<string, unknown>>,
) => Record<string, unknown>;

const EXPORT_INSTANTIATE = "export function instantiate(";
const EXPORT_UTIL = "export const _util";

/**
 * Evaluates glue source and returns its `instantiate`: lean glue is linked, jco's glue
 * evaluated (see the module documentation for why `new Function`).
 */
export async function loadGlue(source: string): Promise<Instantiate> {
  if (isLeanGlue(source)) {
    return loadLeanGlue(source, { asyncImports: ASYNC_IMPORTS, asyncExports: ASYNC_EXPORTS });
  }
  const simple = source.indexOf(EXPORT_INSTANTIATE) >= 0 &&
    source.split(/^export /m).length <= 3 &&
    !/^\s*import[\s{*]/m.test(source) && !source.includes("import.meta");
  if (simple) {
    const body = `"use strict";\n${
      source.replace(EXPORT_INSTANTIATE, "function instantiate(").replace(
        EXPORT_UTIL,
        "const _util",
      )
    }\nreturn instantiate;`;
    return new Function(body)() as Instantiate;
  }
  const url = `data:text/javascript;base64,${base64(new TextEncoder().encode(source))}`;
  const mod = await import(url);
  return mod.instantiate as Instantiate;
}

function base64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/**
 * Compiles every core module (once per process). Synchronously: the modules are needed
 * before anything else can happen, and an async compile queues behind V8's background
 * tier-up of other modules (jco's own bindgen after a transpile), which measured
 * 100+ ms for a 4 KB component against under 1 ms synchronously.
 */
export function compileCores(
  cores: Map<string, Uint8Array>,
): Promise<Map<string, WebAssembly.Module>> {
  const out = new Map<string, WebAssembly.Module>();
  try {
    for (const [name, bytes] of cores) {
      out.set(name, new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>));
    }
  } catch (err) {
    return Promise.reject(err);
  }
  return Promise.resolve(out);
}
