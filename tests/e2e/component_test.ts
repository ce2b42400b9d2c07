/**
 * End to end: WASI 0.2 components under a private containerd — a wasi:cli command
 * and a wasi:http/proxy served with a fresh instance per request.
 */

import assert from "node:assert/strict";
import { runProxy, waitFor } from "./ctr_util.ts";
import { type Containerd } from "./harness.ts";
import { startSuite } from "./suite.ts";

const RUNTIME = "io.containerd.wasmtime.v1";
const TESTDATA = new URL("../../src/wasm/component/testdata/", import.meta.url).pathname;
const PORT = 18_000 + Math.floor(Math.random() * 1000);
const ADDR = `127.0.0.1:${PORT}`;
const opts = { sanitizeOps: false, sanitizeResources: false };

let env: Promise<{ cd: Containerd; image: string; tmp: string; cache: string }> | undefined;

function setup() {
  env ??= (async () => {
    const suite = await startSuite({
      name: "components",
      files: [
        { path: "/command.wasm", hostPath: `${TESTDATA}command.wasm` },
        { path: "/http_app.wasm", hostPath: `${TESTDATA}http_app.wasm` },
        { path: "/broken.wasm", data: new Uint8Array([0, 0x61, 0x73, 0x6d, 0x0d, 0, 1, 0, 99]) },
      ],
      containerd: (tmp) => ({ env: { WASMTIME_SHIM_CACHE_DIR: `${tmp}/cache` } }),
    });
    return { ...suite, cache: `${suite.tmp}/cache` };
  })();
  return env;
}

let seq = 0;
async function run(args: string[], runOpts: string[] = []) {
  const { cd, image } = await setup();
  return await cd.ctr([
    "run",
    "--rm",
    "--runtime",
    RUNTIME,
    ...runOpts,
    image,
    `c-${++seq}`,
    ...args,
  ], {
    timeoutMs: 90_000,
  });
}

Deno.test({
  name: "a command component: stdout, stderr, exit code, trap; transpiled once then cached",
  ...opts,
  async fn() {
    const { cache } = await setup();
    const first = await run(["/command.wasm"]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /hello from a wasi:cli command/);
    const entries = [...Deno.readDirSync(cache)].length;
    assert.ok(entries > 0, "the transpiled component is cached");
    const code = await run(["/command.wasm", "7"]);
    assert.equal(code.code, 7, code.stderr);
    const trap = await run(["/command.wasm", "t"]);
    assert.equal(trap.code, 137);
    assert.equal([...Deno.readDirSync(cache)].length, entries, "the second run reused the cache");
  },
});

Deno.test({
  name: "a component that cannot run fails Create cleanly",
  ...opts,
  async fn() {
    const r = await run(["/broken.wasm"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /broken\.wasm/);
    const ok = await run(["/command.wasm"]);
    assert.equal(ok.code, 0, ok.stderr);
  },
});

async function serve(id: string, runOptions: string[] = []) {
  const { cd, image } = await setup();
  // The first request transpiles the 12.8 MB component when the cache is cold.
  const proxy = await runProxy(cd, {
    image,
    id,
    wasm: "/http_app.wasm",
    addr: ADDR,
    runOptions,
    answerTimeoutMs: 60_000,
    timeoutMs: 120_000,
  });
  return { cd, running: proxy.running };
}

Deno.test({
  name: "wasi:http: hello, a fresh instance per request, echo, REQUEST_ID, trap → 500, SIGINT → 0",
  ...opts,
  async fn() {
    const { cd, running } = await serve("http-1");
    const hello = await (await fetch(`http://${ADDR}/`)).text();
    assert.match(hello, /Hello, this is your first wasi:http\/proxy world!/);
    const counts = await Promise.all(
      Array.from({ length: 100 }, () => fetch(`http://${ADDR}/count`).then((r) => r.text())),
    );
    assert.deepEqual(new Set(counts), new Set(["1"]), "every request sees a fresh instance");
    const body = "x".repeat(100_000);
    const echo = await fetch(`http://${ADDR}/echo`, { method: "POST", body });
    assert.equal(await echo.text(), body);
    assert.notEqual(await (await fetch(`http://${ADDR}/env`)).text(), "unset");
    const trap = await fetch(`http://${ADDR}/trap`);
    assert.equal(trap.status, 500);
    // The guest set its 500 and then trapped before finishing the body: the host cuts it.
    await trap.text().catch(() => {});
    assert.equal(await fetch(`http://${ADDR}/count`).then((r) => r.text()), "1");
    const big = await fetch(`http://${ADDR}/big?n=${10 << 20}`);
    assert.equal((await big.arrayBuffer()).byteLength, 10 << 20);
    assert.equal((await cd.ctr(["task", "kill", "-s", "SIGINT", "http-1"])).code, 0);
    assert.equal((await running).code, 0);
  },
});

Deno.test({
  name: "wasi:http: SIGTERM drains and exits 143; defaults sized to the container's limits",
  ...opts,
  async fn() {
    const { cd, running } = await serve("http-2", ["--cpus", "1", "--memory-limit", "134217728"]);
    // One CPU's quota: one serving thread; 128 MiB: a quarter of it for grown memory.
    const sized =
      /serving wasi:http on [^\n]* with 1 worker thread\(s\)[^\n]*grown-memory budget 32\.0 MiB/;
    await waitFor("the runner's serving line in the log", async () => sized.test(await cd.logs()));
    assert.equal((await cd.ctr(["task", "kill", "-s", "SIGTERM", "http-2"])).code, 0);
    assert.equal((await running).code, 143);
  },
});

Deno.test({
  name: "components: nothing left behind",
  ...opts,
  async fn() {
    const { cd, tmp } = await setup();
    // Servers exit right after containerd's Shutdown; give them a moment to be gone.
    for (let i = 0; i < 50 && (await cd.leftovers()).processes.length > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const left = await cd.stop();
    await Deno.remove(tmp, { recursive: true });
    assert.deepEqual(left.mounts, []);
    assert.deepEqual(left.sockets, []);
    assert.deepEqual(left.processes, []);
  },
});
