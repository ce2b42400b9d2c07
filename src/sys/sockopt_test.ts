import assert from "node:assert/strict";
import {
  closeSocket,
  findSocketFd,
  getSocketOption,
  openSocket,
  setSocketOption,
  type SocketEnd,
  SocketNotFound,
  SockOpt,
} from "./sockopt.ts";
import { Errno, SyscallError } from "./libc.ts";

const LOOPBACK = (port: number): SocketEnd => ({ family: "ipv4", bytes: [127, 0, 0, 1], port });
const portOf = (addr: Deno.Addr) => (addr as Deno.NetAddr).port;

Deno.test("findSocketFd: a listener and both ends of one connection, each its own descriptor", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = portOf(listener.addr);
  const client = await Deno.connect({ hostname: "127.0.0.1", port });
  const server = await listener.accept();
  try {
    const local = portOf(client.localAddr);
    const listening = findSocketFd({ kind: "stream", local: LOOPBACK(port), listening: true });
    const clientFd = findSocketFd({
      kind: "stream",
      local: LOOPBACK(local),
      remote: LOOPBACK(port),
    });
    const serverFd = findSocketFd({
      kind: "stream",
      local: LOOPBACK(port),
      remote: LOOPBACK(local),
    });
    assert.equal(new Set([listening, clientFd, serverFd]).size, 3);
    // The client's end set leaves the server's end as it was.
    setSocketOption(clientFd, SockOpt.IP_TTL, 42);
    assert.equal(getSocketOption(clientFd, SockOpt.IP_TTL), 42);
    assert.notEqual(getSocketOption(serverFd, SockOpt.IP_TTL), 42);
    assert.throws(
      () => findSocketFd({ kind: "datagram", local: LOOPBACK(port) }),
      SocketNotFound,
      "a TCP port is no UDP socket",
    );
  } finally {
    client.close();
    server.close();
    listener.close();
  }
});

Deno.test("findSocketFd: two UDP sockets on one address are refused, not guessed", () => {
  const a = Deno.listenDatagram({
    hostname: "127.0.0.1",
    port: 0,
    transport: "udp",
    reuseAddress: true,
  });
  const port = portOf(a.addr);
  const b = Deno.listenDatagram({
    hostname: "127.0.0.1",
    port,
    transport: "udp",
    reuseAddress: true,
  });
  try {
    assert.throws(
      () => findSocketFd({ kind: "datagram", local: LOOPBACK(port) }),
      (e) => e instanceof SocketNotFound && /2 distinct sockets/.test(e.message),
    );
  } finally {
    a.close();
    b.close();
  }
  assert.throws(() => findSocketFd({ kind: "datagram", local: LOOPBACK(port) }), SocketNotFound);
});

Deno.test("setSocketOption: a value the kernel refuses is a SyscallError naming it", () => {
  const fd = openSocket("ipv4", "stream");
  try {
    assert.throws(
      () => setSocketOption(fd, SockOpt.TCP_KEEPCNT, 1000),
      (e) =>
        e instanceof SyscallError && e.errno === Errno.EINVAL &&
        /TCP_KEEPCNT = 1000/.test(e.message),
    );
  } finally {
    closeSocket(fd);
  }
});
