/**
 * WASI preview1 `errno` values, and how host errors (as Deno throws them) map to them.
 *
 * @module
 */

import { PathResolutionError } from "../rootfs_path.ts";

/** No error occurred. */
export const ESUCCESS = 0;
/** Argument list too long. */
export const E2BIG = 1;
/** Permission denied. */
export const EACCES = 2;
/** Address in use. */
export const EADDRINUSE = 3;
/** Address not available. */
export const EADDRNOTAVAIL = 4;
/** Address family not supported. */
export const EAFNOSUPPORT = 5;
/** Resource unavailable, or operation would block. */
export const EAGAIN = 6;
/** Connection already in progress. */
export const EALREADY = 7;
/** Bad file descriptor. */
export const EBADF = 8;
/** Bad message. */
export const EBADMSG = 9;
/** Device or resource busy. */
export const EBUSY = 10;
/** Operation canceled. */
export const ECANCELED = 11;
/** No child processes. */
export const ECHILD = 12;
/** Connection aborted. */
export const ECONNABORTED = 13;
/** Connection refused. */
export const ECONNREFUSED = 14;
/** Connection reset. */
export const ECONNRESET = 15;
/** Resource deadlock would occur. */
export const EDEADLK = 16;
/** Destination address required. */
export const EDESTADDRREQ = 17;
/** Mathematics argument out of domain of function. */
export const EDOM = 18;
/** Disk quota exceeded. */
export const EDQUOT = 19;
/** File exists. */
export const EEXIST = 20;
/** Bad address. */
export const EFAULT = 21;
/** File too large. */
export const EFBIG = 22;
/** Host is unreachable. */
export const EHOSTUNREACH = 23;
/** Identifier removed. */
export const EIDRM = 24;
/** Illegal byte sequence. */
export const EILSEQ = 25;
/** Operation in progress. */
export const EINPROGRESS = 26;
/** Interrupted function. */
export const EINTR = 27;
/** Invalid argument. */
export const EINVAL = 28;
/** I/O error. */
export const EIO = 29;
/** Socket is connected. */
export const EISCONN = 30;
/** Is a directory. */
export const EISDIR = 31;
/** Too many levels of symbolic links. */
export const ELOOP = 32;
/** File descriptor value too large. */
export const EMFILE = 33;
/** Too many links. */
export const EMLINK = 34;
/** Message too large. */
export const EMSGSIZE = 35;
/** Multihop attempted. */
export const EMULTIHOP = 36;
/** Filename too long. */
export const ENAMETOOLONG = 37;
/** Network is down. */
export const ENETDOWN = 38;
/** Connection aborted by network. */
export const ENETRESET = 39;
/** Network unreachable. */
export const ENETUNREACH = 40;
/** Too many files open in system. */
export const ENFILE = 41;
/** No buffer space available. */
export const ENOBUFS = 42;
/** No such device. */
export const ENODEV = 43;
/** No such file or directory. */
export const ENOENT = 44;
/** Executable file format error. */
export const ENOEXEC = 45;
/** No locks available. */
export const ENOLCK = 46;
/** Reserved. */
export const ENOLINK = 47;
/** Not enough space. */
export const ENOMEM = 48;
/** No message of the desired type. */
export const ENOMSG = 49;
/** Protocol not available. */
export const ENOPROTOOPT = 50;
/** No space left on device. */
export const ENOSPC = 51;
/** Function not supported. */
export const ENOSYS = 52;
/** The socket is not connected. */
export const ENOTCONN = 53;
/** Not a directory or a symbolic link to a directory. */
export const ENOTDIR = 54;
/** Directory not empty. */
export const ENOTEMPTY = 55;
/** State not recoverable. */
export const ENOTRECOVERABLE = 56;
/** Not a socket. */
export const ENOTSOCK = 57;
/** Not supported, or operation not supported on socket. */
export const ENOTSUP = 58;
/** Inappropriate I/O control operation. */
export const ENOTTY = 59;
/** No such device or address. */
export const ENXIO = 60;
/** Value too large to be stored in data type. */
export const EOVERFLOW = 61;
/** Previous owner died. */
export const EOWNERDEAD = 62;
/** Operation not permitted. */
export const EPERM = 63;
/** Broken pipe. */
export const EPIPE = 64;
/** Protocol error. */
export const EPROTO = 65;
/** Protocol not supported. */
export const EPROTONOSUPPORT = 66;
/** Protocol wrong type for socket. */
export const EPROTOTYPE = 67;
/** Result too large. */
export const ERANGE = 68;
/** Read-only file system. */
export const EROFS = 69;
/** Invalid seek. */
export const ESPIPE = 70;
/** No such process. */
export const ESRCH = 71;
/** Reserved. */
export const ESTALE = 72;
/** Connection timed out. */
export const ETIMEDOUT = 73;
/** Text file busy. */
export const ETXTBSY = 74;
/** Cross-device link. */
export const EXDEV = 75;
/** Extension: Capabilities insufficient. */
export const ENOTCAPABLE = 76;

/** Host (Linux) error names, as in Deno's `error.code`, and their WASI errno. */
const HOST_CODES: Readonly<Record<string, number>> = {
  E2BIG,
  EACCES,
  EADDRINUSE,
  EADDRNOTAVAIL,
  EAFNOSUPPORT,
  EAGAIN,
  EALREADY,
  EBADF,
  EBADMSG,
  EBUSY,
  ECANCELED,
  ECHILD,
  ECONNABORTED,
  ECONNREFUSED,
  ECONNRESET,
  EDEADLK,
  EDESTADDRREQ,
  EDOM,
  EDQUOT,
  EEXIST,
  EFAULT,
  EFBIG,
  EHOSTUNREACH,
  EIDRM,
  EILSEQ,
  EINPROGRESS,
  EINTR,
  EINVAL,
  EIO,
  EISCONN,
  EISDIR,
  ELOOP,
  EMFILE,
  EMLINK,
  EMSGSIZE,
  EMULTIHOP,
  ENAMETOOLONG,
  ENETDOWN,
  ENETRESET,
  ENETUNREACH,
  ENFILE,
  ENOBUFS,
  ENODEV,
  ENOENT,
  ENOEXEC,
  ENOLCK,
  ENOLINK,
  ENOMEM,
  ENOMSG,
  ENOPROTOOPT,
  ENOSPC,
  ENOSYS,
  ENOTCONN,
  ENOTDIR,
  ENOTEMPTY,
  ENOTRECOVERABLE,
  ENOTSOCK,
  ENOTSUP,
  EOPNOTSUPP: ENOTSUP,
  ENOTTY,
  ENXIO,
  EOVERFLOW,
  EOWNERDEAD,
  EPERM,
  EPIPE,
  EPROTO,
  EPROTONOSUPPORT,
  EPROTOTYPE,
  ERANGE,
  EROFS,
  ESPIPE,
  ESRCH,
  ESTALE,
  ETIMEDOUT,
  ETXTBSY,
  EWOULDBLOCK: EAGAIN,
  EXDEV,
};

/** Deno error classes that may come without an `error.code`, and their errno. */
const DENO_ERRORS: readonly [new (...args: never[]) => Error, number][] = [
  [Deno.errors.NotFound, ENOENT],
  [Deno.errors.AlreadyExists, EEXIST],
  [Deno.errors.PermissionDenied, EACCES],
  // Deno's own permission checks: the runner may not touch that host path.
  [Deno.errors.NotCapable, ENOTCAPABLE],
  [Deno.errors.IsADirectory, EISDIR],
  [Deno.errors.NotADirectory, ENOTDIR],
  [Deno.errors.FilesystemLoop, ELOOP],
  [Deno.errors.BrokenPipe, EPIPE],
  [Deno.errors.Interrupted, EINTR],
  [Deno.errors.WouldBlock, EAGAIN],
  [Deno.errors.TimedOut, ETIMEDOUT],
  [Deno.errors.Busy, EBUSY],
  [Deno.errors.NotSupported, ENOTSUP],
  [Deno.errors.InvalidData, EILSEQ],
  [Deno.errors.BadResource, EBADF],
  [Deno.errors.WriteZero, EIO],
  [Deno.errors.UnexpectedEof, EIO],
];

/** An errno a host function returns to the guest: thrown inside the host, caught at the import. */
export class WasiError extends Error {
  /** The WASI errno. */
  readonly errno: number;

  /** An error that makes the import return `errno`; `message` says why (for debugging). */
  constructor(errno: number, message = `WASI errno ${errno}`) {
    super(message);
    this.name = "WasiError";
    this.errno = errno;
  }
}

/**
 * The WASI errno for an error a host operation threw, or undefined if it is not a host
 * error (a bug in the host, which should not be hidden from the logs).
 *
 * Confinement refusals of the rootfs resolver are `ENOTCAPABLE`, as uvwasi (node:wasi)
 * reports them: the guest lacks the capability, whatever the host file is.
 */
export function errnoOf(err: unknown): number | undefined {
  if (err instanceof WasiError) return err.errno;
  if (err instanceof PathResolutionError) {
    return err.isEscape ? ENOTCAPABLE : HOST_CODES[err.code] ?? EINVAL;
  }
  if (!(err instanceof Error)) return undefined;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string" && Object.hasOwn(HOST_CODES, code)) return HOST_CODES[code];
  for (const [type, errno] of DENO_ERRORS) if (err instanceof type) return errno;
  // Deno reports invalid arguments of OS calls (a seek before 0, …) as TypeError with
  // code EINVAL, handled above; other errors with an OS error code are still host errors.
  if (/\(os error \d+\)/.test(err.message)) return EIO;
  return undefined;
}
