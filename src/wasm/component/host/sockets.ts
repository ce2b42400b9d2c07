/**
 * `wasi:sockets@0.2.x` (network, instance-network, tcp, udp, ip-name-lookup) over
 * `Deno.connect`, `Deno.listen` and `Deno.listenDatagram`, for one component instance.
 *
 * **Access.** A guest gets sockets only where its container may reach the network (see
 * `HostConfig.network`: the same decision as for outgoing HTTP); elsewhere creating a
 * socket and resolving a name fail with `access-denied`. Deno's `--allow-net` is a second
 * gate where the runner has narrowed permissions: what it refuses is `access-denied` too.
 *
 * **Blocking.** WASI's socket calls never block: `start-*` begins an operation (a Deno
 * promise), `finish-*`, `accept` and `resolve-next-address` answer `would-block` until it
 * has settled, and each resource's `subscribe` gives a pollable that is ready then. The
 * guest waits in `wasi:io/poll`, which suspends only its own instance (JSPI), as for
 * every other stream of this host. A TCP connection's bytes go through the same
 * {@linkcode InputStream}/{@linkcode OutputStream} as files and HTTP bodies, with a
 * bounded buffer each way.
 *
 * **Ownership.** Every socket and lookup belongs to the instance that made it (its
 * {@linkcode SocketTable}); the glue's handle tables are per instance, so no guest can
 * name another's socket, and {@linkcode SocketsHost.dispose} closes whatever the
 * instance left open (a wasi:http request's instance, at the end of its request).
 *
 * **Options.** Buffer sizes, hop limits and keep-alive timings are the kernel's, as
 * under wasmtime: Deno has no API for them, so `socket_options.ts` finds the descriptor
 * under a Deno socket and calls setsockopt(2)/getsockopt(2) through FFI; values set
 * before the socket exists wait for it (see there). Without FFI they are
 * `not-supported`.
 *
 * What Deno cannot do: bind a TCP socket without listening (binding listens at once,
 * with Deno's backlog), and connect from a bound address (`not-supported`: `Deno.connect`
 * takes no local address, and a socket bound and connected through FFI could not be
 * handed to Deno as a `Deno.TcpConn`, so its bytes would need a second I/O path).
 *
 * Errors follow jco's conventions: a `result`'s error is thrown as its payload (an
 * `error-code` name), and a thrown `Error` is a trap.
 *
 * @module
 */

import { EaiCode, getaddrinfo, ResolveError } from "../../../sys/getaddrinfo.ts";
import type { SocketEnd } from "../../../sys/sockopt.ts";
import {
  type ByteSink,
  type ByteSource,
  CLOSED,
  InputStream,
  IoError,
  OutputStream,
  Pollable,
} from "./io.ts";
import { QueueSink, Signal, StreamSource } from "./pipes.ts";
import { type LiveSocket, type OptionTarget, SocketOptions } from "./socket_options.ts";

/** A `wasi:sockets/network.error-code` name. */
export type ErrorCode =
  | "unknown"
  | "access-denied"
  | "not-supported"
  | "invalid-argument"
  | "out-of-memory"
  | "timeout"
  | "concurrency-conflict"
  | "not-in-progress"
  | "would-block"
  | "invalid-state"
  | "new-socket-limit"
  | "address-not-bindable"
  | "address-in-use"
  | "remote-unreachable"
  | "connection-refused"
  | "connection-reset"
  | "connection-aborted"
  | "datagram-too-large"
  | "name-unresolvable"
  | "temporary-resolver-failure"
  | "permanent-resolver-failure";

/** `ip-address-family`. */
export type AddressFamily = "ipv4" | "ipv6";
type Ipv4 = [number, number, number, number];
type Ipv6 = [number, number, number, number, number, number, number, number];
/** `ip-address`. */
export type IpAddress = { tag: "ipv4"; val: Ipv4 } | { tag: "ipv6"; val: Ipv6 };
/** `ip-socket-address`. */
export type IpSocketAddress =
  | { tag: "ipv4"; val: { port: number; address: Ipv4 } }
  | {
    tag: "ipv6";
    val: { port: number; flowInfo: number; address: Ipv6; scopeId: number };
  };

/** Read size of a TCP connection. */
const TCP_READ_BYTES = 64 * 1024;
/** Accepted connections waiting for the guest's `accept`, per listener. */
const ACCEPT_QUEUE = 16;
/** Received datagrams waiting for the guest, per socket (more are dropped, as UDP does). */
const RECEIVE_QUEUE = 64;
/** Datagrams a guest may have in flight (`check-send`). */
const SEND_PERMITS = 16;
/** Largest UDP payload over IPv4 (65535 − 8 − 20). */
const MAX_DATAGRAM = 65507;
/** Largest UDP payload over IPv6 (65535 − 8). */
const MAX_DATAGRAM_V6 = 65527;
/** Longest DNS name (RFC 1035), as text. */
const MAX_NAME = 253;

/** Error codes of stream errors (`network-error-code`), by the stream's error. */
const STREAM_ERROR_CODES = new WeakMap<IoError, ErrorCode>();

/** An {@linkcode IoError} that `network-error-code` maps to `code`. */
function streamError(message: string, code: ErrorCode): IoError {
  const err = new IoError(message);
  STREAM_ERROR_CODES.set(err, code);
  return err;
}

/** Maps an error of Deno's socket APIs to a WASI `error-code`. */
export function errorCodeOf(err: unknown): ErrorCode {
  if (err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied) {
    return "access-denied";
  }
  if (err instanceof Deno.errors.ConnectionRefused) return "connection-refused";
  if (err instanceof Deno.errors.ConnectionReset) return "connection-reset";
  if (err instanceof Deno.errors.ConnectionAborted) return "connection-aborted";
  if (err instanceof Deno.errors.BrokenPipe) return "connection-reset";
  if (err instanceof Deno.errors.AddrInUse) return "address-in-use";
  if (err instanceof Deno.errors.AddrNotAvailable) return "address-not-bindable";
  if (err instanceof Deno.errors.TimedOut) return "timeout";
  if (err instanceof Deno.errors.NotConnected) return "invalid-state";
  const message = err instanceof Error ? err.message : String(err);
  if (/unreachable|no route to host/i.test(message)) return "remote-unreachable";
  if (/address family not supported/i.test(message)) return "not-supported";
  if (/too many open files/i.test(message)) return "new-socket-limit";
  if (/message too long/i.test(message)) return "datagram-too-large";
  return "unknown";
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// ---- addresses ----

function checkU16(n: unknown): number {
  if (typeof n !== "number" || !Number.isInteger(n) || n < 0 || n > 0xffff) {
    throw new TypeError(`invalid 16-bit value ${n}`);
  }
  return n;
}

/** The text form of an IPv6 address (RFC 5952: lower case, longest zero run as `::`). */
export function ipv6Text(words: readonly number[]): string {
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => checkU16(w).toString(16));
  if (best < 0) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${hex.slice(best + bestLen).join(":")}`;
}

/** Parses an IPv4 dotted quad, or undefined. */
export function parseIpv4(text: string): Ipv4 | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (m === null) return undefined;
  const bytes = m.slice(1).map(Number);
  if (bytes.some((b, i) => b > 255 || (m[i + 1].length > 1 && m[i + 1][0] === "0"))) {
    return undefined;
  }
  return bytes as Ipv4;
}

/** Parses an IPv6 address (with `::` and a trailing dotted quad), or undefined. */
export function parseIpv6(text: string): Ipv6 | undefined {
  const zone = text.indexOf("%");
  if (zone >= 0) text = text.slice(0, zone);
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const part = (s: string): number[] | undefined => {
    if (s === "") return [];
    const out: number[] = [];
    const groups = s.split(":");
    for (let i = 0; i < groups.length; i++) {
      const g = groups[i];
      if (i === groups.length - 1 && g.includes(".")) {
        const v4 = parseIpv4(g);
        if (v4 === undefined) return undefined;
        out.push(v4[0] << 8 | v4[1], v4[2] << 8 | v4[3]);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(g)) {
        out.push(parseInt(g, 16));
      } else {
        return undefined;
      }
    }
    return out;
  };
  const head = part(halves[0]);
  const tail = halves.length === 2 ? part(halves[1]) : [];
  if (head === undefined || tail === undefined) return undefined;
  if (halves.length === 1) return head.length === 8 ? head as Ipv6 : undefined;
  const zeros = 8 - head.length - tail.length;
  if (zeros < 1) return undefined;
  return [...head, ...new Array(zeros).fill(0), ...tail] as Ipv6;
}

/** A WASI `ip-address` of a literal, or undefined if `text` is not one. */
export function parseIpAddress(text: string): IpAddress | undefined {
  const v4 = parseIpv4(text);
  if (v4 !== undefined) return { tag: "ipv4", val: v4 };
  const v6 = parseIpv6(text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text);
  return v6 === undefined ? undefined : { tag: "ipv6", val: v6 };
}

/** The host and port Deno takes for a WASI socket address. */
function denoAddress(addr: IpSocketAddress): { hostname: string; port: number } {
  if (addr.tag === "ipv4") {
    const a = addr.val.address;
    for (const b of a) {
      if (!Number.isInteger(b) || b < 0 || b > 255) throw new TypeError(`invalid IPv4 byte ${b}`);
    }
    return { hostname: a.join("."), port: checkU16(addr.val.port) };
  }
  return { hostname: ipv6Text(addr.val.address), port: checkU16(addr.val.port) };
}

/** The WASI socket address of one Deno reports. */
function wasiAddress(addr: Deno.Addr): IpSocketAddress {
  if (addr.transport !== "tcp" && addr.transport !== "udp") {
    throw new Error(`not an IP socket address: ${addr.transport}`);
  }
  const ip = parseIpAddress(addr.hostname);
  if (ip === undefined) throw new Error(`unexpected address ${addr.hostname} from Deno`);
  if (ip.tag === "ipv4") return { tag: "ipv4", val: { port: addr.port, address: ip.val } };
  return { tag: "ipv6", val: { port: addr.port, flowInfo: 0, address: ip.val, scopeId: 0 } };
}

/** A Deno address as `sys/sockopt.ts` compares it with the kernel's. */
function socketEnd(addr: Deno.Addr): SocketEnd {
  const a = wasiAddress(addr);
  return a.tag === "ipv4"
    ? { family: "ipv4", bytes: a.val.address, port: a.val.port }
    : { family: "ipv6", words: a.val.address, port: a.val.port };
}

/** A TCP listener, for its options. */
function liveListener(listener: Deno.TcpListener): LiveSocket {
  return {
    handle: listener,
    query: () => ({ kind: "stream", local: socketEnd(listener.addr), listening: true }),
  };
}

/** A TCP connection, for its options. */
function liveConnection(conn: Deno.TcpConn): LiveSocket {
  return {
    handle: conn,
    query: () => ({
      kind: "stream",
      local: socketEnd(conn.localAddr),
      remote: socketEnd(conn.remoteAddr),
    }),
  };
}

/** A bound UDP socket, for its options. */
function liveDatagram(conn: Deno.DatagramConn): LiveSocket {
  return { handle: conn, query: () => ({ kind: "datagram", local: socketEnd(conn.addr) }) };
}

function isUnspecified(addr: IpSocketAddress): boolean {
  return addr.val.address.every((x) => x === 0);
}

function isIpv4Mapped(addr: IpSocketAddress): boolean {
  const a = addr.val.address;
  return addr.tag === "ipv6" && a[0] === 0 && a[1] === 0 && a[2] === 0 && a[3] === 0 &&
    a[4] === 0 && a[5] === 0xffff;
}

/** Checks `addr` suits a socket of `family` (else `invalid-argument`). */
function checkFamily(family: AddressFamily, addr: IpSocketAddress): void {
  if (addr?.tag !== family) throw "invalid-argument";
  // As wasmtime: an IPv6 socket is IPv6 only.
  if (isIpv4Mapped(addr)) throw "invalid-argument";
}

function sameAddress(a: IpSocketAddress, b: IpSocketAddress): boolean {
  return a.tag === b.tag && a.val.port === b.val.port &&
    a.val.address.every((x, i) => x === b.val.address[i]);
}

// ---- the per-instance table ----

/** Something an instance owns and that must go when it does. */
interface Closeable {
  close(): void;
}

/** What one instance's sockets share: whether they may exist, and who is still open. */
export class SocketTable {
  /** Whether this instance may reach the network. */
  readonly allowed: boolean;
  #open = new Set<Closeable>();
  #disposed = false;

  /** A table for an instance that may (or may not) reach the network. */
  constructor(allowed: boolean) {
    this.allowed = allowed;
  }

  /** Checks the instance may make sockets (else `access-denied`). */
  check(): void {
    if (!this.allowed) throw "access-denied";
    if (this.#disposed) throw "invalid-state";
  }

  /** Registers something to close at {@linkcode dispose}. */
  add(item: Closeable): void {
    this.#open.add(item);
  }

  /** Forgets something already closed. */
  delete(item: Closeable): void {
    this.#open.delete(item);
  }

  /** How many sockets and lookups are open (for tests). */
  get size(): number {
    return this.#open.size;
  }

  /** Closes everything the instance still holds. */
  dispose(): void {
    this.#disposed = true;
    const open = [...this.#open];
    this.#open.clear();
    for (const item of open) item.close();
  }
}

/** The `network` resource: the instance's right to use its network namespace. */
export class Network {
  /** @internal */
  readonly table: SocketTable | null;

  /** A network handle; without a table (jco's own construction), one that allows nothing. */
  constructor(table: SocketTable | null = null) {
    this.table = table;
  }
}

function tableOf(network: Network): SocketTable {
  if (!(network instanceof Network) || network.table === null) throw "access-denied";
  network.table.check();
  return network.table;
}

// ---- a promise the guest polls ----

/** An operation in flight: `value` or `error` once it has settled. */
class Pending<T> {
  settled = false;
  value: T | undefined;
  error: ErrorCode | undefined;
  promise: Promise<void>;

  constructor(promise: Promise<T>) {
    this.promise = promise.then(
      (v) => {
        this.value = v;
        this.settled = true;
      },
      (err) => {
        this.error = typeof err === "string" ? err as ErrorCode : errorCodeOf(err);
        this.settled = true;
      },
    );
  }
}

// ---- TCP ----

/** Bytes of a TCP connection, read one chunk at a time when the guest wants them. */
function connReadable(conn: Deno.TcpConn): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const buf = new Uint8Array(TCP_READ_BYTES);
      const n = await conn.read(buf);
      if (n === null) controller.close();
      else controller.enqueue(buf.subarray(0, n));
    },
  }, { highWaterMark: 0 });
}

function readError(err: unknown): IoError {
  if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) {
    return streamError("the socket was closed", "connection-aborted");
  }
  return streamError(`reading from the socket failed: ${messageOf(err)}`, errorCodeOf(err));
}

/** The receiving half: ends for the guest after `shutdown(receive)`. */
class TcpSource implements ByteSource {
  #inner: StreamSource;
  shut = false;

  constructor(conn: Deno.TcpConn) {
    this.#inner = new StreamSource(connReadable(conn), readError);
  }
  take(max: number): Uint8Array | null {
    return this.shut ? null : this.#inner.take(max);
  }
  readable(): boolean {
    return this.shut || this.#inner.readable();
  }
  whenReadable(): Promise<void> {
    return this.shut ? Promise.resolve() : this.#inner.whenReadable();
  }
  close(): void {}
}

/** The sending half: closed for the guest after `shutdown(send)`. */
class TcpSink implements ByteSink {
  #queue: QueueSink;
  shut = false;

  constructor(conn: Deno.TcpConn) {
    this.#queue = new QueueSink(async (bytes) => {
      try {
        return await conn.write(bytes);
      } catch (err) {
        throw streamError(`writing to the socket failed: ${messageOf(err)}`, errorCodeOf(err));
      }
    });
  }
  capacity(): number {
    if (this.shut) throw CLOSED;
    return this.#queue.capacity();
  }
  write(bytes: Uint8Array): void {
    if (this.shut) throw CLOSED;
    this.#queue.write(bytes);
  }
  flush(): void {
    if (this.shut) throw CLOSED;
    this.#queue.flush();
  }
  writable(): boolean {
    return this.shut || this.#queue.writable();
  }
  whenWritable(): Promise<void> {
    return this.shut ? Promise.resolve() : this.#queue.whenWritable();
  }
  close(): void {}
  /** Resolves once every queued byte went out (or writing failed). */
  drained(): Promise<void> {
    return this.#queue.drained();
  }
}

/** A connected TCP socket's Deno side and the guest's two streams over it. */
class Connection implements Closeable {
  readonly conn: Deno.TcpConn;
  readonly source: TcpSource;
  readonly sink: TcpSink;
  #closed = false;

  constructor(conn: Deno.TcpConn) {
    this.conn = conn;
    this.source = new TcpSource(conn);
    this.sink = new TcpSink(conn);
  }

  streams(): [InputStream, OutputStream] {
    return [new InputStream(this.source, "a socket"), new OutputStream(this.sink, "a socket")];
  }

  shutdown(how: "receive" | "send" | "both"): void {
    if (how !== "send" && !this.source.shut) this.source.shut = true;
    if (how !== "receive" && !this.sink.shut) {
      this.sink.shut = true;
      // What the guest wrote before goes out first; then the peer reads the end.
      this.sink.drained().then(() => {
        if (!this.#closed) return this.conn.closeWrite();
      }).catch(() => {});
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch { /* closed already */ }
  }
}

type TcpState =
  | { kind: "unbound" }
  | { kind: "bind-started"; listener: Deno.TcpListener }
  | { kind: "bound"; listener: Deno.TcpListener }
  | { kind: "listen-started"; listener: Deno.TcpListener }
  | { kind: "listening"; listener: Deno.TcpListener }
  | { kind: "connecting"; pending: Pending<Deno.TcpConn>; remote: IpSocketAddress }
  | { kind: "connect-ready"; pending: Pending<Deno.TcpConn>; remote: IpSocketAddress }
  | { kind: "connected"; connection: Connection }
  | { kind: "closed" };

/** The `tcp-socket` resource. */
export class TcpSocket implements Closeable {
  #table: SocketTable;
  #family: AddressFamily;
  #state: TcpState = { kind: "unbound" };
  #keepAlive = false;
  #accepted: Deno.TcpConn[] = [];
  #accepting: Promise<void> | null = null;
  #acceptError: ErrorCode | null = null;
  #changed = new Signal();
  #options: SocketOptions;

  /** A socket of `family` owned by `table`. @internal */
  constructor(table: SocketTable, family: AddressFamily, conn?: Deno.TcpConn) {
    this.#table = table;
    this.#family = family;
    this.#options = new SocketOptions(family, "stream");
    if (conn !== undefined) this.#state = { kind: "connected", connection: new Connection(conn) };
    table.add(this);
  }

  /** The `start-bind` method: binds (and, as Deno binds, listens) now. */
  startBind(network: Network, local: IpSocketAddress): void {
    tableOf(network);
    checkFamily(this.#family, local);
    if (this.#state.kind !== "unbound") throw "invalid-state";
    const { hostname, port } = denoAddress(local);
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname, port, transport: "tcp" });
    } catch (err) {
      throw errorCodeOf(err);
    }
    try {
      this.#options.apply(liveListener(listener));
    } catch (code) {
      listener.close();
      throw code;
    }
    this.#state = { kind: "bind-started", listener };
  }

  /** The `finish-bind` method. */
  finishBind(): void {
    if (this.#state.kind !== "bind-started") throw "not-in-progress";
    this.#state = { kind: "bound", listener: this.#state.listener };
  }

  /** The `start-connect` method. */
  startConnect(network: Network, remote: IpSocketAddress): void {
    tableOf(network);
    checkFamily(this.#family, remote);
    if (isUnspecified(remote) || remote.val.port === 0) throw "invalid-argument";
    // Deno connects from an address of the kernel's choosing only.
    if (this.#state.kind === "bound") throw "not-supported";
    if (this.#state.kind !== "unbound") throw "invalid-state";
    const { hostname, port } = denoAddress(remote);
    const options = this.#options;
    const connecting = Deno.connect({ hostname, port, transport: "tcp" });
    // What was set before connecting goes on the socket once there is one (nothing can
    // be set while connecting: that is `invalid-state`).
    const pending = new Pending(
      !options.pending ? connecting : connecting.then((conn) => {
        try {
          options.apply(liveConnection(conn));
        } catch (code) {
          conn.close();
          throw code;
        }
        return conn;
      }),
    );
    this.#state = { kind: "connecting", pending, remote };
    pending.promise.then(() => {
      if (this.#state.kind === "connecting" && this.#state.pending === pending) {
        this.#state = { kind: "connect-ready", pending, remote };
      } else if (pending.value !== undefined) {
        pending.value.close(); // the socket was dropped meanwhile
      }
      this.#changed.wake();
    });
  }

  /** The `finish-connect` method: the connection's streams, once it is made. */
  finishConnect(): [InputStream, OutputStream] {
    const state = this.#state;
    if (state.kind === "connecting") throw "would-block";
    if (state.kind !== "connect-ready") throw "not-in-progress";
    const { pending } = state;
    if (pending.error !== undefined) {
      this.#state = { kind: "closed" };
      throw pending.error;
    }
    const connection = new Connection(pending.value!);
    this.#state = { kind: "connected", connection };
    if (this.#keepAlive) connection.conn.setKeepAlive(true);
    return connection.streams();
  }

  /** The `start-listen` method. */
  startListen(): void {
    if (this.#state.kind !== "bound") throw "invalid-state";
    this.#state = { kind: "listen-started", listener: this.#state.listener };
  }

  /** The `finish-listen` method. */
  finishListen(): void {
    if (this.#state.kind !== "listen-started") throw "not-in-progress";
    this.#state = { kind: "listening", listener: this.#state.listener };
    this.#acceptMore();
  }

  /** Keeps one accept in flight while the queue has room. */
  #acceptMore(): void {
    const state = this.#state;
    if (state.kind !== "listening" || this.#accepting !== null) return;
    if (this.#accepted.length >= ACCEPT_QUEUE || this.#acceptError !== null) return;
    this.#accepting = state.listener.accept().then(
      (conn) => {
        if (this.#state.kind === "listening") this.#accepted.push(conn);
        else conn.close();
      },
      (err) => {
        if (this.#state.kind === "listening") this.#acceptError = errorCodeOf(err);
      },
    ).finally(() => {
      this.#accepting = null;
      this.#changed.wake();
      this.#acceptMore();
    });
  }

  /** The `accept` method: a connection that came in, or `would-block`. */
  accept(): [TcpSocket, InputStream, OutputStream] {
    if (this.#state.kind !== "listening") throw "invalid-state";
    const conn = this.#accepted.shift();
    if (conn === undefined) {
      if (this.#acceptError !== null) {
        const code = this.#acceptError;
        this.#acceptError = null;
        this.#acceptMore();
        throw code;
      }
      throw "would-block";
    }
    this.#acceptMore();
    const socket = new TcpSocket(this.#table, this.#family, conn);
    // Inherited from the listener, as the other options are (by the kernel).
    socket.#keepAlive = this.#keepAlive;
    if (this.#keepAlive) conn.setKeepAlive(true);
    const [input, output] = socket.#connection()!.streams();
    return [socket, input, output];
  }

  #connection(): Connection | undefined {
    return this.#state.kind === "connected" ? this.#state.connection : undefined;
  }

  /** The `local-address` method. */
  localAddress(): IpSocketAddress {
    const state = this.#state;
    switch (state.kind) {
      case "bind-started":
      case "bound":
      case "listen-started":
      case "listening":
        return wasiAddress(state.listener.addr);
      case "connected":
        return wasiAddress(state.connection.conn.localAddr);
      default:
        throw "invalid-state";
    }
  }

  /** The `remote-address` method. */
  remoteAddress(): IpSocketAddress {
    const connection = this.#connection();
    if (connection === undefined) throw "invalid-state";
    return wasiAddress(connection.conn.remoteAddr);
  }

  /** The `is-listening` method. */
  isListening(): boolean {
    return this.#state.kind === "listening";
  }

  /** The `address-family` method. */
  addressFamily(): AddressFamily {
    return this.#family;
  }

  /** The `set-listen-backlog-size` method: Deno listens with its own backlog. */
  setListenBacklogSize(value: bigint): void {
    if (value === 0n) throw "invalid-argument";
    if (this.#state.kind === "connecting" || this.#state.kind === "connected") {
      throw "invalid-state";
    }
  }

  /** The `keep-alive-enabled` method. */
  keepAliveEnabled(): boolean {
    return this.#keepAlive;
  }

  /** The `set-keep-alive-enabled` method (`SO_KEEPALIVE`). */
  setKeepAliveEnabled(value: boolean): void {
    this.#keepAlive = value;
    this.#connection()?.conn.setKeepAlive(value);
  }

  /**
   * Where an option goes: the listener or connection, or (before either) the values
   * kept for it. While connecting, and once closed, `invalid-state` (as wasmtime).
   */
  #optionTarget = (): OptionTarget => {
    const state = this.#state;
    switch (state.kind) {
      case "unbound":
        return null;
      case "bind-started":
      case "bound":
      case "listen-started":
      case "listening":
        return liveListener(state.listener);
      case "connected":
        return liveConnection(state.connection.conn);
      default:
        throw "invalid-state" satisfies ErrorCode;
    }
  };

  /** The `keep-alive-idle-time` method (`TCP_KEEPIDLE`, in nanoseconds). */
  keepAliveIdleTime(): bigint {
    return this.#options.keepAliveIdleTime(this.#optionTarget);
  }
  /** The `set-keep-alive-idle-time` method. */
  setKeepAliveIdleTime(value: bigint): void {
    this.#options.setKeepAliveIdleTime(this.#optionTarget, value);
  }
  /** The `keep-alive-interval` method (`TCP_KEEPINTVL`, in nanoseconds). */
  keepAliveInterval(): bigint {
    return this.#options.keepAliveInterval(this.#optionTarget);
  }
  /** The `set-keep-alive-interval` method. */
  setKeepAliveInterval(value: bigint): void {
    this.#options.setKeepAliveInterval(this.#optionTarget, value);
  }
  /** The `keep-alive-count` method (`TCP_KEEPCNT`). */
  keepAliveCount(): number {
    return this.#options.keepAliveCount(this.#optionTarget);
  }
  /** The `set-keep-alive-count` method. */
  setKeepAliveCount(value: number): void {
    this.#options.setKeepAliveCount(this.#optionTarget, value);
  }
  /** The `hop-limit` method (`IP_TTL` or `IPV6_UNICAST_HOPS`). */
  hopLimit(): number {
    return this.#options.hopLimit(this.#optionTarget);
  }
  /** The `set-hop-limit` method. */
  setHopLimit(value: number): void {
    this.#options.setHopLimit(this.#optionTarget, value);
  }
  /** The `receive-buffer-size` method (`SO_RCVBUF`). */
  receiveBufferSize(): bigint {
    return this.#options.receiveBufferSize(this.#optionTarget);
  }
  /** The `set-receive-buffer-size` method. */
  setReceiveBufferSize(value: bigint): void {
    this.#options.setReceiveBufferSize(this.#optionTarget, value);
  }
  /** The `send-buffer-size` method (`SO_SNDBUF`). */
  sendBufferSize(): bigint {
    return this.#options.sendBufferSize(this.#optionTarget);
  }
  /** The `set-send-buffer-size` method. */
  setSendBufferSize(value: bigint): void {
    this.#options.setSendBufferSize(this.#optionTarget, value);
  }

  /**
   * The `subscribe` method: ready when a connect has settled, a connection is waiting
   * to be accepted, or there is nothing to wait for.
   */
  subscribe(): Pollable {
    return new Pollable({
      ready: () => this.#ready(),
      wait: () => this.#changed.wait(),
    });
  }

  #ready(): boolean {
    switch (this.#state.kind) {
      case "connecting":
        return false;
      case "listening":
        return this.#accepted.length > 0 || this.#acceptError !== null;
      default:
        return true;
    }
  }

  /** The `shutdown` method. */
  shutdown(how: "receive" | "send" | "both"): void {
    const connection = this.#connection();
    if (connection === undefined) throw "invalid-state";
    connection.shutdown(how);
  }

  /** Closes the socket (resource drop, or its instance ended). @internal */
  close(): void {
    const state = this.#state;
    this.#state = { kind: "closed" };
    this.#table.delete(this);
    switch (state.kind) {
      case "bind-started":
      case "bound":
      case "listen-started":
      case "listening":
        state.listener.close();
        break;
      case "connect-ready":
        state.pending.value?.close();
        break;
      case "connected":
        state.connection.close();
        break;
    }
    for (const conn of this.#accepted.splice(0)) conn.close();
    this.#changed.wake();
  }

  /** Resource drop. */
  [Symbol.dispose](): void {
    this.close();
  }
}

// ---- UDP ----

/** What a datagram socket queues for the guest. */
interface Datagram {
  data: Uint8Array;
  remoteAddress: IpSocketAddress;
}

/** The Deno side of a bound UDP socket: receiving into a bounded queue, sending in order. */
class DatagramPort implements Closeable {
  readonly conn: Deno.DatagramConn;
  readonly family: AddressFamily;
  queue: Datagram[] = [];
  #receiving: Promise<void> | null = null;
  receiveError: ErrorCode | null = null;
  sending = 0;
  sendError: ErrorCode | null = null;
  #sends: Promise<void> = Promise.resolve();
  readonly changed = new Signal();
  closed = false;

  constructor(conn: Deno.DatagramConn, family: AddressFamily) {
    this.conn = conn;
    this.family = family;
  }

  /** Keeps one receive in flight while the queue has room. */
  receiveMore(): void {
    if (this.closed || this.#receiving !== null || this.receiveError !== null) return;
    if (this.queue.length >= RECEIVE_QUEUE) return;
    this.#receiving = this.conn.receive().then(
      ([data, addr]) => {
        this.queue.push({ data, remoteAddress: wasiAddress(addr) });
      },
      (err) => {
        if (!this.closed) this.receiveError = errorCodeOf(err);
      },
    ).finally(() => {
      this.#receiving = null;
      this.changed.wake();
      this.receiveMore();
    });
  }

  send(data: Uint8Array, to: IpSocketAddress): void {
    const { hostname, port } = denoAddress(to);
    this.sending++;
    this.#sends = this.#sends.then(async () => {
      if (this.closed) return;
      try {
        await this.conn.send(data, { transport: "udp", hostname, port });
      } catch (err) {
        if (!this.closed) this.sendError ??= errorCodeOf(err);
      }
    }).finally(() => {
      this.sending--;
      this.changed.wake();
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.close();
    } catch { /* closed already */ }
    this.changed.wake();
  }
}

/** The `incoming-datagram-stream` resource. */
export class IncomingDatagramStream {
  #port: DatagramPort;
  #remote: IpSocketAddress | undefined;

  /** Datagrams of `port`, from `remote` only when given. @internal */
  constructor(port: DatagramPort, remote: IpSocketAddress | undefined) {
    this.#port = port;
    this.#remote = remote;
    port.receiveMore();
  }

  #drop(): void {
    const remote = this.#remote;
    if (remote === undefined) return;
    this.#port.queue = this.#port.queue.filter((d) => sameAddress(d.remoteAddress, remote));
  }

  /** The `receive` method: up to `max` datagrams that have arrived, possibly none. */
  receive(max: bigint): Datagram[] {
    const port = this.#port;
    if (port.closed) throw "invalid-state";
    this.#drop();
    if (port.queue.length === 0 && port.receiveError !== null) {
      const code = port.receiveError;
      port.receiveError = null;
      port.receiveMore();
      throw code;
    }
    const n = max > BigInt(port.queue.length) ? port.queue.length : Number(max);
    const out = port.queue.splice(0, n);
    port.receiveMore();
    return out;
  }

  /** The `subscribe` method: ready when a datagram (or an error) is waiting. */
  subscribe(): Pollable {
    const port = this.#port;
    return new Pollable({
      ready: () => {
        this.#drop();
        return port.closed || port.queue.length > 0 || port.receiveError !== null;
      },
      wait: () => port.changed.wait(),
    });
  }
}

/** The `outgoing-datagram-stream` resource. */
export class OutgoingDatagramStream {
  #port: DatagramPort;
  #remote: IpSocketAddress | undefined;
  #permit = 0;

  /** Sends through `port`, to `remote` by default when given. @internal */
  constructor(port: DatagramPort, remote: IpSocketAddress | undefined) {
    this.#port = port;
    this.#remote = remote;
  }

  /** The `check-send` method: how many datagrams `send` takes now. */
  checkSend(): bigint {
    const port = this.#port;
    if (port.closed) throw "invalid-state";
    if (port.sendError !== null) {
      const code = port.sendError;
      port.sendError = null;
      throw code;
    }
    this.#permit = Math.max(0, SEND_PERMITS - port.sending);
    return BigInt(this.#permit);
  }

  /** The `send` method: sends datagrams in order; stops at the first invalid one. */
  send(datagrams: { data: Uint8Array; remoteAddress?: IpSocketAddress }[]): bigint {
    const port = this.#port;
    if (port.closed) throw "invalid-state";
    if (datagrams.length > this.#permit) {
      throw new Error(
        `outgoing-datagram-stream.send of ${datagrams.length} datagrams exceeds the ` +
          `${this.#permit} allowed by check-send`,
      );
    }
    const max = port.family === "ipv4" ? MAX_DATAGRAM : MAX_DATAGRAM_V6;
    let sent = 0;
    for (const d of datagrams) {
      let to = d.remoteAddress;
      let code: ErrorCode | undefined;
      if (to === undefined) {
        to = this.#remote;
        if (to === undefined) code = "invalid-argument";
      } else if (this.#remote !== undefined && !sameAddress(to, this.#remote)) {
        code = "invalid-argument";
      }
      if (code === undefined && to !== undefined) {
        if (to.tag !== port.family || isIpv4Mapped(to)) code = "invalid-argument";
        else if (isUnspecified(to) || to.val.port === 0) code = "invalid-argument";
        else if (d.data.length > max) code = "datagram-too-large";
      }
      if (code !== undefined) {
        this.#permit -= sent;
        if (sent === 0) throw code;
        return BigInt(sent);
      }
      port.send(d.data, to!);
      sent++;
    }
    this.#permit -= sent;
    return BigInt(sent);
  }

  /** The `subscribe` method: ready when `check-send` allows a datagram. */
  subscribe(): Pollable {
    const port = this.#port;
    return new Pollable({
      ready: () => port.closed || port.sending < SEND_PERMITS || port.sendError !== null,
      wait: () => port.changed.wait(),
    });
  }
}

type UdpState =
  | { kind: "unbound" }
  | { kind: "bind-started"; port: DatagramPort }
  | { kind: "bound"; port: DatagramPort; remote?: IpSocketAddress }
  | { kind: "closed" };

/** The `udp-socket` resource. */
export class UdpSocket implements Closeable {
  #table: SocketTable;
  #family: AddressFamily;
  #state: UdpState = { kind: "unbound" };
  #options: SocketOptions;

  /** A socket of `family` owned by `table`. @internal */
  constructor(table: SocketTable, family: AddressFamily) {
    this.#table = table;
    this.#family = family;
    this.#options = new SocketOptions(family, "datagram");
    table.add(this);
  }

  /** The `start-bind` method: binds now. */
  startBind(network: Network, local: IpSocketAddress): void {
    tableOf(network);
    checkFamily(this.#family, local);
    if (this.#state.kind !== "unbound") throw "invalid-state";
    const listen = (Deno as { listenDatagram?: typeof Deno.listenDatagram }).listenDatagram;
    // UDP is in Deno's unstable API (--unstable-net, which guest runners get).
    if (typeof listen !== "function") throw "not-supported";
    const { hostname, port } = denoAddress(local);
    let conn: Deno.DatagramConn;
    try {
      conn = listen({ hostname, port, transport: "udp" });
    } catch (err) {
      throw errorCodeOf(err);
    }
    try {
      this.#options.apply(liveDatagram(conn));
    } catch (code) {
      conn.close();
      throw code;
    }
    this.#state = { kind: "bind-started", port: new DatagramPort(conn, this.#family) };
  }

  /** The `finish-bind` method. */
  finishBind(): void {
    if (this.#state.kind !== "bind-started") throw "not-in-progress";
    this.#state = { kind: "bound", port: this.#state.port };
  }

  /**
   * The `stream` method: new datagram streams, to and from `remote` only when given
   * (Deno has no `connect` for UDP: the host filters and addresses them).
   */
  stream(remote?: IpSocketAddress): [IncomingDatagramStream, OutgoingDatagramStream] {
    if (this.#state.kind !== "bound") throw "invalid-state";
    if (remote !== undefined) {
      checkFamily(this.#family, remote);
      if (isUnspecified(remote) || remote.val.port === 0) throw "invalid-argument";
    }
    this.#state.remote = remote;
    const { port } = this.#state;
    return [new IncomingDatagramStream(port, remote), new OutgoingDatagramStream(port, remote)];
  }

  /** The `local-address` method. */
  localAddress(): IpSocketAddress {
    const state = this.#state;
    if (state.kind !== "bind-started" && state.kind !== "bound") throw "invalid-state";
    return wasiAddress(state.port.conn.addr);
  }

  /** The `remote-address` method. */
  remoteAddress(): IpSocketAddress {
    if (this.#state.kind !== "bound" || this.#state.remote === undefined) throw "invalid-state";
    return this.#state.remote;
  }

  /** The `address-family` method. */
  addressFamily(): AddressFamily {
    return this.#family;
  }

  /** Where an option goes: the bound socket, or (before) the values kept for it. */
  #optionTarget = (): OptionTarget => {
    const state = this.#state;
    if (state.kind === "unbound") return null;
    if (state.kind === "closed") throw "invalid-state" satisfies ErrorCode;
    return liveDatagram(state.port.conn);
  };

  /** The `unicast-hop-limit` method (`IP_TTL` or `IPV6_UNICAST_HOPS`). */
  unicastHopLimit(): number {
    return this.#options.hopLimit(this.#optionTarget);
  }
  /** The `set-unicast-hop-limit` method. */
  setUnicastHopLimit(value: number): void {
    this.#options.setHopLimit(this.#optionTarget, value);
  }
  /** The `receive-buffer-size` method (`SO_RCVBUF`). */
  receiveBufferSize(): bigint {
    return this.#options.receiveBufferSize(this.#optionTarget);
  }
  /** The `set-receive-buffer-size` method. */
  setReceiveBufferSize(value: bigint): void {
    this.#options.setReceiveBufferSize(this.#optionTarget, value);
  }
  /** The `send-buffer-size` method (`SO_SNDBUF`). */
  sendBufferSize(): bigint {
    return this.#options.sendBufferSize(this.#optionTarget);
  }
  /** The `set-send-buffer-size` method. */
  setSendBufferSize(value: bigint): void {
    this.#options.setSendBufferSize(this.#optionTarget, value);
  }

  /** The `subscribe` method: binding completes at once, so always ready. */
  subscribe(): Pollable {
    return new Pollable();
  }

  /** Closes the socket (resource drop, or its instance ended). @internal */
  close(): void {
    const state = this.#state;
    this.#state = { kind: "closed" };
    this.#table.delete(this);
    if (state.kind === "bind-started" || state.kind === "bound") state.port.close();
  }

  /** Resource drop. */
  [Symbol.dispose](): void {
    this.close();
  }
}

// ---- name lookup ----

/** A host name as DNS and /etc/hosts know them (RFC 1123 labels). */
const HOST_NAME =
  /^(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?$/;

/** Maps a getaddrinfo failure to a WASI `error-code`. */
function lookupErrorCode(err: unknown): ErrorCode {
  if (!(err instanceof ResolveError)) return "unknown";
  switch (err.code) {
    case EaiCode.NONAME:
    case EaiCode.NODATA:
    case EaiCode.ADDRFAMILY:
      return "name-unresolvable";
    case EaiCode.AGAIN:
      return "temporary-resolver-failure";
    case EaiCode.FAIL:
      return "permanent-resolver-failure";
    case EaiCode.MEMORY:
      return "out-of-memory";
    default:
      return "unknown";
  }
}

/** The `resolve-address-stream` resource: the addresses of one name. */
export class ResolveAddressStream implements Closeable {
  #table: SocketTable;
  #pending: Pending<IpAddress[]>;
  #next = 0;

  /** A lookup of `name` (an IP literal answers itself). @internal */
  constructor(table: SocketTable, name: string) {
    this.#table = table;
    const literal = parseIpAddress(name);
    this.#pending = new Pending(
      literal !== undefined ? Promise.resolve([literal]) : getaddrinfo(name).then(
        (found) =>
          found.map((a): IpAddress =>
            a.family === "ipv4" ? { tag: "ipv4", val: a.bytes } : { tag: "ipv6", val: a.words }
          ),
        (err) => {
          throw lookupErrorCode(err);
        },
      ),
    );
    table.add(this);
  }

  /** The `resolve-next-address` method: the next address, none at the end. */
  resolveNextAddress(): IpAddress | undefined {
    const pending = this.#pending;
    if (!pending.settled) throw "would-block";
    if (pending.error !== undefined) throw pending.error;
    return pending.value![this.#next++];
  }

  /** The `subscribe` method: ready once the lookup has finished. */
  subscribe(): Pollable {
    const pending = this.#pending;
    return new Pollable({ ready: () => pending.settled, wait: () => pending.promise });
  }

  /** Forgets the lookup (getaddrinfo itself cannot be cancelled; its answer is dropped). */
  close(): void {
    this.#table.delete(this);
  }

  /** Resource drop. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** The `resolve-addresses` function. */
function resolveAddresses(network: Network, name: string): ResolveAddressStream {
  const table = tableOf(network);
  if (parseIpAddress(name) === undefined && (name.length > MAX_NAME + 1 || !HOST_NAME.test(name))) {
    throw "invalid-argument";
  }
  return new ResolveAddressStream(table, name);
}

/** The `network-error-code` function: the socket error behind a stream error, if any. */
function networkErrorCode(err: IoError): ErrorCode | undefined {
  return STREAM_ERROR_CODES.get(err);
}

function checkFamilyArg(family: unknown): AddressFamily {
  if (family !== "ipv4" && family !== "ipv6") throw "invalid-argument";
  return family;
}

/** The sockets of one instance: its imports, and what to close when it ends. */
export interface SocketsHost {
  /** The `wasi:sockets/*` imports. */
  imports: Record<string, Record<string, unknown>>;
  /** Closes every socket the instance still has open. */
  dispose(): void;
}

/** The resource classes and stateless functions, shared by every instance. */
const SHARED = {
  "wasi:sockets/tcp": { TcpSocket },
  "wasi:sockets/udp": { UdpSocket, IncomingDatagramStream, OutgoingDatagramStream },
};

/**
 * The `wasi:sockets/*` imports of one instance. Sockets exist only if `allowed` (the
 * container may reach the network); otherwise every socket and lookup is `access-denied`
 * (and the imports hold no state: see {@linkcode DENIED_SOCKETS}).
 */
export function socketsHost(allowed: boolean): SocketsHost {
  if (!allowed) return DENIED_SOCKETS;
  return instanceSockets(true);
}

function instanceSockets(allowed: boolean): SocketsHost {
  let table: SocketTable | null = null;
  const own = () => table ??= new SocketTable(allowed);
  const instanceNetwork = () => new Network(own());
  return {
    imports: {
      ...SHARED,
      "wasi:sockets/network": { Network, networkErrorCode },
      "wasi:sockets/instance-network": { instanceNetwork },
      "wasi:sockets/ip-name-lookup": { ResolveAddressStream, resolveAddresses },
      "wasi:sockets/tcp-create-socket": {
        createTcpSocket: (family: AddressFamily) => {
          own().check();
          return new TcpSocket(own(), checkFamilyArg(family));
        },
      },
      "wasi:sockets/udp-create-socket": {
        createUdpSocket: (family: AddressFamily) => {
          own().check();
          return new UdpSocket(own(), checkFamilyArg(family));
        },
      },
    },
    dispose: () => table?.dispose(),
  };
}

/**
 * The sockets of every instance without network access: each call that would make a
 * socket or a lookup fails with `access-denied` before anything is kept, so one set of
 * imports serves them all.
 */
export const DENIED_SOCKETS: SocketsHost = instanceSockets(false);
