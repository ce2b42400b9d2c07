import assert from "node:assert/strict";
import {
  CLOCK_MONOTONIC,
  CLOCK_REALTIME,
  DIRENT_SIZE,
  EVENTTYPE_CLOCK,
  EVENTTYPE_FD_READ,
  FDFLAGS_APPEND,
  FILETYPE_CHARACTER_DEVICE,
  FILETYPE_DIRECTORY,
  FILETYPE_REGULAR_FILE,
  FILETYPE_SYMBOLIC_LINK,
  FILETYPE_UNKNOWN,
  FSTFLAGS_ATIM_NOW,
  FSTFLAGS_MTIM,
  LOOKUPFLAGS_SYMLINK_FOLLOW,
  OFLAGS_CREAT,
  OFLAGS_DIRECTORY,
  OFLAGS_EXCL,
  OFLAGS_TRUNC,
  PREVIEW1_FUNCTIONS,
  RIGHTS_ALL,
  RIGHTS_FD_FILESTAT_SET_SIZE,
  RIGHTS_FD_READ,
  RIGHTS_FD_SEEK,
  RIGHTS_FD_TELL,
  RIGHTS_FD_WRITE,
  SUBCLOCKFLAGS_ABSTIME,
  WASI_PREVIEW1,
  WHENCE_CUR,
  WHENCE_END,
  WHENCE_SET,
} from "./abi.ts";
import {
  EBADF,
  EBUSY,
  EEXIST,
  EFAULT,
  EILSEQ,
  EINVAL,
  EISDIR,
  ELOOP,
  ENAMETOOLONG,
  ENOENT,
  ENOSYS,
  ENOTCAPABLE,
  ENOTDIR,
  ENOTEMPTY,
  ENOTSUP,
  EPERM,
  ESPIPE,
  ESUCCESS,
} from "./errno.ts";
import { envEntries, Preview1Host, type Preview1Options, ProcExit } from "./host.ts";

const TESTDATA = new URL("./testdata/", import.meta.url).pathname;
const PROBE = new URL("../testdata/probe.wasm", import.meta.url).pathname;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const ROOT_FD = 3;
const READ = RIGHTS_FD_READ;
const READ_WRITE = RIGHTS_FD_READ | RIGHTS_FD_WRITE;

/** Collects what a guest writes to a stdio stream. */
class Sink {
  chunks: Uint8Array[] = [];
  writeSync(p: Uint8Array): number {
    this.chunks.push(p.slice());
    return p.length;
  }
  get text(): string {
    return this.chunks.map((c) => decoder.decode(c)).join("");
  }
}

/** A stdin that yields `text`, then end of file. */
function source(text: string) {
  let rest = encoder.encode(text);
  return {
    readSync(p: Uint8Array): number | null {
      if (rest.length === 0) return null;
      const n = Math.min(p.length, rest.length);
      p.set(rest.subarray(0, n));
      rest = rest.subarray(n);
      return n;
    },
  };
}

/** A temporary rootfs, removed at dispose. */
class Root {
  readonly path = Deno.realPathSync(Deno.makeTempDirSync({ prefix: "preview1-root-" }));
  /** Outside the root, beside it. */
  readonly secret = `${this.path}.secret`;

  constructor() {
    Deno.mkdirSync(`${this.path}/etc`);
    Deno.writeTextFileSync(`${this.path}/etc/msg`, "inside the rootfs\n");
    Deno.writeTextFileSync(this.secret, "HOST SECRET\n");
  }

  [Symbol.dispose](): void {
    Deno.removeSync(this.path, { recursive: true });
    Deno.removeSync(this.secret);
  }
}

type Fn = (...args: (number | bigint)[]) => number;

/**
 * A host bound to a bare memory, its imports called directly, with a bump allocator
 * for the arguments.
 */
class Harness {
  readonly memory = new WebAssembly.Memory({ initial: 2 });
  readonly stdout = new Sink();
  readonly stderr = new Sink();
  readonly host: Preview1Host;
  readonly fns: Record<string, Fn>;
  #next = 1024;

  constructor(options: Partial<Preview1Options> = {}) {
    this.host = new Preview1Host({
      args: [],
      env: [],
      root: null,
      stdout: this.stdout,
      stderr: this.stderr,
      ...options,
    });
    this.host.bind({ exports: { memory: this.memory } } as unknown as WebAssembly.Instance);
    this.fns = this.host.imports[WASI_PREVIEW1] as Record<string, Fn>;
  }

  get view(): DataView {
    return new DataView(this.memory.buffer);
  }

  alloc(size: number): number {
    const at = this.#next;
    this.#next += (size + 7) & ~7;
    return at;
  }

  /** Puts a string in memory: [ptr, len]. */
  str(text: string): [number, number] {
    const bytes = encoder.encode(text);
    const at = this.alloc(bytes.length);
    new Uint8Array(this.memory.buffer, at, bytes.length).set(bytes);
    return [at, bytes.length];
  }

  /** An iovec array over buffers of the given texts (or sizes): [ptr, count, bufs]. */
  iovs(parts: (string | number)[]): [number, number, [number, number][]] {
    const list = this.alloc(parts.length * 8);
    const bufs = parts.map((p) => typeof p === "number" ? [this.alloc(p), p] : this.str(p)) as [
      number,
      number,
    ][];
    bufs.forEach(([ptr, len], i) => {
      this.view.setUint32(list + i * 8, ptr, true);
      this.view.setUint32(list + i * 8 + 4, len, true);
    });
    return [list, parts.length, bufs];
  }

  u32(ptr: number): number {
    return this.view.getUint32(ptr, true);
  }

  u64(ptr: number): bigint {
    return this.view.getBigUint64(ptr, true);
  }

  text(ptr: number, len: number): string {
    return decoder.decode(new Uint8Array(this.memory.buffer, ptr, len));
  }

  call(name: string, ...args: (number | bigint)[]): number {
    return this.fns[name](...args);
  }

  /** path_open relative to the root; returns [errno, fd]. */
  open(
    path: string,
    { oflags = 0, rights = READ, fdflags = 0, lookup = LOOKUPFLAGS_SYMLINK_FOLLOW, dir = ROOT_FD } =
      {},
  ): [number, number] {
    const out = this.alloc(4);
    const errno = this.call(
      "path_open",
      dir,
      lookup,
      ...this.str(path),
      oflags,
      rights,
      RIGHTS_ALL,
      fdflags,
      out,
    );
    return [errno, this.u32(out)];
  }

  write(fd: number, text: string): number {
    const [iovs, count] = this.iovs([text]);
    const out = this.alloc(4);
    assert.equal(this.call("fd_write", fd, iovs, count, out), ESUCCESS);
    return this.u32(out);
  }

  read(fd: number, size = 256): string {
    const [iovs, count, bufs] = this.iovs([size]);
    const out = this.alloc(4);
    assert.equal(this.call("fd_read", fd, iovs, count, out), ESUCCESS);
    return this.text(bufs[0][0], this.u32(out));
  }

  /** path_filestat_get: [errno, filetype, size]. */
  stat(path: string, follow = true): [number, number, bigint] {
    const buf = this.alloc(64);
    const errno = this.call(
      "path_filestat_get",
      ROOT_FD,
      follow ? LOOKUPFLAGS_SYMLINK_FOLLOW : 0,
      ...this.str(path),
      buf,
    );
    return [errno, this.view.getUint8(buf + 16), this.u64(buf + 32)];
  }

  /** Runs `fn` and returns the ProcExit code it threw. */
  exitCode(fn: () => unknown): number {
    try {
      fn();
    } catch (err) {
      if (err instanceof ProcExit) return err.code;
      throw err;
    }
    throw new Error("expected proc_exit");
  }
}

/** Runs a module as a command with its stdio captured. */
function runGuest(
  wasm: string,
  args: string[],
  options: Partial<Preview1Options> = {},
): { code: number; stdout: string; stderr: string } {
  const stdout = new Sink();
  const stderr = new Sink();
  const host = new Preview1Host({
    args,
    env: [],
    root: null,
    stdin: source(""),
    stdout,
    stderr,
    ...options,
  });
  const module = new WebAssembly.Module(Deno.readFileSync(wasm));
  try {
    const code = host.start(new WebAssembly.Instance(module, host.imports));
    return { code, stdout: stdout.text, stderr: stderr.text };
  } finally {
    host.close();
  }
}

const fsops = (root: Root, ...args: string[]) =>
  runGuest(`${TESTDATA}fsops.wasm`, ["fsops", ...args], { root: root.path });

// --- the ABI, called directly ---

Deno.test("every preview1 function is provided", () => {
  const h = new Harness();
  assert.deepEqual(Object.keys(h.fns).sort(), [...PREVIEW1_FUNCTIONS].sort());
  assert.equal(PREVIEW1_FUNCTIONS.length, 46);
});

Deno.test("stdio: fd_write reaches stdout and stderr, fd_read reads stdin to its end", () => {
  const h = new Harness({ stdin: source("line one\nline two\n") });
  const [iovs, count] = h.iovs(["hello ", "", "world\n"]);
  const out = h.alloc(4);
  assert.equal(h.call("fd_write", 1, iovs, count, out), ESUCCESS);
  assert.equal(h.u32(out), 12);
  h.write(2, "oops\n");
  assert.equal(h.stdout.text, "hello world\n");
  assert.equal(h.stderr.text, "oops\n");
  assert.equal(h.read(0, 9), "line one\n");
  assert.equal(h.read(0), "line two\n");
  assert.equal(h.read(0), "");
  // Streams do not seek; stdin is not writable.
  const pos = h.alloc(8);
  assert.equal(h.call("fd_seek", 1, 0n, WHENCE_SET, pos), ESPIPE);
  assert.equal(h.call("fd_write", 0, iovs, count, out), EBADF);
  // Without stdin the guest reads end of file; without stdout its writes are dropped.
  const bare = new Harness({ stdout: undefined });
  assert.equal(bare.read(0), "");
  assert.equal(bare.write(1, "dropped"), 7);
});

Deno.test("args and env: sizes, then NUL-terminated strings; only the env given", () => {
  const h = new Harness({
    args: ["/probe.wasm", "two words", ""],
    env: ["A=1", "NOVALUE", "B=x=y", "A=2"],
  });
  const count = h.alloc(4);
  const size = h.alloc(4);
  assert.equal(h.call("args_sizes_get", count, size), ESUCCESS);
  assert.equal(h.u32(count), 3);
  assert.equal(h.u32(size), "/probe.wasm\0two words\0\0".length);
  const ptrs = h.alloc(12);
  const buf = h.alloc(h.u32(size));
  assert.equal(h.call("args_get", ptrs, buf), ESUCCESS);
  assert.equal(h.text(h.u32(ptrs + 4), 9), "two words");
  assert.equal(h.text(buf, h.u32(size)), "/probe.wasm\0two words\0\0");
  assert.equal(h.call("environ_sizes_get", count, size), ESUCCESS);
  assert.equal(h.u32(count), 2);
  const envPtrs = h.alloc(8);
  const envBuf = h.alloc(h.u32(size));
  assert.equal(h.call("environ_get", envPtrs, envBuf), ESUCCESS);
  assert.equal(h.text(envBuf, h.u32(size)), "A=2\0B=x=y\0");
  assert.deepEqual(envEntries(["X=1", "=bad", "Y"]), ["X=1"]);
});

Deno.test("fd_prestat: fd 3 is the preopen '/', other fds are not; no root, no preopen", () => {
  using root = new Root();
  const h = new Harness({ root: root.path });
  const buf = h.alloc(8);
  assert.equal(h.call("fd_prestat_get", ROOT_FD, buf), ESUCCESS);
  assert.equal(h.view.getUint8(buf), 0);
  assert.equal(h.u32(buf + 4), 1);
  const name = h.alloc(4);
  assert.equal(h.call("fd_prestat_dir_name", ROOT_FD, name, 1), ESUCCESS);
  assert.equal(h.text(name, 1), "/");
  assert.equal(h.call("fd_prestat_dir_name", ROOT_FD, name, 0), ENAMETOOLONG);
  assert.equal(h.call("fd_prestat_get", 4, buf), EBADF);
  assert.equal(h.call("fd_prestat_get", 1, buf), EBADF);
  assert.equal(new Harness().call("fd_prestat_get", ROOT_FD, buf), EBADF);
});

Deno.test("files: create, write, seek, tell, read, pread, pwrite, stat, set_size, allocate", () => {
  using root = new Root();
  const h = new Harness({ root: root.path });
  const [errno, fd] = h.open("etc/new.txt", {
    oflags: OFLAGS_CREAT | OFLAGS_EXCL,
    rights: READ_WRITE,
  });
  assert.equal(errno, ESUCCESS);
  assert.equal(h.write(fd, "hello world"), 11);
  const pos = h.alloc(8);
  assert.equal(h.call("fd_tell", fd, pos), ESUCCESS);
  assert.equal(h.u64(pos), 11n);
  assert.equal(h.call("fd_seek", fd, -5n, WHENCE_END, pos), ESUCCESS);
  assert.equal(h.u64(pos), 6n);
  assert.equal(h.read(fd), "world");
  assert.equal(h.call("fd_seek", fd, -100n, WHENCE_CUR, pos), EINVAL);
  assert.equal(h.call("fd_seek", fd, 0n, 9, pos), EINVAL);
  // pread and pwrite leave the offset alone.
  const [wIovs, wCount] = h.iovs(["J"]);
  const n = h.alloc(4);
  assert.equal(h.call("fd_pwrite", fd, wIovs, wCount, 0n, n), ESUCCESS);
  const [rIovs, rCount, rBufs] = h.iovs([3, 2]);
  assert.equal(h.call("fd_pread", fd, rIovs, rCount, 0n, n), ESUCCESS);
  assert.equal(h.u32(n), 5);
  assert.equal(h.text(rBufs[0][0], 3) + h.text(rBufs[1][0], 2), "Jello");
  assert.equal(h.call("fd_tell", fd, pos), ESUCCESS);
  assert.equal(h.u64(pos), 11n);
  // Size changes.
  assert.equal(h.call("fd_filestat_set_size", fd, 4n), ESUCCESS);
  const st = h.alloc(64);
  assert.equal(h.call("fd_filestat_get", fd, st), ESUCCESS);
  assert.equal(h.view.getUint8(st + 16), FILETYPE_REGULAR_FILE);
  assert.equal(h.u64(st + 32), 4n);
  assert.equal(h.u64(st + 24), 1n); // nlink
  assert.equal(h.u64(st + 8), BigInt(Deno.statSync(`${root.path}/etc/new.txt`).ino!));
  assert.equal(h.call("fd_allocate", fd, 0n, 4096n), ESUCCESS);
  assert.equal(Deno.statSync(`${root.path}/etc/new.txt`).size, 4096);
  assert.equal(h.call("fd_advise", fd, 0n, 0n, 1), ESUCCESS);
  assert.equal(h.call("fd_advise", fd, 0n, 0n, 6), EINVAL);
  assert.equal(h.call("fd_sync", fd), ESUCCESS);
  assert.equal(h.call("fd_datasync", fd), ESUCCESS);
  assert.equal(h.call("fd_close", fd), ESUCCESS);
  assert.equal(h.call("fd_close", fd), EBADF);
  // O_EXCL on an existing file; O_TRUNC empties it; a missing file without O_CREAT.
  assert.equal(h.open("etc/new.txt", { oflags: OFLAGS_CREAT | OFLAGS_EXCL })[0], EEXIST);
  const [, t] = h.open("etc/new.txt", { oflags: OFLAGS_TRUNC, rights: READ_WRITE });
  assert.equal(Deno.statSync(`${root.path}/etc/new.txt`).size, 0);
  h.call("fd_close", t);
  assert.equal(h.open("etc/missing")[0], ENOENT);
  // Go's O_RDONLY asks for FD_FILESTAT_SET_SIZE too: still opened read-only.
  const [, goRo] = h.open("etc/msg", { rights: READ | RIGHTS_FD_FILESTAT_SET_SIZE });
  assert.equal(h.read(goRo), "inside the rootfs\n");
  const [goIovs, goCount] = h.iovs(["x"]);
  assert.equal(h.call("fd_write", goRo, goIovs, goCount, n), EBADF);
  // O_CREAT with read rights only still creates the file, opened read-only.
  const [c, ro] = h.open("etc/ro.txt", { oflags: OFLAGS_CREAT, rights: READ });
  assert.equal(c, ESUCCESS);
  const [iovs, count] = h.iovs(["x"]);
  assert.equal(h.call("fd_write", ro, iovs, count, n), EBADF);
  h.host.close();
});

Deno.test("fdstat: file types and rights; APPEND set later is emulated, host O_APPEND stays", () => {
  using root = new Root();
  const devNull = Deno.openSync("/dev/null", { read: true, append: true });
  const h = new Harness({ root: root.path, stdout: devNull, stdin: source("") });
  const st = h.alloc(24);
  assert.equal(h.call("fd_fdstat_get", 1, st), ESUCCESS);
  assert.equal(h.view.getUint8(st), FILETYPE_CHARACTER_DEVICE);
  // No seek or tell on a stream: wasi-libc's isatty looks for that.
  assert.equal(h.u64(st + 8) & (RIGHTS_FD_SEEK | RIGHTS_FD_TELL), 0n);
  assert.equal(h.call("fd_fdstat_get", 0, st), ESUCCESS);
  assert.equal(h.view.getUint8(st), FILETYPE_UNKNOWN);
  assert.equal(h.call("fd_fdstat_get", ROOT_FD, st), ESUCCESS);
  assert.equal(h.view.getUint8(st), FILETYPE_DIRECTORY);
  assert.equal(h.u64(st + 16), RIGHTS_ALL);
  const [, fd] = h.open("etc/msg", { rights: READ_WRITE });
  assert.equal(h.call("fd_fdstat_get", fd, st), ESUCCESS);
  assert.equal(h.view.getUint8(st), FILETYPE_REGULAR_FILE);
  assert.equal(h.view.getUint16(st + 2, true), 0);
  assert.equal(h.call("fd_fdstat_set_flags", fd, FDFLAGS_APPEND), ESUCCESS);
  assert.equal(h.call("fd_fdstat_get", fd, st), ESUCCESS);
  assert.equal(h.view.getUint16(st + 2, true), FDFLAGS_APPEND);
  h.write(fd, "appended\n");
  assert.equal(Deno.readTextFileSync(`${root.path}/etc/msg`), "inside the rootfs\nappended\n");
  assert.equal(h.call("fd_fdstat_set_flags", fd, 0), ESUCCESS);
  const [, app] = h.open("etc/msg", { rights: READ_WRITE, fdflags: FDFLAGS_APPEND });
  h.write(app, "more\n");
  assert.ok(Deno.readTextFileSync(`${root.path}/etc/msg`).endsWith("appended\nmore\n"));
  assert.equal(h.call("fd_fdstat_set_flags", app, 0), ENOTSUP);
  assert.equal(h.call("fd_fdstat_set_flags", app, 1 << 9), EINVAL);
  assert.equal(h.call("fd_fdstat_set_rights", app, RIGHTS_FD_WRITE, 0n), ESUCCESS);
  assert.equal(h.call("fd_fdstat_get", app, st), ESUCCESS);
  assert.equal(h.u64(st + 8), RIGHTS_FD_WRITE);
  h.host.close();
  devNull.close();
});

Deno.test("fd_readdir: . and .. first, cookies resume, a full buffer cuts the last entry", () => {
  using root = new Root();
  const names = Array.from({ length: 30 }, (_, i) => `file-${String(i).padStart(2, "0")}`);
  for (const name of names) Deno.writeTextFileSync(`${root.path}/etc/${name}`, "");
  Deno.mkdirSync(`${root.path}/etc/sub`);
  Deno.symlinkSync("msg", `${root.path}/etc/link`);
  const h = new Harness({ root: root.path });
  const [errno, dir] = h.open("etc", { oflags: OFLAGS_DIRECTORY });
  assert.equal(errno, ESUCCESS);
  const seen = new Map<string, number>();
  const size = 100; // two or three entries a call: every call ends mid-entry
  const buf = h.alloc(size);
  const used = h.alloc(4);
  let cookie = 0n;
  let calls = 0;
  while (true) {
    assert.equal(h.call("fd_readdir", dir, buf, size, cookie, used), ESUCCESS);
    calls++;
    const n = h.u32(used);
    let at = 0;
    while (at + DIRENT_SIZE <= n) {
      const len = h.u32(buf + at + 16);
      if (at + DIRENT_SIZE + len > n) break; // cut short: ask again from its cookie
      seen.set(h.text(buf + at + DIRENT_SIZE, len), h.view.getUint8(buf + at + 20));
      assert.notEqual(h.u64(buf + at + 8), 0n, "an entry without an inode");
      cookie = h.u64(buf + at);
      at += DIRENT_SIZE + len;
    }
    if (n < size) break;
  }
  assert.ok(calls > 10, `${calls} calls`);
  assert.deepEqual(
    [...seen.keys()].sort(),
    [".", "..", "link", "msg", "sub", ...names].sort(),
  );
  assert.equal(seen.get("sub"), FILETYPE_DIRECTORY);
  assert.equal(seen.get("link"), FILETYPE_SYMBOLIC_LINK);
  assert.equal(seen.get("msg"), FILETYPE_REGULAR_FILE);
  // A cookie past the end lists nothing; a file is not a directory.
  assert.equal(h.call("fd_readdir", dir, buf, size, 1000n, used), ESUCCESS);
  assert.equal(h.u32(used), 0);
  const [, file] = h.open("etc/msg");
  assert.equal(h.call("fd_readdir", file, buf, size, 0n, used), ENOTDIR);
  const [iovs, count] = h.iovs([8]);
  assert.equal(h.call("fd_read", dir, iovs, count, used), EISDIR);
  h.host.close();
});

Deno.test("paths: mkdir, rename, unlink, rmdir, stat with and without following", () => {
  using root = new Root();
  const h = new Harness({ root: root.path });
  assert.equal(h.call("path_create_directory", ROOT_FD, ...h.str("work/")), ESUCCESS);
  assert.equal(h.call("path_create_directory", ROOT_FD, ...h.str("work")), EEXIST);
  assert.equal(h.call("path_create_directory", ROOT_FD, ...h.str(".")), EEXIST);
  assert.equal(h.call("path_create_directory", ROOT_FD, ...h.str("no/such")), ENOENT);
  const [, dir] = h.open("work", { oflags: OFLAGS_DIRECTORY });
  // Paths relative to a directory fd other than the preopen.
  const [errno, fd] = h.open("a.txt", { dir, oflags: OFLAGS_CREAT, rights: READ_WRITE });
  assert.equal(errno, ESUCCESS);
  h.write(fd, "abc");
  assert.deepEqual(h.stat("work/a.txt"), [ESUCCESS, FILETYPE_REGULAR_FILE, 3n]);
  assert.equal(h.call("path_rename", dir, ...h.str("a.txt"), ROOT_FD, ...h.str("b.txt")), 0);
  assert.equal(h.stat("work/a.txt")[0], ENOENT);
  assert.equal(Deno.readTextFileSync(`${root.path}/b.txt`), "abc");
  assert.equal(h.call("path_rename", ROOT_FD, ...h.str("."), ROOT_FD, ...h.str("x")), EBUSY);
  assert.equal(h.call("path_unlink_file", ROOT_FD, ...h.str("work")), EISDIR);
  assert.equal(h.call("path_remove_directory", ROOT_FD, ...h.str("b.txt")), ENOTDIR);
  Deno.writeTextFileSync(`${root.path}/work/inner`, "");
  assert.equal(h.call("path_remove_directory", ROOT_FD, ...h.str("work")), ENOTEMPTY);
  assert.equal(h.call("path_unlink_file", dir, ...h.str("inner")), ESUCCESS);
  assert.equal(h.call("path_remove_directory", ROOT_FD, ...h.str("work/")), ESUCCESS);
  assert.equal(h.call("path_unlink_file", ROOT_FD, ...h.str("b.txt")), ESUCCESS);
  assert.equal(h.call("path_unlink_file", ROOT_FD, ...h.str("b.txt")), ENOENT);
  // A directory opened for writing, a file used as a directory.
  assert.equal(h.open("etc", { rights: READ_WRITE })[0], EISDIR);
  assert.equal(h.open("etc/msg", { oflags: OFLAGS_DIRECTORY })[0], ENOTDIR);
  assert.equal(h.open("etc/msg/x")[0], ENOTDIR);
  const [, file] = h.open("etc/msg");
  assert.equal(h.call("path_create_directory", file, ...h.str("x")), ENOTDIR);
  // Paths must be UTF-8.
  const bad = h.alloc(2);
  new Uint8Array(h.memory.buffer, bad, 2).set([0xff, 0xfe]);
  assert.equal(h.call("path_create_directory", ROOT_FD, bad, 2), EILSEQ);
  h.host.close();
});

Deno.test("links: symlink, readlink, link, stat of the link or its target", () => {
  using root = new Root();
  const h = new Harness({ root: root.path });
  assert.equal(h.call("path_symlink", ...h.str("etc/msg"), ROOT_FD, ...h.str("ln")), ESUCCESS);
  assert.deepEqual(h.stat("ln", false).slice(0, 2), [ESUCCESS, FILETYPE_SYMBOLIC_LINK]);
  assert.deepEqual(h.stat("ln", true), [ESUCCESS, FILETYPE_REGULAR_FILE, 18n]);
  const buf = h.alloc(64);
  const used = h.alloc(4);
  assert.equal(h.call("path_readlink", ROOT_FD, ...h.str("ln"), buf, 64, used), ESUCCESS);
  assert.equal(h.text(buf, h.u32(used)), "etc/msg");
  assert.equal(h.call("path_readlink", ROOT_FD, ...h.str("ln"), buf, 3, used), ESUCCESS);
  assert.equal(h.text(buf, h.u32(used)), "etc");
  assert.equal(h.call("path_readlink", ROOT_FD, ...h.str("etc/msg"), buf, 64, used), EINVAL);
  // Opened through the link (followed), or refused without following.
  const [, fd] = h.open("ln");
  assert.equal(h.read(fd), "inside the rootfs\n");
  assert.equal(h.open("ln", { lookup: 0 })[0], ELOOP);
  assert.equal(
    h.call("path_link", ROOT_FD, 0, ...h.str("etc/msg"), ROOT_FD, ...h.str("hard")),
    ESUCCESS,
  );
  assert.equal(Deno.statSync(`${root.path}/etc/msg`).nlink, 2);
  // Times: a given mtime, atime now.
  const when = 1_234_567_890n * 1_000_000_000n;
  assert.equal(
    h.call(
      "path_filestat_set_times",
      ROOT_FD,
      LOOKUPFLAGS_SYMLINK_FOLLOW,
      ...h.str("ln"),
      0n,
      when,
      FSTFLAGS_MTIM | FSTFLAGS_ATIM_NOW,
    ),
    ESUCCESS,
  );
  assert.equal(Deno.statSync(`${root.path}/etc/msg`).mtime?.getTime(), 1_234_567_890_000);
  assert.ok(Math.abs(Deno.statSync(`${root.path}/etc/msg`).atime!.getTime() - Date.now()) < 5000);
  assert.equal(
    h.call("path_filestat_set_times", ROOT_FD, 0, ...h.str("ln"), 0n, when, FSTFLAGS_MTIM),
    ENOTSUP,
  );
  assert.equal(
    h.call("fd_filestat_set_times", fd, 1n, 1n, FSTFLAGS_MTIM | 1 << 3),
    EINVAL,
  );
  h.host.close();
});

Deno.test("escapes: `..`, absolute paths and symlinks out of the root are refused", () => {
  using root = new Root();
  Deno.symlinkSync(`../${root.secret.split("/").at(-1)}`, `${root.path}/climb`);
  Deno.symlinkSync(root.secret, `${root.path}/hostlink`);
  Deno.symlinkSync("/etc/msg", `${root.path}/inside`);
  const h = new Harness({ root: root.path });
  for (const path of ["..", "../x", "etc/../../x", "/etc/msg", "climb", "climb/x"]) {
    assert.equal(h.open(path)[0], ENOTCAPABLE, path);
    assert.equal(h.stat(path)[0], ENOTCAPABLE, path);
  }
  // An absolute symlink is resolved from the root, as inside the container.
  assert.equal(h.open("hostlink")[0], ENOENT);
  const [, fd] = h.open("inside");
  assert.equal(h.read(fd), "inside the rootfs\n");
  // Creating, renaming, linking out of the root.
  assert.equal(h.call("path_create_directory", ROOT_FD, ...h.str("../made")), ENOTCAPABLE);
  assert.equal(
    h.call("path_rename", ROOT_FD, ...h.str("etc/msg"), ROOT_FD, ...h.str("../stolen")),
    ENOTCAPABLE,
  );
  assert.equal(
    h.call("path_link", ROOT_FD, 1, ...h.str("climb"), ROOT_FD, ...h.str("hard")),
    ENOTCAPABLE,
  );
  assert.equal(h.open("climb", { oflags: OFLAGS_CREAT, rights: READ_WRITE })[0], ENOTCAPABLE);
  // Absolute symlink targets are refused at creation (as wasmtime); relative ones that
  // climb out may be created, but never followed.
  assert.equal(h.call("path_symlink", ...h.str("/etc"), ROOT_FD, ...h.str("abs")), EPERM);
  assert.equal(h.call("path_symlink", ...h.str("../.."), ROOT_FD, ...h.str("up")), ESUCCESS);
  assert.equal(h.open("up/etc/hostname")[0], ENOTCAPABLE);
  assert.equal(Deno.readTextFileSync(root.secret), "HOST SECRET\n");
  h.host.close();
});

Deno.test("errors: bad fds, out-of-bounds pointers, sockets, proc_raise", () => {
  using root = new Root();
  const h = new Harness({ root: root.path });
  const out = h.alloc(8);
  assert.equal(h.call("fd_fdstat_get", 99, out), EBADF);
  assert.equal(h.call("fd_close", -1), EBADF);
  assert.equal(h.call("path_open", 99, 0, ...h.str("x"), 0, 0n, 0n, 0, out), EBADF);
  const end = h.memory.buffer.byteLength;
  assert.equal(h.call("fd_fdstat_get", 1, end - 4), EFAULT);
  assert.equal(h.call("random_get", end - 10, 20), EFAULT);
  assert.equal(h.call("args_sizes_get", -1, 0), EFAULT);
  const [iovs, count] = h.iovs(["x"]);
  assert.equal(h.call("fd_write", 1, iovs, count, end), EFAULT);
  assert.equal(h.call("fd_read", ROOT_FD, iovs, count, out), EISDIR);
  assert.equal(h.call("fd_seek", ROOT_FD, 0n, WHENCE_SET, out), EISDIR);
  assert.equal(h.call("sock_accept", ROOT_FD, 0, out), ENOSYS);
  assert.equal(h.call("sock_recv", 0, 0, 0, 0, out, out), ENOSYS);
  assert.equal(h.call("sock_send", 1, 0, 0, 0, out), ENOSYS);
  assert.equal(h.call("sock_shutdown", 1, 0), ENOSYS);
  assert.equal(h.call("proc_raise", 9), ENOSYS);
  assert.equal(h.call("sched_yield"), ESUCCESS);
  assert.equal(h.call("fd_sync", 1), EINVAL);
  assert.equal(h.call("fd_sync", ROOT_FD), ESUCCESS);
});

Deno.test("fd_renumber moves an fd over another, closing it", () => {
  using root = new Root();
  const h = new Harness({ root: root.path });
  const [, fd] = h.open("etc/msg");
  assert.equal(fd, 4);
  assert.equal(h.call("fd_renumber", fd, 1), ESUCCESS);
  const out = h.alloc(4);
  const [iovs, count, bufs] = h.iovs([5]);
  assert.equal(h.call("fd_read", 1, iovs, count, out), ESUCCESS);
  assert.equal(h.text(bufs[0][0], h.u32(out)), "insid");
  assert.equal(h.call("fd_close", fd), EBADF);
  assert.equal(h.call("fd_renumber", 1, 50), EBADF);
  assert.equal(h.call("fd_renumber", 50, 1), EBADF);
  // The lowest free fd is reused, as POSIX does.
  assert.equal(h.call("fd_close", 2), ESUCCESS);
  assert.equal(h.open("etc/msg")[1], 2);
  h.host.close();
});

Deno.test("clocks: realtime is now, monotonic increases, unknown clocks are EINVAL", () => {
  const h = new Harness();
  const t = h.alloc(8);
  assert.equal(h.call("clock_time_get", CLOCK_REALTIME, 1n, t), ESUCCESS);
  const realMs = Number(h.u64(t) / 1_000_000n);
  assert.ok(Math.abs(realMs - Date.now()) < 1000, `${realMs} vs ${Date.now()}`);
  assert.equal(h.call("clock_time_get", CLOCK_MONOTONIC, 1n, t), ESUCCESS);
  const a = h.u64(t);
  assert.equal(h.call("clock_time_get", CLOCK_MONOTONIC, 1n, t), ESUCCESS);
  assert.ok(h.u64(t) >= a);
  for (const id of [2, 3]) assert.equal(h.call("clock_time_get", id, 1n, t), ESUCCESS);
  assert.equal(h.call("clock_res_get", CLOCK_MONOTONIC, t), ESUCCESS);
  assert.equal(h.u64(t), 1000n);
  assert.equal(h.call("clock_time_get", 4, 1n, t), EINVAL);
  assert.equal(h.call("clock_res_get", 4, t), EINVAL);
});

Deno.test("random_get fills more than one getRandomValues call allows", () => {
  const h = new Harness();
  const size = 100_000;
  const buf = h.alloc(size);
  assert.equal(h.call("random_get", buf, size), ESUCCESS);
  const bytes = new Uint8Array(h.memory.buffer, buf, size);
  const zeros = bytes.filter((b) => b === 0).length;
  assert.ok(zeros < size / 100, `${zeros} zero bytes`);
  assert.notEqual(bytes.subarray(size - 64).filter((b) => b !== 0).length, 0);
});

/** Writes a subscription array; returns [ptr, count]. */
function subscriptions(
  h: Harness,
  subs: ({ clock: number; timeout: bigint; flags?: number } | { fd: number })[],
): [number, number] {
  const at = h.alloc(subs.length * 48);
  subs.forEach((s, i) => {
    const base = at + i * 48;
    h.view.setBigUint64(base, BigInt(i + 100), true);
    if ("clock" in s) {
      h.view.setUint8(base + 8, EVENTTYPE_CLOCK);
      h.view.setUint32(base + 16, s.clock, true);
      h.view.setBigUint64(base + 24, s.timeout, true);
      h.view.setUint16(base + 40, s.flags ?? 0, true);
    } else {
      h.view.setUint8(base + 8, EVENTTYPE_FD_READ);
      h.view.setUint32(base + 16, s.fd, true);
    }
  });
  return [at, subs.length];
}

Deno.test("poll_oneoff: a clock sleeps; fds are ready at once; bad fds and clocks fail", () => {
  const h = new Harness({ stdin: source("x") });
  const events = h.alloc(4 * 32);
  const n = h.alloc(4);
  let [subs, count] = subscriptions(h, [{ clock: CLOCK_MONOTONIC, timeout: 30_000_000n }]);
  let t0 = performance.now();
  assert.equal(h.call("poll_oneoff", subs, events, count, n), ESUCCESS);
  assert.ok(performance.now() - t0 >= 29, `slept ${performance.now() - t0} ms`);
  assert.equal(h.u32(n), 1);
  assert.equal(h.u64(events), 100n);
  assert.equal(h.view.getUint8(events + 10), EVENTTYPE_CLOCK);
  // An absolute deadline on the realtime clock, 20 ms ahead.
  const now = BigInt(Date.now()) * 1_000_000n;
  [subs, count] = subscriptions(h, [{
    clock: CLOCK_REALTIME,
    timeout: now + 20_000_000n,
    flags: SUBCLOCKFLAGS_ABSTIME,
  }]);
  t0 = performance.now();
  assert.equal(h.call("poll_oneoff", subs, events, count, n), ESUCCESS);
  assert.ok(performance.now() - t0 >= 10, `slept ${performance.now() - t0} ms`);
  // stdin and a timeout: stdin is ready, no sleep.
  [subs, count] = subscriptions(h, [
    { clock: CLOCK_MONOTONIC, timeout: 10_000_000_000n },
    { fd: 0 },
    { fd: 42 },
    { clock: 9, timeout: 0n },
  ]);
  t0 = performance.now();
  assert.equal(h.call("poll_oneoff", subs, events, count, n), ESUCCESS);
  assert.ok(performance.now() - t0 < 1000);
  assert.equal(h.u32(n), 3);
  const got = [0, 1, 2].map((
    i,
  ) => [h.u64(events + i * 32), h.view.getUint16(events + i * 32 + 8, true)]);
  assert.deepEqual(got, [[101n, ESUCCESS], [102n, EBADF], [103n, EINVAL]]);
  assert.equal(h.call("poll_oneoff", subs, events, 0, n), EINVAL);
});

// --- modules ---

Deno.test("proc_exit: start returns its code; a module without memory still runs", () => {
  const module = new WebAssembly.Module(Deno.readFileSync(`${TESTDATA}exit_code.wasm`));
  const host = new Preview1Host({ args: [], env: [], root: null });
  const instance = new WebAssembly.Instance(module, host.imports);
  assert.equal(host.start(instance), 7);
  assert.equal((instance.exports.yield as () => number)(), ESUCCESS);
  const h = new Harness();
  assert.equal(h.exitCode(() => h.call("proc_exit", -1)), 0xffffffff);
  assert.equal(h.exitCode(() => h.call("proc_exit", 3)), 3);
});

Deno.test("wasi-libc probe: stdio, argv, env, exit codes, a trap", () => {
  const hello = runGuest(PROBE, ["/probe.wasm"]);
  assert.deepEqual(hello, { code: 0, stdout: "hello from wasm\n", stderr: "hello on stderr\n" });
  assert.equal(
    runGuest(PROBE, ["/probe.wasm", "args", "a b"]).stdout,
    "argv[0]=/probe.wasm\nargv[1]=args\nargv[2]=a b\n",
  );
  assert.equal(
    runGuest(PROBE, ["p", "env"], { env: ["PATH=/bin", "X=1"] }).stdout,
    "PATH=/bin\nX=1\n",
  );
  assert.equal(
    runGuest(PROBE, ["p", "stdin"], { stdin: source("one\ntwo\n") }).stdout,
    "one\ntwo\n",
  );
  assert.equal(runGuest(PROBE, ["p", "exit", "42"]).code, 42);
  assert.equal(runGuest(PROBE, ["p", "cwd"]).stdout, "/\n");
  assert.throws(() => runGuest(PROBE, ["p", "trap"]), WebAssembly.RuntimeError);
});

Deno.test("wasi-libc guest: files, directories and errno messages", () => {
  using root = new Root();
  Deno.mkdirSync(`${root.path}/work`);
  const r = fsops(root, "files");
  assert.equal(r.code, 0, r.stdout);
  assert.equal(
    r.stdout,
    [
      "tell 11",
      "seek 6",
      "read world",
      "pread Jello, offset still 11",
      "size 5 regular 1",
      "create again: File exists",
      "content Jello!",
      "write read-only: Bad file descriptor",
      "stat old name: No such file or directory",
      "renamed size 6",
      "truncated size 0",
      "mkdir again: File exists",
      "dir 1",
      "rmdir non-empty: Directory not empty",
      "unlink dir: Is a directory",
      "open dir for writing: Is a directory",
      "file as dir: Not a directory",
      "missing: No such file or directory",
      "rmdir file: Not a directory",
      "unlink again: No such file or directory",
      "relative exists 1",
      "",
    ].join("\n"),
  );
  assert.deepEqual([...Deno.readDirSync(`${root.path}/work`)], []);
});

Deno.test("wasi-libc guest: readdir goes through several fd_readdir calls", () => {
  using root = new Root();
  Deno.mkdirSync(`${root.path}/big`);
  // About 60 bytes an entry: 300 of them need several of wasi-libc's 4 KiB buffers.
  const names = Array.from({ length: 300 }, (_, i) => `${"n".repeat(30)}-${i}`);
  for (const name of names) Deno.writeTextFileSync(`${root.path}/big/${name}`, "");
  Deno.mkdirSync(`${root.path}/big/zdir`);
  const r = fsops(root, "list", "/big");
  assert.equal(r.code, 0, r.stdout);
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines[0], "303 entries");
  assert.deepEqual(
    lines.slice(1),
    [". dir", ".. dir", ...names.map((n) => `${n} file`), "zdir dir"].sort(),
  );
  assert.equal(fsops(root, "list", "/").stdout, "4 entries\n. dir\n.. dir\nbig dir\netc dir\n");
  assert.match(fsops(root, "list", "/etc/msg").stdout, /^opendir: Not a directory/);
});

Deno.test("wasi-libc guest: links, times, clocks, poll", () => {
  using root = new Root();
  Deno.mkdirSync(`${root.path}/work`);
  assert.equal(
    fsops(root, "links").stdout,
    [
      "readlink target.txt",
      "lstat link 1",
      "stat follows 1 size 6",
      "absolute symlink: Operation not permitted",
      "readlink a file: Invalid argument",
      "open nofollow: Symbolic link loop",
      "nlink 2",
      "",
    ].join("\n"),
  );
  assert.equal(
    fsops(root, "times").stdout,
    "atime 1000000000 mtime 1234567890.500\natime 1000000000 mtime 1500000000\n",
  );
  const clocks = fsops(root, "clocks");
  const realtime = Number(clocks.stdout.match(/^realtime (\d+)$/m)?.[1]);
  assert.ok(Math.abs(realtime - Date.now() / 1000) < 5, clocks.stdout);
  assert.match(clocks.stdout, /slept at least 50 ms 1\ncputime ok 1\nrandom 1\n$/);
  assert.equal(fsops(root, "poll").stdout, "poll stdin 1 revents 1\n");
});

Deno.test("wasi-libc guest: escapes out of the rootfs are refused", () => {
  using root = new Root();
  Deno.symlinkSync(`../${root.secret.split("/").at(-1)}`, `${root.path}/climb`);
  Deno.symlinkSync(root.secret, `${root.path}/hostlink`);
  for (
    const [path, error] of [
      ["/../secret", "Capabilities insufficient"],
      ["../../etc/hostname", "Capabilities insufficient"],
      ["/climb", "Capabilities insufficient"],
      ["/hostlink", "No such file or directory"],
      [root.secret, "No such file or directory"],
    ]
  ) {
    const r = fsops(root, "cat", path);
    assert.equal(r.code, 1, path);
    assert.equal(r.stdout, `${path}: ${error}\n`);
  }
  assert.equal(fsops(root, "cat", "/etc/../etc/msg").stdout, "inside the rootfs\n");
});
