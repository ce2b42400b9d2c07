/**
 * The filesystem of a preview1 guest: one host directory (the container's rootfs),
 * which the guest sees as its only preopen, `/`. Every path the guest names goes
 * through the shared {@linkcode RootfsResolver} (`../rootfs_path.ts`): `..` above the
 * root and symlinks leading out of it are refused, symlinks are followed by the
 * resolver rather than the kernel. Deno's file APIs only (no `node:` modules).
 *
 * What Deno's API cannot express, and how this host copes:
 * - there is no `O_NOFOLLOW`: a file is opened by its resolved path, then its identity
 *   (device and inode) is checked against what the resolver saw, so that a symlink
 *   swapped in meanwhile is not read; creating a file keeps the race the resolver
 *   documents;
 * - there is no `openat`: directories are kept as resolved paths, not host fds (a
 *   directory renamed while open is then seen at its old path);
 * - there is no `lutimes`: the times of a symlink itself cannot be set (`ENOTSUP`);
 * - times are read with millisecond precision (Deno's `FileInfo` holds `Date`s), and
 *   keeping one time while setting the other rewrites it at that precision.
 *
 * @module
 */

import { PathResolutionError, RootfsResolver } from "../rootfs_path.ts";
import {
  FILETYPE_BLOCK_DEVICE,
  FILETYPE_CHARACTER_DEVICE,
  FILETYPE_DIRECTORY,
  FILETYPE_REGULAR_FILE,
  FILETYPE_SOCKET_STREAM,
  FILETYPE_SYMBOLIC_LINK,
  FILETYPE_UNKNOWN,
} from "./abi.ts";
import {
  EBUSY,
  EEXIST,
  EISDIR,
  ELOOP,
  ENOENT,
  ENOTDIR,
  ENOTSUP,
  EPERM,
  WasiError,
} from "./errno.ts";

/** Mode of files the guest creates (before the umask). */
export const CREATE_MODE = 0o666;
/** Mode of directories the guest creates (before the umask). */
export const DIR_MODE = 0o777;

/** The preview1 file type of a host file. */
export function filetypeOf(info: Deno.FileInfo): number {
  if (info.isFile) return FILETYPE_REGULAR_FILE;
  if (info.isDirectory) return FILETYPE_DIRECTORY;
  if (info.isSymlink) return FILETYPE_SYMBOLIC_LINK;
  if (info.isCharDevice) return FILETYPE_CHARACTER_DEVICE;
  if (info.isBlockDevice) return FILETYPE_BLOCK_DEVICE;
  if (info.isSocket) return FILETYPE_SOCKET_STREAM;
  // FIFOs included: preview1 has no type for them (wasmtime reports them so too).
  return FILETYPE_UNKNOWN;
}

/** Nanoseconds since the epoch of a `FileInfo` time (0 when the platform has none). */
export function nanos(date: Date | null): bigint {
  return date === null ? 0n : BigInt(date.getTime()) * 1_000_000n;
}

/** One entry of a directory listing, as `fd_readdir` reports it. */
export interface DirListEntry {
  /** File name (`.` and `..` included). */
  name: string;
  /** Inode number. */
  ino: bigint;
  /** Preview1 file type. */
  type: number;
}

/** What {@linkcode RootFs.open} is asked to do (from `path_open`'s flags). */
export interface OpenRequest {
  /** Follow the last component if it is a symlink (`LOOKUPFLAGS_SYMLINK_FOLLOW`). */
  follow: boolean;
  /** `OFLAGS_CREAT`. */
  create: boolean;
  /** `OFLAGS_EXCL`. */
  exclusive: boolean;
  /** `OFLAGS_TRUNC`. */
  truncate: boolean;
  /** `OFLAGS_DIRECTORY`. */
  directory: boolean;
  /** Open for reading. */
  read: boolean;
  /** Open for writing. */
  write: boolean;
  /** Open in append mode (host `O_APPEND`; only with `write`). */
  append: boolean;
}

/** What {@linkcode RootFs.open} opened: a file, or a directory (kept as its path). */
export type Opened =
  | { kind: "file"; file: Deno.FsFile; path: string[]; info: Deno.FileInfo }
  | { kind: "dir"; path: string[] };

/** A time to set: seconds since the epoch, "now", or null to keep the current one. */
export type NewTime = number | "now" | null;

function timeArg(time: NewTime, current: Date | null): number | Date {
  if (time === "now") return new Date();
  if (time === null) return current ?? new Date(0);
  return time;
}

function sameFile(a: Deno.FileInfo, b: Deno.FileInfo): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

function lstatOrNull(host: string): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(host);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

/**
 * The rootfs as the guest sees it. Paths the guest names are relative to a directory
 * it holds (`base`, resolved components; `[]` is the root). Methods throw
 * {@linkcode WasiError}, {@linkcode PathResolutionError} or Deno's own errors; the
 * host maps them with `errnoOf`.
 */
export class RootFs {
  #resolver: RootfsResolver;

  /** The filesystem rooted at host directory `root` (made canonical here). */
  constructor(root: string) {
    this.#resolver = new RootfsResolver(Deno.realPathSync(root));
  }

  /** The canonical host directory guests see as `/`. */
  get root(): string {
    return this.#resolver.root;
  }

  /** The host path of resolved components. */
  host(components: readonly string[]): string {
    return this.#resolver.host(components);
  }

  /** Resolves a guest path (see {@linkcode RootfsResolver.resolve}). */
  resolve(base: readonly string[], path: string, follow: boolean): string[] {
    return this.#resolver.resolve(base, path, follow);
  }

  /** Opens a file or directory (`path_open`). */
  open(base: readonly string[], path: string, req: OpenRequest): Opened {
    if (req.create && path.endsWith("/")) {
      // "new/" names a directory, which path_open does not create (Linux says EISDIR);
      // the resolver would only say that it does not exist.
      const bare = this.resolve(base, path.replace(/\/+$/, "") || ".", true);
      if (lstatOrNull(this.host(bare)) === null) {
        throw new WasiError(EISDIR, `${path}: cannot create a directory with path_open`);
      }
    }
    const resolved = this.resolve(base, path, req.follow);
    const host = this.host(resolved);
    const before = lstatOrNull(host);
    if (before === null) {
      if (!req.create) throw new WasiError(ENOENT, `${path}: no such file`);
      if (req.directory) {
        throw new WasiError(EISDIR, `${path}: cannot create a directory with path_open`);
      }
    } else {
      if (req.create && req.exclusive) throw new WasiError(EEXIST, `${path}: exists`);
      // Only without LOOKUPFLAGS_SYMLINK_FOLLOW (the resolver followed it otherwise).
      if (before.isSymlink) throw new WasiError(ELOOP, `${path} is a symlink (not followed)`);
      if (before.isDirectory) {
        if (req.write || req.truncate || req.create) {
          throw new WasiError(EISDIR, `${path} is a directory`);
        }
        return { kind: "dir", path: resolved };
      }
      if (req.directory) throw new WasiError(ENOTDIR, `${path} is not a directory`);
    }
    if ((req.create || req.truncate) && !req.write) {
      // Deno creates and truncates only with write access; do it apart, then open as asked.
      Deno.openSync(host, {
        write: true,
        create: req.create,
        createNew: req.create && req.exclusive,
        truncate: req.truncate,
        mode: CREATE_MODE,
      }).close();
      return this.#openExisting(host, resolved, { ...req, create: false, truncate: false });
    }
    if (before === null) {
      const file = Deno.openSync(host, {
        read: req.read,
        write: req.write && !req.append,
        append: req.append,
        create: true,
        createNew: req.exclusive,
        truncate: req.truncate,
        mode: CREATE_MODE,
      });
      return { kind: "file", file, path: resolved, info: file.statSync() };
    }
    return this.#openExisting(host, resolved, req, before);
  }

  /** Opens an existing non-directory, checking it is still the file the resolver saw. */
  #openExisting(host: string, path: string[], req: OpenRequest, seen?: Deno.FileInfo): Opened {
    const before = seen ?? Deno.lstatSync(host);
    if (before.isSymlink) throw new WasiError(ELOOP, `${host} became a symlink`);
    const file = Deno.openSync(host, {
      read: req.read || !req.write,
      write: req.write && !req.append,
      append: req.write && req.append,
      truncate: req.truncate,
    });
    let info: Deno.FileInfo;
    try {
      info = file.statSync();
      if (!sameFile(info, before)) {
        throw new WasiError(ELOOP, `${host} was replaced while it was being opened`);
      }
    } catch (err) {
      file.close();
      throw err;
    }
    return { kind: "file", file, path, info };
  }

  /** `stat` of resolved components (following a final symlink, as the kernel would). */
  statResolved(components: readonly string[]): Deno.FileInfo {
    return Deno.statSync(this.host(components));
  }

  /** `path_filestat_get`. */
  stat(base: readonly string[], path: string, follow: boolean): Deno.FileInfo {
    return Deno.lstatSync(this.host(this.resolve(base, path, follow)));
  }

  /** The entries of a directory, `.` and `..` first (for `fd_readdir`). */
  list(components: readonly string[]): DirListEntry[] {
    const host = this.host(components);
    const self = Deno.statSync(host);
    const parent = components.length === 0
      ? self
      : Deno.statSync(this.host(components.slice(0, -1)));
    const entries: DirListEntry[] = [
      { name: ".", ino: BigInt(self.ino ?? 0), type: FILETYPE_DIRECTORY },
      { name: "..", ino: BigInt(parent.ino ?? 0), type: FILETYPE_DIRECTORY },
    ];
    for (const entry of Deno.readDirSync(host)) {
      const info = lstatOrNull(`${host === "/" ? "" : host}/${entry.name}`);
      if (info === null) continue; // removed meanwhile
      entries.push({ name: entry.name, ino: BigInt(info.ino ?? 0), type: filetypeOf(info) });
    }
    return entries;
  }

  /** `path_create_directory`. */
  mkdir(base: readonly string[], path: string): void {
    // "a/b/" names the directory to create; the resolver would demand it exists.
    const trimmed = path.replace(/(?<=[^/])\/+$/, "");
    const resolved = this.resolve(base, trimmed, false);
    if (resolved.length === 0) throw new WasiError(EEXIST, `${path}: the root exists`);
    Deno.mkdirSync(this.host(resolved), { mode: DIR_MODE });
  }

  /** `path_remove_directory`. */
  rmdir(base: readonly string[], path: string): void {
    const resolved = this.resolve(base, path, false);
    if (resolved.length === 0) throw new WasiError(EBUSY, `${path}: cannot remove the root`);
    const host = this.host(resolved);
    if (!Deno.lstatSync(host).isDirectory) {
      throw new WasiError(ENOTDIR, `${path} is not a directory`);
    }
    Deno.removeSync(host);
  }

  /** `path_unlink_file`. */
  unlink(base: readonly string[], path: string): void {
    const host = this.host(this.resolve(base, path, false));
    if (Deno.lstatSync(host).isDirectory) throw new WasiError(EISDIR, `${path} is a directory`);
    Deno.removeSync(host);
  }

  /** `path_rename`. */
  rename(base: readonly string[], path: string, newBase: readonly string[], newPath: string) {
    const from = this.resolve(base, path, false);
    const to = this.resolve(newBase, newPath, false);
    if (from.length === 0 || to.length === 0) {
      throw new WasiError(EBUSY, `cannot rename ${path} to ${newPath}: the root is busy`);
    }
    Deno.renameSync(this.host(from), this.host(to));
  }

  /** `path_link`: a hard link `newPath` to `path` (to its target if `follow`). */
  link(
    base: readonly string[],
    path: string,
    follow: boolean,
    newBase: readonly string[],
    newPath: string,
  ): void {
    const from = this.host(this.resolve(base, path, follow));
    const to = this.host(this.resolve(newBase, newPath, false));
    Deno.linkSync(from, to);
  }

  /** `path_symlink`: a symlink `newPath` to `target`; absolute targets are refused. */
  symlink(target: string, base: readonly string[], newPath: string): void {
    if (target.startsWith("/")) {
      // As wasmtime: tools on the host following links in the rootfs must not leave it.
      throw new WasiError(EPERM, `symlink ${newPath} -> ${target}: absolute targets are refused`);
    }
    if (target === "") throw new PathResolutionError("empty", target);
    if (target.includes("\0")) throw new PathResolutionError("nul", target);
    Deno.symlinkSync(target, this.host(this.resolve(base, newPath, false)));
  }

  /** `path_readlink`. */
  readlink(base: readonly string[], path: string): string {
    return Deno.readLinkSync(this.host(this.resolve(base, path, false)));
  }

  /** `path_filestat_set_times`. */
  setTimes(
    base: readonly string[],
    path: string,
    follow: boolean,
    atime: NewTime,
    mtime: NewTime,
  ): void {
    const host = this.host(this.resolve(base, path, follow));
    const info = Deno.lstatSync(host);
    if (info.isSymlink) {
      throw new WasiError(ENOTSUP, `${path}: Deno cannot set the times of a symlink itself`);
    }
    Deno.utimeSync(host, timeArg(atime, info.atime), timeArg(mtime, info.mtime));
  }

  /** `fd_filestat_set_times` on a directory (kept as its path). */
  setTimesResolved(components: readonly string[], atime: NewTime, mtime: NewTime): void {
    const host = this.host(components);
    const info = Deno.statSync(host);
    Deno.utimeSync(host, timeArg(atime, info.atime), timeArg(mtime, info.mtime));
  }
}

/** `fd_filestat_set_times` on an open file. */
export function setFileTimes(file: Deno.FsFile, atime: NewTime, mtime: NewTime): void {
  const info = file.statSync();
  file.utimeSync(timeArg(atime, info.atime), timeArg(mtime, info.mtime));
}
