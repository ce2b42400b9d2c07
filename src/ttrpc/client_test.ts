import assert from "node:assert/strict";
import { CLOSED_MESSAGE, TtrpcClient } from "./client.ts";
import { encodeFrame, type Frame, FrameDecoder, MESSAGE_LENGTH_MAX, MessageType } from "./frame.ts";
import { Code, RpcError } from "./status.ts";
import { decodeRequest, encodeResponse, type TtrpcRequest } from "./envelope.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A fake ttrpc server driven by hand: accepts one connection, reads Requests, writes anything. */
class FakeServer {
  readonly path: string;
  readonly #dir: string;
  readonly #listener: Deno.UnixListener;
  #conn: Deno.UnixConn | undefined;
  readonly #decoder = new FrameDecoder();
  readonly #frames: Frame[] = [];
  readonly #buf = new Uint8Array(64 * 1024);

  private constructor(dir: string) {
    this.#dir = dir;
    this.path = `${dir}/s.sock`;
    this.#listener = Deno.listen({ transport: "unix", path: this.path });
  }

  static async start(): Promise<FakeServer> {
    return new FakeServer(await Deno.makeTempDir({ prefix: "ttrpc-client-test-" }));
  }

  async #connection(): Promise<Deno.UnixConn> {
    this.#conn ??= await this.#listener.accept();
    return this.#conn;
  }

  /** Reads the next `count` Request frames. */
  async requests(count: number): Promise<{ streamId: number; req: TtrpcRequest }[]> {
    const conn = await this.#connection();
    while (this.#frames.length < count) {
      const n = await conn.read(this.#buf);
      if (n === null) throw new Error("client closed the connection");
      for (const f of this.#decoder.push(this.#buf.subarray(0, n))) {
        assert.ok(!f.oversize);
        this.#frames.push(f);
      }
    }
    return this.#frames.splice(0, count).map((f) => {
      assert.equal(f.type, MessageType.REQUEST);
      assert.equal(f.flags, 0);
      return { streamId: f.streamId, req: decodeRequest(f.data) };
    });
  }

  async write(bytes: Uint8Array): Promise<void> {
    const conn = await this.#connection();
    let n = 0;
    while (n < bytes.length) n += await conn.write(bytes.subarray(n));
  }

  respond(streamId: number, payload: Uint8Array, status?: { code: number; message: string }) {
    const data = encodeResponse({
      payload,
      status: status && { ...status, details: [] },
    });
    return this.write(encodeFrame(streamId, MessageType.RESPONSE, 0, data));
  }

  dropConnection(): void {
    this.#conn?.close();
    this.#conn = undefined;
  }

  async stop(): Promise<void> {
    try {
      this.#conn?.close();
    } catch {
      // Closed already.
    }
    this.#listener.close();
    await Deno.remove(this.#dir, { recursive: true });
  }
}

async function withFake(run: (fake: FakeServer) => Promise<void>): Promise<void> {
  const fake = await FakeServer.start();
  try {
    await run(fake);
  } finally {
    await fake.stop();
  }
}

Deno.test("client uses stream ids 1, 3, 5 and sends timeout_nano and metadata", async () => {
  await withFake(async (fake) => {
    const client = await TtrpcClient.connect(`unix://${fake.path}`);
    const calls = [
      client.call("svc", "A", enc.encode("a")),
      client.call("svc", "B", new Uint8Array(), { timeoutMs: 5000 }),
      client.call("svc", "C", new Uint8Array(), {
        metadata: { "containerd-namespace-ttrpc": "probe", multi: ["x", "y"] },
      }),
    ];
    const reqs = await fake.requests(3);
    assert.deepEqual(reqs.map((r) => r.streamId), [1, 3, 5]);
    assert.deepEqual(reqs.map((r) => r.req.method), ["A", "B", "C"]);
    assert.equal(dec.decode(reqs[0].req.payload), "a");
    assert.equal(reqs[0].req.timeout_nano, 0);
    assert.equal(reqs[1].req.timeout_nano, 5_000_000_000);
    assert.deepEqual(reqs[2].req.metadata, [
      { key: "containerd-namespace-ttrpc", value: "probe" },
      { key: "multi", value: "x" },
      { key: "multi", value: "y" },
    ]);
    // Answer out of order.
    await fake.respond(5, enc.encode("c"));
    await fake.respond(1, enc.encode("a!"));
    await fake.respond(3, new Uint8Array());
    const results = await Promise.all(calls);
    assert.deepEqual(results.map((r) => dec.decode(r)), ["a!", "", "c"]);
    client.close();
    await client.closed;
  });
});

Deno.test("client rejects with RpcError on a non-zero status; code 0 is success", async () => {
  await withFake(async (fake) => {
    const client = await TtrpcClient.connect(fake.path);
    const failing = client.call("svc", "Fail", new Uint8Array());
    const okWithZero = client.call("svc", "Ok", new Uint8Array());
    await fake.requests(2);
    await fake.respond(1, new Uint8Array(), { code: Code.NOT_FOUND, message: "nope: not found" });
    await fake.respond(3, enc.encode("fine"), { code: Code.OK, message: "" });
    await assert.rejects(
      failing,
      (err: unknown) =>
        err instanceof RpcError && err.code === Code.NOT_FOUND && err.message === "nope: not found",
    );
    assert.equal(dec.decode(await okWithZero), "fine");
    client.close();
  });
});

Deno.test("a timed-out call rejects with DEADLINE_EXCEEDED and its late answer is ignored", async () => {
  await withFake(async (fake) => {
    const client = await TtrpcClient.connect(fake.path);
    const slow = client.call("svc", "Slow", new Uint8Array(), { timeoutMs: 20 });
    await fake.requests(1);
    await assert.rejects(
      slow,
      (err: unknown) => err instanceof RpcError && err.code === Code.DEADLINE_EXCEEDED,
    );
    await fake.respond(1, enc.encode("late"));
    await fake.respond(99, enc.encode("never asked"));
    const next = client.call("svc", "Next", new Uint8Array());
    const [{ streamId }] = await fake.requests(1);
    assert.equal(streamId, 3);
    await fake.respond(3, enc.encode("next"));
    assert.equal(dec.decode(await next), "next");
    client.close();
  });
});

Deno.test("pending calls reject with 'ttrpc: closed' when the server drops the connection", async () => {
  await withFake(async (fake) => {
    const client = await TtrpcClient.connect(fake.path);
    const pending = client.call("svc", "Wait", new Uint8Array(), { timeoutMs: 10_000 });
    await fake.requests(1);
    fake.dropConnection();
    await assert.rejects(pending, (err: unknown) => (err as Error).message === CLOSED_MESSAGE);
    await client.closed;
    await assert.rejects(client.call("svc", "After", new Uint8Array()), /ttrpc: closed/);
  });
});

Deno.test("close() rejects pending calls and resolves closed", async () => {
  await withFake(async (fake) => {
    const client = await TtrpcClient.connect(fake.path);
    const pending = client.call("svc", "Wait", new Uint8Array());
    await fake.requests(1);
    client.close();
    await assert.rejects(pending, /ttrpc: closed/);
    await client.closed;
  });
});

Deno.test("a Data frame on a unary call fails that call with a protocol error", async () => {
  await withFake(async (fake) => {
    const client = await TtrpcClient.connect(fake.path);
    const call = client.call("svc", "Unary", new Uint8Array());
    await fake.requests(1);
    await fake.write(encodeFrame(1, MessageType.DATA, 1, new Uint8Array()));
    await assert.rejects(call, /unexpected message type 3 received on stream 1: protocol error/);
    client.close();
  });
});

Deno.test("the client refuses to send a request larger than 4 MiB", async () => {
  await withFake(async (fake) => {
    const client = await TtrpcClient.connect(fake.path);
    await assert.rejects(
      client.call("svc", "Big", new Uint8Array(MESSAGE_LENGTH_MAX)),
      (err: unknown) =>
        err instanceof RpcError && err.code === Code.RESOURCE_EXHAUSTED &&
        /exceed maximum message size of 4194304/.test(err.message),
    );
    client.close();
  });
});

Deno.test("connect fails when nothing listens on the socket", async () => {
  const dir = await Deno.makeTempDir();
  await assert.rejects(TtrpcClient.connect(`${dir}/missing.sock`), Deno.errors.NotFound);
  await Deno.remove(dir);
});
