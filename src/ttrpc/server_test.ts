import assert from "node:assert/strict";
import { TtrpcClient } from "./client.ts";
import {
  type DecodedFrame,
  encodeFrame,
  FrameDecoder,
  HEADER_LENGTH,
  MESSAGE_LENGTH_MAX,
  MessageType,
} from "./frame.ts";
import { type CallContext, type Handler, TtrpcServer, type TtrpcServerOptions } from "./server.ts";
import { Code, RpcError } from "./status.ts";
import { decodeResponse, encodeRequest, type TtrpcResponse } from "./envelope.ts";

const SERVICE = "test.v1.Echo";
const enc = new TextEncoder();
const dec = new TextDecoder();

/** A server on a fresh Unix socket; `run` gets its path. Always torn down. */
async function withServer(
  methods: Record<string, Handler>,
  run: (path: string, server: TtrpcServer) => Promise<void>,
  options: TtrpcServerOptions = {},
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ttrpc-test-" });
  const path = `${dir}/s.sock`;
  const server = new TtrpcServer(options);
  server.register(SERVICE, methods);
  const listener = Deno.listen({ transport: "unix", path });
  const serving = server.serve(listener);
  try {
    await run(path, server);
  } finally {
    await server.close();
    await serving;
    await Deno.remove(dir, { recursive: true });
  }
}

/** A hand-driven ttrpc peer that writes raw bytes and reads raw frames. */
class RawPeer {
  readonly conn: Deno.UnixConn;
  readonly #decoder = new FrameDecoder();
  readonly #frames: DecodedFrame[] = [];
  readonly #buf = new Uint8Array(64 * 1024);

  private constructor(conn: Deno.UnixConn) {
    this.conn = conn;
  }

  static async connect(path: string): Promise<RawPeer> {
    return new RawPeer(await Deno.connect({ transport: "unix", path }));
  }

  async write(bytes: Uint8Array): Promise<void> {
    let n = 0;
    while (n < bytes.length) n += await this.conn.write(bytes.subarray(n));
  }

  request(streamId: number, method: string, payload = new Uint8Array(0)): Promise<void> {
    const req = encodeRequest({ service: SERVICE, method, payload, timeout_nano: 0, metadata: [] });
    return this.write(encodeFrame(streamId, MessageType.REQUEST, 0, req));
  }

  /** Reads until `count` frames arrived; null if the server closed the connection first. */
  async frames(count: number): Promise<DecodedFrame[] | null> {
    while (this.#frames.length < count) {
      const n = await this.conn.read(this.#buf);
      if (n === null) return null;
      this.#frames.push(...this.#decoder.push(this.#buf.subarray(0, n)));
    }
    return this.#frames.splice(0, count);
  }

  /** Reads `count` Response frames and decodes them, keyed by stream id. */
  async responses(count: number): Promise<Map<number, TtrpcResponse>> {
    const frames = await this.frames(count);
    assert.ok(frames, "connection closed before the responses arrived");
    const out = new Map<number, TtrpcResponse>();
    for (const f of frames) {
      assert.ok(!f.oversize);
      assert.equal(f.type, MessageType.RESPONSE);
      out.set(f.streamId, decodeResponse(f.data));
    }
    return out;
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // Closed already.
    }
  }
}

const echo: Handler = (payload) => Promise.resolve(payload);

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

Deno.test("server answers out of order: a fast call overtakes a slow one", async () => {
  let releaseSlow!: () => void;
  const slowGate = new Promise<void>((resolve) => releaseSlow = resolve);
  await withServer({
    Slow: async () => {
      await slowGate;
      return enc.encode("slow");
    },
    Fast: () => Promise.resolve(enc.encode("fast")),
  }, async (path) => {
    const peer = await RawPeer.connect(path);
    await peer.request(1, "Slow");
    await peer.request(3, "Fast");
    const [first] = (await peer.frames(1))!;
    assert.equal(first.streamId, 3);
    releaseSlow();
    const [second] = (await peer.frames(1))!;
    assert.equal(second.streamId, 1);
    assert.ok(!second.oversize);
    assert.equal(dec.decode(decodeResponse(second.data).payload), "slow");
    peer.close();
  });
});

Deno.test("server answers with the client over a Unix socket, overlapping calls", async () => {
  await withServer({
    Echo: echo,
    Wait: async (p) => {
      await delay(30);
      return p;
    },
  }, async (path) => {
    const client = await TtrpcClient.connect(path);
    const waiting = client.call(SERVICE, "Wait", enc.encode("w"));
    assert.equal(dec.decode(await client.call(SERVICE, "Echo", enc.encode("e"))), "e");
    assert.equal(dec.decode(await waiting), "w");
    client.close();
  });
});

Deno.test("unknown service and method are UNIMPLEMENTED", async () => {
  await withServer({ Echo: echo }, async (path) => {
    const client = await TtrpcClient.connect(path);
    await assert.rejects(
      client.call("containerd.runtime.sandbox.v1.Sandbox", "Ping", new Uint8Array()),
      (err: unknown) =>
        err instanceof RpcError && err.code === Code.UNIMPLEMENTED &&
        err.message === "service containerd.runtime.sandbox.v1.Sandbox",
    );
    await assert.rejects(
      client.call(SERVICE, "Nope", new Uint8Array()),
      (err: unknown) =>
        err instanceof RpcError && err.code === Code.UNIMPLEMENTED && err.message === "method Nope",
    );
    client.close();
  });
});

Deno.test("handler errors: RpcError keeps its status, plain Error becomes UNKNOWN", async () => {
  await withServer({
    Missing: () => Promise.reject(new RpcError(Code.NOT_FOUND, "container not created: not found")),
    Plain: () => Promise.reject(new Error("disk on fire")),
    Sync: (() => {
      throw new TypeError("thrown synchronously");
    }) as Handler,
  }, async (path) => {
    const client = await TtrpcClient.connect(path);
    const cases: [string, number, string][] = [
      ["Missing", Code.NOT_FOUND, "container not created: not found"],
      ["Plain", Code.UNKNOWN, "disk on fire"],
      ["Sync", Code.UNKNOWN, "thrown synchronously"],
    ];
    for (const [method, code, message] of cases) {
      await assert.rejects(
        client.call(SERVICE, method, new Uint8Array()),
        (err: unknown) => err instanceof RpcError && err.code === code && err.message === message,
        method,
      );
    }
    client.close();
  });
});

Deno.test("odd handler results are answered, never an unhandled rejection", async () => {
  // Before: rejecting with a value String() cannot convert ended the whole process.
  await withServer({
    NoString: () => Promise.reject(Object.create(null)),
    Undefined: () => Promise.reject(undefined),
    NotBytes: () => Promise.resolve("text" as unknown as Uint8Array),
    Echo: echo,
  }, async (path) => {
    const client = await TtrpcClient.connect(path);
    const cases: [string, number, string][] = [
      ["NoString", Code.UNKNOWN, "[object Object]"],
      ["Undefined", Code.UNKNOWN, "undefined"],
      [
        "NotBytes",
        Code.INTERNAL,
        `ttrpc: the ${SERVICE}/NotBytes handler returned string, not bytes`,
      ],
    ];
    for (const [method, code, message] of cases) {
      await assert.rejects(
        client.call(SERVICE, method, new Uint8Array()),
        (err: unknown) => err instanceof RpcError && err.code === code && err.message === message,
        method,
      );
    }
    assert.equal(dec.decode(await client.call(SERVICE, "Echo", enc.encode("alive"))), "alive");
    client.close();
  });
});

Deno.test("an empty success payload is a header-only Response frame without status", async () => {
  await withServer({ Empty: () => Promise.resolve(new Uint8Array(0)) }, async (path) => {
    const peer = await RawPeer.connect(path);
    await peer.request(1, "Empty");
    const [frame] = (await peer.frames(1))!;
    assert.deepEqual(frame, {
      streamId: 1,
      type: MessageType.RESPONSE,
      flags: 0,
      data: new Uint8Array(0),
    });
    peer.close();
  });
});

Deno.test("oversize frame gets RESOURCE_EXHAUSTED and the connection keeps serving", async () => {
  await withServer({ Echo: echo }, async (path) => {
    const peer = await RawPeer.connect(path);
    const length = MESSAGE_LENGTH_MAX + 1;
    const header = encodeFrame(1, MessageType.REQUEST, 0).slice(0, HEADER_LENGTH);
    new DataView(header.buffer).setUint32(0, length);
    await peer.write(header);
    const chunk = new Uint8Array(256 * 1024);
    for (let sent = 0; sent < length; sent += chunk.length) {
      await peer.write(chunk.subarray(0, Math.min(chunk.length, length - sent)));
    }
    await peer.request(3, "Echo", enc.encode("still here"));
    const responses = await peer.responses(2);
    assert.deepEqual(responses.get(1)?.status, {
      code: Code.RESOURCE_EXHAUSTED,
      message: "message length 4194305 exceed maximum message size of 4194304",
      details: [],
    });
    assert.equal(dec.decode(responses.get(3)!.payload), "still here");
    peer.close();
  });
});

Deno.test("even and re-used stream ids are INVALID_ARGUMENT on that stream only", async () => {
  await withServer({ Echo: echo }, async (path) => {
    const peer = await RawPeer.connect(path);
    await peer.request(2, "Echo");
    await peer.request(5, "Echo", enc.encode("five"));
    await peer.request(5, "Echo");
    await peer.request(3, "Echo");
    await peer.request(7, "Echo", enc.encode("seven"));
    const frames = (await peer.frames(5))!;
    const byOrder = frames.map((f) => {
      assert.ok(!f.oversize);
      return { id: f.streamId, res: decodeResponse(f.data) };
    });
    const even = "StreamID must be odd for client initiated streams";
    const reused = "StreamID cannot be re-used and must increment";
    const errors = byOrder.filter((r) => r.res.status).map((r) => [
      r.id,
      r.res.status!.code,
      r.res.status!.message,
    ]);
    assert.deepEqual(errors, [
      [2, Code.INVALID_ARGUMENT, even],
      [5, Code.INVALID_ARGUMENT, reused],
      [3, Code.INVALID_ARGUMENT, reused],
    ]);
    const ok = byOrder.filter((r) => !r.res.status).map((r) => [r.id, dec.decode(r.res.payload)]);
    assert.deepEqual(ok, [[5, "five"], [7, "seven"]]);
    peer.close();
  });
});

Deno.test("malformed Request bytes are INVALID_ARGUMENT 'unmarshal request error'", async () => {
  await withServer({ Echo: echo }, async (path) => {
    const peer = await RawPeer.connect(path);
    await peer.write(encodeFrame(1, MessageType.REQUEST, 0, new Uint8Array([0x0a, 0x05, 0x61])));
    await peer.request(3, "Echo", enc.encode("ok"));
    const responses = await peer.responses(2);
    const status = responses.get(1)?.status;
    assert.equal(status?.code, Code.INVALID_ARGUMENT);
    assert.match(status!.message, /^unmarshal request error: .*runs past the end/);
    assert.equal(dec.decode(responses.get(3)!.payload), "ok");
    peer.close();
  });
});

Deno.test("Data frames and unknown message types are ignored", async () => {
  await withServer({ Echo: echo }, async (path) => {
    const peer = await RawPeer.connect(path);
    await peer.write(encodeFrame(1, MessageType.DATA, 1, enc.encode("data")));
    await peer.write(encodeFrame(3, 0x7f, 0, enc.encode("future")));
    await peer.request(5, "Echo", enc.encode("five"));
    const frames = (await peer.frames(1))!;
    assert.equal(frames[0].streamId, 5);
    peer.close();
  });
});

Deno.test("handlers get metadata, timeout and service/method in their context", async () => {
  let seen: CallContext | undefined;
  await withServer({
    Inspect: (_p, ctx) => {
      seen = ctx;
      return Promise.resolve(new Uint8Array());
    },
    Deadline: (_p, ctx) =>
      new Promise((_resolve, reject) => {
        ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
      }),
  }, async (path) => {
    const client = await TtrpcClient.connect(path);
    await client.call(SERVICE, "Inspect", new Uint8Array(), {
      timeoutMs: 2000,
      metadata: { "Containerd-Namespace-Ttrpc": "default", multi: ["a", "b"] },
    });
    assert.equal(seen?.service, SERVICE);
    assert.equal(seen?.method, "Inspect");
    assert.equal(seen?.timeoutNano, 2_000_000_000);
    assert.deepEqual(
      [...seen!.metadata],
      [["containerd-namespace-ttrpc", ["default"]], ["multi", ["a", "b"]]],
    );
    // The server aborts the handler at the deadline; the client gives up at the same time.
    await assert.rejects(
      client.call(SERVICE, "Deadline", new Uint8Array(), { timeoutMs: 20 }),
      (err: unknown) => err instanceof RpcError && err.code === Code.DEADLINE_EXCEEDED,
    );
    await delay(30);
    client.close();
  });
});

Deno.test("2000 concurrent calls on one connection are all in flight at once", async () => {
  const total = 2000;
  let arrived = 0;
  let allArrived!: () => void;
  const gate = new Promise<void>((resolve) => allArrived = resolve);
  await withServer({
    Echo: async (p) => {
      if (++arrived === total) allArrived();
      await gate; // No call is answered before every call has reached its handler.
      return p;
    },
  }, async (path) => {
    const client = await TtrpcClient.connect(path);
    const calls = Array.from({ length: total }, (_, i) => {
      const payload = enc.encode(`call-${i}`);
      return client.call(SERVICE, "Echo", payload).then((r) => dec.decode(r));
    });
    const results = await Promise.all(calls);
    results.forEach((r, i) => assert.equal(r, `call-${i}`));
    assert.equal(arrived, total);
    client.close();
  }, { maxInFlight: total });
});

Deno.test("requests beyond maxInFlight get RESOURCE_EXHAUSTED", async () => {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  await withServer({
    Block: async () => {
      await gate;
      return new Uint8Array();
    },
  }, async (path) => {
    const client = await TtrpcClient.connect(path);
    const blocked = [1, 2].map(() => client.call(SERVICE, "Block", new Uint8Array()));
    await assert.rejects(
      client.call(SERVICE, "Block", new Uint8Array()),
      (err: unknown) =>
        err instanceof RpcError && err.code === Code.RESOURCE_EXHAUSTED &&
        /too many requests in flight/.test(err.message),
    );
    release();
    await Promise.all(blocked);
    // Capacity is back once the calls finished.
    await client.call(SERVICE, "Block", new Uint8Array());
    client.close();
  }, { maxInFlight: 2 });
});

Deno.test("a peer that disconnects mid-frame or sends garbage leaves the server serving", async () => {
  const closedCounts: number[] = [];
  await withServer({ Echo: echo }, async (path, server) => {
    const client = await TtrpcClient.connect(path);

    const halfHeader = await RawPeer.connect(path);
    await halfHeader.write(encodeFrame(1, MessageType.REQUEST, 0, enc.encode("xyz")).slice(0, 4));
    halfHeader.close();

    const halfBody = await RawPeer.connect(path);
    const frame = encodeFrame(1, MessageType.REQUEST, 0, new Uint8Array(1000));
    await halfBody.write(frame.slice(0, 500));
    halfBody.close();

    const garbage = await RawPeer.connect(path);
    await garbage.write(enc.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert.equal(await garbage.frames(1), null, "server must close the garbage connection");
    garbage.close();

    for (let i = 0; i < 50 && server.connections > 1; i++) await delay(5);
    assert.equal(server.connections, 1);
    assert.equal(dec.decode(await client.call(SERVICE, "Echo", enc.encode("alive"))), "alive");
    client.close();
    await client.closed;
    for (let i = 0; i < 50 && server.connections > 0; i++) await delay(5);
    assert.equal(server.connections, 0);
  }, { onConnectionClosed: (remaining) => closedCounts.push(remaining) });
  assert.equal(closedCounts.length, 4);
  assert.equal(closedCounts.at(-1), 0);
});

Deno.test("close() stops accepting, closes connections and drops late responses", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ttrpc-test-" });
  const path = `${dir}/s.sock`;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  let handlerDone!: () => void;
  const finished = new Promise<void>((resolve) => handlerDone = resolve);
  const server = new TtrpcServer();
  server.register(SERVICE, {
    Block: async () => {
      await gate;
      handlerDone();
      return new Uint8Array([1]);
    },
  });
  const serving = server.serve(Deno.listen({ transport: "unix", path }));
  const client = await TtrpcClient.connect(path);
  const pending = client.call(SERVICE, "Block", new Uint8Array());
  await delay(10);
  assert.equal(server.connections, 1);
  await server.close();
  await serving;
  assert.equal(server.connections, 0);
  await assert.rejects(pending, /ttrpc: closed/);
  await client.closed;
  await assert.rejects(Deno.connect({ transport: "unix", path }));
  release();
  await finished; // The late response is dropped without throwing.
  await delay(5);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a handler may close the server: its own response is still delivered", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ttrpc-test-" });
  const path = `${dir}/s.sock`;
  const server = new TtrpcServer();
  let closing: Promise<void> | undefined;
  server.register(SERVICE, {
    Shutdown: () => {
      setTimeout(() => closing = server.close(), 0);
      return Promise.resolve(enc.encode("bye"));
    },
  });
  const serving = server.serve(Deno.listen({ transport: "unix", path }));
  const client = await TtrpcClient.connect(path);
  assert.equal(dec.decode(await client.call(SERVICE, "Shutdown", new Uint8Array())), "bye");
  await serving;
  await client.closed;
  await closing;
  await Deno.remove(dir, { recursive: true });
});
