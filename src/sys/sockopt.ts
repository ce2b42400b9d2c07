/**
 * Socket options of Deno's sockets, through libc's getsockopt(2) and setsockopt(2) over
 * Deno's FFI: Deno has no API for buffer sizes, hop limits or keep-alive timings, and
 * (since Deno 2) does not tell which file descriptor a socket is.
 *
 * **Finding the descriptor.** {@linkcode findSocketFd} lists this process's descriptors
 * (`/proc/self/fd`, which a process may always read, whatever its uid) and asks each
 * with getsockname(2)/getpeername(2) for its addresses: a connection is the one socket
 * with its local and remote address, a listener or a datagram socket the one bound to
 * its local address with no peer (a listener also listening, `SO_ACCEPTCONN`). Two
 * distinct sockets matching (only possible with `SO_REUSEPORT`, or `SO_REUSEADDR` for
 * UDP) is an error rather than a guess. The scan costs a few system calls a descriptor
 * (about 1 ms with 120 open), once per socket. A descriptor found is only a hint for later calls: {@linkcode socketMatches}
 * checks it again before each use, since a descriptor closed underneath is reused.
 *
 * **Constants.** `SOL_SOCKET`, the `SO_*`, `IP_*`, `IPV6_*` and `TCP_*` option numbers
 * and the `sockaddr` layouts below are those of Linux on x86-64 and arm64 alike (both
 * use the generic `asm-generic/socket.h` values; only alpha, MIPS, PA-RISC and SPARC
 * differ).
 *
 * Opened lazily, and only usable where the process may use FFI (`--allow-ffi`):
 * {@linkcode socketOptionsAvailable} says whether it may.
 *
 * @module
 */

import type { Ipv4Bytes, Ipv6Words } from "./getaddrinfo.ts";
import { close, errno, libc, libcAvailable, SyscallError } from "./libc.ts";

/**
 * Whether this process may set and read socket options: false where Deno refuses FFI
 * (a runner without `--allow-ffi`) or libc cannot be opened, and then it never asks
 * again.
 */
export function socketOptionsAvailable(): boolean {
  return libcAvailable();
}

/** Option levels (`SOL_SOCKET`, `IPPROTO_*`). */
const SOL_SOCKET = 1;
const IPPROTO_IP = 0;
const IPPROTO_TCP = 6;
const IPPROTO_IPV6 = 41;

/** A socket option: its level and number, for getsockopt(2)/setsockopt(2). */
export interface SocketOption {
  /** The option's name, for error messages. */
  readonly name: string;
  /** The level (`SOL_SOCKET`, `IPPROTO_TCP`, …). */
  readonly level: number;
  /** The option number at that level. */
  readonly option: number;
}

/** The options the WASI sockets host sets and reads (all of them `int`-valued). */
export const SockOpt = {
  /** Receive buffer size, bytes (the kernel keeps, and reports, twice what was set). */
  SO_RCVBUF: { name: "SO_RCVBUF", level: SOL_SOCKET, option: 8 },
  /** Send buffer size, bytes (twice what was set, as `SO_RCVBUF`). */
  SO_SNDBUF: { name: "SO_SNDBUF", level: SOL_SOCKET, option: 7 },
  /** Idle time before the first keep-alive probe, seconds (1 to 32767 on Linux). */
  TCP_KEEPIDLE: { name: "TCP_KEEPIDLE", level: IPPROTO_TCP, option: 4 },
  /** Time between keep-alive probes, seconds (1 to 32767). */
  TCP_KEEPINTVL: { name: "TCP_KEEPINTVL", level: IPPROTO_TCP, option: 5 },
  /** Unanswered keep-alive probes before the connection is dropped (1 to 127). */
  TCP_KEEPCNT: { name: "TCP_KEEPCNT", level: IPPROTO_TCP, option: 6 },
  /** Time to live of IPv4 packets sent (1 to 255). */
  IP_TTL: { name: "IP_TTL", level: IPPROTO_IP, option: 2 },
  /** Hop limit of unicast IPv6 packets sent (1 to 255; -1: the default). */
  IPV6_UNICAST_HOPS: { name: "IPV6_UNICAST_HOPS", level: IPPROTO_IPV6, option: 16 },
} as const satisfies Record<string, SocketOption>;

/** Options that identify a socket when looking for its descriptor. */
const SO_TYPE = 3;
const SO_ACCEPTCONN = 30;

/** getsockopt(2) of an `int` option. @throws {SyscallError} */
export function getSocketOption(fd: number, opt: SocketOption): number {
  const value = intOption(fd, opt.level, opt.option);
  if (value === null) throw new SyscallError("getsockopt", errno(), `${opt.name} of fd ${fd}`);
  return value;
}

/** setsockopt(2) of an `int` option. @throws {SyscallError} */
export function setSocketOption(fd: number, opt: SocketOption, value: number): void {
  const v = new Int32Array([value]);
  if (libc().setsockopt(fd, opt.level, opt.option, new Uint8Array(v.buffer), 4) !== 0) {
    throw new SyscallError("setsockopt", errno(), `${opt.name} = ${value} on fd ${fd}`);
  }
}

/** `AF_INET`, `AF_INET6`. */
const AF_INET = 2;
const AF_INET6 = 10;
/** `SOCK_STREAM`, `SOCK_DGRAM`, and `SOCK_CLOEXEC` (a flag of socket(2)'s type). */
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;

/** TCP (stream) or UDP (datagram). */
export type SocketKind = "stream" | "datagram";

/** One end of an IP socket: an address (as getaddrinfo.ts gives them) and a port. */
export type SocketEnd =
  | { family: "ipv4"; bytes: Ipv4Bytes; port: number }
  | { family: "ipv6"; words: Ipv6Words; port: number };

/**
 * A new socket of `family` and `kind`, for nothing but its options (closed on exec;
 * the caller closes it). @throws {SyscallError}
 */
export function openSocket(family: "ipv4" | "ipv6", kind: SocketKind): number {
  const fd = libc().socket(
    family === "ipv4" ? AF_INET : AF_INET6,
    (kind === "stream" ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC,
    0,
  );
  if (fd < 0) throw new SyscallError("socket", errno(), `${family} ${kind}`);
  return fd;
}

/** close(2); errors are ignored (the fd is gone either way). */
export function closeSocket(fd: number): void {
  close(fd);
}

/** What {@linkcode findSocketFd} looks for. */
export interface SocketQuery {
  /** TCP or UDP. */
  kind: SocketKind;
  /** The address the socket is bound to. */
  local: SocketEnd;
  /** The peer of a connection; absent for a listener or an unconnected datagram socket. */
  remote?: SocketEnd;
  /** A TCP listener (`SO_ACCEPTCONN`). */
  listening?: boolean;
}

/** `sockaddr_storage`'s size: room for any address. */
const SOCKADDR_SIZE = 128;

/** The address getsockname(2) or getpeername(2) gives for `fd`, or null (none, or not an IP socket). */
function endOf(fd: number, peer: boolean): SocketEnd | null {
  const buf = new Uint8Array(SOCKADDR_SIZE);
  const len = new Uint32Array([SOCKADDR_SIZE]);
  const call = peer ? libc().getpeername : libc().getsockname;
  if (call(fd, buf, new Uint8Array(len.buffer)) !== 0) return null;
  const view = new DataView(buf.buffer);
  const port = view.getUint16(2); // network order
  switch (view.getUint16(0, true)) {
    case AF_INET: // sockaddr_in: family, port, address (4 bytes)
      return { family: "ipv4", bytes: [buf[4], buf[5], buf[6], buf[7]], port };
    case AF_INET6: { // sockaddr_in6: family, port, flowinfo (4), address (16), scope id
      const words: number[] = [];
      for (let i = 0; i < 8; i++) words.push(view.getUint16(8 + 2 * i));
      return { family: "ipv6", words: words as Ipv6Words, port };
    }
    default:
      return null;
  }
}

function sameEnd(a: SocketEnd | null, b: SocketEnd): boolean {
  if (a === null || a.family !== b.family || a.port !== b.port) return false;
  const x = a.family === "ipv4" ? a.bytes : a.words;
  const y = b.family === "ipv4" ? b.bytes : b.words;
  return x.every((v, i) => v === y[i]);
}

/** An `int` option, or null (errno says why) if the descriptor has none (not a socket, closed). */
function intOption(fd: number, level: number, option: number): number | null {
  const value = new Int32Array(1);
  const len = new Uint32Array([4]);
  const r = libc().getsockopt(
    fd,
    level,
    option,
    new Uint8Array(value.buffer),
    new Uint8Array(len.buffer),
  );
  return r === 0 ? value[0] : null;
}

/** Whether descriptor `fd` is the socket `query` describes (its kind, addresses, role). */
export function socketMatches(fd: number, query: SocketQuery): boolean {
  const type = intOption(fd, SOL_SOCKET, SO_TYPE);
  if (type !== (query.kind === "stream" ? SOCK_STREAM : SOCK_DGRAM)) return false;
  if (!sameEnd(endOf(fd, false), query.local)) return false;
  const peer = endOf(fd, true);
  if (query.remote === undefined ? peer !== null : !sameEnd(peer, query.remote)) return false;
  if (query.kind === "stream" && query.remote === undefined) {
    return (intOption(fd, SOL_SOCKET, SO_ACCEPTCONN) === 1) === (query.listening === true);
  }
  return true;
}

/** `struct dirent` (glibc, 64-bit): `d_ino`, `d_off`, `d_reclen`, `d_type`, then `d_name`. */
const DIRENT_NAME = 19;
const FD_DIR = "/proc/self/fd";

/** The descriptors open in this process (some may close meanwhile). @throws {SyscallError} */
function openFds(): number[] {
  const dir = libc().opendir(new TextEncoder().encode(FD_DIR + "\0"));
  if (dir === null) throw new SyscallError("opendir", errno(), FD_DIR);
  const fds: number[] = [];
  try {
    for (let ent = libc().readdir(dir); ent !== null; ent = libc().readdir(dir)) {
      const name = Deno.UnsafePointerView.getCString(ent, DIRENT_NAME);
      if (/^\d+$/.test(name)) fds.push(Number(name));
    }
  } finally {
    libc().closedir(dir);
  }
  return fds;
}

/** What `/proc/self/fd/<fd>` links to (`socket:[inode]` for a socket), or null. */
function fdTarget(fd: number): string | null {
  const buf = new Uint8Array(64);
  const n = Number(libc().readlink(new TextEncoder().encode(`${FD_DIR}/${fd}\0`), buf, 64n));
  return n < 0 ? null : new TextDecoder().decode(buf.subarray(0, n));
}

/** Why no descriptor could be told for a socket. */
export class SocketNotFound extends Error {
  /** `query` matched no descriptor, or (with `found` > 1) several distinct sockets. */
  constructor(query: SocketQuery, found: number) {
    const end = (e: SocketEnd) =>
      `${e.family === "ipv4" ? e.bytes.join(".") : e.words.map((w) => w.toString(16)).join(":")}` +
      `:${e.port}`;
    const what = `${query.kind} socket ${end(query.local)}` +
      (query.remote ? ` to ${end(query.remote)}` : query.listening ? " (listening)" : "");
    super(
      found === 0
        ? `no descriptor of this process is the ${what}`
        : `${found} distinct sockets of this process match the ${what}`,
    );
    this.name = "SocketNotFound";
  }
}

/**
 * The descriptor of the socket `query` describes, among all of this process's.
 *
 * @throws {SocketNotFound} when none matches, or several distinct sockets do
 * @throws {SyscallError} when `/proc/self/fd` cannot be read
 */
export function findSocketFd(query: SocketQuery): number {
  const found = openFds().filter((fd) => socketMatches(fd, query));
  if (found.length === 1) return found[0];
  if (found.length === 0) throw new SocketNotFound(query, 0);
  // Several descriptors of one socket (dup(2)) are as good as each other.
  const sockets = new Set(found.map(fdTarget));
  if (sockets.size === 1 && !sockets.has(null)) return found[0];
  throw new SocketNotFound(query, Math.max(sockets.size, 2));
}
