/**
 * Loads a component for this process: from the transpile cache or by transpiling it
 * (then caching it), evaluates its glue and compiles its core modules, once. Instances
 * are then created from the result as often as needed ({@linkcode instantiate}).
 *
 * @module
 */

import { invalidArgument } from "../../errdefs/errors.ts";
import {
  CACHE_SUBDIR,
  type CacheEntry,
  cacheKey,
  type CacheOutcome,
  TranspileCache,
} from "./cache.ts";
import type { Imports } from "./host/mod.ts";
import {
  compileCores,
  type Instantiate,
  loadGlue,
  optionsFingerprint,
  transpile,
  type TranspileOptions,
} from "./transpile.ts";
import { counter, withSpan } from "../../sys/telemetry.ts";

/** Transpile-cache lookups, by outcome (`hit`, `miss`, `corrupt`, `disabled`). */
const cacheLookups = counter("wasm.transpile_cache.lookups", {
  description: "transpile-cache lookups of components, by outcome",
});

/** Default cache directory when the runner is given none (see the README). */
export const DEFAULT_CACHE_DIR = "/var/lib/containerd-shim-wasmtime/cache";
export { CACHE_SUBDIR };

/** Where the time of a load went, in milliseconds. */
export interface LoadTimings {
  /** How the glue was found. */
  source: CacheOutcome;
  /** Cache lookup (read and verify), 0 without a cache. */
  cacheMs: number;
  /** jco transpile (0 on a cache hit). */
  transpileMs: number;
  /** Evaluating the glue. */
  glueMs: number;
  /** Compiling the core modules. */
  compileMs: number;
}

/** A component ready to be instantiated. */
export interface LoadedComponent {
  /** The glue's `instantiate`. */
  instantiate: Instantiate;
  /** The glue's source (for worker threads, which evaluate it again). */
  glue: string;
  /** Compiled core modules by name. */
  modules: Map<string, WebAssembly.Module>;
  /** Exports as jco listed them. */
  exports: [string, string][];
  /** Where the time went. */
  timings: LoadTimings;
}

/** Options of {@linkcode loadComponent}. */
export interface LoadOptions extends TranspileOptions {
  /** Cache directory (entries go in its `components/` subdirectory); null: no disk cache. */
  cacheDir: string | null;
  /** For error messages. */
  path: string;
  /** One line per cache problem. */
  log?: (message: string) => void;
}

/**
 * Loads `bytes` (see the module documentation).
 *
 * @throws {ShimError} INVALID_ARGUMENT if jco cannot transpile it or a core module does
 *   not compile
 */
export async function loadComponent(
  bytes: Uint8Array,
  options: LoadOptions,
): Promise<LoadedComponent> {
  const cache = new TranspileCache(
    options.cacheDir === null ? null : `${options.cacheDir}/${CACHE_SUBDIR}`,
    options.log,
  );
  let t = performance.now();
  const key = await cacheKey(bytes, optionsFingerprint(options));
  const cached = await withSpan("transpile cache lookup", {}, async (span) => {
    const found = await cache.get(key);
    span?.setAttribute("wasm.transpile_cache.outcome", found.outcome);
    return found;
  });
  cacheLookups.add(1, { outcome: cached.outcome });
  const cacheMs = performance.now() - t;
  let entry: CacheEntry | null = cached.entry;
  let transpileMs = 0;
  if (entry === null) {
    t = performance.now();
    try {
      entry = await withSpan(
        "transpile",
        { "wasm.bytes": bytes.length },
        () => transpile(bytes, options),
      );
    } catch (err) {
      throw invalidArgument(
        `component ${options.path} cannot be transpiled by jco: ${messageOf(err)}`,
      );
    }
    transpileMs = performance.now() - t;
    await cache.put(key, entry);
  }
  t = performance.now();
  const glue = await loadGlue(entry.glue);
  const glueMs = performance.now() - t;
  t = performance.now();
  let modules: Map<string, WebAssembly.Module>;
  try {
    modules = await withSpan("compile core modules", {}, () => compileCores(entry.cores));
  } catch (err) {
    throw invalidArgument(`component ${options.path} does not compile: ${messageOf(err)}`);
  }
  const compileMs = performance.now() - t;
  return {
    instantiate: glue,
    glue: entry.glue,
    modules,
    exports: entry.exports,
    timings: { source: cached.outcome, cacheMs, transpileMs, glueMs, compileMs },
  };
}

/** Creates one instance of `component` linked to `imports`; returns its exports. */
export function instantiate(
  component: Pick<LoadedComponent, "instantiate" | "modules">,
  imports: Imports,
): Record<string, unknown> {
  return component.instantiate((name) => {
    const module = component.modules.get(name);
    if (module === undefined) throw new Error(`the glue asked for unknown core module ${name}`);
    return module;
  }, imports);
}

function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (typeof err === "string") return err;
  return JSON.stringify(err) ?? String(err);
}
