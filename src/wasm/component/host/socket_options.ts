/**
 * The socket options of `wasi:sockets` (buffer sizes, hop limit, keep-alive timings) on
 * the kernel's socket under a Deno one, through `src/sys/sockopt.ts`: what wasmtime
 * gives a guest, which sets and reads them with setsockopt(2)/getsockopt(2).
 *
 * **Values** as wasmtime has them: 0 is `invalid-argument`; any other value is taken,
 * clamped to what Linux accepts (buffer sizes to 1 … 2³¹−1 bytes, keep-alive times to
 * 1 … 32767 s, rounded down to whole seconds, the keep-alive count to 1 … 127); a
 * buffer size reads back as half what the kernel reports (Linux doubles the value set,
 * for its bookkeeping), so a size within the kernel's limits reads back as set; a
 * setsockopt refused with `ENOBUFS` is taken as clamped. The hop limit is `IP_TTL` on
 * an IPv4 socket, `IPV6_UNICAST_HOPS` on an IPv6 one.
 *
 * **Before the socket exists.** WASI creates a socket before it binds or connects it;
 * Deno makes the kernel's socket only then (`Deno.listen`, `Deno.connect`,
 * `Deno.listenDatagram`). A value set before is kept and applied as soon as the socket
 * exists (right after a bind or listen; for a connection, once connected, so a
 * connection's first packets go with the kernel's defaults); a value read before comes
 * from a socket of the same kind made to read it, with the values set so far applied,
 * so it reads what the socket will have. An accepted connection takes its listener's
 * values from the kernel.
 *
 * **Where FFI is refused** (a process without `--allow-ffi`), or this process's
 * descriptors cannot be listed, each option is `not-supported`, as before the host had
 * them.
 *
 * @module
 */

import { Errno, SyscallError } from "../../../sys/libc.ts";
import {
  closeSocket,
  findSocketFd,
  getSocketOption,
  openSocket,
  setSocketOption,
  type SocketKind,
  socketMatches,
  type SocketOption,
  socketOptionsAvailable,
  type SocketQuery,
  SockOpt,
} from "../../../sys/sockopt.ts";

/** The `error-code`s (of `wasi:sockets/network`) an option answers with. */
export type OptionErrorCode =
  | "invalid-argument"
  | "invalid-state"
  | "not-supported"
  | "out-of-memory"
  | "new-socket-limit"
  | "unknown";
type ErrorCode = OptionErrorCode;
type AddressFamily = "ipv4" | "ipv6";

/** A socket that exists: its Deno object, and what identifies it to the kernel. */
export interface LiveSocket {
  /** The Deno object (its descriptor is cached with it). */
  readonly handle: object;
  /** Its kind and addresses, to find and check its descriptor. */
  query(): SocketQuery;
}

/** Where an option goes: a socket that exists, or (null) the one to be. */
export type OptionTarget = LiveSocket | null;

/** Limits Linux puts on the values (wider values are clamped to these, as wasmtime does). */
const MAX_BUFFER = 0x7fff_ffff;
const NANOS_PER_SECOND = 1_000_000_000n;
/** `MAX_TCP_KEEPIDLE` and `MAX_TCP_KEEPINTVL`, seconds. */
const MAX_KEEPALIVE_SECONDS = 32767n;
/** `MAX_TCP_KEEPCNT`. */
const MAX_KEEPALIVE_COUNT = 127;
const MAX_HOP_LIMIT = 255;

/** The descriptor last found for each Deno socket (checked again before each use). */
const FDS = new WeakMap<object, number>();

/** Maps a failed call of `sys/sockopt.ts` to a WASI `error-code`. */
function errorCodeOf(err: unknown): ErrorCode {
  if (!(err instanceof SyscallError)) return "unknown";
  switch (err.errno) {
    case Errno.EINVAL:
      return "invalid-argument";
    case Errno.ENOPROTOOPT:
    case Errno.EOPNOTSUPP:
    case Errno.EAFNOSUPPORT:
      return "not-supported";
    case Errno.ENOMEM:
    case Errno.ENOBUFS:
      return "out-of-memory";
    case Errno.EMFILE:
    case Errno.ENFILE:
      return "new-socket-limit";
    default:
      return "unknown";
  }
}

/**
 * The descriptor of `socket`: the one found before if it still is that socket, else
 * found again. Not found (no `/proc/self/fd`, or several sockets alike) is
 * `not-supported`: this host cannot tell which socket to set.
 */
export function descriptorOf(socket: LiveSocket): number {
  const query = socket.query();
  const cached = FDS.get(socket.handle);
  if (cached !== undefined && socketMatches(cached, query)) return cached;
  let fd: number;
  try {
    fd = findSocketFd(query);
  } catch {
    throw "not-supported" satisfies ErrorCode;
  }
  FDS.set(socket.handle, fd);
  return fd;
}

/** The options of one WASI socket, and the values set before its kernel socket exists. */
export class SocketOptions {
  readonly #family: AddressFamily;
  readonly #kind: SocketKind;
  /** Values (as setsockopt takes them) set before the socket existed. */
  #pending = new Map<SocketOption, number>();

  /** The options of a socket of `family` and `kind`. */
  constructor(family: AddressFamily, kind: SocketKind) {
    this.#family = family;
    this.#kind = kind;
  }

  /** Whether values wait for the socket ({@linkcode apply}). */
  get pending(): boolean {
    return this.#pending.size > 0;
  }

  /**
   * Sets what was set before `socket` existed on it.
   * @throws {ErrorCode} as a setter would
   */
  apply(socket: LiveSocket): void {
    if (this.#pending.size === 0) return;
    const fd = descriptorOf(socket);
    for (const [opt, value] of this.#pending) set(fd, opt, value);
    this.#pending.clear();
  }

  #get(target: () => OptionTarget, opt: SocketOption): number {
    if (!socketOptionsAvailable()) throw "not-supported" satisfies ErrorCode;
    const socket = target();
    if (socket !== null) {
      try {
        return getSocketOption(descriptorOf(socket), opt);
      } catch (err) {
        throw typeof err === "string" ? err : errorCodeOf(err);
      }
    }
    let fd: number;
    try {
      fd = openSocket(this.#family, this.#kind);
    } catch (err) {
      throw errorCodeOf(err);
    }
    try {
      const value = this.#pending.get(opt);
      if (value !== undefined) set(fd, opt, value);
      return getSocketOption(fd, opt);
    } catch (err) {
      throw typeof err === "string" ? err : errorCodeOf(err);
    } finally {
      closeSocket(fd);
    }
  }

  #set(target: () => OptionTarget, opt: SocketOption, value: number): void {
    if (!socketOptionsAvailable()) throw "not-supported" satisfies ErrorCode;
    const socket = target();
    if (socket === null) {
      // Applied in the order first set (a later value replaces an earlier one).
      this.#pending.set(opt, value);
      return;
    }
    set(descriptorOf(socket), opt, value);
  }

  /** The `receive-buffer-size` method. */
  receiveBufferSize(target: () => OptionTarget): bigint {
    return BigInt(Math.floor(this.#get(target, SockOpt.SO_RCVBUF) / 2));
  }
  /** The `set-receive-buffer-size` method. */
  setReceiveBufferSize(target: () => OptionTarget, value: bigint): void {
    this.#set(target, SockOpt.SO_RCVBUF, bufferSize(value));
  }
  /** The `send-buffer-size` method. */
  sendBufferSize(target: () => OptionTarget): bigint {
    return BigInt(Math.floor(this.#get(target, SockOpt.SO_SNDBUF) / 2));
  }
  /** The `set-send-buffer-size` method. */
  setSendBufferSize(target: () => OptionTarget, value: bigint): void {
    this.#set(target, SockOpt.SO_SNDBUF, bufferSize(value));
  }
  /** The `keep-alive-idle-time` method (nanoseconds). */
  keepAliveIdleTime(target: () => OptionTarget): bigint {
    return BigInt(this.#get(target, SockOpt.TCP_KEEPIDLE)) * NANOS_PER_SECOND;
  }
  /** The `set-keep-alive-idle-time` method. */
  setKeepAliveIdleTime(target: () => OptionTarget, value: bigint): void {
    this.#set(target, SockOpt.TCP_KEEPIDLE, keepAliveSeconds(value));
  }
  /** The `keep-alive-interval` method (nanoseconds). */
  keepAliveInterval(target: () => OptionTarget): bigint {
    return BigInt(this.#get(target, SockOpt.TCP_KEEPINTVL)) * NANOS_PER_SECOND;
  }
  /** The `set-keep-alive-interval` method. */
  setKeepAliveInterval(target: () => OptionTarget, value: bigint): void {
    this.#set(target, SockOpt.TCP_KEEPINTVL, keepAliveSeconds(value));
  }
  /** The `keep-alive-count` method. */
  keepAliveCount(target: () => OptionTarget): number {
    return this.#get(target, SockOpt.TCP_KEEPCNT);
  }
  /** The `set-keep-alive-count` method. */
  setKeepAliveCount(target: () => OptionTarget, value: number): void {
    if (!Number.isInteger(value) || value <= 0) throw "invalid-argument" satisfies ErrorCode;
    this.#set(target, SockOpt.TCP_KEEPCNT, Math.min(value, MAX_KEEPALIVE_COUNT));
  }
  /** The `hop-limit` (TCP) and `unicast-hop-limit` (UDP) methods. */
  hopLimit(target: () => OptionTarget): number {
    const value = this.#get(target, this.#hopOption());
    if (value < 0 || value > MAX_HOP_LIMIT) throw "not-supported" satisfies ErrorCode;
    return value;
  }
  /** The `set-hop-limit` and `set-unicast-hop-limit` methods. */
  setHopLimit(target: () => OptionTarget, value: number): void {
    // Checked here: Linux takes 0 for IPV6_UNICAST_HOPS but not for IP_TTL.
    if (!Number.isInteger(value) || value <= 0 || value > MAX_HOP_LIMIT) {
      throw "invalid-argument" satisfies ErrorCode;
    }
    this.#set(target, this.#hopOption(), value);
  }

  #hopOption(): SocketOption {
    return this.#family === "ipv4" ? SockOpt.IP_TTL : SockOpt.IPV6_UNICAST_HOPS;
  }
}

/** setsockopt of `value`; a buffer size the kernel has no room for is taken as clamped. */
function set(fd: number, opt: SocketOption, value: number): void {
  try {
    setSocketOption(fd, opt, value);
  } catch (err) {
    const buffer = opt === SockOpt.SO_RCVBUF || opt === SockOpt.SO_SNDBUF;
    if (buffer && err instanceof SyscallError && err.errno === Errno.ENOBUFS) return;
    throw errorCodeOf(err);
  }
}

/** A buffer size as setsockopt takes it. @throws {ErrorCode} `invalid-argument` for 0 */
function bufferSize(value: bigint): number {
  if (typeof value !== "bigint" || value <= 0n) throw "invalid-argument" satisfies ErrorCode;
  return value > BigInt(MAX_BUFFER) ? MAX_BUFFER : Number(value);
}

/** A keep-alive time (nanoseconds) as whole seconds. @throws {ErrorCode} for 0 */
function keepAliveSeconds(value: bigint): number {
  if (typeof value !== "bigint" || value <= 0n) throw "invalid-argument" satisfies ErrorCode;
  const seconds = value / NANOS_PER_SECOND;
  return Number(
    seconds < 1n ? 1n : seconds > MAX_KEEPALIVE_SECONDS ? MAX_KEEPALIVE_SECONDS : seconds,
  );
}
