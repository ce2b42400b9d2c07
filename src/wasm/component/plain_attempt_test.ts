import assert from "node:assert/strict";
import { type ByteSink, discardSink, EMPTY_SOURCE, MAX_READ } from "./host/io.ts";
import {
  ENV,
  httpConfigFromEnv,
  MAX_ABANDONED_PLAIN_ATTEMPTS,
  ProxyServer,
} from "./http_server.ts";
import { instanceFactory } from "./http_workers.ts";
import { linkStats, loadLeanGlue } from "./instantiate/mod.ts";
import { leanTranspile } from "./instantiate/mod.ts";
import { COMPONENT_TEST, fixture, FIXTURES } from "./test_util.ts";
import { ASYNC_EXPORTS, ASYNC_IMPORTS, compileCores } from "./transpile.ts";

/** A sink that keeps what is written to it, as text. */
function recording(): ByteSink & { text: () => string } {
  const chunks: Uint8Array[] = [];
  return {
    ...discardSink(),
    capacity: () => MAX_READ,
    write: (bytes) => void chunks.push(bytes.slice()),
    text: () => new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c]))),
  };
}

/** `name`'s lean glue and core modules. */
async function lean(name: string) {
  const made = leanTranspile(fixture(name));
  const instantiate = loadLeanGlue(made.glue, {
    asyncImports: ASYNC_IMPORTS,
    asyncExports: ASYNC_EXPORTS,
  });
  const handler = made.exports.find(([n]) => n.startsWith("wasi:http/incoming-handler@"))![0];
  return { instantiate, modules: await compileCores(made.cores), handler };
}

/** Serves `name` on this thread; `fn` gets a fetch of a path, the server and its log. */
async function serving(
  name: string,
  fn: (
    get: (path: string, init?: RequestInit) => Promise<[number, string]>,
    server: ProxyServer,
    out: { stdout: () => string; lines: string[]; plainCalls: () => number },
  ) => Promise<void>,
  env: [string, string][] = [],
  root: string | null = null,
) {
  const c = await lean(name);
  const stdout = recording();
  const lines: string[] = [];
  const config = httpConfigFromEnv(
    new Map([[ENV.addr, "127.0.0.1:0"], [ENV.workers, "0"], [ENV.pool, "0"], ...env]),
  );
  const host = {
    args: ["/app.wasm"],
    env: [] as [string, string][],
    cwd: "/",
    root,
    stdin: EMPTY_SOURCE,
    stdout,
    stderr: discardSink(),
  };
  const server = new ProxyServer(instanceFactory(c, c.handler, host), config, (l) => lines.push(l));
  const addr = server.listen();
  server.start();
  try {
    await fn(
      async (path, init) => {
        const response = await fetch(`http://127.0.0.1:${addr.port}${path}`, init);
        return [response.status, await response.text()];
      },
      server,
      {
        stdout: stdout.text,
        lines,
        plainCalls: () => linkStats(c.instantiate).plainCalls,
      },
    );
  } finally {
    await server.stop();
  }
}

const HELLO = "Hello, this is your first wasi:http/proxy world!\n";
/** C wasi:http proxy reading and writing the container's files (tests/fixtures/guests). */
const HTTP_PROBE = "../../../../tests/fixtures/guests/built/http_probe.wasm";

Deno.test({
  name: "plain attempts: a guest that never waits is served without promising",
  ...COMPONENT_TEST,
  fn: async () => {
    await serving(FIXTURES.httpHello, async (get, server, out) => {
      for (let i = 0; i < 5; i++) assert.deepEqual(await get("/"), [200, HELLO]);
      assert.equal(server.stats.plainServed, 5);
      assert.equal(server.stats.plainAbandoned, 0);
      assert.equal(out.plainCalls(), 5);
      // A request with a body always runs through promising.
      assert.deepEqual(await get("/", { method: "POST", body: "x" }), [200, HELLO]);
      assert.equal(out.plainCalls(), 5);
      // A trap in a plain attempt answers 500, and its instance is not reused.
      assert.equal((await get("/trap"))[0], 500);
      assert.deepEqual(await get("/count"), [200, "1"]);
      assert.deepEqual(await get("/count"), [200, "1"]);
      assert.equal(server.stats.plainAbandoned, 0);
    });
  },
});

Deno.test({
  name:
    "plain attempts: one reaching stdout runs again through promising, its line written once; after 8 they stop",
  ...COMPONENT_TEST,
  fn: async () => {
    await serving(FIXTURES.httpHello, async (get, server, out) => {
      const line = "a log line from a wasi:http request\n";
      for (let i = 1; i <= MAX_ABANDONED_PLAIN_ATTEMPTS + 2; i++) {
        assert.deepEqual(await get("/log"), [200, HELLO]);
        assert.equal(out.stdout(), line.repeat(i), `after ${i} requests`);
      }
      assert.equal(server.stats.plainAbandoned, MAX_ABANDONED_PLAIN_ATTEMPTS);
      assert.equal(out.plainCalls(), MAX_ABANDONED_PLAIN_ATTEMPTS);
      assert.equal(out.lines.length, 1, out.lines.join("\n"));
      assert.match(out.lines[0], /no longer tried without JSPI first: 8 .*writing to stdout/);
      assert.deepEqual(await get("/"), [200, HELLO]);
      assert.equal(out.plainCalls(), MAX_ABANDONED_PLAIN_ATTEMPTS, "no more plain attempts");
    });
  },
});

Deno.test({
  name:
    "plain attempts (JS): a guest that waits, before or after setting its response, answers once through promising",
  ...COMPONENT_TEST,
  fn: async () => {
    await serving(FIXTURES.httpApp, async (get, server, out) => {
      const slept = await get("/sleep?ms=5");
      assert.deepEqual(slept, [200, "slept"], out.lines.join("\n"));
      assert.equal(server.stats.plainAbandoned, 1);
      // Sets its response, then streams a body larger than a write takes at once.
      const n = 300_000;
      const [status, body] = await get(`/big?n=${n}`);
      assert.deepEqual([status, body.length, body === "a".repeat(n)], [200, n, true]);
      // componentize-js sets the response before streaming its body (its first wait).
      assert.equal(server.stats.plainAbandoned, 2);
      // Run again, a request keeps its REQUEST_ID: ids go up by one per request.
      const first = Number((await get("/env"))[1]);
      assert.deepEqual(await get("/env"), [200, String(first + 1)]);
      assert.equal(server.stats.plainAbandoned, 4);
      // Its event loop waits on every request: after 8 attempts, none are made.
      for (let i = 4; i < MAX_ABANDONED_PLAIN_ATTEMPTS + 2; i++) {
        assert.deepEqual(await get("/"), [
          200,
          "Hello, this is your first wasi:http/proxy world!\n",
        ]);
      }
      assert.equal(server.stats.plainAbandoned, MAX_ABANDONED_PLAIN_ATTEMPTS);
      assert.equal(server.stats.plainServed, 0);
      assert.equal(out.plainCalls(), MAX_ABANDONED_PLAIN_ATTEMPTS);
      assert.equal(out.lines.length, 1, out.lines.join("\n"));
      assert.match(out.lines[0], /no longer tried without JSPI first: .* waits/);
      assert.deepEqual(await get("/count"), [200, "1"]);
    });
  },
});

Deno.test({
  name:
    "plain attempts: one touching files (reads too) runs again through promising; after 8 they stop",
  ...COMPONENT_TEST,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "plain-attempt-root-" });
    try {
      await Deno.writeTextFile(`${root}/in.txt`, "from the container's root");
      await serving(
        HTTP_PROBE,
        async (get, server, out) => {
          // A write: abandoned before it happens, then done once through promising.
          assert.deepEqual(await get("/write/out.txt?once"), [200, "wrote 4\n"]);
          assert.equal(server.stats.plainAbandoned, 1);
          assert.equal(await Deno.readTextFile(`${root}/out.txt`), "once");
          for (let i = 2; i <= MAX_ABANDONED_PLAIN_ATTEMPTS + 1; i++) {
            assert.deepEqual(await get("/cat/in.txt"), [200, "from the container's root"]);
          }
          assert.equal(server.stats.plainAbandoned, MAX_ABANDONED_PLAIN_ATTEMPTS);
          assert.equal(server.stats.plainServed, 0);
          assert.equal(out.lines.length, 1, out.lines.join("\n"));
          assert.match(out.lines[0], /no longer tried without JSPI first: .*\(files\)/);
        },
        [],
        root,
      );
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name: "plain attempts: WASMTIME_HTTP_PROXY_PLAIN_ENTRY=0 enters every request through promising",
  ...COMPONENT_TEST,
  fn: async () => {
    await serving(FIXTURES.httpHello, async (get, server, out) => {
      for (let i = 0; i < 3; i++) assert.deepEqual(await get("/"), [200, HELLO]);
      assert.equal(server.stats.plainServed, 0);
      assert.equal(out.plainCalls(), 0);
    }, [[ENV.plainEntry, "0"]]);
    assert.equal(httpConfigFromEnv(new Map()).plainEntry, true);
    assert.throws(
      () => httpConfigFromEnv(new Map([[ENV.plainEntry, "no"]])),
      /WASMTIME_HTTP_PROXY_PLAIN_ENTRY="no" is not 0 \(off\) or 1 \(on\)/,
    );
  },
});
