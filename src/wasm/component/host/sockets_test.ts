import assert from "node:assert/strict";
import { findExportedFunction, runToEnd } from "../command.ts";
import { prepare } from "../mod.ts";
import { compileCores, jcoTranspile, loadGlue } from "../transpile.ts";
import { guestInit, type GuestOptions } from "../test_util.ts";
import { createHost, hostFactory } from "./mod.ts";
import { type ByteSink, discardSink, EMPTY_SOURCE } from "./io.ts";
import { getSocketOption, SockOpt } from "../../../sys/sockopt.ts";
import {
  type IpSocketAddress,
  ipv6Text,
  Network,
  parseIpAddress,
  socketsHost,
  type TcpSocket,
  type UdpSocket,
} from "./sockets.ts";

/** The C guest of `tests/fixtures/src/sockets.c` (see its header for the modes). */
const SOCKETS_WASM = new URL("../../../../tests/fixtures/built/sockets.wasm", import.meta.url)
  .pathname;

/** Runs the sockets guest with `args` (after argv[0]); its exit code and stdout. */
async function runGuest(
  args: string[],
  options: GuestOptions = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const guest = guestInit("sockets.wasm", {
    hostPath: SOCKETS_WASM,
    args: ["/sockets.wasm", ...args],
    network: true,
    ...options,
  });
  try {
    const prepared = await prepare(guest.init, Deno.readFileSync(SOCKETS_WASM));
    const code = await prepared.run();
    return { code, stdout: guest.stdout(), stderr: guest.stderr() };
  } finally {
    guest.cleanup();
  }
}

/** A TCP server on 127.0.0.1 answering `echo:` + everything it read, then closing. */
function echoServer(): { port: number; close(): Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    for await (const conn of listener) {
      // Reads to the end with read(): the readable stream would close the connection.
      let text = "";
      const buf = new Uint8Array(1024);
      const decoder = new TextDecoder();
      for (let n; (n = await conn.read(buf)) !== null;) {
        text += decoder.decode(buf.subarray(0, n), { stream: true });
      }
      const out = new TextEncoder().encode(`echo:${text}`);
      let off = 0;
      while (off < out.length) off += await conn.write(out.subarray(off));
      conn.close();
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    close: async () => {
      listener.close();
      await served.catch(() => {});
    },
  };
}

const V4 = (port: number, a: [number, number, number, number]): IpSocketAddress => ({
  tag: "ipv4",
  val: { port, address: a },
});

Deno.test("sockets guest: resolves localhost and connects to a TCP echo server by name", async () => {
  const server = echoServer();
  try {
    const r = await runGuest(["connect", "localhost", String(server.port), "hello"]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(
      r.stdout,
      `resolved localhost to 127.0.0.1\nconnected to 127.0.0.1:${server.port}\n` +
        "received: echo:hello\n",
    );
  } finally {
    await server.close();
  }
});

Deno.test("sockets guest: listens, accepts its own connection, exchanges both ways", async () => {
  const r = await runGuest(["serve"]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(
    r.stdout,
    "listening on 127.0.0.1 (port assigned)\naccepted the client's connection\n" +
      "server got ping\nclient got pong:ping\n",
  );
});

Deno.test("sockets guest: sends a UDP datagram and receives the answer", async () => {
  const server = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  const port = (server.addr as Deno.NetAddr).port;
  const answered = (async () => {
    const [data, from] = await server.receive();
    await server.send(
      new TextEncoder().encode(`re:${new TextDecoder().decode(data)}`),
      from,
    );
  })();
  try {
    const r = await runGuest(["udp", String(port), "datagram"]);
    await answered;
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.stdout, `udp received re:datagram\nfrom 127.0.0.1:${port}\n`);
  } finally {
    server.close();
  }
});

Deno.test("sockets guest: options set before connecting and binding read back once they are", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  try {
    const r = await runGuest(["options", String(port)]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(
      r.stdout,
      "set-hop-limit 0: invalid-argument\n" +
        "tcp hop-limit 7 receive-buffer-size 100000 keep-alive-idle-time 600000000000 " +
        "keep-alive-count 4\nudp unicast-hop-limit 5 send-buffer-size 30000\n",
    );
  } finally {
    listener.close();
  }
});

Deno.test("sockets guest: a refused connection and an invalid name are error codes", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const refused = await runGuest(["connect", "127.0.0.1", String(port), "x"]);
  assert.equal(refused.code, 1);
  assert.match(refused.stdout, /connect: error connection-refused\n$/);
  const invalid = await runGuest(["resolve", "not a name"]);
  assert.equal(invalid.code, 1);
  assert.equal(invalid.stdout, "resolve: error invalid-argument\n");
});

Deno.test("sockets guest: without network access every socket is access-denied", async () => {
  const server = echoServer();
  try {
    const tcp = await runGuest(["connect", "127.0.0.1", String(server.port), "x"], {
      network: false,
    });
    assert.equal(tcp.code, 1);
    assert.equal(tcp.stdout, "resolve: error access-denied\n");
    const serve = await runGuest(["serve"], { network: false });
    assert.equal(serve.stdout, "create-tcp-socket: error access-denied\n");
    const udp = await runGuest(["udp", "9", "x"], { network: false });
    assert.equal(udp.stdout, "create-udp-socket: error access-denied\n");
  } finally {
    await server.close();
  }
});

Deno.test({
  name: "sockets guest: names resolve with /etc/hosts as libc reads it (a private mount namespace)",
  // Needs root (unshare, mount), as the shim itself does.
  async fn() {
    const dir = Deno.makeTempDirSync({ prefix: "sockets-hosts-" });
    try {
      Deno.writeTextFileSync(
        `${dir}/hosts`,
        "127.0.0.1 localhost\n127.0.0.42 backend.test backend\n::1 ip6-localhost\n",
      );
      // Nothing answers DNS here: a name not in the hosts file fails at once.
      Deno.writeTextFileSync(`${dir}/resolv.conf`, "nameserver 127.0.0.1\noptions attempts:1\n");
      const script = `
        import { prepare } from ${JSON.stringify(new URL("../mod.ts", import.meta.url).href)};
        import { guestInit } from ${
        JSON.stringify(new URL("../test_util.ts", import.meta.url).href)
      };
        const guest = guestInit("sockets.wasm", {
          hostPath: ${JSON.stringify(SOCKETS_WASM)},
          args: ["/sockets.wasm", "resolve", Deno.args[0]],
          network: true,
        });
        const prepared = await prepare(guest.init, Deno.readFileSync(${
        JSON.stringify(SOCKETS_WASM)
      }));
        const code = await prepared.run();
        console.log(guest.stdout() + "exit " + code);
        guest.cleanup();
      `;
      Deno.writeTextFileSync(`${dir}/run.ts`, script);
      const resolve = async (name: string) => {
        const cmd = new Deno.Command("unshare", {
          args: [
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            `mount --bind "$1/hosts" /etc/hosts && mount --bind "$1/resolv.conf" /etc/resolv.conf && exec "$2" run -A --unstable-net "$1/run.ts" "$3"`,
            "sh",
            dir,
            Deno.execPath(),
            name,
          ],
          stdout: "piped",
          stderr: "piped",
        });
        const out = await cmd.output();
        const stdout = new TextDecoder().decode(out.stdout);
        // The runner's log line (the transpile) goes to stderr; anything else is a failure.
        if (!out.success) throw new Error(stdout + new TextDecoder().decode(out.stderr));
        return stdout;
      };
      assert.equal(await resolve("backend.test"), "backend.test 127.0.0.42\nexit 0\n");
      assert.equal(await resolve("backend"), "backend 127.0.0.42\nexit 0\n");
      assert.equal(await resolve("ip6-localhost"), "ip6-localhost 0:0:0:0:0:0:0:1\nexit 0\n");
      assert.match(
        await resolve("unknown.test"),
        /^resolve: error (name-unresolvable|temporary-resolver-failure)\nexit 1\n$/,
      );
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test("addresses: IPv6 text as RFC 5952 writes it, literals parse both ways", () => {
  assert.equal(ipv6Text([0, 0, 0, 0, 0, 0, 0, 1]), "::1");
  assert.equal(ipv6Text([0, 0, 0, 0, 0, 0, 0, 0]), "::");
  assert.equal(ipv6Text([0x2001, 0xdb8, 0, 0, 1, 0, 0, 1]), "2001:db8::1:0:0:1");
  assert.equal(ipv6Text([0x2001, 0xdb8, 0, 1, 1, 1, 1, 1]), "2001:db8:0:1:1:1:1:1");
  assert.deepEqual(parseIpAddress("127.0.0.1"), { tag: "ipv4", val: [127, 0, 0, 1] });
  assert.deepEqual(parseIpAddress("::ffff:10.0.0.1"), {
    tag: "ipv6",
    val: [0, 0, 0, 0, 0, 0xffff, 0x0a00, 1],
  });
  assert.deepEqual(parseIpAddress("[fe80::1%eth0]"), {
    tag: "ipv6",
    val: [0xfe80, 0, 0, 0, 0, 0, 0, 1],
  });
  for (const bad of ["1.2.3", "256.1.1.1", "01.2.3.4", "1::2::3", "1:2:3:4:5:6:7:8:9", "x"]) {
    assert.equal(parseIpAddress(bad), undefined, bad);
  }
});

Deno.test("tcp-socket: state errors, and finish-connect would-block until connected", async () => {
  const sockets = socketsHost(true);
  const net = (sockets.imports["wasi:sockets/instance-network"].instanceNetwork as () => Network)();
  const create = sockets.imports["wasi:sockets/tcp-create-socket"].createTcpSocket as (
    f: string,
  ) => TcpSocket;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  try {
    const s = create("ipv4");
    assert.throws(() => s.finishConnect(), (e) => e === "not-in-progress");
    assert.throws(() => s.localAddress(), (e) => e === "invalid-state");
    assert.throws(() => s.startListen(), (e) => e === "invalid-state");
    assert.throws(
      () => s.startConnect(net, V4(0, [127, 0, 0, 1])),
      (e) => e === "invalid-argument",
    );
    assert.throws(
      () =>
        s.startConnect(net, {
          tag: "ipv6",
          val: { port, flowInfo: 0, address: [0, 0, 0, 0, 0, 0, 0, 1], scopeId: 0 },
        }),
      (e) => e === "invalid-argument",
      "an IPv4 socket takes IPv4 addresses only",
    );
    s.startConnect(net, V4(port, [127, 0, 0, 1]));
    assert.throws(() => s.finishConnect(), (e) => e === "would-block");
    assert.throws(
      () => s.startConnect(net, V4(port, [127, 0, 0, 1])),
      (e) => e === "invalid-state",
    );
    await s.subscribe().block();
    const [input, output] = s.finishConnect();
    assert.deepEqual(s.remoteAddress(), V4(port, [127, 0, 0, 1]));
    s.setKeepAliveEnabled(true);
    assert.equal(s.keepAliveEnabled(), true);
    input[Symbol.dispose]();
    output[Symbol.dispose]();
    s[Symbol.dispose]();
  } finally {
    listener.close();
    sockets.dispose();
  }
});

/** A connection to a listener just closed: refused, or reset while its accept unwinds. */
function closed(err: unknown): boolean {
  return err instanceof Deno.errors.ConnectionRefused ||
    err instanceof Deno.errors.ConnectionReset;
}

Deno.test("an instance's sockets close when it ends; another instance's stay open", async () => {
  const newHost = hostFactory({
    args: [],
    cwd: "/",
    root: null,
    stdin: EMPTY_SOURCE,
    stdout: discardSink(),
    stderr: discardSink(),
    network: true,
  });
  const bindListener = (host: ReturnType<typeof newHost>) => {
    const net = (host.imports["wasi:sockets/instance-network"].instanceNetwork as () => Network)();
    const s = (host.imports["wasi:sockets/tcp-create-socket"].createTcpSocket as (
      f: string,
    ) => TcpSocket)("ipv4");
    s.startBind(net, V4(0, [127, 0, 0, 1]));
    s.finishBind();
    s.startListen();
    s.finishListen();
    const addr = s.localAddress();
    return { socket: s, port: addr.val.port };
  };
  const a = newHost([]);
  const b = newHost([]);
  const inA = bindListener(a);
  const inB = bindListener(b);
  // A connection to b's listener waits for b's accept.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: inB.port });
  a.dispose(); // a's request ended without dropping its listener
  await assert.rejects(
    Deno.connect({ hostname: "127.0.0.1", port: inA.port }),
    closed,
    "a's listener was closed with its instance",
  );
  await inB.socket.subscribe().block();
  const [accepted, input, output] = inB.socket.accept();
  assert.equal(accepted.isListening(), false);
  input[Symbol.dispose]();
  output[Symbol.dispose]();
  conn.close();
  b.dispose();
  await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: inB.port }), closed);
});

Deno.test("without network access, outgoing HTTP is HTTP-request-denied", () => {
  const host = hostFactory({
    args: [],
    cwd: "/",
    root: null,
    stdin: EMPTY_SOURCE,
    stdout: discardSink(),
    stderr: discardSink(),
  })([]);
  const handle = host.imports["wasi:http/outgoing-handler"].handle as () => unknown;
  assert.throws(() => handle(), (e) => (e as { tag: string }).tag === "HTTP-request-denied");
  const create = host.imports["wasi:sockets/tcp-create-socket"].createTcpSocket as (
    f: string,
  ) => unknown;
  assert.throws(() => create("ipv4"), (e) => e === "access-denied");
  host.dispose();
});

Deno.test("udp-socket: a stream with a remote address sends there and hears only from it", async () => {
  const sockets = socketsHost(true);
  const net = (sockets.imports["wasi:sockets/instance-network"].instanceNetwork as () => Network)();
  const create = sockets.imports["wasi:sockets/udp-create-socket"].createUdpSocket as (
    f: string,
  ) => UdpSocket;
  const peer = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  const other = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  const peerPort = (peer.addr as Deno.NetAddr).port;
  try {
    const s = create("ipv4");
    assert.throws(() => s.stream(), (e) => e === "invalid-state", "not bound yet");
    s.startBind(net, V4(0, [127, 0, 0, 1]));
    s.finishBind();
    const local = s.localAddress();
    const [incoming, outgoing] = s.stream(V4(peerPort, [127, 0, 0, 1]));
    assert.deepEqual(s.remoteAddress(), V4(peerPort, [127, 0, 0, 1]));
    assert.equal(outgoing.checkSend() > 0n, true);
    assert.throws(
      () => outgoing.send([{ data: new Uint8Array(1), remoteAddress: V4(9, [127, 0, 0, 1]) }]),
      (e) => e === "invalid-argument",
      "a connected stream sends to its remote only",
    );
    outgoing.checkSend();
    assert.equal(outgoing.send([{ data: new TextEncoder().encode("hi") }]), 1n);
    const [got, from] = await peer.receive();
    assert.equal(new TextDecoder().decode(got), "hi");
    assert.equal((from as Deno.NetAddr).port, local.val.port);
    const to = { transport: "udp" as const, hostname: "127.0.0.1", port: local.val.port };
    await other.send(new TextEncoder().encode("stranger"), to);
    await peer.send(new TextEncoder().encode("peer"), to);
    await incoming.subscribe().block();
    const received = incoming.receive(10n);
    assert.deepEqual(received.map((d) => new TextDecoder().decode(d.data)), ["peer"]);
    assert.deepEqual(received[0].remoteAddress, V4(peerPort, [127, 0, 0, 1]));
    assert.deepEqual(incoming.receive(10n), [], "nothing more: receive never blocks");
    s[Symbol.dispose]();
    assert.throws(() => incoming.receive(1n), (e) => e === "invalid-state");
  } finally {
    peer.close();
    other.close();
    sockets.dispose();
  }
});

Deno.test("sockets guest under jco's glue (components the lean glue does not take)", async () => {
  const bytes = Deno.readFileSync(SOCKETS_WASM);
  const t = await jcoTranspile(bytes);
  const instantiate = await loadGlue(t.glue);
  const modules = await compileCores(t.cores);
  const run = async (args: string[]) => {
    const chunks: Uint8Array[] = [];
    const stdout: ByteSink = { ...discardSink(), write: (b) => void chunks.push(b.slice()) };
    const host = createHost({
      args: ["/sockets.wasm", ...args],
      env: [],
      cwd: "/",
      root: null,
      stdin: EMPTY_SOURCE,
      stdout,
      stderr: discardSink(),
      network: true,
    });
    try {
      const exports = instantiate((n) => modules.get(n)!, host.imports);
      const end = await runToEnd(
        findExportedFunction(exports, "wasi:cli/run@0.2.12#run", "/sockets.wasm"),
      );
      const text = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
      assert.deepEqual(end, { kind: "exit", code: 0 }, text);
      return text;
    } finally {
      host.dispose();
    }
  };
  assert.match(await run(["serve"]), /server got ping\nclient got pong:ping\n$/);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    assert.match(
      await run(["options", String((listener.addr as Deno.NetAddr).port)]),
      /tcp hop-limit 7 receive-buffer-size 100000 keep-alive-idle-time 600000000000 /,
    );
  } finally {
    listener.close();
  }
});

// ---- socket options ----

const V6 = (port: number, a: number[]): IpSocketAddress => ({
  tag: "ipv6",
  val: {
    port,
    flowInfo: 0,
    address: a as [number, number, number, number, number, number, number, number],
    scopeId: 0,
  },
});
const LOOPBACK6 = [0, 0, 0, 0, 0, 0, 0, 1];

/** One line of `/proc/net/{tcp,tcp6,udp,udp6}`: the kernel's own view of a socket. */
interface KernelSocket {
  /** The `tr` field: which timer runs (2: keep-alive). */
  timer: number;
  /** When it fires, in clock ticks (`USER_HZ`, 100 a second) from now. */
  ticks: number;
  /** The descriptor of this process that is this socket (by inode, not by address). */
  fd: number;
}

/** The socket of `table` with these ports, and which of this process's descriptors it is. */
function kernelSocket(
  table: "tcp" | "tcp6" | "udp" | "udp6",
  localPort: number,
  remotePort = 0,
): KernelSocket {
  const port = (field: string) => parseInt(field.split(":").at(-1)!, 16);
  const lines = Deno.readTextFileSync(`/proc/net/${table}`).trim().split("\n").slice(1);
  const row = lines.map((l) => l.trim().split(/\s+/)).find((f) =>
    port(f[1]) === localPort && port(f[2]) === remotePort
  );
  assert.ok(row, `no ${table} socket ${localPort} -> ${remotePort}`);
  const [timer, ticks] = row[5].split(":").map((x) => parseInt(x, 16));
  const link = `socket:[${row[9]}]`;
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${entry.name}`) === link) {
        return { timer, ticks, fd: Number(entry.name) };
      }
    } catch { /* closed meanwhile */ }
  }
  throw new Error(`no descriptor of this process is ${link}`);
}

/** How many descriptors this process has open. */
function openFds(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
}

/** A host's socket constructors and network, for the option tests. */
function optionHost() {
  const sockets = socketsHost(true);
  const i = sockets.imports;
  return {
    sockets,
    net: (i["wasi:sockets/instance-network"].instanceNetwork as () => Network)(),
    tcp: i["wasi:sockets/tcp-create-socket"].createTcpSocket as (f: string) => TcpSocket,
    udp: i["wasi:sockets/udp-create-socket"].createUdpSocket as (f: string) => UdpSocket,
  };
}

Deno.test("tcp-socket options: set before connecting, they are the connection's on the kernel", async () => {
  const { sockets, net, tcp } = optionHost();
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  try {
    const s = tcp("ipv4");
    s.setKeepAliveEnabled(true);
    s.setKeepAliveIdleTime(600_400_000_000n); // rounded down to whole seconds
    s.setKeepAliveInterval(30_000_000_000n);
    s.setKeepAliveCount(4);
    s.setHopLimit(7);
    s.setReceiveBufferSize(100_000n);
    s.setSendBufferSize(50_000n);
    // Read back before the socket exists: what the kernel will have.
    assert.equal(s.keepAliveIdleTime(), 600_000_000_000n);
    assert.equal(s.keepAliveInterval(), 30_000_000_000n);
    assert.equal(s.keepAliveCount(), 4);
    assert.equal(s.hopLimit(), 7);
    assert.equal(s.receiveBufferSize(), 100_000n);
    assert.equal(s.sendBufferSize(), 50_000n);

    s.startConnect(net, V4(port, [127, 0, 0, 1]));
    assert.throws(() => s.hopLimit(), (e) => e === "invalid-state", "while connecting");
    assert.throws(() => s.setHopLimit(3), (e) => e === "invalid-state", "while connecting");
    await s.subscribe().block();
    const [input, output] = s.finishConnect();
    const local = s.localAddress().val.port;

    const kernel = kernelSocket("tcp", local, port);
    assert.equal(getSocketOption(kernel.fd, SockOpt.TCP_KEEPIDLE), 600);
    assert.equal(getSocketOption(kernel.fd, SockOpt.TCP_KEEPINTVL), 30);
    assert.equal(getSocketOption(kernel.fd, SockOpt.TCP_KEEPCNT), 4);
    assert.equal(getSocketOption(kernel.fd, SockOpt.IP_TTL), 7);
    assert.equal(getSocketOption(kernel.fd, SockOpt.SO_RCVBUF), 200_000, "Linux doubles it");
    assert.equal(getSocketOption(kernel.fd, SockOpt.SO_SNDBUF), 100_000);
    // The kernel's keep-alive timer runs on the idle time set (ticks of 1/100 s).
    assert.equal(kernel.timer, 2, "the keep-alive timer");
    assert.ok(kernel.ticks > 59_000 && kernel.ticks <= 60_000, `${kernel.ticks} ticks`);

    // Set on the connection itself.
    s.setHopLimit(9);
    s.setKeepAliveIdleTime(120_000_000_000n);
    assert.equal(getSocketOption(kernel.fd, SockOpt.IP_TTL), 9);
    assert.equal(s.hopLimit(), 9);
    const again = kernelSocket("tcp", local, port);
    assert.ok(again.ticks > 11_000 && again.ticks <= 12_000, `${again.ticks} ticks`);

    input[Symbol.dispose]();
    output[Symbol.dispose]();
    s[Symbol.dispose]();
    assert.throws(() => s.receiveBufferSize(), (e) => e === "invalid-state", "once closed");
  } finally {
    listener.close();
    sockets.dispose();
  }
});

Deno.test("tcp-socket options: a listener's, set before and after binding, go to what it accepts", async () => {
  const { sockets, net, tcp } = optionHost();
  try {
    const s = tcp("ipv6");
    s.setHopLimit(12); // IPV6_UNICAST_HOPS on an IPv6 socket
    s.setKeepAliveEnabled(true);
    s.setReceiveBufferSize(40_000n);
    s.startBind(net, V6(0, LOOPBACK6));
    s.finishBind();
    s.setKeepAliveIdleTime(900_000_000_000n);
    s.setKeepAliveCount(3);
    s.startListen();
    s.finishListen();
    const port = s.localAddress().val.port;
    const listening = kernelSocket("tcp6", port).fd;
    assert.equal(getSocketOption(listening, SockOpt.IPV6_UNICAST_HOPS), 12);
    assert.equal(getSocketOption(listening, SockOpt.SO_RCVBUF), 80_000);
    assert.equal(s.keepAliveIdleTime(), 900_000_000_000n);

    const client = await Deno.connect({ hostname: "::1", port });
    await s.subscribe().block();
    const [accepted, input, output] = s.accept();
    assert.equal(accepted.hopLimit(), 12);
    assert.equal(accepted.receiveBufferSize(), 40_000n);
    assert.equal(accepted.keepAliveIdleTime(), 900_000_000_000n);
    assert.equal(accepted.keepAliveCount(), 3);
    assert.equal(accepted.keepAliveEnabled(), true);
    accepted.setHopLimit(99);
    const kernel = kernelSocket("tcp6", port, (client.localAddr as Deno.NetAddr).port);
    assert.equal(getSocketOption(kernel.fd, SockOpt.IPV6_UNICAST_HOPS), 99);
    assert.equal(getSocketOption(listening, SockOpt.IPV6_UNICAST_HOPS), 12, "the listener's own");
    // The client end of the same connection (the addresses swapped) is untouched.
    const clientEnd = kernelSocket("tcp6", (client.localAddr as Deno.NetAddr).port, port);
    assert.notEqual(getSocketOption(clientEnd.fd, SockOpt.IPV6_UNICAST_HOPS), 99);
    input[Symbol.dispose]();
    output[Symbol.dispose]();
    accepted[Symbol.dispose]();
    client.close();
  } finally {
    sockets.dispose();
  }
});

Deno.test("socket options: 0 is invalid-argument, other values are clamped as Linux takes them", () => {
  const { sockets, net, tcp, udp } = optionHost();
  try {
    const s = tcp("ipv4");
    const invalid = (e: unknown) => e === "invalid-argument";
    assert.throws(() => s.setReceiveBufferSize(0n), invalid);
    assert.throws(() => s.setSendBufferSize(0n), invalid);
    assert.throws(() => s.setKeepAliveIdleTime(0n), invalid);
    assert.throws(() => s.setKeepAliveInterval(0n), invalid);
    assert.throws(() => s.setKeepAliveCount(0), invalid);
    assert.throws(() => s.setHopLimit(0), invalid);
    assert.throws(() => s.setHopLimit(256), invalid, "not a u8");
    s.startBind(net, V4(0, [127, 0, 0, 1]));
    s.finishBind();
    const fd = kernelSocket("tcp", s.localAddress().val.port).fd;
    s.setKeepAliveIdleTime(1n); // under a second: one second
    assert.equal(s.keepAliveIdleTime(), 1_000_000_000n);
    s.setKeepAliveInterval(0xffff_ffff_ffff_ffffn); // Linux's most: 32767 s
    assert.equal(s.keepAliveInterval(), 32_767_000_000_000n);
    s.setKeepAliveCount(0xffff_ffff); // Linux's most: 127
    assert.equal(s.keepAliveCount(), 127);
    // A size past the kernel's limit (net.core.rmem_max) is clamped to it, not refused.
    const max = Number(Deno.readTextFileSync("/proc/sys/net/core/rmem_max").trim());
    s.setReceiveBufferSize(1n << 60n);
    assert.equal(s.receiveBufferSize(), BigInt(max));
    assert.equal(getSocketOption(fd, SockOpt.SO_RCVBUF), 2 * max);
    s.setSendBufferSize(1n); // below the kernel's least: raised to it
    assert.ok(s.sendBufferSize() > 1n);
    assert.equal(s.hopLimit(), getSocketOption(fd, SockOpt.IP_TTL), "the default, unset");
    s.setHopLimit(255);
    assert.equal(getSocketOption(fd, SockOpt.IP_TTL), 255);

    const u = udp("ipv4");
    assert.throws(() => u.setUnicastHopLimit(0), invalid);
    assert.throws(() => u.setReceiveBufferSize(0n), invalid);
    assert.throws(() => u.setSendBufferSize(0n), invalid);
  } finally {
    sockets.dispose();
  }
});

Deno.test("udp-socket options: set before and after binding, on the kernel's socket, per family", () => {
  const { sockets, net, udp } = optionHost();
  try {
    const v4 = udp("ipv4");
    v4.setUnicastHopLimit(5);
    v4.setSendBufferSize(30_000n);
    assert.equal(v4.unicastHopLimit(), 5);
    v4.startBind(net, V4(0, [127, 0, 0, 1]));
    v4.finishBind();
    const fd4 = kernelSocket("udp", v4.localAddress().val.port).fd;
    assert.equal(getSocketOption(fd4, SockOpt.IP_TTL), 5);
    assert.equal(getSocketOption(fd4, SockOpt.SO_SNDBUF), 60_000);
    v4.setReceiveBufferSize(70_000n);
    assert.equal(getSocketOption(fd4, SockOpt.SO_RCVBUF), 140_000);
    assert.equal(v4.receiveBufferSize(), 70_000n);

    const v6 = udp("ipv6");
    v6.startBind(net, V6(0, LOOPBACK6));
    v6.finishBind();
    v6.setUnicastHopLimit(33);
    const fd6 = kernelSocket("udp6", v6.localAddress().val.port).fd;
    assert.equal(getSocketOption(fd6, SockOpt.IPV6_UNICAST_HOPS), 33);
    assert.equal(v6.unicastHopLimit(), 33);
    v6[Symbol.dispose]();
    assert.throws(() => v6.unicastHopLimit(), (e) => e === "invalid-state");
  } finally {
    sockets.dispose();
  }
});

Deno.test("socket options: each of many sockets alike gets its own, and nothing is left open", async () => {
  const before = openFds();
  const { sockets, net, tcp, udp } = optionHost();
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  // The peers' ends of the connections: in this process too, with the addresses swapped.
  const peers: Deno.TcpConn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) peers.push(conn);
  })();
  try {
    const connected: TcpSocket[] = [];
    for (let i = 0; i < 24; i++) {
      const s = tcp("ipv4");
      // Every other one before connecting: a probe socket reads it, then goes.
      if (i % 2 === 0) {
        s.setHopLimit(100 + i);
        assert.equal(s.hopLimit(), 100 + i);
      }
      s.startConnect(net, V4(port, [127, 0, 0, 1]));
      connected.push(s);
    }
    const bound: UdpSocket[] = [];
    for (let i = 0; i < 8; i++) {
      const u = udp("ipv4");
      u.startBind(net, V4(0, [127, 0, 0, 1]));
      u.finishBind();
      u.setUnicastHopLimit(200 + i);
      bound.push(u);
    }
    for (const [i, s] of connected.entries()) {
      await s.subscribe().block();
      const [input, output] = s.finishConnect();
      input[Symbol.dispose]();
      output[Symbol.dispose]();
      if (i % 2 === 1) s.setHopLimit(100 + i);
    }
    for (const [i, s] of connected.entries()) {
      assert.equal(s.hopLimit(), 100 + i);
      const fd = kernelSocket("tcp", s.localAddress().val.port, port).fd;
      assert.equal(getSocketOption(fd, SockOpt.IP_TTL), 100 + i);
    }
    for (const [i, u] of bound.entries()) {
      const fd = kernelSocket("udp", u.localAddress().val.port).fd;
      assert.equal(getSocketOption(fd, SockOpt.IP_TTL), 200 + i);
    }
    while (peers.length < connected.length) await new Promise((r) => setTimeout(r, 5));
    for (const peer of peers) {
      const fd = kernelSocket("tcp", port, (peer.remoteAddr as Deno.NetAddr).port).fd;
      assert.equal(getSocketOption(fd, SockOpt.IP_TTL), 64, "the peers' ends are untouched");
    }
  } finally {
    sockets.dispose();
    for (const peer of peers) peer.close();
    listener.close();
    await accepting.catch(() => {});
  }
  assert.equal(openFds(), before, "every socket, probe and directory listing closed");
});

Deno.test("socket options: a runner without FFI gets not-supported, its bad values invalid-argument", async () => {
  const script = `
    import { socketsHost } from ${JSON.stringify(new URL("./sockets.ts", import.meta.url).href)};
    const i = socketsHost(true).imports;
    const s = i["wasi:sockets/tcp-create-socket"].createTcpSocket("ipv4");
    const u = i["wasi:sockets/udp-create-socket"].createUdpSocket("ipv4");
    const codes = [];
    for (const f of [
      () => s.receiveBufferSize(), () => s.setHopLimit(3), () => s.keepAliveIdleTime(),
      () => u.setSendBufferSize(10n), () => s.setHopLimit(0),
    ]) {
      try { f(); codes.push("ok"); } catch (e) { codes.push(e); }
    }
    console.log(codes.join(" "));
  `;
  const file = Deno.makeTempFileSync({ prefix: "sockopt-", suffix: ".ts" });
  Deno.writeTextFileSync(file, script);
  // `deno eval` would grant everything: a file, run with read and net only.
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-config", "--unstable-net", "--allow-read", "--allow-net", file],
    stdout: "piped",
    stderr: "piped",
  }).output().finally(() => Deno.removeSync(file));
  const text = new TextDecoder().decode(out.stdout);
  assert.ok(out.success, text + new TextDecoder().decode(out.stderr));
  assert.equal(
    text,
    "not-supported not-supported not-supported not-supported invalid-argument\n",
  );
});
