/**
 * On-disk cache of transpiled components.
 *
 * One file per entry, `<dir>/<sha256 of the component>-<hash of the transpile
 * options>.jco`: a magic string, a length-prefixed JSON manifest (the key, each stored
 * file's name, size and SHA-256, the component's exports), then the files' bytes.
 *
 * - Written to a unique temporary file in the same directory, then renamed over the
 *   final name: readers see a whole entry or none, and concurrent writers (two
 *   containers of one image starting together) each rename a complete file.
 * - Every read checks the magic, the key, the total length and every file's SHA-256;
 *   an entry that fails is deleted and rebuilt, never used.
 * - A hit marks the entry used (its mtime), for the shim's least-recently-used
 *   eviction (`src/sys/cache_files.ts`); a reader needs no hold, since it reads the
 *   whole file through one descriptor.
 * - A directory that cannot be created or written only costs the cache: the caller
 *   transpiles in memory and runs anyway (and the failure is logged once).
 *
 * @module
 */

import { digestOf, parseDigest } from "../../oci/digest.ts";
import { touch } from "../../sys/cache_files.ts";

/** Subdirectory of the cache directory that holds transpiled components. */
export const CACHE_SUBDIR = "components";
/** Magic string at the start of every entry (bumped on format changes). */
export const CACHE_MAGIC = "CSWJCO01";
/** Suffix of entry files. */
export const CACHE_SUFFIX = ".jco";
/** Largest manifest accepted (anything bigger is corruption). */
const MAX_MANIFEST_BYTES = 1 << 20;

/** What a cache entry holds. */
export interface CacheEntry {
  /** The glue's JS source. */
  glue: string;
  /** Core modules by name. */
  cores: Map<string, Uint8Array>;
  /** The component's exports as jco listed them. */
  exports: [string, string][];
}

interface Manifest {
  key: string;
  files: { name: string; size: number; sha256: string }[];
  exports: [string, string][];
}

/** The file name of the glue inside an entry. */
const GLUE_FILE = "component.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Hex SHA-256 of `bytes`. */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  return parseDigest(await digestOf(bytes, "sha256")).hex;
}

/** The cache key of a component transpiled with options identified by `fingerprint`. */
export async function cacheKey(component: Uint8Array, fingerprint: string): Promise<string> {
  const [bytesHash, optionsHash] = await Promise.all([
    sha256Hex(component),
    sha256Hex(encoder.encode(fingerprint)),
  ]);
  return `${bytesHash}-${optionsHash.slice(0, 16)}`;
}

/** Why an entry was not used. */
export class CorruptEntry extends Error {
  /** An entry that is unusable because of `reason`. */
  constructor(reason: string) {
    super(reason);
    this.name = "CorruptEntry";
  }
}

/** Serializes an entry. */
export async function encodeEntry(key: string, entry: CacheEntry): Promise<Uint8Array> {
  const files: [string, Uint8Array][] = [[GLUE_FILE, encoder.encode(entry.glue)], ...entry.cores];
  const manifest: Manifest = {
    key,
    files: await Promise.all(
      files.map(async ([name, bytes]) => ({
        name,
        size: bytes.length,
        sha256: await sha256Hex(bytes),
      })),
    ),
    exports: entry.exports,
  };
  const head = encoder.encode(CACHE_MAGIC);
  const json = encoder.encode(JSON.stringify(manifest));
  const total = head.length + 4 + json.length + files.reduce((n, [, b]) => n + b.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  out.set(head, at);
  at += head.length;
  new DataView(out.buffer).setUint32(at, json.length, true);
  at += 4;
  out.set(json, at);
  at += json.length;
  for (const [, bytes] of files) {
    out.set(bytes, at);
    at += bytes.length;
  }
  return out;
}

/**
 * Parses and verifies an entry.
 *
 * @throws {CorruptEntry} saying what is wrong with it
 */
export async function decodeEntry(key: string, data: Uint8Array): Promise<CacheEntry> {
  const magic = encoder.encode(CACHE_MAGIC);
  if (data.length < magic.length + 4 || !magic.every((b, i) => data[i] === b)) {
    throw new CorruptEntry("bad magic");
  }
  let at = magic.length;
  const jsonLength = new DataView(data.buffer, data.byteOffset).getUint32(at, true);
  at += 4;
  if (jsonLength > MAX_MANIFEST_BYTES || at + jsonLength > data.length) {
    throw new CorruptEntry("bad manifest length");
  }
  let manifest: Manifest;
  try {
    manifest = JSON.parse(decoder.decode(data.subarray(at, at + jsonLength)));
  } catch {
    throw new CorruptEntry("unreadable manifest");
  }
  at += jsonLength;
  if (manifest.key !== key) throw new CorruptEntry(`entry is for ${manifest.key}`);
  if (!Array.isArray(manifest.files) || !Array.isArray(manifest.exports)) {
    throw new CorruptEntry("incomplete manifest");
  }
  const size = manifest.files.reduce((n, f) => n + f.size, 0);
  if (at + size !== data.length) {
    throw new CorruptEntry(`length ${data.length}, manifest says ${at + size}`);
  }
  let glue: string | undefined;
  const cores = new Map<string, Uint8Array>();
  for (const file of manifest.files) {
    const bytes = data.subarray(at, at + file.size);
    at += file.size;
    if (await sha256Hex(bytes) !== file.sha256) {
      throw new CorruptEntry(`${file.name}: bad checksum`);
    }
    if (file.name === GLUE_FILE) glue = decoder.decode(bytes);
    else cores.set(file.name, bytes);
  }
  if (glue === undefined) throw new CorruptEntry("no glue");
  return { glue, cores, exports: manifest.exports };
}

/** Where a cache lookup's result came from. */
export type CacheOutcome = "hit" | "miss" | "corrupt" | "disabled";

/** A directory of transpiled components. */
export class TranspileCache {
  #dir: string | null;
  #log: (message: string) => void;

  /**
   * @param dir the cache directory (created if missing), or null for no disk cache
   * @param log receives one line per cache problem (for the runner's stderr)
   */
  constructor(dir: string | null, log: (message: string) => void = () => {}) {
    this.#dir = dir;
    this.#log = log;
  }

  /** The path of `key`'s entry. */
  path(key: string): string | null {
    return this.#dir === null ? null : `${this.#dir}/${key}${CACHE_SUFFIX}`;
  }

  /** Reads `key`'s entry if a valid one exists; a corrupt one is deleted. */
  async get(key: string): Promise<{ entry: CacheEntry | null; outcome: CacheOutcome }> {
    const path = this.path(key);
    if (path === null) return { entry: null, outcome: "disabled" };
    let data: Uint8Array;
    try {
      data = await Deno.readFile(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        this.#log(`component cache: cannot read ${path}: ${(err as Error).message}`);
      }
      return { entry: null, outcome: "miss" };
    }
    try {
      const entry = await decodeEntry(key, data);
      await touch(path);
      return { entry, outcome: "hit" };
    } catch (err) {
      if (!(err instanceof CorruptEntry)) throw err;
      this.#log(`component cache: discarding ${path}: ${err.message}`);
      await Deno.remove(path).catch(() => {});
      return { entry: null, outcome: "corrupt" };
    }
  }

  /** Stores `key`'s entry; returns false (and logs why) if it could not. */
  async put(key: string, entry: CacheEntry): Promise<boolean> {
    const path = this.path(key);
    if (path === null) return false;
    const tmp = `${path}.${Deno.pid}.${crypto.randomUUID()}.tmp`;
    try {
      await Deno.mkdir(this.#dir!, { recursive: true, mode: 0o755 });
      await Deno.writeFile(tmp, await encodeEntry(key, entry), { mode: 0o644 });
      await Deno.rename(tmp, path);
      return true;
    } catch (err) {
      this.#log(
        `component cache: cannot store ${path} (${(err as Error).message}); ` +
          `running from memory`,
      );
      await Deno.remove(tmp).catch(() => {});
      return false;
    }
  }
}
