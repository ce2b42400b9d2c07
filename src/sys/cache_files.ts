/**
 * Bounded on-disk caches shared by several processes: least-recently-used eviction
 * that never removes a file in use.
 *
 * The rules every process that uses a cache directory follows:
 *
 * - **Use marks recency**: a process that uses an entry sets its mtime to now
 *   ({@linkcode touch}); eviction removes the entries with the oldest mtimes first.
 *   (atime is no use: `relatime` and `noatime` mounts do not keep it.)
 * - **A process that will still read an entry later holds it**
 *   ({@linkcode holdFile}): a shared `flock(2)` on the entry file, kept until the
 *   reading is done (for a Wasm layer: from Create's lookup until its runner has read
 *   and compiled it). One open-and-read needs no hold: a file unlinked while it is
 *   open stays readable through that descriptor.
 * - **The evictor removes an entry only under an exclusive lock it got without
 *   waiting** ({@linkcode removeUnlessHeld}): a held entry fails the try and is
 *   skipped; a holder arriving while the evictor has it waits on its shared lock, then
 *   sees that the path no longer names the file it opened and treats it as a miss.
 * - **One evictor at a time per directory** ({@linkcode tryExclusive} on a lock file):
 *   the others skip their run, since it would see the same files.
 * - Temporary files of writers (`*.tmp`) are not entries: they are left alone while
 *   young (a writer is filling them) and removed once older than
 *   {@linkcode STALE_TEMP_MS} (a writer that died).
 *
 * flock(2) locks belong to the open file description, so they work across processes
 * (servers, runners, several shim servers of one node) and vanish with a process
 * that dies holding one: a crash never pins an entry forever.
 *
 * @module
 */

/** Temporary files older than this belong to a writer that died; removed by eviction. */
export const STALE_TEMP_MS = 10 * 60_000;
/** Suffix of the writers' temporary files. */
export const TEMP_SUFFIX = ".tmp";

/** A file of a cache as eviction sees it. */
export interface CacheFile {
  path: string;
  size: number;
  /** Last use (see {@linkcode touch}). */
  mtimeMs: number;
}

/** Marks `path` as used now (best effort: a read-only cache only loses recency). */
export async function touch(path: string): Promise<void> {
  const now = new Date();
  await Deno.utime(path, now, now).catch(() => {});
}

/** A shared lock on a cache entry; release it once nothing will read the entry. */
export interface FileHold extends Disposable {
  readonly path: string;
  /** Releases the lock (idempotent). */
  release(): void;
}

/**
 * Holds `path` against eviction (a shared lock) and marks it used. Waits while an
 * evictor has it.
 *
 * @returns the hold, or null when there is no such file (or it was evicted while
 *   waiting): the caller treats it as a miss
 */
export async function holdFile(path: string): Promise<FileHold | null> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch {
    return null;
  }
  try {
    await file.lock(false);
    // Evicted between our open and our lock: the path is gone or names a newer file.
    const [held, now] = await Promise.all([file.stat(), Deno.stat(path).catch(() => null)]);
    if (now === null || now.ino !== held.ino || now.dev !== held.dev) {
      file.close();
      return null;
    }
  } catch {
    file.close();
    return null;
  }
  await touch(path);
  let open = true;
  const release = () => {
    if (!open) return;
    open = false;
    file.close(); // closing the last descriptor drops the flock
  };
  return { path, release, [Symbol.dispose]: release };
}

/**
 * Removes `path` unless some process holds it.
 *
 * @returns true if it was removed (or was already gone), false if it is held
 */
export async function removeUnlessHeld(path: string): Promise<boolean> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return true;
    throw err;
  }
  try {
    if (!await file.tryLock(true)) return false;
    await Deno.remove(path).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
    return true;
  } finally {
    file.close();
  }
}

/**
 * Runs `fn` under an exclusive lock on `lockPath` (created if missing) if no other
 * process has it; otherwise does nothing and returns undefined.
 */
export async function tryExclusive<T>(
  lockPath: string,
  fn: () => Promise<T>,
): Promise<T | undefined> {
  const file = await Deno.open(lockPath, { read: true, write: true, create: true, mode: 0o600 });
  try {
    if (!await file.tryLock(true)) return undefined;
    return await fn();
  } finally {
    file.close();
  }
}

/** The regular files under `dir` (recursively), with their sizes and mtimes. */
export async function listFiles(dir: string): Promise<CacheFile[]> {
  const out: CacheFile[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return out;
    throw err;
  }
  for (const e of entries) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) {
      out.push(...await listFiles(path));
    } else if (e.isFile) {
      const st = await Deno.lstat(path).catch(() => null);
      if (st?.isFile) out.push({ path, size: st.size, mtimeMs: st.mtime?.getTime() ?? 0 });
    }
  }
  return out;
}

/** What one eviction did. */
export interface EvictResult {
  /** Bytes of entries before eviction. */
  bytesBefore: number;
  /** Bytes of entries after it. */
  bytesAfter: number;
  /** Entries removed. */
  removed: string[];
  /** Entries over the cap that were kept because a process holds them. */
  held: string[];
  /** Stale temporary files removed. */
  staleTemps: number;
}

/**
 * Removes the least recently used of `files` until their total is at most
 * `maxBytes`, skipping held ones; removes stale temporary files and ignores young
 * ones (see the module documentation). Call it under {@linkcode tryExclusive}.
 */
export async function evictLru(
  files: readonly CacheFile[],
  maxBytes: number,
  now = Date.now(),
): Promise<EvictResult> {
  const entries: CacheFile[] = [];
  let staleTemps = 0;
  for (const f of files) {
    if (!f.path.endsWith(TEMP_SUFFIX)) {
      entries.push(f);
    } else if (now - f.mtimeMs > STALE_TEMP_MS) {
      await Deno.remove(f.path).catch(() => {});
      staleTemps++;
    }
  }
  const bytesBefore = entries.reduce((n, f) => n + f.size, 0);
  let bytes = bytesBefore;
  const removed: string[] = [];
  const held: string[] = [];
  // Oldest first; equal times in path order, so that runs are reproducible.
  entries.sort((a, b) => a.mtimeMs - b.mtimeMs || (a.path < b.path ? -1 : 1));
  for (const f of entries) {
    if (bytes <= maxBytes) break;
    if (await removeUnlessHeld(f.path)) {
      removed.push(f.path);
      bytes -= f.size;
    } else {
      held.push(f.path);
    }
  }
  return { bytesBefore, bytesAfter: bytes, removed, held, staleTemps };
}
