/**
 * `wasi:filesystem@0.2.x` over the host filesystem, confined to one directory (the
 * container's rootfs), which the guest sees as its only preopen, `/`.
 *
 * Confinement: every path a guest passes is resolved here, component by component,
 * before the host sees it. `..` never goes above the root (`not-permitted`), and
 * symbolic links are read and followed here, never by the kernel: a relative target is
 * resolved from the link's directory, an absolute one from the root (what a process
 * inside the container would see). The last component is opened with `O_NOFOLLOW`.
 * What remains is a race: if something renames a directory on the resolved path into a
 * symlink between our check and the kernel's use of the path, the kernel follows it.
 * Closing that needs `openat2(RESOLVE_IN_ROOT)` or `/proc/self/fd`, which Deno does not
 * offer to a process without FFI or full read access.
 *
 * Creating a symlink with an absolute target is refused (`not-permitted`, as wasmtime),
 * so that tools on the host following links inside the rootfs are not led out of it.
 *
 * @module
 */

import fs from "node:fs";
import { RootfsResolver } from "../../rootfs_path.ts";
import { type ByteSink, type ByteSource, InputStream, IoError, OutputStream } from "./io.ts";

/** A `wasi:filesystem/types.error-code` value. */
export type FsErrorCode = string;

/** How much a file output stream accepts per `check-write`. */
const FILE_WRITE_PERMIT = 1 << 20;
/** Mode of files and directories the guest creates (before the umask). */
const CREATE_MODE = 0o666;
const DIR_MODE = 0o777;

const ERRNO_CODES: Record<string, FsErrorCode> = {
  EACCES: "access",
  EAGAIN: "would-block",
  EALREADY: "already",
  EBADF: "bad-descriptor",
  EBUSY: "busy",
  EDEADLK: "deadlock",
  EDQUOT: "quota",
  EEXIST: "exist",
  EFBIG: "file-too-large",
  EILSEQ: "illegal-byte-sequence",
  EINPROGRESS: "in-progress",
  EINTR: "interrupted",
  EINVAL: "invalid",
  EIO: "io",
  EISDIR: "is-directory",
  ELOOP: "loop",
  EMLINK: "too-many-links",
  EMSGSIZE: "message-size",
  ENAMETOOLONG: "name-too-long",
  ENODEV: "no-device",
  ENOENT: "no-entry",
  ENOLCK: "no-lock",
  ENOMEM: "insufficient-memory",
  ENOSPC: "insufficient-space",
  ENOTDIR: "not-directory",
  ENOTEMPTY: "not-empty",
  ENOTRECOVERABLE: "not-recoverable",
  ENOTSUP: "unsupported",
  EOPNOTSUPP: "unsupported",
  ENOTTY: "no-tty",
  ENXIO: "no-such-device",
  EOVERFLOW: "overflow",
  EPERM: "not-permitted",
  EPIPE: "pipe",
  EROFS: "read-only",
  ESPIPE: "invalid-seek",
  ETXTBSY: "text-file-busy",
  EXDEV: "cross-device",
};

/** The wasi:filesystem `error-code` for a host error. */
export function fsErrorCode(err: unknown): FsErrorCode {
  if (typeof err === "string") return err;
  if (err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied) {
    return "access";
  }
  const code = (err as { code?: unknown })?.code;
  if (typeof code === "string" && code in ERRNO_CODES) return ERRNO_CODES[code];
  return "io";
}

/** Runs a host operation, turning host errors into the guest's `error-code`. */
function hostCall<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw fsErrorCode(err);
  }
}

/** A `datetime` record. */
interface Datetime {
  seconds: bigint;
  nanoseconds: number;
}

/** A `new-timestamp` variant. */
type NewTimestamp = { tag: "no-change" } | { tag: "now" } | { tag: "timestamp"; val: Datetime };

/** The `descriptor-flags` flags. */
export interface DescriptorFlags {
  read?: boolean;
  write?: boolean;
  fileIntegritySync?: boolean;
  dataIntegritySync?: boolean;
  requestedWriteSync?: boolean;
  mutateDirectory?: boolean;
}

function datetime(ms: number | undefined, ns?: bigint): Datetime | undefined {
  if (ns !== undefined) {
    return { seconds: ns / 1_000_000_000n, nanoseconds: Number(ns % 1_000_000_000n) };
  }
  if (ms === undefined || Number.isNaN(ms)) return undefined;
  const seconds = Math.floor(ms / 1000);
  return { seconds: BigInt(seconds), nanoseconds: Math.round((ms - seconds * 1000) * 1e6) };
}

function typeOf(stat: fs.Stats | fs.BigIntStats | fs.Dirent): string {
  if (stat.isFile()) return "regular-file";
  if (stat.isDirectory()) return "directory";
  if (stat.isSymbolicLink()) return "symbolic-link";
  if (stat.isFIFO()) return "fifo";
  if (stat.isSocket()) return "socket";
  if (stat.isBlockDevice()) return "block-device";
  if (stat.isCharacterDevice()) return "character-device";
  return "unknown";
}

function descriptorStat(stat: fs.BigIntStats) {
  return {
    type: typeOf(stat),
    linkCount: stat.nlink,
    size: stat.size,
    dataAccessTimestamp: datetime(undefined, stat.atimeNs),
    dataModificationTimestamp: datetime(undefined, stat.mtimeNs),
    statusChangeTimestamp: datetime(undefined, stat.ctimeNs),
  };
}

function metadataHash(stat: fs.BigIntStats): { lower: bigint; upper: bigint } {
  return { lower: BigInt.asUintN(64, stat.ino), upper: BigInt.asUintN(64, stat.dev) };
}

/** Seconds (possibly fractional) for `utimes`, or the current value for no-change. */
function timeArg(ts: NewTimestamp, current: bigint): number {
  switch (ts.tag) {
    case "no-change":
      return Number(current) / 1e9;
    case "now":
      return Date.now() / 1000;
    case "timestamp":
      return Number(ts.val.seconds) + ts.val.nanoseconds / 1e9;
  }
}

/** The files one instance has open; all closed when the instance ends. */
export class OpenFiles {
  #fds = new Map<number, number>();

  /** Takes ownership of `fd`, with one reference. */
  add(fd: number): number {
    this.#fds.set(fd, 1);
    return fd;
  }

  /** True while `fd` is open (a closed number may already name another file). */
  has(fd: number): boolean {
    return this.#fds.has(fd);
  }

  /** One more user of `fd` (a stream outliving its descriptor). */
  retain(fd: number): void {
    this.#fds.set(fd, (this.#fds.get(fd) ?? 0) + 1);
  }

  /** One user fewer; the last one closes it. */
  release(fd: number): void {
    const n = this.#fds.get(fd);
    if (n === undefined) return;
    if (n > 1) {
      this.#fds.set(fd, n - 1);
      return;
    }
    this.#fds.delete(fd);
    try {
      fs.closeSync(fd);
    } catch {
      // already closed
    }
  }

  /** Closes everything still open. */
  closeAll(): void {
    for (const fd of this.#fds.keys()) {
      try {
        fs.closeSync(fd);
      } catch {
        // already closed
      }
    }
    this.#fds.clear();
  }
}

/**
 * The shared rootfs resolver (`../../rootfs_path.ts`), throwing this host's
 * `error-code`s. Paths are lists of components; `[]` is the root.
 */
export class Resolver extends RootfsResolver {
  /**
   * Resolves `path` relative to `base` (see {@linkcode RootfsResolver.resolve}).
   *
   * @throws {FsErrorCode} not-permitted (absolute path, escape), no-entry, not-directory, loop
   */
  override resolve(base: readonly string[], path: string, followLast: boolean): string[] {
    try {
      return super.resolve(base, path, followLast);
    } catch (err) {
      throw fsErrorCode(err);
    }
  }
}

/** A file's bytes from `offset` on, read synchronously (local files never block long). */
class FileSource implements ByteSource {
  #fd: number;
  #position: number;
  #files: OpenFiles;
  #closed = false;

  constructor(fd: number, offset: number, files: OpenFiles) {
    this.#fd = fd;
    this.#position = offset;
    this.#files = files;
    files.retain(fd);
  }

  take(max: number): Uint8Array | null {
    if (this.#closed || !this.#files.has(this.#fd)) throw new IoError("the file was closed");
    const buf = new Uint8Array(max);
    let n: number;
    try {
      n = fs.readSync(this.#fd, buf, 0, max, this.#position);
    } catch (err) {
      const error = new IoError(`read failed: ${(err as Error).message}`);
      error.code = fsErrorCode(err);
      throw error;
    }
    if (n === 0) return null;
    this.#position += n;
    return buf.subarray(0, n);
  }

  readable(): boolean {
    return true;
  }

  whenReadable(): Promise<void> {
    return Promise.resolve();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#files.release(this.#fd);
  }
}

/** Writes into a file at a position (or at its end), synchronously. */
class FileSink implements ByteSink {
  #fd: number;
  #position: number | "append";
  #files: OpenFiles;
  #closed = false;

  constructor(fd: number, position: number | "append", files: OpenFiles) {
    this.#fd = fd;
    this.#position = position;
    this.#files = files;
    files.retain(fd);
  }

  capacity(): number {
    return FILE_WRITE_PERMIT;
  }

  write(bytes: Uint8Array): void {
    if (this.#closed || !this.#files.has(this.#fd)) throw new IoError("the file was closed");
    try {
      let done = 0;
      while (done < bytes.length) {
        const at = this.#position === "append" ? fs.fstatSync(this.#fd).size : this.#position;
        const n = fs.writeSync(this.#fd, bytes, done, bytes.length - done, at);
        if (this.#position !== "append") this.#position += n;
        done += n;
      }
    } catch (err) {
      const error = new IoError(`write failed: ${(err as Error).message}`);
      error.code = fsErrorCode(err);
      throw error;
    }
  }

  flush(): void {}

  writable(): boolean {
    return true;
  }

  whenWritable(): Promise<void> {
    return Promise.resolve();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#files.release(this.#fd);
  }
}

/** What a descriptor refers to. */
interface Target {
  /** Resolved guest path components. */
  path: string[];
  /** Open fd for regular files (and other non-directories); null for directories. */
  fd: number | null;
  flags: DescriptorFlags;
}

/** The state a filesystem shares between its descriptors. */
interface FsContext {
  resolver: Resolver;
  files: OpenFiles;
}

const CONTEXT = new WeakMap<Descriptor, { ctx: FsContext; target: Target }>();

function stateOf(d: Descriptor): { ctx: FsContext; target: Target } {
  const state = CONTEXT.get(d);
  if (!state) throw "bad-descriptor";
  // A closed fd's number may already belong to another file.
  if (state.target.fd !== null && !state.ctx.files.has(state.target.fd)) throw "bad-descriptor";
  return state;
}

/** The `directory-entry-stream` resource. */
export class DirectoryEntryStream {
  #entries: { type: string; name: string }[];
  #next = 0;

  /** Entries listed up front (directories are read whole). @internal */
  constructor(entries: { type: string; name: string }[]) {
    this.#entries = entries;
  }

  /** The `read-directory-entry` method. */
  readDirectoryEntry(): { type: string; name: string } | undefined {
    return this.#entries[this.#next++];
  }
}

/** The `descriptor` resource. */
export class Descriptor {
  /** A descriptor for `target` (internal: guests get descriptors from open-at). */
  static create(ctx: FsContext, target: Target): Descriptor {
    const d = new Descriptor();
    CONTEXT.set(d, { ctx, target });
    return d;
  }

  #file(): { ctx: FsContext; fd: number; target: Target } {
    const { ctx, target } = stateOf(this);
    if (target.fd === null) throw "is-directory";
    return { ctx, fd: target.fd, target };
  }

  #dir(): { ctx: FsContext; target: Target } {
    const state = stateOf(this);
    if (state.target.fd !== null) throw "not-directory";
    return state;
  }

  #resolve(path: string, follow: boolean): { ctx: FsContext; path: string[]; host: string } {
    const { ctx, target } = this.#dir();
    const resolved = ctx.resolver.resolve(target.path, path, follow);
    return { ctx, path: resolved, host: ctx.resolver.host(resolved) };
  }

  #mutating(): void {
    if (!this.#dir().target.flags.mutateDirectory) throw "read-only";
  }

  /** The `read-via-stream` method. */
  readViaStream(offset: bigint): InputStream {
    const { ctx, fd, target } = this.#file();
    if (!target.flags.read) throw "bad-descriptor";
    return new InputStream(new FileSource(fd, Number(offset), ctx.files), "a file");
  }

  /** The `write-via-stream` method. */
  writeViaStream(offset: bigint): OutputStream {
    const { ctx, fd, target } = this.#file();
    if (!target.flags.write) throw "bad-descriptor";
    return new OutputStream(new FileSink(fd, Number(offset), ctx.files), "a file");
  }

  /** The `append-via-stream` method. */
  appendViaStream(): OutputStream {
    const { ctx, fd, target } = this.#file();
    if (!target.flags.write) throw "bad-descriptor";
    return new OutputStream(new FileSink(fd, "append", ctx.files), "a file");
  }

  /** The `advise` method (advice is accepted and ignored). */
  advise(_offset: bigint, _length: bigint, _advice: string): void {
    this.#file();
  }

  /** The `sync-data` method. */
  syncData(): void {
    const { fd } = this.#file();
    hostCall(() => fs.fdatasyncSync(fd));
  }

  /** The `sync` method. */
  sync(): void {
    const { fd } = this.#file();
    hostCall(() => fs.fsyncSync(fd));
  }

  /** The `get-flags` method. */
  getFlags(): DescriptorFlags {
    return { ...stateOf(this).target.flags };
  }

  /** The `get-type` method. */
  getType(): string {
    return this.stat().type;
  }

  /** The `set-size` method. */
  setSize(size: bigint): void {
    const { fd, target } = this.#file();
    if (!target.flags.write) throw "bad-descriptor";
    hostCall(() => fs.ftruncateSync(fd, Number(size)));
  }

  /** The `set-times` method. */
  setTimes(atime: NewTimestamp, mtime: NewTimestamp): void {
    const { ctx, target } = stateOf(this);
    if (target.fd !== null) {
      const fd = target.fd;
      const stat = hostCall(() => fs.fstatSync(fd, { bigint: true }));
      hostCall(() =>
        fs.futimesSync(fd, timeArg(atime, stat.atimeNs), timeArg(mtime, stat.mtimeNs))
      );
      return;
    }
    const host = ctx.resolver.host(target.path);
    const stat = hostCall(() => fs.statSync(host, { bigint: true }));
    hostCall(() => fs.utimesSync(host, timeArg(atime, stat.atimeNs), timeArg(mtime, stat.mtimeNs)));
  }

  /** The `read` method: `[bytes, end-of-file]`. */
  read(length: bigint, offset: bigint): [Uint8Array, boolean] {
    const { fd, target } = this.#file();
    if (!target.flags.read) throw "bad-descriptor";
    const n = Number(length < 1n << 24n ? length : 1n << 24n);
    const buf = new Uint8Array(n);
    const got = hostCall(() => fs.readSync(fd, buf, 0, n, Number(offset)));
    return [buf.subarray(0, got), got === 0 && n > 0];
  }

  /** The `write` method. */
  write(buffer: Uint8Array, offset: bigint): bigint {
    const { fd, target } = this.#file();
    if (!target.flags.write) throw "bad-descriptor";
    return BigInt(hostCall(() => fs.writeSync(fd, buffer, 0, buffer.length, Number(offset))));
  }

  /** The `read-directory` method. */
  readDirectory(): DirectoryEntryStream {
    const { ctx, target } = this.#dir();
    const entries = hostCall(() =>
      fs.readdirSync(ctx.resolver.host(target.path), { withFileTypes: true })
    );
    return new DirectoryEntryStream(
      entries.map((e) => ({ type: typeOf(e), name: e.name })),
    );
  }

  /** The `create-directory-at` method. */
  createDirectoryAt(path: string): void {
    this.#mutating();
    const { host } = this.#resolve(path, false);
    hostCall(() => fs.mkdirSync(host, DIR_MODE));
  }

  /** The `stat` method. */
  stat() {
    const { ctx, target } = stateOf(this);
    const fd = target.fd;
    const stat = fd !== null
      ? hostCall(() => fs.fstatSync(fd, { bigint: true }))
      : hostCall(() => fs.statSync(ctx.resolver.host(target.path), { bigint: true }));
    return descriptorStat(stat);
  }

  /** The `stat-at` method. */
  statAt(pathFlags: { symlinkFollow?: boolean }, path: string) {
    const { host } = this.#resolve(path, pathFlags.symlinkFollow === true);
    return descriptorStat(hostCall(() => fs.lstatSync(host, { bigint: true })));
  }

  /** The `set-times-at` method. */
  setTimesAt(
    pathFlags: { symlinkFollow?: boolean },
    path: string,
    atime: NewTimestamp,
    mtime: NewTimestamp,
  ): void {
    this.#mutating();
    const { host } = this.#resolve(path, pathFlags.symlinkFollow === true);
    const stat = hostCall(() => fs.lstatSync(host, { bigint: true }));
    const a = timeArg(atime, stat.atimeNs);
    const m = timeArg(mtime, stat.mtimeNs);
    if (stat.isSymbolicLink()) hostCall(() => fs.lutimesSync(host, a, m));
    else hostCall(() => fs.utimesSync(host, a, m));
  }

  /** The `link-at` method. */
  linkAt(
    oldPathFlags: { symlinkFollow?: boolean },
    oldPath: string,
    newDescriptor: Descriptor,
    newPath: string,
  ): void {
    this.#mutating();
    newDescriptor.#mutating();
    const from = this.#resolve(oldPath, oldPathFlags.symlinkFollow === true);
    const to = newDescriptor.#resolve(newPath, false);
    hostCall(() => fs.linkSync(from.host, to.host));
  }

  /** The `open-at` method. */
  openAt(
    pathFlags: { symlinkFollow?: boolean },
    path: string,
    openFlags: { create?: boolean; directory?: boolean; exclusive?: boolean; truncate?: boolean },
    flags: DescriptorFlags,
  ): Descriptor {
    const { ctx, target: parent } = this.#dir();
    if (
      (flags.write || flags.mutateDirectory || openFlags.create || openFlags.truncate) &&
      !parent.flags.mutateDirectory
    ) {
      throw "read-only";
    }
    const resolved = this.#resolve(path, pathFlags.symlinkFollow === true);
    const c = fs.constants;
    let stat: fs.Stats | null = null;
    try {
      stat = fs.lstatSync(resolved.host);
    } catch (err) {
      if (fsErrorCode(err) !== "no-entry" || !openFlags.create) throw fsErrorCode(err);
    }
    if (stat?.isSymbolicLink()) throw "loop";
    if (stat && openFlags.create && openFlags.exclusive) throw "exist";
    if (stat?.isDirectory()) {
      if (flags.write || openFlags.truncate) throw "is-directory";
      return Descriptor.create(ctx, { path: resolved.path, fd: null, flags: { ...flags } });
    }
    if (openFlags.directory) throw stat ? "not-directory" : "no-entry";
    let mode = flags.write ? (flags.read ? c.O_RDWR : c.O_WRONLY) : c.O_RDONLY;
    mode |= c.O_NOFOLLOW | c.O_NONBLOCK;
    if (openFlags.create) mode |= c.O_CREAT;
    if (openFlags.exclusive) mode |= c.O_EXCL;
    if (openFlags.truncate) mode |= c.O_TRUNC;
    if (flags.fileIntegritySync) mode |= c.O_SYNC;
    else if (flags.dataIntegritySync) mode |= c.O_DSYNC;
    const fd = hostCall(() => fs.openSync(resolved.host, mode, CREATE_MODE));
    ctx.files.add(fd);
    return Descriptor.create(ctx, { path: resolved.path, fd, flags: { ...flags } });
  }

  /** The `readlink-at` method. */
  readlinkAt(path: string): string {
    const { host } = this.#resolve(path, false);
    return hostCall(() => fs.readlinkSync(host, "utf8"));
  }

  /** The `remove-directory-at` method. */
  removeDirectoryAt(path: string): void {
    this.#mutating();
    const { host, path: resolved } = this.#resolve(path, false);
    if (resolved.length === 0) throw "busy";
    hostCall(() => fs.rmdirSync(host));
  }

  /** The `rename-at` method. */
  renameAt(oldPath: string, newDescriptor: Descriptor, newPath: string): void {
    this.#mutating();
    newDescriptor.#mutating();
    const from = this.#resolve(oldPath, false);
    const to = newDescriptor.#resolve(newPath, false);
    if (from.path.length === 0 || to.path.length === 0) throw "busy";
    hostCall(() => fs.renameSync(from.host, to.host));
  }

  /** The `symlink-at` method (absolute targets are refused). */
  symlinkAt(oldPath: string, newPath: string): void {
    this.#mutating();
    if (oldPath.startsWith("/")) throw "not-permitted";
    const { host } = this.#resolve(newPath, false);
    hostCall(() => fs.symlinkSync(oldPath, host));
  }

  /** The `unlink-file-at` method. */
  unlinkFileAt(path: string): void {
    this.#mutating();
    const { host } = this.#resolve(path, false);
    const stat = hostCall(() => fs.lstatSync(host));
    if (stat.isDirectory()) throw "is-directory";
    hostCall(() => fs.unlinkSync(host));
  }

  /** The `is-same-object` method. */
  isSameObject(other: Descriptor): boolean {
    try {
      const a = this.metadataHash();
      const b = other.metadataHash();
      return a.lower === b.lower && a.upper === b.upper;
    } catch {
      return false;
    }
  }

  /** The `metadata-hash` method. */
  metadataHash(): { lower: bigint; upper: bigint } {
    const { ctx, target } = stateOf(this);
    const fd = target.fd;
    return metadataHash(
      fd !== null
        ? hostCall(() => fs.fstatSync(fd, { bigint: true }))
        : hostCall(() => fs.statSync(ctx.resolver.host(target.path), { bigint: true })),
    );
  }

  /** The `metadata-hash-at` method. */
  metadataHashAt(pathFlags: { symlinkFollow?: boolean }, path: string) {
    const { host } = this.#resolve(path, pathFlags.symlinkFollow === true);
    return metadataHash(hostCall(() => fs.lstatSync(host, { bigint: true })));
  }

  /** Resource drop: closes the file (streams still reading it keep it open). */
  [Symbol.dispose](): void {
    const state = CONTEXT.get(this);
    if (!state) return;
    CONTEXT.delete(this);
    if (state.target.fd !== null) state.ctx.files.release(state.target.fd);
  }
}

/** The `filesystem-error-code` function. */
function filesystemErrorCode(err: IoError): FsErrorCode | undefined {
  return typeof err.code === "string" ? err.code : undefined;
}

/** One instance's filesystem: its imports, and a way to close what it left open. */
export interface FilesystemHost {
  /** The `wasi:filesystem/*` imports. */
  imports: Record<string, Record<string, unknown>>;
  /** Closes every file the instance still has open. */
  close(): void;
}

/**
 * The filesystem of one instance: `root` (a canonical host directory) preopened as `/`
 * with read and directory-mutation rights; no preopen if `root` is null.
 */
export function createFilesystem(root: string | null): FilesystemHost {
  const files = new OpenFiles();
  const ctx: FsContext | null = root === null ? null : { resolver: new Resolver(root), files };
  return {
    imports: {
      "wasi:filesystem/types": { Descriptor, DirectoryEntryStream, filesystemErrorCode },
      "wasi:filesystem/preopens": {
        getDirectories: (): [Descriptor, string][] =>
          ctx === null ? [] : [[
            Descriptor.create(ctx, {
              path: [],
              fd: null,
              flags: { read: true, mutateDirectory: true },
            }),
            "/",
          ]],
      },
    },
    close: () => files.closeAll(),
  };
}
