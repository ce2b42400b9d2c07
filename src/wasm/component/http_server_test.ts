import assert from "node:assert/strict";
import { Kind, ShimError } from "../../errdefs/errors.ts";
import {
  DEFAULT_BACKLOG,
  DEFAULT_REQUEST_TIMEOUT_MS,
  ENV,
  httpConfigFromEnv,
  MAX_DEFAULT_WORKERS,
  parseDuration,
} from "./http_server.ts";
import { canSharePorts } from "./http_workers.ts";
import { prepare, type PreparedComponent } from "./mod.ts";
import {
  COMPONENT_TEST,
  fixture,
  FIXTURES,
  freePort,
  guestInit,
  type TestGuest,
} from "./test_util.ts";

function invalid(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ShimError);
    assert.equal(err.kind, Kind.INVALID_ARGUMENT);
    assert.match(err.message, pattern);
    return true;
  });
}

Deno.test("httpConfigFromEnv: defaults", () => {
  const config = httpConfigFromEnv(new Map());
  assert.equal(config.hostname, "0.0.0.0");
  assert.equal(config.port, 8080);
  assert.equal(config.backlog, DEFAULT_BACKLOG);
  assert.equal(config.requestTimeoutMs, DEFAULT_REQUEST_TIMEOUT_MS);
});

Deno.test("httpConfigFromEnv: address, both backlog names, timeout", () => {
  const config = httpConfigFromEnv(
    new Map([[ENV.addr, "[::1]:9000"], [ENV.backlogAlias, "64"], [ENV.timeout, "1.5"]]),
  );
  assert.deepEqual([config.hostname, config.port, config.backlog], ["::1", 9000, 64]);
  assert.equal(config.requestTimeoutMs, 1500);
  assert.equal(
    httpConfigFromEnv(new Map([[ENV.backlog, "7"], [ENV.backlogAlias, "9"]])).backlog,
    7,
  );
  assert.equal(parseDuration("x", "250ms"), 250);
  assert.equal(parseDuration("x", "2m"), 120_000);
  assert.equal(parseDuration("x", "0"), 0);
});

Deno.test("httpConfigFromEnv: invalid values name the variable", () => {
  invalid(
    () => httpConfigFromEnv(new Map([[ENV.addr, "8080"]])),
    /WASMTIME_HTTP_PROXY_SOCKET_ADDR="8080" is not an address/,
  );
  invalid(() => httpConfigFromEnv(new Map([[ENV.addr, "0.0.0.0:70000"]])), /port 0-65535/);
  invalid(
    () => httpConfigFromEnv(new Map([[ENV.backlog, "-1"]])),
    /WASMTIME_HTTP_PROXY_BACKLOG="-1" is not a whole number/,
  );
  invalid(
    () => httpConfigFromEnv(new Map([[ENV.backlogAlias, "lots"]])),
    /WASMTIME_HTTP_BACKLOG="lots"/,
  );
  invalid(
    () => httpConfigFromEnv(new Map([[ENV.timeout, "soon"]])),
    /WASMTIME_HTTP_PROXY_REQUEST_TIMEOUT="soon" is not a duration/,
  );
});

/** A running proxy for a test component. */
interface Proxy {
  url: string;
  prepared: PreparedComponent;
  running: Promise<number>;
  guest: TestGuest;
  close(): Promise<number>;
}

async function startProxy(name: string, env: string[] = [], network = false): Promise<Proxy> {
  const port = freePort();
  const guest = guestInit(name, {
    env: [`${ENV.addr}=127.0.0.1:${port}`, "GREETING=hi", ...env],
    network,
  });
  const prepared = await prepare(guest.init, fixture(name));
  assert.equal(prepared.kind, "http");
  const running = prepared.run();
  return {
    url: `http://127.0.0.1:${prepared.addr!.port}`,
    prepared,
    running,
    guest,
    close: async () => {
      await prepared.stop();
      const code = await running;
      guest.cleanup();
      return code;
    },
  };
}

/** GETs `url`; a body cut short (the guest failed after answering) reads as "<cut>". */
async function get(url: string): Promise<{ status: number; text: string }> {
  const response = await fetch(url);
  let text: string;
  try {
    text = await response.text();
  } catch {
    text = "<cut>";
  }
  return { status: response.status, text };
}

Deno.test({
  name: "proxy (JS): GET /, headers and status",
  ...COMPONENT_TEST,
  fn: async () => {
    const proxy = await startProxy(FIXTURES.httpApp);
    try {
      assert.equal(
        proxy.prepared.workers,
        canSharePorts() ? Math.min(navigator.hardwareConcurrency, MAX_DEFAULT_WORKERS) : 0,
      );
      assert.deepEqual(await get(`${proxy.url}/`), {
        status: 200,
        text: "Hello, this is your first wasi:http/proxy world!\n",
      });
      const missing = await fetch(`${proxy.url}/nope`);
      assert.equal(missing.status, 404);
      assert.equal(await missing.text(), "not found\n");
    } finally {
      assert.equal(await proxy.close(), 0);
    }
  },
});

Deno.test({
  name: "proxy (JS): POST /echo streams a 4 MiB body back unchanged",
  ...COMPONENT_TEST,
  fn: async () => {
    const proxy = await startProxy(FIXTURES.httpApp);
    try {
      const size = 4 * 1024 * 1024;
      const chunk = 64 * 1024;
      const sent = new Uint8Array(size);
      for (let i = 0; i < size; i++) sent[i] = (i * 7) & 0xff;
      let offset = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (offset >= size) return controller.close();
          controller.enqueue(sent.slice(offset, offset + chunk));
          offset += chunk;
        },
      });
      const response = await fetch(`${proxy.url}/echo`, {
        method: "POST",
        body,
        headers: { "content-type": "application/x-test" },
      });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("content-type"), "application/x-test");
      const received = new Uint8Array(await response.arrayBuffer());
      assert.equal(received.length, size);
      assert.ok(received.every((b, i) => b === sent[i]), "same bytes");
    } finally {
      await proxy.close();
    }
  },
});

Deno.test({
  name: "proxy (JS): 100 concurrent /count requests each see a fresh instance",
  ...COMPONENT_TEST,
  fn: async () => {
    const proxy = await startProxy(FIXTURES.httpApp);
    try {
      const results = await Promise.all(
        Array.from({ length: 100 }, () => get(`${proxy.url}/count`)),
      );
      assert.deepEqual(new Set(results.map((r) => `${r.status} ${r.text}`)), new Set(["200 1"]));
    } finally {
      await proxy.close();
    }
  },
});

Deno.test({
  name: "proxy (JS): REQUEST_ID is set per request, beside the spec's environment",
  ...COMPONENT_TEST,
  fn: async () => {
    const proxy = await startProxy(FIXTURES.httpApp);
    try {
      const ids = [];
      for (let i = 0; i < 3; i++) ids.push(Number((await get(`${proxy.url}/env`)).text));
      assert.ok(ids.every((id) => Number.isInteger(id) && id > 0), ids.join());
      // Unique across worker threads (one shared counter), not necessarily in order.
      assert.equal(new Set(ids).size, 3, "distinct");
    } finally {
      await proxy.close();
    }
  },
});

Deno.test({
  name: "proxy (JS): /trap and /exit answer 500 while other requests succeed",
  ...COMPONENT_TEST,
  fn: async () => {
    const proxy = await startProxy(FIXTURES.httpApp);
    try {
      const paths = ["/trap", "/", "/exit", "/count", "/trap", "/"];
      const results = await Promise.all(paths.map((p) => get(`${proxy.url}${p}`)));
      assert.deepEqual(results.map((r) => r.status), [500, 200, 500, 200, 500, 200]);
      assert.equal(results[3].text, "1");
      // The guest's own error output went to the container's stderr.
      assert.match(proxy.guest.stderr(), /trap requested/);
    } finally {
      await proxy.close();
    }
  },
});

Deno.test({
  name: "proxy (JS): /big streams 32 MiB",
  ...COMPONENT_TEST,
  fn: async () => {
    const proxy = await startProxy(FIXTURES.httpApp);
    try {
      const n = 32 * 1024 * 1024;
      const response = await fetch(`${proxy.url}/big?n=${n}`);
      assert.equal(response.status, 200);
      let total = 0;
      let allA = true;
      for await (const chunk of response.body!) {
        total += chunk.length;
        allA &&= chunk.every((b) => b === 0x61);
      }
      assert.equal(total, n);
      assert.ok(allA);
    } finally {
      await proxy.close();
    }
  },
});

Deno.test({
  name: "proxy (JS): outgoing requests go through wasi:http/outgoing-handler",
  ...COMPONENT_TEST,
  fn: async () => {
    let requests = 0;
    const upstream = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (req) => {
        requests++;
        return new Response(`upstream saw ${new URL(req.url).pathname}`, { status: 201 });
      },
    );
    const target = `http://127.0.0.1:${upstream.addr.port}/hello`;
    const proxy = await startProxy(FIXTURES.httpApp, [], true);
    // Without network access (a spec asking for a network namespace of its own), the
    // guest's fetch fails with HTTP-request-denied: it answers 500, upstream sees nothing.
    const denied = await startProxy(FIXTURES.httpApp);
    try {
      assert.deepEqual(await get(`${proxy.url}/fetch?url=${encodeURIComponent(target)}`), {
        status: 200,
        text: "201 upstream saw /hello",
      });
      const refused = await get(`${denied.url}/fetch?url=${encodeURIComponent(target)}`);
      assert.equal(refused.status, 500);
    } finally {
      await proxy.close();
      await denied.close();
      await upstream.shutdown();
    }
    assert.equal(requests, 1, "the denied guest's request never left");
  },
});

Deno.test({
  name: "proxy (JS): a request over the timeout answers 504, others are unaffected",
  ...COMPONENT_TEST,
  fn: async () => {
    const proxy = await startProxy(FIXTURES.httpApp, [`${ENV.timeout}=300ms`]);
    try {
      const [slow, fast] = await Promise.all([
        get(`${proxy.url}/sleep?ms=3000`),
        get(`${proxy.url}/sleep?ms=10`),
      ]);
      assert.equal(slow.status, 504);
      assert.equal(fast.status, 200);
      assert.equal(fast.text, "slept");
    } finally {
      await proxy.close();
    }
  },
});

Deno.test({
  name: "proxy (JS): stop drains an in-flight request before run resolves 0",
  ...COMPONENT_TEST,
  fn: async () => {
    const proxy = await startProxy(FIXTURES.httpApp);
    const inflight = get(`${proxy.url}/sleep?ms=400`);
    await new Promise((r) => setTimeout(r, 100));
    const code = await proxy.close();
    assert.equal(code, 0);
    assert.deepEqual(await inflight, { status: 200, text: "slept" });
    await assert.rejects(fetch(`${proxy.url}/`), "the listener is closed");
  },
});

Deno.test({
  name: "proxy (WAT): served on the main thread when WASMTIME_HTTP_PROXY_WORKERS=0",
  ...COMPONENT_TEST,
  fn: async () => {
    const proxy = await startProxy(FIXTURES.httpHello, [`${ENV.workers}=0`]);
    try {
      assert.equal(proxy.prepared.workers, 0);
      const results = await Promise.all(
        ["/count", "/count", "/trap"].map((p) => get(`${proxy.url}${p}`)),
      );
      assert.deepEqual(results.map((r) => `${r.status} ${r.status === 200 ? r.text : ""}`), [
        "200 1",
        "200 1",
        "500 ",
      ]);
    } finally {
      assert.equal(await proxy.close(), 0);
    }
  },
});

Deno.test({
  name: "proxy (WAT): two worker threads share the port and one REQUEST_ID counter",
  ignore: !canSharePorts(),
  ...COMPONENT_TEST,
  fn: async () => {
    const proxy = await startProxy(FIXTURES.httpApp, [`${ENV.workers}=2`]);
    try {
      assert.equal(proxy.prepared.workers, 2);
      // Separate connections, so that the kernel spreads them over both workers.
      const results = await Promise.all(
        Array.from({ length: 40 }, async () => {
          const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
          try {
            const response = await fetch(`${proxy.url}/env`, { client });
            return Number(await response.text());
          } finally {
            client.close();
          }
        }),
      );
      assert.equal(new Set(results).size, 40, `distinct ids: ${results.join()}`);
    } finally {
      assert.equal(await proxy.close(), 0);
    }
  },
});

Deno.test({
  name: "proxy (WAT): a wasm trap answers 500 for that request only",
  ...COMPONENT_TEST,
  fn: async () => {
    const proxy = await startProxy(FIXTURES.httpHello);
    try {
      const results = await Promise.all(
        ["/", "/trap", "/count"].map((p) => get(`${proxy.url}${p}`)),
      );
      assert.deepEqual(results.map((r) => r.status), [200, 500, 200]);
      assert.equal(results[0].text, "Hello, this is your first wasi:http/proxy world!\n");
      assert.equal(results[2].text, "1");
    } finally {
      await proxy.close();
    }
  },
});

Deno.test({
  name: "proxy: an invalid address in the spec env fails prepare",
  ...COMPONENT_TEST,
  fn: async () => {
    const guest = guestInit(FIXTURES.httpHello, { env: [`${ENV.addr}=nowhere`] });
    try {
      await assert.rejects(prepare(guest.init, fixture(FIXTURES.httpHello)), /is not an address/);
    } finally {
      guest.cleanup();
    }
  },
});

Deno.test({
  name: "proxy: a busy address fails prepare",
  ...COMPONENT_TEST,
  fn: async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    const guest = guestInit(FIXTURES.httpHello, { env: [`${ENV.addr}=127.0.0.1:${port}`] });
    try {
      await assert.rejects(
        prepare(guest.init, fixture(FIXTURES.httpHello)),
        new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}`),
      );
    } finally {
      listener.close();
      guest.cleanup();
    }
  },
});
