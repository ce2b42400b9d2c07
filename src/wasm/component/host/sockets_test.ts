import assert from "node:assert/strict";
import { findExportedFunction, runToEnd } from "../command.ts";
import { prepare } from "../mod.ts";
import { compileCores, jcoTranspile, loadGlue } from "../transpile.ts";
import { guestInit, type GuestOptions } from "../test_util.ts";
import { createHost, hostFactory } from "./mod.ts";
import { type ByteSink, discardSink, EMPTY_SOURCE } from "./io.ts";
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
    assert.throws(() => s.receiveBufferSize(), (e) => e === "not-supported");
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
  const chunks: Uint8Array[] = [];
  const stdout: ByteSink = { ...discardSink(), write: (b) => void chunks.push(b.slice()) };
  const host = createHost({
    args: ["/sockets.wasm", "serve"],
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
    assert.match(text, /server got ping\nclient got pong:ping\n$/);
  } finally {
    host.dispose();
  }
});
