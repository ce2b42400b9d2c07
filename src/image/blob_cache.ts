/**
 * The shim's on-disk cache of blobs read from containerd's content store (Wasm
 * layers, and the manifests and configs that lead to them), keyed by digest:
 * `<cacheDir>/blobs/<algorithm>/<hex>`.
 *
 * - Content-addressed: an entry never changes, so a hit needs no call to containerd.
 * - Verified on every read (size and digest); an entry that fails is deleted and
 *   reported as a miss, never used.
 * - Written to a unique temporary file in the same directory and renamed: readers see
 *   a whole entry or none, and two containers of one image may fill it at once.
 * - Bounded with the component transpile cache beside it (`src/sys/cache_files.ts`,
 *   `cache_janitor.ts`): a hit marks the entry used, and a layer a runner still has to
 *   read is held ({@linkcode BlobCache.hold}) so that eviction skips it.
 *
 * @module
 */

import { checkBlob, parseDigest } from "../oci/digest.ts";
import { type FileHold, holdFile, touch } from "../sys/cache_files.ts";

/** Directory of the blob cache inside the shim's cache directory. */
export const BLOB_CACHE_SUBDIR = "blobs";

/** A descriptor as far as the cache cares. */
export interface BlobRef {
  digest: string;
  size: number;
}

/** Digest-keyed blob files under a cache directory. */
export class BlobCache {
  /** `<cacheDir>/blobs`. */
  readonly dir: string;
  #log: (line: string) => void;

  /**
   * @param cacheDir the shim's cache directory (`WASMTIME_SHIM_CACHE_DIR`)
   * @param log receives one line per problem (a corrupt entry, a failed write)
   */
  constructor(cacheDir: string, log: (line: string) => void = () => {}) {
    this.dir = `${cacheDir.replace(/\/+$/, "")}/${BLOB_CACHE_SUBDIR}`;
    this.#log = log;
  }

  /** The file of `digest` (whether or not it exists). */
  path(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return `${this.dir}/${algorithm}/${hex}`;
  }

  /** The verified bytes of `ref`, or null if the cache has no valid entry for it. */
  async get(ref: BlobRef): Promise<Uint8Array | null> {
    const path = this.path(ref.digest);
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        this.#log(`blob cache: cannot read ${path}: ${(err as Error).message}`);
      }
      return null;
    }
    try {
      await checkBlob(bytes, ref, `cached blob ${path}`);
    } catch (err) {
      this.#log(`blob cache: discarding ${path}: ${(err as Error).message}`);
      await Deno.remove(path).catch(() => {});
      return null;
    }
    await touch(path);
    return bytes;
  }

  /**
   * Holds `digest`'s entry against eviction until released (see
   * `src/sys/cache_files.ts`); null when there is no entry (any more).
   */
  hold(digest: string): Promise<FileHold | null> {
    return holdFile(this.path(digest));
  }

  /**
   * Stores verified bytes under their digest and returns the file's path.
   *
   * @throws {Error} saying which directory could not be written, and why
   */
  async put(ref: BlobRef, bytes: Uint8Array): Promise<string> {
    const path = this.path(ref.digest);
    const dir = path.slice(0, path.lastIndexOf("/"));
    const tmp = `${path}.${Deno.pid}.${crypto.randomUUID()}.tmp`;
    try {
      await Deno.mkdir(dir, { recursive: true, mode: 0o755 });
      await Deno.writeFile(tmp, bytes, { mode: 0o644 });
      await Deno.rename(tmp, path);
      return path;
    } catch (err) {
      await Deno.remove(tmp).catch(() => {});
      throw new Error(`cannot store blob ${ref.digest} in ${dir}: ${(err as Error).message}`);
    }
  }
}
