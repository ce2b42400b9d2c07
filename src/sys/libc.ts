/**
 * The few libc calls Deno has no API for (mount, umount2, prctl, kill with any signal
 * number, waitpid for an adopted process, memfd and mappings for memory images, socket
 * options for `sockopt.ts`, getaddrinfo for `getaddrinfo.ts`), through Deno's FFI: one
 * library for the process, opened on first use.
 *
 * @module
 */

const SYMBOLS = {
  mount: { parameters: ["buffer", "buffer", "buffer", "usize", "buffer"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
  prctl: { parameters: ["i32", "usize", "usize", "usize", "usize"], result: "i32" },
  kill: { parameters: ["i32", "i32"], result: "i32" },
  // Called with WNOHANG only: a blocking waitpid would hold one of the few threads of
  // Deno's blocking pool per running container, which file operations share.
  waitpid: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  open: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  ioctl: { parameters: ["i32", "usize", "buffer"], result: "i32" },
  memfd_create: { parameters: ["buffer", "u32"], result: "i32" },
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  pwrite: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  madvise: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  mkdir: { parameters: ["buffer", "u32"], result: "i32" },
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
  setgroups: { parameters: ["usize", "buffer"], result: "i32" },
  setresuid: { parameters: ["u32", "u32", "u32"], result: "i32" },
  setresgid: { parameters: ["u32", "u32", "u32"], result: "i32" },
  // Calls without a glibc wrapper, through syscall(2) (x86-64 and arm64 numbers below).
  sys_open_tree: { name: "syscall", parameters: ["i64", "i32", "buffer", "u32"], result: "i64" },
  sys_seccomp: { name: "syscall", parameters: ["i64", "u32", "u32", "buffer"], result: "i64" },
  sys_move_mount: {
    name: "syscall",
    parameters: ["i64", "i32", "buffer", "i32", "buffer", "u32"],
    result: "i64",
  },
  sys_pidfd_open: { name: "syscall", parameters: ["i64", "i32", "u32"], result: "i64" },
  sys_pidfd_getfd: { name: "syscall", parameters: ["i64", "i32", "i32", "u32"], result: "i64" },
  sys_capset: { name: "syscall", parameters: ["i64", "buffer", "buffer"], result: "i64" },
  strerror: { parameters: ["i32"], result: "pointer" },
  // Socket options of Deno's sockets (sockopt.ts).
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  opendir: { parameters: ["buffer"], result: "pointer" },
  readdir: { parameters: ["pointer"], result: "pointer" },
  closedir: { parameters: ["pointer"], result: "i32" },
  // Name resolution (getaddrinfo.ts), on a thread of Deno's blocking pool: DNS may wait.
  getaddrinfo: {
    parameters: ["buffer", "pointer", "buffer", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  freeaddrinfo: { parameters: ["pointer"], result: "void" },
  gai_strerror: { parameters: ["i32"], result: "pointer" },
} as const;

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;
let refused = false;

/**
 * The library's symbols, opened on first use, for this module's wrappers and those of
 * `sockopt.ts` and `getaddrinfo.ts`. @throws where the process may not use FFI
 */
export function libc(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
  lib ??= Deno.dlopen("libc.so.6", SYMBOLS);
  return lib.symbols;
}

/** Whether the library can be opened here (not without `--allow-ffi`). */
export function libcAvailable(): boolean {
  if (lib !== undefined) return true;
  if (refused) return false;
  try {
    libc();
    return true;
  } catch {
    refused = true;
    return false;
  }
}

/**
 * Opens the library ahead (binding its symbols costs ~4-5 ms of CPU): a warm guest
 * runner does it before it says it is idle, off its container's start.
 */
export function loadLibc(): void {
  libc();
}

/** A failed system call, with its errno. */
export class SyscallError extends Error {
  /** The errno value. */
  readonly errno: number;
  /** Creates an error for `call` that failed with `errno`. */
  constructor(call: string, errno: number, detail: string) {
    const text = Deno.UnsafePointerView.getCString(libc().strerror(errno)!);
    super(`${call} ${detail}: ${text} (errno ${errno})`);
    this.name = "SyscallError";
    this.errno = errno;
  }
}

/** errno values we act on. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  ENXIO: 6,
  EAGAIN: 11,
  ENOMEM: 12,
  EBUSY: 16,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  EROFS: 30,
  ENOPROTOOPT: 92,
  EOPNOTSUPP: 95,
  EAFNOSUPPORT: 97,
  ENOBUFS: 105,
} as const;

function cstr(s: string | null): Uint8Array<ArrayBuffer> | null {
  if (s === null) return null;
  return new TextEncoder().encode(s + "\0") as Uint8Array<ArrayBuffer>;
}

/** The calling thread's errno, right after a failed call. */
export function errno(): number {
  const p = libc().__errno_location();
  return new Deno.UnsafePointerView(p!).getInt32();
}

/** mount(2). */
export function mount(
  source: string | null,
  target: string,
  fstype: string | null,
  flags: number,
  data: string | null,
): void {
  if (libc().mount(cstr(source), cstr(target), cstr(fstype), BigInt(flags), cstr(data)) !== 0) {
    throw new SyscallError("mount", errno(), `${source ?? "none"} on ${target} (${fstype ?? "-"})`);
  }
}

/** Syscall numbers (the same on x86-64 and arm64 from 424 on). */
const SYS = {
  open_tree: 428n,
  move_mount: 429n,
  pidfd_open: 434n,
  pidfd_getfd: 438n,
  capset: Deno.build.arch === "aarch64" ? 91n : 126n,
  seccomp: Deno.build.arch === "aarch64" ? 277n : 317n,
} as const;

const SECCOMP_SET_MODE_FILTER = 1;
/** seccomp(2) flag: the filter goes on every thread of the process. */
export const SECCOMP_FILTER_FLAG_TSYNC = 1;

/**
 * Sets `no_new_privs`, then installs the classic-BPF seccomp filter `filter` (a
 * `struct sock_filter[]`, 8 bytes an instruction) on every thread of this process.
 * `flags` are more `SECCOMP_FILTER_FLAG_*` bits (TSYNC is always set). Throws a
 * {@linkcode SyscallError}, or names the thread the kernel could not synchronise.
 */
export function seccompFilterAllThreads(filter: Uint8Array<ArrayBuffer>, flags = 0): void {
  if (libc().prctl(PR_SET_NO_NEW_PRIVS, 1n, 0n, 0n, 0n) !== 0) {
    throw new SyscallError("prctl", errno(), "PR_SET_NO_NEW_PRIVS");
  }
  // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
  const prog = new Uint8Array(16);
  const view = new DataView(prog.buffer);
  view.setUint16(0, filter.length / 8, true);
  view.setBigUint64(8, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(filter))), true);
  const r = Number(
    libc().sys_seccomp(
      SYS.seccomp,
      SECCOMP_SET_MODE_FILTER,
      SECCOMP_FILTER_FLAG_TSYNC | flags,
      prog,
    ),
  );
  if (r < 0) throw new SyscallError("seccomp", errno(), "SECCOMP_SET_MODE_FILTER (all threads)");
  if (r > 0) throw new Error(`seccomp: thread ${r} could not take the filter`);
}

/** open_tree(2) flags: a detached copy, of the submounts too, closed on exec. */
const OPEN_TREE_CLONE = 1;
const AT_RECURSIVE = 0x8000;
const AT_EMPTY_PATH = 0x1000;
const O_CLOEXEC = 0o2000000;
/** move_mount(2) flag: the source is the descriptor itself. */
const MOVE_MOUNT_F_EMPTY_PATH = 4;
const AT_FDCWD = -100;

/**
 * open_tree(2) with OPEN_TREE_CLONE: a descriptor of a detached copy of the mount at
 * `path` (with its submounts if `recursive`), which `move_mount` attaches anywhere,
 * in any mount namespace, until it is closed. `path` may be relative to `dirfd`.
 */
export function openTree(path: string, recursive: boolean, dirfd = AT_FDCWD): number {
  const flags = OPEN_TREE_CLONE | O_CLOEXEC | (recursive ? AT_RECURSIVE : 0) |
    (path === "" ? AT_EMPTY_PATH : 0);
  const fd = Number(libc().sys_open_tree(SYS.open_tree, dirfd, cstr(path), flags));
  if (fd < 0) throw new SyscallError("open_tree", errno(), path || `fd ${dirfd}`);
  return fd;
}

/** move_mount(2): attaches the detached mount `fd` at `target`. */
export function moveMount(fd: number, target: string): void {
  const r = libc().sys_move_mount(
    SYS.move_mount,
    fd,
    cstr(""),
    AT_FDCWD,
    cstr(target),
    MOVE_MOUNT_F_EMPTY_PATH,
  );
  if (Number(r) !== 0) throw new SyscallError("move_mount", errno(), `fd ${fd} on ${target}`);
}

/** A copy of descriptor `fd` of process `pid` (pidfd_open(2), pidfd_getfd(2)). */
export function takeFd(pid: number, fd: number): number {
  const pidfd = Number(libc().sys_pidfd_open(SYS.pidfd_open, pid, 0));
  if (pidfd < 0) throw new SyscallError("pidfd_open", errno(), `pid ${pid}`);
  try {
    const got = Number(libc().sys_pidfd_getfd(SYS.pidfd_getfd, pidfd, fd, 0));
    if (got < 0) throw new SyscallError("pidfd_getfd", errno(), `fd ${fd} of pid ${pid}`);
    return got;
  } finally {
    close(pidfd);
  }
}

/** mkdir(2). @throws {SyscallError} (EEXIST too) */
export function mkdir(path: string, mode: number): void {
  if (libc().mkdir(cstr(path), mode) !== 0) throw new SyscallError("mkdir", errno(), path);
}

/** The mode bits (type and permissions) of `path`, following symlinks (statx(2)). */
export function statMode(path: string): number {
  const buf = new Uint8Array(256);
  if (libc().statx(AT_FDCWD, cstr(path), 0, 2, /* STATX_MODE */ buf) !== 0) {
    throw new SyscallError("statx", errno(), path);
  }
  return new DataView(buf.buffer).getUint16(28, true);
}

/** setgroups(2) (glibc applies it to every thread of the process). */
export function setgroups(gids: readonly number[]): void {
  const list = new Uint32Array(gids.length === 0 ? 1 : gids.length);
  list.set(gids);
  if (libc().setgroups(BigInt(gids.length), new Uint8Array(list.buffer)) !== 0) {
    throw new SyscallError("setgroups", errno(), gids.join(","));
  }
}

/** setresgid(2) with all three ids (every thread, through glibc). */
export function setresgid(gid: number): void {
  if (libc().setresgid(gid, gid, gid) !== 0) throw new SyscallError("setresgid", errno(), `${gid}`);
}

/** setresuid(2) with all three ids (every thread, through glibc). */
export function setresuid(uid: number): void {
  if (libc().setresuid(uid, uid, uid) !== 0) throw new SyscallError("setresuid", errno(), `${uid}`);
}

/**
 * capset(2) of the calling thread: effective and permitted become `caps` (bit
 * numbers), inheritable none.
 */
export function capsetSelf(caps: readonly number[]): void {
  const header = new Uint32Array([0x20080522, 0]); // _LINUX_CAPABILITY_VERSION_3, this thread
  const data = new Uint32Array(6); // two {effective, permitted, inheritable}
  for (const cap of caps) {
    const word = cap >> 5, bit = 1 << (cap & 31);
    data[word * 3] |= bit;
    data[word * 3 + 1] |= bit;
  }
  const r = libc().sys_capset(
    SYS.capset,
    new Uint8Array(header.buffer),
    new Uint8Array(data.buffer),
  );
  if (Number(r) !== 0) throw new SyscallError("capset", errno(), caps.join(","));
}

/** umount2(2) flag: lazy unmount. */
export const MNT_DETACH = 2;
/** mount(2) flag: a bind mount. */
export const MS_BIND = 0x1000;
/** mount(2) flag, with MS_BIND: the submounts too. */
export const MS_REC = 0x4000;

/** umount2(2). */
export function umount2(target: string, flags: number): void {
  if (libc().umount2(cstr(target), flags) !== 0) {
    throw new SyscallError("umount", errno(), target);
  }
}

/** prctl option: become the subreaper of orphaned descendants. */
export const PR_SET_CHILD_SUBREAPER = 36;

/** prctl option: no privileges gained by execve (setuid files, file capabilities). */
export const PR_SET_NO_NEW_PRIVS = 38;
/** prctl option: drop a capability from the thread's bounding set. */
export const PR_CAPBSET_DROP = 24;

/** prctl(2) with one argument. */
export function prctl(option: number, arg: number): void {
  if (libc().prctl(option, BigInt(arg), 0n, 0n, 0n) !== 0) {
    throw new SyscallError("prctl", errno(), String(option));
  }
}

/** kill(2): sends signal number `signal` (0 probes) to `pid`. */
export function kill(pid: number, signal: number): void {
  if (libc().kill(pid, signal) !== 0) {
    throw new SyscallError("kill", errno(), `pid ${pid} signal ${signal}`);
  }
}

/** What {@linkcode waitpid} returns. */
export interface WaitResult {
  /** The pid reaped, or -1 if the call failed (ECHILD: not a child; EINTR). */
  pid: number;
  /** The raw wait status (see `decodeWaitStatus` in `src/native/wait.ts`). */
  status: number;
}

/** waitpid(2) option: return at once if no child has changed state. */
const WNOHANG = 1;
/** How often a waiter looks again when no SIGCHLD came (a missed or merged signal). */
const WAIT_POLL_MS = 250;

const childWaiters = new Set<() => void>();
const wakeChildWaiters = () => {
  for (const wake of [...childWaiters]) wake();
};

/** Resolves at the next SIGCHLD, or after {@linkcode WAIT_POLL_MS}. */
function nextChildEvent(): Promise<void> {
  return new Promise((resolve) => {
    if (childWaiters.size === 0) Deno.addSignalListener("SIGCHLD", wakeChildWaiters);
    const done = () => {
      clearTimeout(timer);
      childWaiters.delete(done);
      if (childWaiters.size === 0) Deno.removeSignalListener("SIGCHLD", wakeChildWaiters);
      resolve();
    };
    const timer = setTimeout(done, WAIT_POLL_MS);
    childWaiters.add(done);
  });
}

/**
 * Waits for `pid` (a child of this process) to exit and reaps it: waitpid(2) with
 * WNOHANG at every SIGCHLD (and every {@linkcode WAIT_POLL_MS}), so no thread is held
 * however many processes are waited for. A failure (ECHILD: not our child, or reaped
 * by someone else) resolves with `pid: -1`.
 */
export async function waitpid(pid: number): Promise<WaitResult> {
  const status = new Int32Array(1);
  for (;;) {
    const reaped = libc().waitpid(pid, status, WNOHANG);
    if (reaped !== 0) return { pid: reaped, status: status[0] };
    await nextChildEvent();
  }
}

/** open(2) flags. */
export const OpenFlag = {
  O_RDONLY: 0,
  O_WRONLY: 1,
  O_RDWR: 2,
  O_CREAT: 0o100,
  O_NONBLOCK: 0o4000,
  O_CLOEXEC: 0o2000000,
} as const;

/** open(2) (`mode`: of a file O_CREAT makes); returns the fd. @throws {SyscallError} */
export function open(path: string, flags: number, mode = 0): number {
  const fd = libc().open(cstr(path), flags, mode);
  if (fd < 0) throw new SyscallError("open", errno(), path);
  return fd;
}

/** read(2) into `buf`; returns the count (0 at end of file). @throws {SyscallError} */
export function read(fd: number, buf: Uint8Array<ArrayBuffer>): number {
  const n = Number(libc().read(fd, buf, BigInt(buf.length)));
  if (n < 0) throw new SyscallError("read", errno(), `fd ${fd}`);
  return n;
}

/** write(2) of `bytes`; returns the count written. @throws {SyscallError} */
export function write(fd: number, bytes: Uint8Array<ArrayBuffer>): number {
  const n = Number(libc().write(fd, bytes, BigInt(bytes.length)));
  if (n < 0) throw new SyscallError("write", errno(), `fd ${fd}`);
  return n;
}

/** ioctl(2) request FIONREAD: bytes ready to read (of a pipe, whichever end the fd is). */
const FIONREAD = 0x541b;

/** How many bytes sit unread in the pipe or FIFO of `fd`. @throws {SyscallError} */
export function unreadBytes(fd: number): number {
  const count = new Int32Array(1);
  if (libc().ioctl(fd, BigInt(FIONREAD), new Uint8Array(count.buffer)) !== 0) {
    throw new SyscallError("ioctl(FIONREAD)", errno(), `fd ${fd}`);
  }
  return count[0];
}

/**
 * ioctl(2) `request` whose argument is a struct in `arg` (the call may read and fill
 * it); returns the call's result (never negative). @throws {SyscallError}
 */
export function ioctlStruct(
  fd: number,
  request: bigint,
  arg: Uint8Array<ArrayBuffer>,
  what: string,
): number {
  const n = libc().ioctl(fd, request, arg);
  if (n < 0) throw new SyscallError(`ioctl(${what})`, errno(), `fd ${fd}`);
  return n;
}

/** close(2); errors are ignored (the fd is gone either way). */
export function close(fd: number): void {
  libc().close(fd);
}

/** memfd_create(2) with MFD_CLOEXEC; returns the fd. @throws {SyscallError} */
export function memfdCreate(name: string): number {
  const fd = libc().memfd_create(cstr(name), 0x1);
  if (fd < 0) throw new SyscallError("memfd_create", errno(), name);
  return fd;
}

/** ftruncate(2). @throws {SyscallError} */
export function ftruncate(fd: number, length: number): void {
  if (libc().ftruncate(fd, BigInt(length)) !== 0) {
    throw new SyscallError("ftruncate", errno(), `fd ${fd} to ${length} bytes`);
  }
}

/** pwrite(2) of all of `bytes` at `offset` (looping over short writes). @throws {SyscallError} */
export function pwriteAll(fd: number, bytes: Uint8Array, offset: number): void {
  let done = 0;
  while (done < bytes.length) {
    const part = bytes.subarray(done) as Uint8Array<ArrayBuffer>;
    const n = Number(libc().pwrite(fd, part, BigInt(part.length), BigInt(offset + done)));
    if (n <= 0) throw new SyscallError("pwrite", errno(), `fd ${fd} at ${offset + done}`);
    done += n;
  }
}

/** pread(2) into `buf` at `offset`; returns the count (short at end of file). @throws {SyscallError} */
export function pread(fd: number, buf: Uint8Array<ArrayBuffer>, offset: number): number {
  const n = Number(libc().pread(fd, buf, BigInt(buf.length), BigInt(offset)));
  if (n < 0) throw new SyscallError("pread", errno(), `fd ${fd} at ${offset}`);
  return n;
}

const PROT_READ = 0x1;
const PROT_READ_WRITE = 0x1 | 0x2;
const MAP_SHARED = 0x01;
const MAP_PRIVATE_FIXED = 0x02 | 0x10;
/** `(void *) -1`, what mmap returns on failure. */
const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

/**
 * mmap(2) of `length` bytes of `fd` (from offset 0), read-only and shared, wherever
 * the kernel puts it. @throws {SyscallError}
 */
export function mmapSharedReadOnly(length: number, fd: number): Deno.PointerObject {
  const got = libc().mmap(null, BigInt(length), PROT_READ, MAP_SHARED, fd, 0n);
  if (got === null || BigInt(Deno.UnsafePointer.value(got)) === MAP_FAILED) {
    throw new SyscallError("mmap", errno(), `fd ${fd}, ${length} bytes read-only`);
  }
  return got;
}
const MADV_DONTNEED = 4;

/**
 * mmap(2) of `length` bytes of `fd` (from offset 0), readable, writable, private
 * (copy-on-write) and fixed at `address`, replacing whatever was mapped there.
 * @throws {SyscallError}
 */
export function mmapPrivateFixed(address: Deno.PointerObject, length: number, fd: number): void {
  const got = libc().mmap(address, BigInt(length), PROT_READ_WRITE, MAP_PRIVATE_FIXED, fd, 0n);
  if (Deno.UnsafePointer.value(got) !== Deno.UnsafePointer.value(address)) {
    throw new SyscallError("mmap", errno(), `fd ${fd} over ${length} bytes`);
  }
}

/**
 * madvise(2) MADV_DONTNEED over `length` bytes at `address`: private pages are dropped,
 * so the range reads as its file again (zeros for anonymous memory). @throws {SyscallError}
 */
export function madviseDontNeed(address: Deno.PointerObject, length: number): void {
  if (libc().madvise(address, BigInt(length), MADV_DONTNEED) !== 0) {
    throw new SyscallError("madvise(MADV_DONTNEED)", errno(), `${length} bytes`);
  }
}

const MADV_HUGEPAGE = 14;

/**
 * madvise(2) MADV_HUGEPAGE over `length` bytes at `address`: anonymous pages there may
 * be transparent huge pages (2 MiB) from the next fault on, where the system allows
 * it (`/sys/kernel/mm/transparent_hugepage/enabled`). False if refused (no THP).
 */
export function madviseHugePage(address: Deno.PointerObject, length: number): boolean {
  return libc().madvise(address, BigInt(length), MADV_HUGEPAGE) === 0;
}

/** munmap(2); errors are ignored (nothing is mapped there either way). */
export function munmap(address: Deno.PointerObject, length: number): void {
  libc().munmap(address, BigInt(length));
}
