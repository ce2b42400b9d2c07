import assert from "node:assert/strict";
import {
  Fields,
  type IncomingRequest,
  OutgoingBody,
  OutgoingResponse,
  ResponseOutparam,
} from "./host/http.ts";
import { CLOSED, type InputStream, IoError } from "./host/io.ts";
import type { Host } from "./host/mod.ts";
import { BodyRefused, DENO_MAX_HEAD_BYTES, headerBytes, limitBody } from "./http_limits.ts";
import { Kind, ShimError } from "../../errdefs/errors.ts";
import {
  DEFAULT_BODY_TIMEOUT_MS,
  DEFAULT_GROWN_BUDGET_MIB,
  DEFAULT_MAX_BODY_BYTES,
  DEFAULT_MAX_HEADER_BYTES,
  ENV,
  GROWN_BUDGET_SHARE,
  httpConfigFromEnv,
  type IncomingHandler,
  type InstanceFactory,
  ProxyServer,
} from "./http_server.ts";
import { prepare, type PreparedComponent } from "./mod.ts";
import { COMPONENT_TEST, fixture, FIXTURES, freePort, guestInit } from "./test_util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------------------
// A guest written against the host API, as a component's glue would call it.

/** What the fake guest saw of its request body. */
interface BodyRead {
  bytes: number;
  /** The `error-code` of a failed read (`http-error-code`), or null at the end. */
  error: unknown;
}

/** Reads `input` to its end or first error. */
async function readAll(input: InputStream): Promise<BodyRead> {
  let bytes = 0;
  while (true) {
    try {
      bytes += (await input.blockingRead(1n << 20n)).length;
    } catch (err) {
      if (err === CLOSED) return { bytes, error: null };
      const io = (err as { val?: unknown }).val;
      return { bytes, error: io instanceof IoError ? io.code : err };
    }
  }
}

/** Answers `status` with `text`, as a guest does (set, then write and finish). */
async function respond(outparam: unknown, status: number, text: string): Promise<void> {
  const response = new OutgoingResponse(new Fields());
  response.setStatusCode(status);
  const body = response.body();
  ResponseOutparam.set(outparam as ResponseOutparam, { tag: "ok", val: response });
  const out = body.write();
  await out.blockingWriteAndFlush(enc.encode(text));
  out[Symbol.dispose]();
  OutgoingBody.finish(body);
}

/** Held open by `/hold` requests until {@linkcode releaseHeld}. */
let held = Promise.withResolvers<void>();
function releaseHeld(): void {
  held.resolve();
  held = Promise.withResolvers<void>();
}

/**
 * `/hold`: answers once {@linkcode releaseHeld} is called.
 * `/read`: reads the whole body, then answers how many bytes (or the error it got).
 * `/echo`: answers at once and streams the body back as it reads it.
 * Anything else: `hello`.
 */
const handler: IncomingHandler = {
  async handle(request, outparam) {
    const req = request as IncomingRequest;
    const path = req.pathWithQuery();
    if (path === "/hold") {
      await held.promise;
      return await respond(outparam, 200, "held");
    }
    if (path === "/read") {
      const read = await readAll(req.consume().stream());
      reads.push(read);
      return await respond(outparam, 200, String(read.bytes));
    }
    if (path === "/echo") {
      const input = req.consume().stream();
      const response = new OutgoingResponse(new Fields());
      const body = response.body();
      ResponseOutparam.set(outparam as ResponseOutparam, { tag: "ok", val: response });
      const out = body.write();
      while (true) {
        let chunk: Uint8Array;
        try {
          chunk = await input.blockingRead(4096n);
        } catch (err) {
          reads.push({ bytes: -1, error: err });
          if (err === CLOSED) break;
          throw new Error("the request body failed"); // a trap
        }
        await out.blockingWriteAndFlush(chunk);
      }
      out[Symbol.dispose]();
      OutgoingBody.finish(body);
      return;
    }
    await respond(outparam, 200, "hello");
  },
};

/** Every body the fake guest read, in order. */
const reads: BodyRead[] = [];

/** A {@linkcode ProxyServer} with the fake guest on 127.0.0.1, configured from `env`. */
async function withServer(
  env: Record<string, string>,
  run: (port: number, counts: { instances: number; log: string[] }) => Promise<void>,
): Promise<void> {
  const config = httpConfigFromEnv(
    new Map([[ENV.addr, "127.0.0.1:0"], [ENV.pool, "0"], ...Object.entries(env)]),
  );
  const counts = { instances: 0, log: [] as string[] };
  const host: Host = { imports: {}, dispose: () => {} };
  const server = new ProxyServer(
    (requestId) => {
      counts.instances++;
      return { requestId, handler, host };
    },
    config,
    (line) => counts.log.push(line),
  );
  const addr = server.listen();
  server.start();
  reads.length = 0;
  try {
    await run(addr.port, counts);
  } finally {
    await server.stop(5000);
  }
}

/** A raw TCP client, to send what `fetch` would not. */
class Raw {
  readonly conn: Deno.TcpConn;
  #text = "";

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  static async connect(port: number): Promise<Raw> {
    return new Raw(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  async send(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? enc.encode(data) : data;
    let n = 0;
    while (n < bytes.length) n += await this.conn.write(bytes.subarray(n));
  }

  /**
   * Reads one response (to the end of its `content-length` body, or until the server
   * closes the connection), then closes: its status (0 for none) and text.
   */
  async response(): Promise<{ status: number; text: string }> {
    const buf = new Uint8Array(64 * 1024);
    try {
      while (!complete(this.#text)) {
        const n = await this.conn.read(buf);
        if (n === null) break;
        this.#text += dec.decode(buf.subarray(0, n));
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.ConnectionReset)) throw err;
    }
    this.close();
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(this.#text)?.[1] ?? 0);
    return { status, text: this.#text };
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // closed already
    }
  }
}

/** True once `text` holds a whole response with a `content-length`. */
function complete(text: string): boolean {
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) return false;
  const length = /\r\ncontent-length: (\d+)\r\n/i.exec(text.slice(0, end + 2));
  return length !== null && text.length >= end + 4 + Number(length[1]);
}

/** One raw request, `Connection: close`, and its response. */
async function rawRequest(port: number, head: string, body = ""): Promise<number> {
  const raw = await Raw.connect(port);
  await raw.send(`${head}Connection: close\r\n\r\n${body}`);
  return (await raw.response()).status;
}

/** A body of `size` bytes sent in 64 KiB chunks as the server pulls them (chunked). */
function streamOf(size: number): ReadableStream<Uint8Array> {
  const chunk = new Uint8Array(64 * 1024).fill(0x62);
  let sent = 0;
  return new ReadableStream({
    pull(controller) {
      if (sent >= size) return controller.close();
      const n = Math.min(chunk.length, size - sent);
      controller.enqueue(chunk.slice(0, n));
      sent += n;
    },
  });
}

// ---------------------------------------------------------------------------------------
// http_limits.ts on its own

Deno.test("headerBytes sums names and values", () => {
  assert.equal(headerBytes(new Headers({ ab: "cde", f: "" })), 6);
});

Deno.test("limitBody: reads pass through up to the limit; one byte more fails the read", async () => {
  const source = () => new Response("x".repeat(1000)).body!;
  const exact = limitBody(source(), { maxBytes: 1000, idleTimeoutMs: 0 });
  assert.equal((await new Response(exact.stream).text()).length, 1000);
  exact.dispose();
  const over = limitBody(source(), { maxBytes: 999, idleTimeoutMs: 0 });
  await assert.rejects(new Response(over.stream).text(), (err: unknown) => {
    assert.ok(err instanceof BodyRefused);
    assert.equal(err.status, 413);
    assert.deepEqual(err.code, { tag: "HTTP-request-body-size", val: 1000n });
    assert.match(err.message, /over the limit of 999 bytes/);
    return true;
  });
  assert.equal((await over.refused).status, 413);
});

Deno.test("limitBody: the idle timeout runs only while the guest waits for bytes", async () => {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let pulls = 0;
  const source = new ReadableStream<Uint8Array>({
    start: (c) => void (controller = c),
    pull: () => void pulls++,
  }, { highWaterMark: 0 });
  const body = limitBody(source, { maxBytes: 0, idleTimeoutMs: 100 });
  const reader = body.stream.getReader();
  // Nobody reads for longer than the timeout: nothing is read ahead, nothing times out.
  await delay(250);
  assert.equal(pulls, 0, "no read ahead of the guest");
  const first = reader.read();
  controller.enqueue(enc.encode("a"));
  assert.deepEqual((await first).value, enc.encode("a"));
  // The guest waits, the client sends nothing: the read fails after ~100 ms.
  await assert.rejects(reader.read(), (err: unknown) => {
    assert.ok(err instanceof BodyRefused);
    assert.equal(err.status, 408);
    assert.deepEqual(err.code, { tag: "connection-read-timeout" });
    return true;
  });
  assert.equal((await body.refused).status, 408);
});

Deno.test("httpConfigFromEnv: serving threads and grown-memory budget follow the container's limits", () => {
  const MIB = 1024 * 1024;
  const cores = navigator.hardwareConcurrency;
  const none = httpConfigFromEnv(new Map());
  assert.equal(none.grownBudgetBytes, DEFAULT_GROWN_BUDGET_MIB * MIB);
  assert.equal(none.workers, Math.min(cores, 4));
  // A CFS quota of one CPU (or less): one serving thread; 1.5 CPUs round up to two.
  assert.equal(httpConfigFromEnv(new Map(), { cpus: 1 }).workers, 1);
  assert.equal(httpConfigFromEnv(new Map(), { cpus: 0.25 }).workers, 1);
  assert.equal(httpConfigFromEnv(new Map(), { cpus: 1.5 }).workers, Math.min(cores, 2));
  assert.equal(httpConfigFromEnv(new Map(), { cpus: 64 }).workers, Math.min(cores, 4));
  // The budget: the limit shared out over the serving threads.
  const limited = httpConfigFromEnv(new Map([[ENV.workers, "2"]]), { memoryBytes: 256 * MIB });
  assert.equal(limited.grownBudgetBytes, (256 * MIB) / (GROWN_BUDGET_SHARE * 2));
  assert.equal(limited.grownBudgetBytes, DEFAULT_GROWN_BUDGET_MIB * MIB);
  assert.equal(
    httpConfigFromEnv(new Map(), { memoryBytes: 64 * MIB, cpus: 1 }).grownBudgetBytes,
    16 * MIB,
  );
  assert.equal(
    httpConfigFromEnv(new Map([[ENV.workers, "0"]]), { memoryBytes: 64 * MIB }).grownBudgetBytes,
    16 * MIB,
    "the main thread serves alone",
  );
  // What the container's environment sets wins over its limits.
  const set = httpConfigFromEnv(
    new Map([[ENV.workers, "3"], [ENV.grownBudget, "0"]]),
    { memoryBytes: 64 * MIB, cpus: 1 },
  );
  assert.deepEqual([set.workers, set.grownBudgetBytes], [3, 0]);
});

Deno.test("httpConfigFromEnv: limit defaults, values, and 0 disabling the body limits", () => {
  const defaults = httpConfigFromEnv(new Map());
  assert.deepEqual(
    [defaults.maxHeaderBytes, defaults.maxBodyBytes, defaults.bodyTimeoutMs],
    [DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_BODY_BYTES, DEFAULT_BODY_TIMEOUT_MS],
  );
  assert.ok(DEFAULT_MAX_HEADER_BYTES < DENO_MAX_HEAD_BYTES, "below hyper's own limit");
  const set = httpConfigFromEnv(
    new Map([[ENV.maxHeaderBytes, "65536"], [ENV.maxBodyBytes, "0"], [ENV.bodyTimeout, "0"]]),
  );
  assert.deepEqual([set.maxHeaderBytes, set.maxBodyBytes, set.bodyTimeoutMs], [65536, 0, 0]);
  for (
    const [name, value, pattern] of [
      [ENV.maxHeaderBytes, "1023", /="1023" is not a whole number from 1024 to/],
      [ENV.maxHeaderBytes, "65537", /="65537" is over 65536: Deno.serve itself answers 400/],
      [ENV.maxBodyBytes, "1MiB", /WASMTIME_HTTP_MAX_BODY_BYTES="1MiB" is not a whole number/],
      [ENV.bodyTimeout, "2147483648", /="2147483648" is not a whole number from 0 to 2147483647/],
    ] as const
  ) {
    assert.throws(() => httpConfigFromEnv(new Map([[name, value]])), (err: unknown) => {
      assert.ok(err instanceof ShimError);
      assert.equal(err.kind, Kind.INVALID_ARGUMENT);
      assert.match(err.message, pattern);
      return true;
    });
  }
});

// ---------------------------------------------------------------------------------------
// What Deno.serve (hyper) does before our code runs

Deno.test("Deno.serve: malformed requests and heads over 64 KiB get 400 from hyper", async () => {
  await withServer({}, async (port, counts) => {
    const garbage = await Raw.connect(port);
    await garbage.send(new Uint8Array([0x00, 0xff, 0x13, 0x37, 0x0d, 0x0a, 0x0d, 0x0a]));
    assert.equal((await garbage.response()).status, 400);
    assert.equal(await rawRequest(port, "HELLO THERE\r\n"), 400, "bad request line");
    assert.equal(await rawRequest(port, "GET / HTTP/1.1\r\nHost x\r\n"), 400, "bad header");
    assert.equal(
      await rawRequest(port, "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n"),
      400,
      "bad content-length",
    );
    assert.equal(
      await rawRequest(port, `GET / HTTP/1.1\r\nHost: x\r\nX-A: ${"a".repeat(70_000)}\r\n`),
      400,
      "head over 64 KiB",
    );
    let many = "";
    for (let i = 0; i < 200; i++) many += `X-${i}: v\r\n`;
    assert.equal(await rawRequest(port, `GET / HTTP/1.1\r\nHost: x\r\n${many}`), 400, "200 lines");
    assert.equal(counts.instances, 0, "no instance for a request hyper refused");
    assert.equal(await rawRequest(port, "GET / HTTP/1.1\r\nHost: x\r\n"), 200, "still serving");
  });
});

// ---------------------------------------------------------------------------------------
// Header limit

Deno.test("headers over WASMTIME_HTTP_MAX_HEADER_BYTES answer 431 without an instance", async () => {
  await withServer({ [ENV.maxHeaderBytes]: "2048" }, async (port, counts) => {
    // host (4+1) + x-big (5+v) + connection (10+5) = 25 + v.
    const head = (v: number) => `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(v)}\r\n`;
    assert.equal(await rawRequest(port, head(2048 - 25)), 200, "exactly at the limit");
    assert.equal(counts.instances, 1);
    const raw = await Raw.connect(port);
    await raw.send(`${head(2048 - 24)}Connection: close\r\n\r\n`);
    const { status, text } = await raw.response();
    assert.equal(status, 431);
    assert.match(text, /Request Header Fields Too Large/);
    assert.equal(counts.instances, 1, "no instance for a refused request");
    assert.match(counts.log.join("\n"), /request headers of 2049 bytes are over the limit of 2048/);
  });
});

Deno.test("the default header limit applies below hyper's 64 KiB", async () => {
  await withServer({}, async (port) => {
    const status = await rawRequest(
      port,
      `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(DENO_MAX_HEAD_BYTES / 2)}\r\n`,
    );
    assert.equal(status, 431);
  });
});

// ---------------------------------------------------------------------------------------
// Body limit

Deno.test("a content-length over the body limit answers 413 before any instance", async () => {
  await withServer({ [ENV.maxBodyBytes]: "1000" }, async (port, counts) => {
    const head = (n: number) => `POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: ${n}\r\n`;
    assert.equal(await rawRequest(port, head(1000), "x".repeat(1000)), 200, "at the limit");
    assert.equal(counts.instances, 1);
    // The client announces more than the limit and sends none of it: answered at once.
    const raw = await Raw.connect(port);
    await raw.send(`${head(1_000_000_000)}\r\n`);
    const { status, text } = await raw.response();
    assert.equal(status, 413);
    assert.match(text, /Content Too Large/);
    assert.match(text, /\r\nconnection: close\r\n/i, "the client is told to go away");
    assert.equal(counts.instances, 1, "no instance for a refused request");
    // fetch with a Content-Length body: the same.
    const response = await fetch(`http://127.0.0.1:${port}/read`, {
      method: "POST",
      body: "y".repeat(1001),
    });
    assert.equal(response.status, 413);
    await response.body?.cancel();
    assert.equal(counts.instances, 1);
  });
});

Deno.test("a chunked body over the limit fails the guest's read and answers 413", async () => {
  await withServer({ [ENV.maxBodyBytes]: "100000" }, async (port, counts) => {
    const response = await fetch(`http://127.0.0.1:${port}/read`, {
      method: "POST",
      body: streamOf(100_001),
    });
    assert.equal(response.status, 413);
    assert.match(await response.text(), /Content Too Large/);
    assert.equal(counts.instances, 1, "the guest was running when the body grew too large");
    // The guest's read failed with HTTP-request-body-size, after at most the limit.
    for (let i = 0; i < 100 && reads.length === 0; i++) await delay(10);
    assert.equal(reads.length, 1);
    assert.ok(reads[0].bytes <= 100_000, `read ${reads[0].bytes}`);
    assert.deepEqual(reads[0].error, { tag: "HTTP-request-body-size", val: 100_001n });
    assert.match(counts.log.join("\n"), /POST \/read: request body over the limit of 100000/);
    // Exactly the limit is fine.
    const ok = await fetch(`http://127.0.0.1:${port}/read`, {
      method: "POST",
      body: streamOf(100_000),
    });
    assert.deepEqual([ok.status, await ok.text()], [200, "100000"]);
  });
});

Deno.test("a body over the limit after the response started aborts the connection", async () => {
  await withServer({ [ENV.maxBodyBytes]: String(1 << 20) }, async (port, counts) => {
    const small = await fetch(`http://127.0.0.1:${port}/echo`, {
      method: "POST",
      body: streamOf(100_000),
    });
    assert.equal(small.status, 200);
    assert.equal((await small.arrayBuffer()).byteLength, 100_000);
    const big = await fetch(`http://127.0.0.1:${port}/echo`, {
      method: "POST",
      body: streamOf(4 << 20),
    });
    assert.equal(big.status, 200, "the guest answered before the body was too large");
    await assert.rejects(big.arrayBuffer(), "the response is cut, not completed");
    for (let i = 0; i < 100 && !counts.log.some((l) => /body cut/.test(l)); i++) await delay(10);
    assert.match(
      counts.log.join("\n"),
      /POST \/echo: response body cut: request body over the limit of 1048576 bytes/,
    );
  });
});

Deno.test("the default body limit lets exactly 100 MiB through, and refuses one byte more", async () => {
  await withServer({}, async (port) => {
    assert.equal(DEFAULT_MAX_BODY_BYTES, 100 * 1024 * 1024);
    const ok = await fetch(`http://127.0.0.1:${port}/read`, {
      method: "POST",
      body: streamOf(DEFAULT_MAX_BODY_BYTES),
    });
    assert.deepEqual([ok.status, await ok.text()], [200, String(DEFAULT_MAX_BODY_BYTES)]);
    const over = await fetch(`http://127.0.0.1:${port}/read`, {
      method: "POST",
      body: streamOf(DEFAULT_MAX_BODY_BYTES + 1),
    });
    assert.equal(over.status, 413);
    await over.body?.cancel();
  });
});

// ---------------------------------------------------------------------------------------
// Slow clients

Deno.test("a request body that stalls past WASMTIME_HTTP_BODY_TIMEOUT_MS answers 408", async () => {
  await withServer({ [ENV.bodyTimeout]: "300" }, async (port, counts) => {
    const raw = await Raw.connect(port);
    await raw.send("POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b");
    const { status, text } = await raw.response();
    assert.equal(status, 408);
    assert.match(text, /Request Timeout/);
    for (let i = 0; i < 100 && reads.length === 0; i++) await delay(10);
    assert.deepEqual(reads, [{ bytes: 10, error: { tag: "connection-read-timeout" } }]);
    assert.match(counts.log.join("\n"), /no request body bytes for 300 ms/);
  });
});

Deno.test("200 slowloris connections do not keep a normal request from being served", async () => {
  await withServer({ [ENV.bodyTimeout]: "5000" }, async (port) => {
    const slow: Raw[] = [];
    let dripping = true;
    try {
      // 100 send their head one byte per second, 100 their body.
      for (let i = 0; i < 200; i++) {
        const raw = await Raw.connect(port);
        slow.push(raw);
        await raw.send(
          i % 2 === 0
            ? "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "
            : "POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
        );
      }
      const drip = (async () => {
        while (dripping) {
          await delay(1000);
          await Promise.all(slow.map((r) => r.send("a").catch(() => {})));
        }
      })();
      for (let i = 0; i < 3; i++) {
        // A functional bound, far above the milliseconds this takes.
        const response = await fetch(`http://127.0.0.1:${port}/`, {
          signal: AbortSignal.timeout(10_000),
        });
        assert.deepEqual([response.status, await response.text()], [200, "hello"]);
        await delay(700);
      }
      dripping = false;
      await drip;
      // Deno.serve has no head timeout: the slow heads are still open (see http_limits.ts).
      const stillOpen = await Promise.all(
        slow.filter((_, i) => i % 2 === 0).map(async (r) => {
          try {
            await r.send("a");
            return true;
          } catch {
            return false;
          }
        }),
      );
      assert.ok(stillOpen.every(Boolean));
    } finally {
      dripping = false;
      for (const r of slow) r.close();
    }
  });
});

// ---------------------------------------------------------------------------------------
// Through prepare(), with real components and the container's environment

async function startComponent(
  name: string,
  env: string[],
): Promise<{ url: string; prepared: PreparedComponent; close(): Promise<string> }> {
  const port = freePort();
  const guest = guestInit(name, { env: [`${ENV.addr}=127.0.0.1:${port}`, ...env] });
  const prepared = await prepare(guest.init, fixture(name));
  const running = prepared.run();
  return {
    url: `http://127.0.0.1:${prepared.addr!.port}`,
    prepared,
    close: async () => {
      await prepared.stop();
      await running;
      const stderr = guest.stderr();
      guest.cleanup();
      return stderr;
    },
  };
}

Deno.test({
  name: "proxy (WAT): the header limit from the spec env applies on every worker thread",
  ...COMPONENT_TEST,
  fn: async () => {
    const proxy = await startComponent(FIXTURES.httpHello, [`${ENV.maxHeaderBytes}=1024`]);
    try {
      const results = await Promise.all(Array.from({ length: 8 }, async (_, i) => {
        const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
        try {
          const response = await fetch(`${proxy.url}/count`, {
            client,
            headers: { "x-pad": "p".repeat(i % 2 === 0 ? 10 : 2000) },
          });
          return `${response.status} ${await response.text()}`;
        } finally {
          client.close();
        }
      }));
      assert.deepEqual(results, [
        ...Array.from(
          { length: 8 },
          (_, i) => i % 2 === 0 ? "200 1" : "431 Request Header Fields Too Large\n",
        ),
      ]);
    } finally {
      await proxy.close();
    }
  },
});

Deno.test({
  name: "proxy (JS): /echo under a body limit: 413 for content-length, cut when streaming",
  ...COMPONENT_TEST,
  fn: async () => {
    const proxy = await startComponent(FIXTURES.httpApp, [`${ENV.maxBodyBytes}=${1 << 20}`]);
    try {
      const ok = await fetch(`${proxy.url}/echo`, { method: "POST", body: "z".repeat(1 << 20) });
      assert.equal(ok.status, 200);
      assert.equal((await ok.arrayBuffer()).byteLength, 1 << 20);
      const tooLarge = await fetch(`${proxy.url}/echo`, {
        method: "POST",
        body: "z".repeat((1 << 20) + 1),
      });
      assert.equal(tooLarge.status, 413);
      await tooLarge.body?.cancel();
      // Chunked: the guest has answered 200 and is streaming when the limit is reached.
      await assert.rejects(
        fetch(`${proxy.url}/echo`, { method: "POST", body: streamOf(4 << 20) })
          .then((r) => r.arrayBuffer()),
        "the response is cut",
      );
      assert.equal(await (await fetch(`${proxy.url}/count`)).text(), "1", "still serving");
    } finally {
      await proxy.close();
    }
  },
});

Deno.test({
  name: "proxy: invalid limit values fail prepare, naming the variable and why",
  ...COMPONENT_TEST,
  fn: async () => {
    const cases: [string, RegExp][] = [
      [`${ENV.maxHeaderBytes}=lots`, /WASMTIME_HTTP_MAX_HEADER_BYTES="lots" is not a whole/],
      [`${ENV.maxHeaderBytes}=100000`, /is over 65536: Deno.serve itself answers 400/],
      [`${ENV.maxBodyBytes}=-1`, /WASMTIME_HTTP_MAX_BODY_BYTES="-1" is not a whole number/],
      [`${ENV.bodyTimeout}=5s`, /WASMTIME_HTTP_BODY_TIMEOUT_MS="5s" is not a whole number/],
    ];
    for (const [env, pattern] of cases) {
      const guest = guestInit(FIXTURES.httpHello, { env: [env] });
      try {
        await assert.rejects(prepare(guest.init, fixture(FIXTURES.httpHello)), pattern);
      } finally {
        guest.cleanup();
      }
    }
  },
});

Deno.test({
  name:
    "proxy: instances in flight are capped; past the cap requests wait, past the queue or the request timeout they get 503",
  ...COMPONENT_TEST,
  fn: async () => {
    const env = { [ENV.maxInstances]: "2", [ENV.maxQueued]: "1", [ENV.timeout]: "400ms" };
    await withServer(env, async (port, counts) => {
      const url = `http://127.0.0.1:${port}`;
      const hold = () => fetch(`${url}/hold`).then(async (r) => [r.status, await r.text()]);
      const a = hold();
      const b = hold();
      while (counts.instances < 2) await delay(5);
      const c = hold(); // waits for an instance
      await delay(50);
      const d = await fetch(`${url}/hold`); // the queue is full
      assert.equal(d.status, 503);
      assert.equal(d.headers.get("retry-after"), "1");
      await d.body?.cancel();
      assert.match(counts.log.at(-1)!, /2 instances in flight .*and 1 requests waiting/);
      // The two in flight time out (504) but stay in flight until they end: the
      // waiting request gets no instance within the timeout.
      assert.deepEqual(await c, [503, "Service Unavailable\n"]);
      assert.match(counts.log.at(-1)!, /none free within the request timeout of 400 ms/);
      assert.equal(counts.instances, 2, "no instance for the refused requests");
      releaseHeld();
      assert.deepEqual((await Promise.all([a, b])).map(([s]) => s), [504, 504]);
      // Once they end, waiting requests are served in order.
      const [e, f, g] = [hold(), hold(), hold()];
      while (counts.instances < 4) await delay(5);
      await delay(20);
      assert.equal(counts.instances, 4, "the third waits");
      releaseHeld();
      while (counts.instances < 5) await delay(5);
      releaseHeld();
      assert.deepEqual(await Promise.all([e, f, g]), [[200, "held"], [200, "held"], [
        200,
        "held",
      ]]);
    });
  },
});

Deno.test("proxy: a request waits while the instances in flight hold the grown-memory budget; one always runs", async () => {
  const MIB = 1024 * 1024;
  const config = httpConfigFromEnv(
    new Map([[ENV.addr, "127.0.0.1:0"], [ENV.pool, "0"], [ENV.grownBudget, "64"]]),
  );
  assert.equal(config.grownBudgetBytes, 64 * MIB);
  assert.equal(httpConfigFromEnv(new Map([[ENV.grownBudget, "0"]])).grownBudgetBytes, 0);
  const live = new Set<{ grown: number }>();
  let created = 0;
  let peak = 0;
  const server = new ProxyServer(
    (requestId) => {
      created++;
      const state = { grown: 0 };
      // What an instance holds, as lean glue tells it: set by its handler's first,
      // synchronous part (a guest's `memory.grow`), counted until it ends.
      return {
        requestId,
        host: { imports: {}, dispose: () => live.delete(state) },
        grownBytes: () => state.grown,
        handler: {
          async handle(request, outparam) {
            const mib = Number((request as IncomingRequest).pathWithQuery()!.slice(1));
            state.grown = mib * MIB;
            live.add(state);
            peak = Math.max(peak, [...live].reduce((n, s) => n + s.grown, 0));
            await held.promise;
            await respond(outparam, 200, String(mib));
          },
        },
      };
    },
    config,
    () => {},
  );
  const addr = server.listen();
  server.start();
  const url = `http://127.0.0.1:${addr.port}`;
  const ask = (mib: number) =>
    fetch(`${url}/${mib}`).then(async (r) => `${r.status} ${await r.text()}`);
  const until = async (what: () => boolean) => {
    while (!what()) await delay(5);
  };
  try {
    // 40 MiB in flight is under the 64 MiB budget, 80 is not: the third waits.
    const first = [ask(40), ask(40), ask(40)];
    await until(() => created === 2 && server.stats.queued === 1);
    await delay(50);
    assert.equal(created, 2, "the third waits while 80 MiB are in flight");
    releaseHeld();
    await until(() => created === 3);
    releaseHeld();
    assert.deepEqual(await Promise.all(first), ["200 40", "200 40", "200 40"]);
    // One instance alone over the budget still runs; those after it wait, in order.
    const a = ask(100);
    await until(() => created === 4);
    const b = ask(100);
    await until(() => server.stats.queued === 1);
    const c = ask(0);
    await until(() => server.stats.queued === 2);
    releaseHeld();
    await until(() => created === 5);
    await delay(50);
    assert.equal(created, 5, "nothing runs beside an instance over the budget");
    releaseHeld();
    await until(() => created === 6);
    releaseHeld();
    assert.deepEqual(await Promise.all([a, b, c]), ["200 100", "200 100", "200 0"]);
    assert.equal(peak, 100 * MIB, "never more in flight than the budget or one instance");
    // Instances that grow nothing are not held back.
    const small = [ask(0), ask(0), ask(0), ask(0)];
    await until(() => created === 10);
    assert.equal(server.stats.queued, 0);
    releaseHeld();
    assert.deepEqual(await Promise.all(small), Array(4).fill("200 0"));
    assert.equal(server.stats.inFlight, 0);
  } finally {
    await server.stop(5000);
  }
});

Deno.test("proxy: no instances are created ahead of requests while recycled ones are idle", async () => {
  let created = 0;
  let idle = 1;
  const host: Host = { imports: {}, dispose: () => {} };
  const factory: InstanceFactory = (requestId) => {
    created++;
    return { requestId, handler, host };
  };
  factory.idle = () => idle;
  const config = httpConfigFromEnv(new Map([[ENV.addr, "127.0.0.1:0"], [ENV.pool, "2"]]));
  const server = new ProxyServer(factory, config, () => {});
  const addr = server.listen();
  server.start();
  try {
    await delay(20);
    assert.equal(created, 0, "an idle recycled instance is taken when a request comes");
    const r = await fetch(`http://127.0.0.1:${addr.port}/`);
    assert.equal(await r.text(), "hello");
    assert.equal(created, 1);
    await delay(20);
    assert.equal(created, 1);
    idle = 0; // none idle: the pool fills again from the next request on
    await (await fetch(`http://127.0.0.1:${addr.port}/`)).text();
    while (created < 4) await delay(5);
  } finally {
    await server.stop(5000);
  }
});
