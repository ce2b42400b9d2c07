/**
 * Keeps the shim's cache directory (`WASMTIME_SHIM_CACHE_DIR`) bounded: the
 * component transpile cache (`components/`) and the blob cache (`blobs/`) together
 * stay under `WASMTIME_SHIM_CACHE_MAX_BYTES`, least recently used entries going
 * first, never one in use (the rules are in `src/sys/cache_files.ts`); and the
 * entries of images that containerd no longer has go away ({@linkcode
 * CacheJanitor.sweep}).
 *
 * When it runs (the server calls {@linkcode CacheJanitor.schedule} after every
 * Create, and it runs on a timer of its own):
 *
 * - Eviction: right after each Create settles (in the background: Create's answer
 *   never waits for it), and every sweep interval. So the cap is exceeded at most by
 *   what the containers starting at that moment add, until they are ready.
 * - Sweep: at most once per sweep interval on the node (a stamp file's mtime, shared
 *   by every server), after a Create or on the timer, and only when the blob cache
 *   has entries: a node without Wasm OCI artifacts never loads containerd's client
 *   for it.
 *
 * @module
 */

import { Kind, ShimError } from "../errdefs/errors.ts";
import {
  type CacheFile,
  evictLru,
  type EvictResult,
  listFiles,
  removeUnlessHeld,
  TEMP_SUFFIX,
  tryExclusive,
} from "../sys/cache_files.ts";
import { CACHE_SUBDIR as COMPONENT_SUBDIR } from "../wasm/component/cache.ts";
import { BLOB_CACHE_SUBDIR } from "./blob_cache.ts";
import type { ContainerdAddress } from "./containerd/client.ts";

/** The environment variable of the cap. */
export const MAX_BYTES_ENV = "WASMTIME_SHIM_CACHE_MAX_BYTES";
/** The environment variable of the sweep interval. */
export const SWEEP_INTERVAL_ENV = "WASMTIME_SHIM_CACHE_SWEEP_INTERVAL_MS";
/** Default cap: 1 GiB (why: see the README's "Caches"). */
export const DEFAULT_MAX_BYTES = 1 << 30;
/** Default least time between two sweeps on a node: 10 minutes. */
export const DEFAULT_SWEEP_INTERVAL_MS = 10 * 60_000;
/** Lock file of the evictor and the sweep, inside the cache directory. */
export const LOCK_FILE = "janitor.lock";
/** Stamp file whose mtime is the node's last sweep, inside the cache directory. */
export const SWEEP_STAMP_FILE = "sweep.stamp";
/** Content/Info calls in flight at once during a sweep. */
const SWEEP_CONCURRENCY = 8;

const UNITS: Record<string, number> = { "": 1, k: 1 << 10, m: 1 << 20, g: 1 << 30, t: 2 ** 40 };

/**
 * The cap from `WASMTIME_SHIM_CACHE_MAX_BYTES`: a whole number of bytes, optionally
 * with a binary unit (`K`/`Ki`, `M`/`Mi`, `G`/`Gi`, `T`/`Ti`, any case, optional `B`);
 * unset or empty gives {@linkcode DEFAULT_MAX_BYTES}. `0` keeps only entries in use.
 *
 * @throws {Error} naming the variable, for anything else (a negative number, a
 *   fraction, an unknown unit)
 */
export function maxBytesFromEnv(value: string | undefined): number {
  if (value === undefined || value.trim() === "") return DEFAULT_MAX_BYTES;
  const m = /^\s*(\d+)\s*(?:([kmgt])i?)?b?\s*$/i.exec(value);
  const bytes = m ? Number(m[1]) * UNITS[(m[2] ?? "").toLowerCase()] : NaN;
  if (!Number.isSafeInteger(bytes)) {
    throw new Error(
      `${MAX_BYTES_ENV}=${JSON.stringify(value)} is not valid: give a whole number of ` +
        `bytes, optionally with a unit (e.g. 1073741824, 512Mi, 2G); unset means ` +
        `${DEFAULT_MAX_BYTES} (1 GiB)`,
    );
  }
  return bytes;
}

/**
 * The least time between sweeps from `WASMTIME_SHIM_CACHE_SWEEP_INTERVAL_MS`, in
 * milliseconds (0: after every Create).
 *
 * @throws {Error} naming the variable, for anything but a whole number
 */
export function sweepIntervalFromEnv(value: string | undefined): number {
  if (value === undefined || value.trim() === "") return DEFAULT_SWEEP_INTERVAL_MS;
  const ms = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(ms)) {
    throw new Error(
      `${SWEEP_INTERVAL_ENV}=${JSON.stringify(value)} is not valid: give a whole number of ` +
        `milliseconds (default ${DEFAULT_SWEEP_INTERVAL_MS})`,
    );
  }
  return ms;
}

/** What {@linkcode CacheJanitor.sweep} asks containerd. */
export interface ContentPresence {
  /** containerd's namespaces. */
  listNamespaces(): Promise<string[]>;
  /** Resolves if `namespace`'s content store has `digest`; NOT_FOUND if not. */
  contentInfo(digest: string, namespace: string): Promise<unknown>;
  close(): void;
}

/** What one sweep did. */
export interface SweepResult {
  /** Blob digests checked. */
  checked: number;
  /** Files removed (blobs and the component entries made from them). */
  removed: string[];
  /** Digests gone from containerd whose entries are held (left for the next sweep). */
  held: string[];
  /** Milliseconds the sweep took, including the client's first load. */
  ms: number;
}

/** Options of {@linkcode CacheJanitor}. */
export interface CacheJanitorOptions {
  /** The shim's cache directory. */
  cacheDir: string;
  /** The cap ({@linkcode maxBytesFromEnv}). */
  maxBytes: number;
  /** Least time between sweeps on the node ({@linkcode sweepIntervalFromEnv}). */
  sweepIntervalMs?: number;
  /** containerd, for the sweep; without it there is none. */
  containerd?: ContainerdAddress;
  /** How the sweep reaches containerd (tests); default: a gRPC client. */
  connect?: (address: ContainerdAddress) => Promise<ContentPresence>;
  /** One line per run that did something, and per problem. */
  log?: (line: string) => void;
}

/** Eviction and sweep of one cache directory (see the module documentation). */
export class CacheJanitor {
  #opts: Required<Omit<CacheJanitorOptions, "containerd">> & { containerd?: ContainerdAddress };
  #running: Promise<void> | null = null;
  #again = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  #warned = false;

  /** A janitor of `options.cacheDir`; it does nothing until called or started. */
  constructor(options: CacheJanitorOptions) {
    this.#opts = {
      sweepIntervalMs: DEFAULT_SWEEP_INTERVAL_MS,
      connect: connectContainerd,
      log: () => {},
      ...options,
      cacheDir: options.cacheDir.replace(/\/+$/, ""),
    };
  }

  /** Runs eviction (and the sweep when due) on a timer that does not keep the process up. */
  start(): void {
    const every = Math.max(this.#opts.sweepIntervalMs, 1000);
    const timer = setInterval(() => this.schedule(), every);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  /** Stops the timer and waits for a run in progress. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.#again = false;
    await this.#running;
  }

  /**
   * Evicts (and sweeps when due) soon, in the background; calls during a run make one
   * more run after it. Never throws: problems are logged.
   */
  schedule(): void {
    if (this.#running !== null) {
      this.#again = true;
      return;
    }
    this.#running = (async () => {
      // Let the Create that asked answer first.
      await new Promise((resolve) => setTimeout(resolve, 0));
      do {
        this.#again = false;
        await this.runOnce();
      } while (this.#again);
    })().finally(() => this.#running = null);
  }

  /** Resolves when no run is in progress or scheduled (tests). */
  async idle(): Promise<void> {
    while (this.#running !== null) await this.#running;
  }

  /** One eviction, then the sweep if due; problems are logged, not thrown. */
  async runOnce(): Promise<void> {
    try {
      const evicted = await this.evict();
      if (evicted && (evicted.removed.length > 0 || evicted.held.length > 0)) {
        this.#opts.log(
          `cache: ${evicted.bytesBefore} bytes over the cap of ${this.#opts.maxBytes}: ` +
            `evicted ${evicted.removed.length} entries, now ${evicted.bytesAfter} bytes` +
            (evicted.held.length > 0 ? `; ${evicted.held.length} in use kept` : ""),
        );
      }
      if (await this.#sweepDue()) await this.#sweepLogged();
    } catch (err) {
      if (!this.#warned) {
        this.#warned = true;
        this.#opts.log(
          `cache: cannot manage ${this.#opts.cacheDir}: ${(err as Error).message} ` +
            `(the cache may grow past ${MAX_BYTES_ENV}; containers are not affected)`,
        );
      }
    }
  }

  async #sweepLogged(): Promise<void> {
    try {
      const swept = await this.sweep();
      if (swept && swept.removed.length > 0) {
        this.#opts.log(
          `cache: sweep removed ${swept.removed.length} entries of ${swept.checked} blobs ` +
            `containerd no longer has (${swept.ms.toFixed(0)} ms)`,
        );
      }
    } catch (err) {
      // containerd restarting, say: the next sweep tries again; entries stay meanwhile.
      this.#opts.log(`cache: sweep failed, entries kept: ${(err as Error).message}`);
    }
  }

  /** Every file of the two caches. */
  async files(): Promise<CacheFile[]> {
    const [components, blobs] = await Promise.all([
      listFiles(`${this.#opts.cacheDir}/${COMPONENT_SUBDIR}`),
      listFiles(`${this.#opts.cacheDir}/${BLOB_CACHE_SUBDIR}`),
    ]);
    return [...components, ...blobs];
  }

  /**
   * Evicts least recently used entries down to the cap, unless another process is
   * evicting this directory now (then undefined).
   */
  async evict(): Promise<EvictResult | undefined> {
    if (!await exists(this.#opts.cacheDir)) return undefined;
    return await tryExclusive(
      `${this.#opts.cacheDir}/${LOCK_FILE}`,
      async () => evictLru(await this.files(), this.#opts.maxBytes),
    );
  }

  async #sweepDue(): Promise<boolean> {
    if (this.#opts.containerd === undefined) return false;
    const stamp = await Deno.stat(`${this.#opts.cacheDir}/${SWEEP_STAMP_FILE}`).catch(() => null);
    const last = stamp?.mtime?.getTime() ?? 0;
    return Date.now() - last >= this.#opts.sweepIntervalMs;
  }

  /**
   * Removes the blobs that no namespace of containerd has any more, and the
   * component entries made from them (a component's entry is keyed by the sha256 of
   * its bytes, which for a Wasm layer is the layer's digest). Held entries stay for
   * the next sweep; a digest containerd cannot be asked about stays. Undefined when
   * there is no containerd, or another process holds the lock.
   */
  async sweep(): Promise<SweepResult | undefined> {
    const containerd = this.#opts.containerd;
    if (containerd === undefined || !await exists(this.#opts.cacheDir)) return undefined;
    return await tryExclusive(`${this.#opts.cacheDir}/${LOCK_FILE}`, async () => {
      const started = performance.now();
      const now = new Date();
      await Deno.writeFile(`${this.#opts.cacheDir}/${SWEEP_STAMP_FILE}`, new Uint8Array());
      await Deno.utime(`${this.#opts.cacheDir}/${SWEEP_STAMP_FILE}`, now, now);
      const blobDir = `${this.#opts.cacheDir}/${BLOB_CACHE_SUBDIR}`;
      const blobs = (await listFiles(blobDir)).filter((f) => !f.path.endsWith(TEMP_SUFFIX));
      const result: SweepResult = { checked: blobs.length, removed: [], held: [], ms: 0 };
      if (blobs.length === 0) return result;
      const client = await this.#opts.connect(containerd);
      const gone: { path: string; digest: string }[] = [];
      try {
        const namespaces = await client.listNamespaces();
        const queue = blobs.map((b) => ({ path: b.path, digest: digestOfPath(blobDir, b.path) }));
        const worker = async () => {
          for (let b = queue.shift(); b !== undefined; b = queue.shift()) {
            if (b.digest !== null && await absentEverywhere(client, namespaces, b.digest)) {
              gone.push(b as { path: string; digest: string });
            }
          }
        };
        await Promise.all(Array.from({ length: SWEEP_CONCURRENCY }, worker));
      } finally {
        client.close();
      }
      if (gone.length > 0) {
        const components = await listFiles(`${this.#opts.cacheDir}/${COMPONENT_SUBDIR}`);
        for (const { path, digest } of gone) {
          const hex = digest.slice(digest.indexOf(":") + 1);
          const made = components.filter((c) => baseName(c.path).startsWith(`${hex}-`));
          let kept = false;
          for (const file of [path, ...made.map((c) => c.path)]) {
            if (await removeUnlessHeld(file)) result.removed.push(file);
            else kept = true;
          }
          if (kept) result.held.push(digest);
        }
      }
      result.ms = performance.now() - started;
      return result;
    });
  }
}

/** True when no namespace has `digest`; false when one has it or one cannot say. */
async function absentEverywhere(
  client: ContentPresence,
  namespaces: readonly string[],
  digest: string,
): Promise<boolean> {
  for (const ns of namespaces) {
    try {
      await client.contentInfo(digest, ns);
      return false;
    } catch (err) {
      if (!(err instanceof ShimError && err.kind === Kind.NOT_FOUND)) return false;
    }
  }
  return true;
}

/** `<blobDir>/<algorithm>/<hex>` → `algorithm:hex` (null for anything else). */
function digestOfPath(blobDir: string, path: string): string | null {
  const m = /^(sha256|sha512)\/([0-9a-f]+)$/.exec(path.slice(blobDir.length + 1));
  return m ? `${m[1]}:${m[2]}` : null;
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

async function exists(path: string): Promise<boolean> {
  return (await Deno.stat(path).catch(() => null))?.isDirectory === true;
}

async function connectContainerd(address: ContainerdAddress): Promise<ContentPresence> {
  const { ContainerdClient } = await import("./containerd/client.ts");
  return await ContainerdClient.connect(address);
}
