/**
 * A WASI preview1 (`wasi_snapshot_preview1`) host on Deno's own APIs: the import
 * object and the file descriptor table of one guest instance. No `node:` module is in
 * its graph, so that a guest runner does not pay for Deno's Node compatibility layer.
 *
 * - fds 0, 1, 2 are the streams the caller gives (the runner's stdin, the container's
 *   stdout and stderr FIFOs); fd 3 is the only preopen, `/`, the container's rootfs;
 * - every path the guest names is resolved inside the rootfs (`fs.ts`);
 * - every call is synchronous, as the guest's calls are: `poll_oneoff` on clocks
 *   sleeps with `Atomics.wait`, reads of stdin block the runner;
 * - `proc_exit` throws {@linkcode ProcExit}, which {@linkcode Preview1Host.start}
 *   turns into the exit code;
 * - host errors become errnos (`errno.ts`); an error that is not a host error (a bug
 *   here) propagates, and the runner reports it as a host error;
 * - sockets are not supported (`sock_*` return `ENOSYS`), nor is `proc_raise`.
 *
 * @module
 */

import {
  ADVICE_MAX,
  CLOCK_MONOTONIC,
  CLOCK_PROCESS_CPUTIME_ID,
  CLOCK_REALTIME,
  CLOCK_THREAD_CPUTIME_ID,
  DIRENT_SIZE,
  EVENT_SIZE,
  EVENTTYPE_CLOCK,
  EVENTTYPE_FD_READ,
  EVENTTYPE_FD_WRITE,
  FDFLAGS_ALL,
  FDFLAGS_APPEND,
  FDFLAGS_DSYNC,
  FDFLAGS_RSYNC,
  FDFLAGS_SYNC,
  FDSTAT_SIZE,
  FILESTAT_SIZE,
  FILETYPE_CHARACTER_DEVICE,
  FILETYPE_DIRECTORY,
  FILETYPE_REGULAR_FILE,
  FILETYPE_UNKNOWN,
  FSTFLAGS_ATIM,
  FSTFLAGS_ATIM_NOW,
  FSTFLAGS_MTIM,
  FSTFLAGS_MTIM_NOW,
  IOVEC_SIZE,
  LOOKUPFLAGS_SYMLINK_FOLLOW,
  OFLAGS_CREAT,
  OFLAGS_DIRECTORY,
  OFLAGS_EXCL,
  OFLAGS_TRUNC,
  PREOPENTYPE_DIR,
  PRESTAT_SIZE,
  RIGHTS_ALL,
  RIGHTS_DIRECTORY,
  RIGHTS_FD_READ,
  RIGHTS_FD_WRITE,
  RIGHTS_STREAM,
  SUBCLOCKFLAGS_ABSTIME,
  SUBSCRIPTION_SIZE,
  WASI_PREVIEW1,
  WHENCE_CUR,
  WHENCE_END,
  WHENCE_SET,
} from "./abi.ts";
import {
  EBADF,
  EFAULT,
  EILSEQ,
  EINVAL,
  EISDIR,
  EMFILE,
  ENAMETOOLONG,
  ENOSYS,
  ENOTDIR,
  ENOTSUP,
  EOVERFLOW,
  errnoOf,
  ESPIPE,
  ESUCCESS,
  WasiError,
} from "./errno.ts";
import { type DirListEntry, filetypeOf, nanos, type NewTime, RootFs, setFileTimes } from "./fs.ts";
import { writeAllSync } from "../../sys/write_all.ts";

/** Most fds a guest may have open at once. */
export const MAX_FDS = 1 << 14;
/** The fd of the rootfs preopen. */
export const PREOPEN_FD = 3;
/** The name the guest sees the rootfs preopen under. */
export const PREOPEN_NAME = "/";
/** Resolution `clock_res_get` reports for every clock, in nanoseconds (1 µs). */
export const CLOCK_RESOLUTION_NS = 1_000n;
/** Most bytes `crypto.getRandomValues` fills at once. */
const RANDOM_CHUNK = 65_536;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Thrown by `proc_exit`: unwinds the guest, and carries its exit code. Not an error of
 * the guest; {@linkcode Preview1Host.start} returns the code.
 */
export class ProcExit extends Error {
  /** The exit code the guest gave (an unsigned 32-bit value). */
  readonly code: number;

  /** The guest called `proc_exit(code)`. */
  constructor(code: number) {
    super(`the guest exited with code ${code}`);
    this.name = "ProcExit";
    this.code = code;
  }
}

/**
 * A stdio stream of the guest: what it can do of `Deno.FsFile` (the stdout and
 * stderr FIFOs) or `Deno.stdin`.
 */
export interface StdioStream {
  /** Reads into `p`; the number of bytes read, or null at end of file. */
  readSync?(p: Uint8Array): number | null;
  /** Writes from `p`; the number of bytes written. */
  writeSync?(p: Uint8Array): number;
  /** The stream's file information (its type). */
  statSync?(): Deno.FileInfo;
  /** True if the stream is a terminal. */
  isTerminal?(): boolean;
  /** Closes the stream (the guest closed its fd). */
  close?(): void;
}

/** What a guest instance gets from its host. */
export interface Preview1Options {
  /** `argv`, arg0 included. */
  args: readonly string[];
  /**
   * The environment as `KEY=VALUE` strings: the only one the guest sees. Entries
   * without `=` are dropped; of two with the same key, the later value wins.
   */
  env: readonly string[];
  /** Host directory preopened as `/` (made canonical), or null for no filesystem. */
  root: string | null;
  /** fd 0; reads end of file at once if absent. */
  stdin?: StdioStream;
  /** fd 1; writes are discarded if absent. */
  stdout?: StdioStream;
  /** fd 2; writes are discarded if absent. */
  stderr?: StdioStream;
}

/** What every fd has. */
interface FdBase {
  fdflags: number;
  rightsBase: bigint;
  rightsInheriting: bigint;
}

/** An open file (not a directory). */
interface FileFd extends FdBase {
  kind: "file";
  file: Deno.FsFile;
  filetype: number;
  /** Opened with host `O_APPEND`, which cannot be turned off. */
  hostAppend: boolean;
}

/** A directory, kept as its resolved path (Deno has no `openat`). */
interface DirFd extends FdBase {
  kind: "dir";
  path: string[];
  /** The name a preopen is seen under. */
  preopen?: string;
  /** The listing `fd_readdir` cookies index into, read again at cookie 0. */
  listing?: DirListEntry[];
}

/** A stdio stream. */
interface StreamFd extends FdBase {
  kind: "stream";
  stream: StdioStream;
  filetype: number;
}

type Fd = FileFd | DirFd | StreamFd;

/** Encodes strings as NUL-terminated UTF-8, for `args_get` and `environ_get`. */
function cStrings(values: readonly string[]): Uint8Array[] {
  return values.map((v) => encoder.encode(`${v}\0`));
}

/** `KEY=VALUE` entries, without those lacking `=`, each key once (its last value). */
export function envEntries(env: readonly string[]): string[] {
  const map = new Map<string, string>();
  for (const entry of env) {
    const eq = entry.indexOf("=");
    if (eq > 0) map.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  return [...map].map(([k, v]) => `${k}=${v}`);
}

/** A u64 from the guest as a safe JS number. @throws {WasiError} EOVERFLOW if too big */
function safeNumber(value: bigint, what: string): number {
  const n = BigInt.asUintN(64, value);
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new WasiError(EOVERFLOW, `${what} ${n} is too large`);
  }
  return Number(n);
}

/** Wall-clock time in nanoseconds (microsecond precision while the system clock is steady). */
function realtimeNs(): bigint {
  const wall = Date.now();
  const precise = performance.timeOrigin + performance.now();
  // performance.timeOrigin is fixed at start: trust it only while it agrees with the
  // system clock (which may be stepped).
  const ms = Math.abs(precise - wall) < 1 ? precise : wall;
  const whole = Math.floor(ms);
  return BigInt(whole) * 1_000_000n + BigInt(Math.round((ms - whole) * 1e6));
}

/** Monotonic time in nanoseconds since the runner started. */
function monotonicNs(): bigint {
  return BigInt(Math.round(performance.now() * 1e6));
}

/**
 * The time of clock `id` in nanoseconds, or undefined for an unknown clock. CPU-time
 * clocks are best effort: Deno exposes no CPU time without `node:process`, so they
 * count time since the runner started (the guest has the runner's only thread).
 */
function clockNs(id: number): bigint | undefined {
  switch (id) {
    case CLOCK_REALTIME:
      return realtimeNs();
    case CLOCK_MONOTONIC:
    case CLOCK_PROCESS_CPUTIME_ID:
    case CLOCK_THREAD_CPUTIME_ID:
      return monotonicNs();
    default:
      return undefined;
  }
}

/** Guest memory accessors; bounds are checked (`EFAULT`), views follow `memory.grow`. */
class GuestMemory {
  #memory: WebAssembly.Memory | undefined;
  #buffer: ArrayBufferLike | undefined;
  #view: DataView<ArrayBufferLike> = new DataView(new ArrayBuffer(0));
  #bytes: Uint8Array<ArrayBufferLike> = new Uint8Array(0);

  bind(memory: WebAssembly.Memory | undefined): void {
    this.#memory = memory;
    this.#buffer = undefined;
  }

  #fresh(): void {
    if (this.#memory === undefined) {
      throw new Error(
        'the module exports no memory named "memory", which WASI calls with pointers need',
      );
    }
    const buffer = this.#memory.buffer;
    if (buffer !== this.#buffer) {
      this.#buffer = buffer;
      this.#view = new DataView(buffer);
      this.#bytes = new Uint8Array(buffer);
    }
  }

  /** Checks `[ptr, ptr + len)` is inside memory; returns ptr as unsigned. */
  #at(ptr: number, len: number): number {
    this.#fresh();
    const at = ptr >>> 0;
    if (at + len > this.#bytes.length) {
      throw new WasiError(EFAULT, `guest memory [${at}, ${at + len}) is out of bounds`);
    }
    return at;
  }

  // Each accessor checks (and refreshes the views) before it reads this.#view.
  bytes(ptr: number, len: number): Uint8Array {
    const at = this.#at(ptr, len >>> 0);
    return this.#bytes.subarray(at, at + (len >>> 0));
  }

  u8(ptr: number): number {
    const at = this.#at(ptr, 1);
    return this.#view.getUint8(at);
  }

  u16(ptr: number): number {
    const at = this.#at(ptr, 2);
    return this.#view.getUint16(at, true);
  }

  u32(ptr: number): number {
    const at = this.#at(ptr, 4);
    return this.#view.getUint32(at, true);
  }

  u64(ptr: number): bigint {
    const at = this.#at(ptr, 8);
    return this.#view.getBigUint64(at, true);
  }

  setU8(ptr: number, value: number): void {
    const at = this.#at(ptr, 1);
    this.#view.setUint8(at, value);
  }

  setU16(ptr: number, value: number): void {
    const at = this.#at(ptr, 2);
    this.#view.setUint16(at, value, true);
  }

  setU32(ptr: number, value: number): void {
    const at = this.#at(ptr, 4);
    this.#view.setUint32(at, value, true);
  }

  setU64(ptr: number, value: bigint): void {
    const at = this.#at(ptr, 8);
    this.#view.setBigUint64(at, BigInt.asUintN(64, value), true);
  }

  /** A UTF-8 string. @throws {WasiError} EILSEQ if it is not valid UTF-8 */
  string(ptr: number, len: number): string {
    try {
      return decoder.decode(this.bytes(ptr, len));
    } catch (err) {
      if (err instanceof WasiError) throw err;
      throw new WasiError(EILSEQ, "a path is not valid UTF-8");
    }
  }

  /** The buffers of an `iovec` array. */
  iovecs(ptr: number, count: number): Uint8Array[] {
    const at = this.#at(ptr, (count >>> 0) * IOVEC_SIZE);
    const out: Uint8Array[] = [];
    for (let i = 0; i < count >>> 0; i++) {
      const base = at + i * IOVEC_SIZE;
      out.push(this.bytes(this.u32(base), this.u32(base + 4)));
    }
    return out;
  }
}

/** Reads into `bufs` in turn until one is not filled (or end of file). */
function readInto(source: { readSync(p: Uint8Array): number | null }, bufs: Uint8Array[]) {
  let total = 0;
  for (const buf of bufs) {
    if (buf.length === 0) continue;
    const n = source.readSync(buf);
    if (n === null) break;
    total += n;
    if (n < buf.length) break;
  }
  return total;
}

/** The new time `fd_filestat_set_times` asks for: null keeps the current one. */
function newTime(value: bigint, flags: number, set: number, now: number): NewTime {
  if (flags & set && flags & now) {
    throw new WasiError(EINVAL, "a time cannot be both given and now");
  }
  if (flags & now) return "now";
  if (flags & set) return Number(BigInt.asUintN(64, value)) / 1e9;
  return null;
}

/** One guest instance's WASI preview1 host. */
export class Preview1Host {
  #args: Uint8Array[];
  #env: Uint8Array[];
  #fs: RootFs | null;
  #fds = new Map<number, Fd>();
  #memory = new GuestMemory();
  #sleeper = new Int32Array(new SharedArrayBuffer(4));
  #imports: Record<string, (...args: never[]) => number | void> | undefined;

  /** A host for one instance; the rootfs (if any) becomes fd 3. */
  constructor(options: Preview1Options) {
    this.#args = cStrings(options.args);
    this.#env = cStrings(envEntries(options.env));
    this.#fs = options.root === null ? null : new RootFs(options.root);
    const streams = [options.stdin, options.stdout, options.stderr];
    streams.forEach((stream, fd) => {
      this.#fds.set(fd, {
        kind: "stream",
        stream: stream ?? {},
        filetype: stream ? streamType(stream) : FILETYPE_CHARACTER_DEVICE,
        fdflags: 0,
        rightsBase: RIGHTS_STREAM,
        rightsInheriting: 0n,
      });
    });
    if (this.#fs !== null) {
      this.#fds.set(PREOPEN_FD, {
        kind: "dir",
        path: [],
        preopen: PREOPEN_NAME,
        fdflags: 0,
        rightsBase: RIGHTS_DIRECTORY,
        rightsInheriting: RIGHTS_ALL,
      });
    }
  }

  /** The import object to instantiate a module with. */
  get imports(): WebAssembly.Imports {
    this.#imports ??= this.#wrap();
    return { [WASI_PREVIEW1]: this.#imports };
  }

  /** Binds the host to an instance's exported `memory` (before any call that needs it). */
  bind(instance: WebAssembly.Instance): void {
    const { memory } = instance.exports;
    this.#memory.bind(memory instanceof WebAssembly.Memory ? memory : undefined);
  }

  /**
   * Runs a command: binds to the instance, calls `_start`.
   *
   * @returns the exit code: 0 if `_start` returns, else what the guest gave `proc_exit`
   * @throws what the guest threw otherwise (a trap: `WebAssembly.RuntimeError`, …)
   */
  start(instance: WebAssembly.Instance): number {
    this.bind(instance);
    const start = instance.exports._start;
    if (typeof start !== "function") throw new TypeError("the module exports no _start function");
    try {
      start();
      return 0;
    } catch (err) {
      if (err instanceof ProcExit) return err.code;
      throw err;
    }
  }

  /** Binds to a reactor instance and runs its `_initialize`, if it has one. */
  initialize(instance: WebAssembly.Instance): void {
    this.bind(instance);
    const init = instance.exports._initialize;
    if (typeof init === "function") init();
  }

  /** Closes every file the guest left open (stdio streams stay the caller's). */
  close(): void {
    for (const [fd, entry] of this.#fds) {
      if (entry.kind === "file") entry.file.close();
      this.#fds.delete(fd);
    }
  }

  /** The import functions, each turning host errors into errnos. */
  #wrap(): Record<string, (...args: never[]) => number | void> {
    const table = this.#functions();
    const out: Record<string, (...args: never[]) => number | void> = {};
    for (const [name, fn] of Object.entries(table)) {
      out[name] = (...args: never[]) => {
        try {
          return (fn as (...a: never[]) => number | void)(...args) ?? ESUCCESS;
        } catch (err) {
          if (err instanceof ProcExit) throw err;
          const errno = errnoOf(err);
          if (errno === undefined) throw err;
          return errno;
        }
      };
    }
    return out;
  }

  // --- fd table ---

  #get(fd: number): Fd {
    const entry = this.#fds.get(fd >>> 0);
    if (entry === undefined) throw new WasiError(EBADF, `fd ${fd >>> 0} is not open`);
    return entry;
  }

  #file(fd: number): FileFd {
    const entry = this.#get(fd);
    if (entry.kind === "file") return entry;
    if (entry.kind === "dir") throw new WasiError(EISDIR, `fd ${fd} is a directory`);
    throw new WasiError(ESPIPE, `fd ${fd} is a stream`);
  }

  #dir(fd: number): DirFd {
    const entry = this.#get(fd);
    if (entry.kind !== "dir") throw new WasiError(ENOTDIR, `fd ${fd} is not a directory`);
    return entry;
  }

  #rootfs(): RootFs {
    if (this.#fs === null) throw new WasiError(EBADF, "the guest has no filesystem");
    return this.#fs;
  }

  #add(entry: Fd): number {
    for (let fd = 0; fd < MAX_FDS; fd++) {
      if (!this.#fds.has(fd)) {
        this.#fds.set(fd, entry);
        return fd;
      }
    }
    throw new WasiError(EMFILE, `the guest has ${MAX_FDS} fds open`);
  }

  #closeEntry(entry: Fd): void {
    if (entry.kind === "file") entry.file.close();
    else if (entry.kind === "stream") entry.stream.close?.();
  }

  /** Writes to an fd; returns the bytes written (stops at the first error after some). */
  #write(entry: Fd, bufs: Uint8Array[]): number {
    if (entry.kind === "dir") throw new WasiError(EBADF, "cannot write to a directory");
    let written = 0;
    for (const buf of bufs) {
      try {
        if (entry.kind === "stream") {
          if (entry.stream.writeSync) writeAllSync(entry.stream as Required<StdioStream>, buf);
          else if (entry.stream.readSync) throw new WasiError(EBADF, "stdin is not writable");
        } else {
          if (entry.fdflags & FDFLAGS_APPEND && !entry.hostAppend) {
            entry.file.seekSync(0, Deno.SeekMode.End);
          }
          writeAllSync(entry.file, buf);
        }
      } catch (err) {
        if (written > 0 && errnoOf(err) !== undefined) break;
        throw err;
      }
      written += buf.length;
    }
    if (entry.kind === "file" && written > 0) {
      if (entry.fdflags & FDFLAGS_SYNC) entry.file.syncSync();
      else if (entry.fdflags & FDFLAGS_DSYNC) entry.file.syncDataSync();
    }
    return written;
  }

  #read(entry: Fd, bufs: Uint8Array[]): number {
    if (entry.kind === "dir") throw new WasiError(EISDIR, "cannot read a directory");
    if (entry.kind === "stream") {
      if (entry.stream.readSync) return readInto(entry.stream as Required<StdioStream>, bufs);
      if (entry.stream.writeSync) throw new WasiError(EBADF, "the stream is not readable");
      return 0; // no stdin: end of file
    }
    if (entry.fdflags & FDFLAGS_RSYNC) entry.file.syncDataSync();
    return readInto(entry.file, bufs);
  }

  /** Runs `fn` with the file's offset at `offset`, then puts the offset back. */
  #at<T>(entry: FileFd, offset: bigint, fn: () => T): T {
    const at = safeNumber(offset, "offset");
    const saved = entry.file.seekSync(0, Deno.SeekMode.Current);
    entry.file.seekSync(at, Deno.SeekMode.Start);
    try {
      return fn();
    } finally {
      entry.file.seekSync(saved, Deno.SeekMode.Start);
    }
  }

  #filestat(ptr: number, info: Deno.FileInfo | null, filetype: number): void {
    const m = this.#memory;
    m.bytes(ptr, FILESTAT_SIZE).fill(0);
    m.setU8(ptr + 16, filetype);
    if (info === null) return;
    m.setU64(ptr, BigInt(info.dev));
    m.setU64(ptr + 8, BigInt(info.ino ?? 0));
    m.setU64(ptr + 24, BigInt(info.nlink ?? 1));
    m.setU64(ptr + 32, BigInt(info.size));
    m.setU64(ptr + 40, nanos(info.atime));
    m.setU64(ptr + 48, nanos(info.mtime));
    m.setU64(ptr + 56, nanos(info.ctime ?? info.mtime));
  }

  #path(ptr: number, len: number): string {
    return this.#memory.string(ptr, len);
  }

  /** The import functions by name (unwrapped: they throw host errors). */
  #functions() {
    const m = this.#memory;
    const sizes = (list: Uint8Array[], countPtr: number, sizePtr: number) => {
      m.setU32(countPtr, list.length);
      m.setU32(sizePtr, list.reduce((n, s) => n + s.length, 0));
    };
    const strings = (list: Uint8Array[], ptrs: number, buf: number) => {
      let at = buf >>> 0;
      list.forEach((s, i) => {
        m.setU32(ptrs + i * 4, at);
        m.bytes(at, s.length).set(s);
        at += s.length;
      });
    };
    return {
      args_get: (argv: number, buf: number) => strings(this.#args, argv, buf),
      args_sizes_get: (count: number, size: number) => sizes(this.#args, count, size),
      environ_get: (environ: number, buf: number) => strings(this.#env, environ, buf),
      environ_sizes_get: (count: number, size: number) => sizes(this.#env, count, size),

      clock_res_get: (id: number, out: number) => {
        if (clockNs(id) === undefined) throw new WasiError(EINVAL, `unknown clock ${id}`);
        m.setU64(out, CLOCK_RESOLUTION_NS);
      },
      clock_time_get: (id: number, _precision: bigint, out: number) => {
        const now = clockNs(id);
        if (now === undefined) throw new WasiError(EINVAL, `unknown clock ${id}`);
        m.setU64(out, now);
      },

      fd_advise: (fd: number, _offset: bigint, _len: bigint, advice: number) => {
        this.#file(fd);
        if (advice >>> 0 > ADVICE_MAX) throw new WasiError(EINVAL, `unknown advice ${advice}`);
      },
      fd_allocate: (fd: number, offset: bigint, len: bigint) => {
        const { file } = this.#file(fd);
        const end = safeNumber(BigInt.asUintN(64, offset) + BigInt.asUintN(64, len), "size");
        // Deno has no fallocate: grow the file to the end of the range, as it would.
        if (file.statSync().size < end) file.truncateSync(end);
      },
      fd_close: (fd: number) => {
        const entry = this.#get(fd);
        this.#fds.delete(fd >>> 0);
        this.#closeEntry(entry);
      },
      fd_datasync: (fd: number) => this.#sync(fd, true),
      fd_sync: (fd: number) => this.#sync(fd, false),
      fd_fdstat_get: (fd: number, out: number) => {
        const entry = this.#get(fd);
        m.bytes(out, FDSTAT_SIZE).fill(0);
        m.setU8(out, entry.kind === "dir" ? FILETYPE_DIRECTORY : entry.filetype);
        m.setU16(out + 2, entry.fdflags);
        m.setU64(out + 8, entry.rightsBase);
        m.setU64(out + 16, entry.rightsInheriting);
      },
      fd_fdstat_set_flags: (fd: number, flags: number) => {
        const entry = this.#get(fd);
        if (flags & ~FDFLAGS_ALL) throw new WasiError(EINVAL, `unknown fdflags ${flags}`);
        if (entry.kind === "file" && entry.hostAppend && !(flags & FDFLAGS_APPEND)) {
          throw new WasiError(ENOTSUP, "append mode cannot be turned off (Deno has no fcntl)");
        }
        // APPEND on a file opened without it is emulated (seek to the end before a
        // write); SYNC, DSYNC and RSYNC sync after writes; NONBLOCK is recorded only.
        entry.fdflags = flags & 0xffff;
      },
      fd_fdstat_set_rights: (fd: number, base: bigint, inheriting: bigint) => {
        const entry = this.#get(fd);
        // Rights may only shrink; they are recorded, and checked only loosely.
        entry.rightsBase &= BigInt.asUintN(64, base);
        entry.rightsInheriting &= BigInt.asUintN(64, inheriting);
      },
      fd_filestat_get: (fd: number, out: number) => {
        const entry = this.#get(fd);
        if (entry.kind === "file") this.#filestat(out, entry.file.statSync(), entry.filetype);
        else if (entry.kind === "dir") {
          this.#filestat(out, this.#rootfs().statResolved(entry.path), FILETYPE_DIRECTORY);
        } else this.#filestat(out, entry.stream.statSync?.() ?? null, entry.filetype);
      },
      fd_filestat_set_size: (fd: number, size: bigint) => {
        this.#file(fd).file.truncateSync(safeNumber(size, "size"));
      },
      fd_filestat_set_times: (fd: number, atim: bigint, mtim: bigint, flags: number) => {
        const atime = newTime(atim, flags, FSTFLAGS_ATIM, FSTFLAGS_ATIM_NOW);
        const mtime = newTime(mtim, flags, FSTFLAGS_MTIM, FSTFLAGS_MTIM_NOW);
        const entry = this.#get(fd);
        if (entry.kind === "file") setFileTimes(entry.file, atime, mtime);
        else if (entry.kind === "dir") this.#rootfs().setTimesResolved(entry.path, atime, mtime);
        else throw new WasiError(ENOTSUP, "cannot set the times of a stdio stream");
      },
      fd_pread: (fd: number, iovs: number, count: number, offset: bigint, out: number) => {
        const entry = this.#file(fd);
        const bufs = m.iovecs(iovs, count);
        m.setU32(out, this.#at(entry, offset, () => this.#read(entry, bufs)));
      },
      fd_pwrite: (fd: number, iovs: number, count: number, offset: bigint, out: number) => {
        const entry = this.#file(fd);
        const bufs = m.iovecs(iovs, count);
        m.setU32(out, this.#at(entry, offset, () => this.#write(entry, bufs)));
      },
      fd_read: (fd: number, iovs: number, count: number, out: number) => {
        const entry = this.#get(fd);
        m.setU32(out, this.#read(entry, m.iovecs(iovs, count)));
      },
      fd_write: (fd: number, iovs: number, count: number, out: number) => {
        const entry = this.#get(fd);
        m.setU32(out, this.#write(entry, m.iovecs(iovs, count)));
      },
      fd_prestat_get: (fd: number, out: number) => {
        const entry = this.#fds.get(fd >>> 0);
        if (entry?.kind !== "dir" || entry.preopen === undefined) {
          throw new WasiError(EBADF, `fd ${fd} is not a preopen`);
        }
        m.bytes(out, PRESTAT_SIZE).fill(0);
        m.setU8(out, PREOPENTYPE_DIR);
        m.setU32(out + 4, encoder.encode(entry.preopen).length);
      },
      fd_prestat_dir_name: (fd: number, path: number, len: number) => {
        const entry = this.#fds.get(fd >>> 0);
        if (entry?.kind !== "dir" || entry.preopen === undefined) {
          throw new WasiError(EBADF, `fd ${fd} is not a preopen`);
        }
        const name = encoder.encode(entry.preopen);
        if (len >>> 0 < name.length) throw new WasiError(ENAMETOOLONG, "buffer too small");
        m.bytes(path, name.length).set(name);
      },
      fd_readdir: (fd: number, buf: number, len: number, cookie: bigint, out: number) => {
        const dir = this.#dir(fd);
        const start = BigInt.asUintN(64, cookie);
        if (start === 0n || dir.listing === undefined) {
          dir.listing = this.#rootfs().list(dir.path);
        }
        const target = m.bytes(buf, len);
        let used = 0;
        for (let i = Number(start); i < dir.listing.length && used < target.length; i++) {
          const entry = dir.listing[i];
          const name = encoder.encode(entry.name);
          const record = new Uint8Array(DIRENT_SIZE + name.length);
          const view = new DataView(record.buffer);
          view.setBigUint64(0, BigInt(i + 1), true);
          view.setBigUint64(8, entry.ino, true);
          view.setUint32(16, name.length, true);
          view.setUint8(20, entry.type);
          record.set(name, DIRENT_SIZE);
          // The last entry may be cut short: a full buffer tells the guest to ask again.
          const n = Math.min(record.length, target.length - used);
          target.set(record.subarray(0, n), used);
          used += n;
        }
        m.setU32(out, used);
      },
      fd_renumber: (fd: number, to: number) => {
        const entry = this.#get(fd);
        const old = this.#get(to);
        if (fd >>> 0 === to >>> 0) return;
        this.#fds.set(to >>> 0, entry);
        this.#fds.delete(fd >>> 0);
        this.#closeEntry(old);
      },
      fd_seek: (fd: number, offset: bigint, whence: number, out: number) => {
        const { file } = this.#file(fd);
        const mode = whence === WHENCE_SET
          ? Deno.SeekMode.Start
          : whence === WHENCE_CUR
          ? Deno.SeekMode.Current
          : whence === WHENCE_END
          ? Deno.SeekMode.End
          : undefined;
        if (mode === undefined) throw new WasiError(EINVAL, `unknown whence ${whence}`);
        m.setU64(out, BigInt(file.seekSync(offset, mode)));
      },
      fd_tell: (fd: number, out: number) => {
        m.setU64(out, BigInt(this.#file(fd).file.seekSync(0, Deno.SeekMode.Current)));
      },

      path_create_directory: (fd: number, path: number, len: number) => {
        this.#rootfs().mkdir(this.#dir(fd).path, this.#path(path, len));
      },
      path_filestat_get: (fd: number, flags: number, path: number, len: number, out: number) => {
        const follow = (flags & LOOKUPFLAGS_SYMLINK_FOLLOW) !== 0;
        const info = this.#rootfs().stat(this.#dir(fd).path, this.#path(path, len), follow);
        this.#filestat(out, info, filetypeOf(info));
      },
      path_filestat_set_times: (
        fd: number,
        flags: number,
        path: number,
        len: number,
        atim: bigint,
        mtim: bigint,
        fstFlags: number,
      ) => {
        const atime = newTime(atim, fstFlags, FSTFLAGS_ATIM, FSTFLAGS_ATIM_NOW);
        const mtime = newTime(mtim, fstFlags, FSTFLAGS_MTIM, FSTFLAGS_MTIM_NOW);
        const follow = (flags & LOOKUPFLAGS_SYMLINK_FOLLOW) !== 0;
        const base = this.#dir(fd).path;
        this.#rootfs().setTimes(base, this.#path(path, len), follow, atime, mtime);
      },
      path_link: (
        oldFd: number,
        oldFlags: number,
        oldPath: number,
        oldLen: number,
        newFd: number,
        newPath: number,
        newLen: number,
      ) => {
        const follow = (oldFlags & LOOKUPFLAGS_SYMLINK_FOLLOW) !== 0;
        const from = this.#dir(oldFd).path;
        const to = this.#dir(newFd).path;
        this.#rootfs().link(
          from,
          this.#path(oldPath, oldLen),
          follow,
          to,
          this.#path(newPath, newLen),
        );
      },
      path_open: (
        fd: number,
        dirflags: number,
        path: number,
        len: number,
        oflags: number,
        rightsBase: bigint,
        rightsInheriting: bigint,
        fdflags: number,
        out: number,
      ) =>
        this.#open(
          fd,
          dirflags,
          this.#path(path, len),
          oflags,
          rightsBase,
          rightsInheriting,
          fdflags,
          out,
        ),
      path_readlink: (
        fd: number,
        path: number,
        len: number,
        buf: number,
        bufLen: number,
        out: number,
      ) => {
        const target = encoder.encode(
          this.#rootfs().readlink(this.#dir(fd).path, this.#path(path, len)),
        );
        const n = Math.min(target.length, bufLen >>> 0);
        m.bytes(buf, n).set(target.subarray(0, n));
        m.setU32(out, n);
      },
      path_remove_directory: (fd: number, path: number, len: number) => {
        this.#rootfs().rmdir(this.#dir(fd).path, this.#path(path, len));
      },
      path_rename: (
        fd: number,
        oldPath: number,
        oldLen: number,
        newFd: number,
        newPath: number,
        newLen: number,
      ) => {
        const from = this.#dir(fd).path;
        const to = this.#dir(newFd).path;
        this.#rootfs().rename(from, this.#path(oldPath, oldLen), to, this.#path(newPath, newLen));
      },
      path_symlink: (target: number, targetLen: number, fd: number, path: number, len: number) => {
        const base = this.#dir(fd).path;
        this.#rootfs().symlink(this.#path(target, targetLen), base, this.#path(path, len));
      },
      path_unlink_file: (fd: number, path: number, len: number) => {
        this.#rootfs().unlink(this.#dir(fd).path, this.#path(path, len));
      },

      poll_oneoff: (subs: number, events: number, count: number, out: number) =>
        this.#poll(subs, events, count >>> 0, out),
      proc_exit: (code: number): void => {
        throw new ProcExit(code >>> 0);
      },
      proc_raise: (_signal: number) => ENOSYS,
      sched_yield: () => ESUCCESS,
      random_get: (buf: number, len: number) => {
        const bytes = m.bytes(buf, len);
        for (let at = 0; at < bytes.length; at += RANDOM_CHUNK) {
          crypto.getRandomValues(bytes.subarray(at, at + RANDOM_CHUNK));
        }
      },

      // No sockets: the guest can neither be given one nor open one.
      sock_accept: (_fd: number, _flags: number, _out: number) => ENOSYS,
      sock_recv: (
        _fd: number,
        _ri: number,
        _riLen: number,
        _flags: number,
        _n: number,
        _of: number,
      ) => ENOSYS,
      sock_send: (_fd: number, _si: number, _siLen: number, _flags: number, _n: number) => ENOSYS,
      sock_shutdown: (_fd: number, _how: number) => ENOSYS,
    };
  }

  #sync(fd: number, dataOnly: boolean): void {
    const entry = this.#get(fd);
    if (entry.kind === "file") {
      if (dataOnly) entry.file.syncDataSync();
      else entry.file.syncSync();
    } else if (entry.kind === "stream") {
      throw new WasiError(EINVAL, "a stream cannot be synced"); // as fsync(2) on a pipe
    }
    // A directory is kept as a path: there is nothing of ours to sync.
  }

  #open(
    fd: number,
    dirflags: number,
    path: string,
    oflags: number,
    rightsBase: bigint,
    rightsInheriting: bigint,
    fdflags: number,
    out: number,
  ): void {
    const base = BigInt.asUintN(64, rightsBase);
    const inheriting = BigInt.asUintN(64, rightsInheriting);
    // FD_WRITE is what every libc asks for with O_WRONLY or O_RDWR, and only then (Go
    // asks for FD_FILESTAT_SET_SIZE with O_RDONLY too).
    const write = (base & RIGHTS_FD_WRITE) !== 0n;
    const opened = this.#rootfs().open(this.#dir(fd).path, path, {
      follow: (dirflags & LOOKUPFLAGS_SYMLINK_FOLLOW) !== 0,
      create: (oflags & OFLAGS_CREAT) !== 0,
      exclusive: (oflags & OFLAGS_EXCL) !== 0,
      truncate: (oflags & OFLAGS_TRUNC) !== 0,
      directory: (oflags & OFLAGS_DIRECTORY) !== 0,
      read: (base & RIGHTS_FD_READ) !== 0n,
      write,
      append: write && (fdflags & FDFLAGS_APPEND) !== 0,
    });
    const common = {
      fdflags: fdflags & FDFLAGS_ALL,
      rightsBase: base,
      rightsInheriting: inheriting,
    };
    let newFd: number;
    try {
      newFd = this.#add(
        opened.kind === "dir" ? { kind: "dir", path: opened.path, ...common } : {
          kind: "file",
          file: opened.file,
          filetype: filetypeOf(opened.info),
          hostAppend: write && (fdflags & FDFLAGS_APPEND) !== 0,
          ...common,
        },
      );
    } catch (err) {
      if (opened.kind === "file") opened.file.close();
      throw err;
    }
    this.#memory.setU32(out, newFd);
  }

  #poll(subs: number, events: number, count: number, out: number): void {
    if (count === 0) throw new WasiError(EINVAL, "poll_oneoff needs at least one subscription");
    const m = this.#memory;
    m.bytes(subs, count * SUBSCRIPTION_SIZE);
    m.bytes(events, count * EVENT_SIZE);
    type Event = { userdata: bigint; error: number; type: number; nbytes: bigint };
    const ready: Event[] = [];
    const clocks: { userdata: bigint; deadline: number }[] = [];
    const now = performance.now();
    for (let i = 0; i < count; i++) {
      const sub = (subs >>> 0) + i * SUBSCRIPTION_SIZE;
      const userdata = m.u64(sub);
      const type = m.u8(sub + 8);
      if (type === EVENTTYPE_CLOCK) {
        const id = m.u32(sub + 16);
        const timeout = m.u64(sub + 24);
        const flags = m.u16(sub + 40);
        const clock = clockNs(id);
        if (clock === undefined) {
          ready.push({ userdata, error: EINVAL, type, nbytes: 0n });
          continue;
        }
        const delta = flags & SUBCLOCKFLAGS_ABSTIME ? timeout - clock : timeout;
        clocks.push({ userdata, deadline: now + Number(delta > 0n ? delta : 0n) / 1e6 });
      } else if (type === EVENTTYPE_FD_READ || type === EVENTTYPE_FD_WRITE) {
        // Reads and writes block rather than fail: every fd counts as ready.
        const entry = this.#fds.get(m.u32(sub + 16));
        if (entry === undefined) ready.push({ userdata, error: EBADF, type, nbytes: 0n });
        else ready.push({ userdata, error: ESUCCESS, type, nbytes: readable(entry, type) });
      } else {
        ready.push({ userdata, error: EINVAL, type, nbytes: 0n });
      }
    }
    if (ready.length === 0) {
      const deadline = Math.min(...clocks.map((c) => c.deadline));
      for (let left = deadline - performance.now(); left > 0; left = deadline - performance.now()) {
        Atomics.wait(this.#sleeper, 0, 0, left);
      }
    }
    const after = performance.now();
    for (const c of clocks) {
      if (c.deadline <= after) {
        ready.push({ userdata: c.userdata, error: ESUCCESS, type: EVENTTYPE_CLOCK, nbytes: 0n });
      }
    }
    ready.forEach((event, i) => {
      const at = (events >>> 0) + i * EVENT_SIZE;
      m.bytes(at, EVENT_SIZE).fill(0);
      m.setU64(at, event.userdata);
      m.setU16(at + 8, event.error);
      m.setU8(at + 10, event.type);
      m.setU64(at + 16, event.nbytes);
    });
    m.setU32(out, ready.length);
  }
}

/** The file type of a stdio stream. */
function streamType(stream: StdioStream): number {
  try {
    if (stream.isTerminal?.()) return FILETYPE_CHARACTER_DEVICE;
    const info = stream.statSync?.();
    return info ? filetypeOf(info) : FILETYPE_UNKNOWN;
  } catch {
    return FILETYPE_UNKNOWN;
  }
}

/** What `poll_oneoff` reports as available on a ready fd. */
function readable(entry: Fd, type: number): bigint {
  if (entry.kind !== "file" || type !== EVENTTYPE_FD_READ) return 0n;
  if (entry.filetype !== FILETYPE_REGULAR_FILE) return 0n;
  const size = entry.file.statSync().size;
  const position = entry.file.seekSync(0, Deno.SeekMode.Current);
  return BigInt(Math.max(0, size - position));
}
