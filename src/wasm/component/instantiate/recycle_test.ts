import assert from "node:assert/strict";
import { discardSink, EMPTY_SOURCE } from "../host/io.ts";
import { ENV, httpConfigFromEnv, ProxyServer } from "../http_server.ts";
import { instanceFactory } from "../http_workers.ts";
import { COMPONENT_TEST, fixture, FIXTURES } from "../test_util.ts";
import { ASYNC_EXPORTS, ASYNC_IMPORTS, compileCores } from "../transpile.ts";
import { LEAN_GLUE_HEADER, leanTranspile, linkStats, loadLeanGlue } from "./mod.ts";
import type { LeanPlan } from "./plan_data.ts";

const HANDLER = "wasi:http/incoming-handler@0.2.12";
const HOST = {
  args: ["/app.wasm"],
  env: [] as [string, string][],
  cwd: "/",
  root: null,
  stdin: EMPTY_SOURCE,
  stdout: discardSink(),
  stderr: discardSink(),
};

type Path = "recycled" | "fresh" | "fallback";

/** The leaky guest's lean glue, made to take `path`. */
async function leaky(path: Path) {
  const lean = leanTranspile(fixture(FIXTURES.leaky), { images: path !== "fallback" });
  let glue = lean.glue;
  if (path === "fresh") {
    // As for a module with passive segments or a start function.
    const plan = JSON.parse(glue.slice(LEAN_GLUE_HEADER.length)) as LeanPlan;
    for (const step of plan.steps) {
      if (step.op === "instantiate" && step.reset) step.reset.fresh = "forced by the test";
    }
    glue = LEAN_GLUE_HEADER + JSON.stringify(plan);
  }
  const instantiate = loadLeanGlue(glue, {
    asyncImports: ASYNC_IMPORTS,
    asyncExports: ASYNC_EXPORTS,
  });
  return { instantiate, modules: await compileCores(lean.cores) };
}

for (const path of ["recycled", "fresh", "fallback"] as const) {
  Deno.test({
    name:
      `${path}: no request sees what another left (memory, global, table, host resources, pending body), under concurrency`,
    ...COMPONENT_TEST,
    fn: async () => {
      const c = await leaky(path);
      const stats = () => linkStats(c.instantiate);
      assert.equal(stats().reuse.recycled, path === "recycled", stats().reuse.reason ?? "");
      if (path === "fallback") assert.match(stats().reuse.reason!, /memory images are off/);
      if (path === "fresh") assert.match(stats().reuse.reason!, /forced by the test/);
      const lines: string[] = [];
      const config = httpConfigFromEnv(
        new Map([[ENV.addr, "127.0.0.1:0"], [ENV.workers, "0"], [ENV.pool, "0"]]),
      );
      const server = new ProxyServer(
        instanceFactory(c, HANDLER, HOST),
        config,
        (l) => lines.push(l),
      );
      const addr = server.listen();
      server.start();
      const answers: string[] = [];
      try {
        const first = await fetch(`http://127.0.0.1:${addr.port}/`);
        const pristine = await first.text();
        assert.equal(pristine[0], "@", "a fresh instance finds nothing");
        await Promise.all(Array.from({ length: 8 }, async (_, client) => {
          for (let i = 0; i < 25; i++) {
            const which = (client * 25 + i) % 13;
            const p = which === 5 ? "/trap" : which === 9 ? "/grow" : "/";
            const response = await fetch(`http://127.0.0.1:${addr.port}${p}`);
            const body = await response.text();
            if (p === "/trap") assert.equal(response.status, 500);
            else answers.push(body);
          }
        }));
        const odd = answers.filter((a) => a !== pristine);
        assert.deepEqual(
          odd,
          [],
          `answers other than a fresh instance's ${JSON.stringify(pristine)}`,
        );
        if (path === "recycled") {
          assert.ok(stats().idleInstances > 0, "instances were recycled");
        } else assert.equal(stats().idleInstances, 0);
      } finally {
        await server.stop();
      }
      assert.equal(lines.filter((l) => !l.includes("unreachable")).length, 0, lines.join("\n"));
    },
  });
}

Deno.test({
  name: "the leaky guest's written table and globals are set back, its untouched ones are not",
  ...COMPONENT_TEST,
  fn: () => {
    const lean = leanTranspile(fixture(FIXTURES.leaky));
    const plan = JSON.parse(lean.glue.slice(LEAN_GLUE_HEADER.length)) as LeanPlan;
    const resets = plan.steps.flatMap((s) => s.op === "instantiate" && s.reset ? [s.reset] : []);
    assert.equal(resets.length, 1);
    // Tables $t (0) and $read_only (1); globals $heap (0), $g (1), $untouched (2): the
    // isolation tests above show both kinds hold a fresh instance's values.
    const names = (list: string[]) => list.map((n) => n.slice(n.lastIndexOf(":") + 1));
    assert.deepEqual(names(resets[0].tables), ["t0"]);
    assert.deepEqual(names(resets[0].globals), ["g0", "g1"]);
  },
});

/** Every core instance the glue makes while `fn` runs. */
async function spyInstances<T>(fn: (made: WebAssembly.Instance[]) => Promise<T>): Promise<T> {
  const Original = WebAssembly.Instance;
  const made: WebAssembly.Instance[] = [];
  class Spy extends Original {
    constructor(module: WebAssembly.Module, imports?: WebAssembly.Imports) {
      super(module, imports);
      made.push(this);
    }
  }
  (WebAssembly as { Instance: unknown }).Instance = Spy;
  try {
    return await fn(made);
  } finally {
    (WebAssembly as { Instance: unknown }).Instance = Original;
  }
}

/** What a core instance's exports hold: memory bytes, global values, table entries. */
function coreState(instance: WebAssembly.Instance) {
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(instance.exports)) {
    if (value instanceof WebAssembly.Memory) out[name] = new Uint8Array(value.buffer.slice(0));
    else if (value instanceof WebAssembly.Global) out[name] = value.value;
    else if (value instanceof WebAssembly.Table) {
      out[name] = Array.from({ length: value.length }, (_, i) => value.get(i)?.name ?? null);
    }
  }
  return out;
}

Deno.test({
  name: "a recycled instance is indistinguishable from a fresh one (memory, globals, tables)",
  ...COMPONENT_TEST,
  fn: async () => {
    await spyInstances(async (made) => {
      const recycled = await leaky("recycled");
      const fresh = await leaky("fresh");
      const factory = instanceFactory(recycled, HANDLER, HOST);
      const freshFactory = instanceFactory(fresh, HANDLER, HOST);
      const { createIncomingCall } = await import("../host/http.ts");
      let core: WebAssembly.Instance | undefined;
      for (let i = 0; i < 4; i++) {
        const n = made.length;
        const instance = factory(i + 1);
        if (i === 0) core = made.find((m) => "memory" in m.exports);
        else assert.equal(made.length, n, "no core instance made: the slot was recycled");
        const m = made.length;
        const other = freshFactory(i + 1);
        const freshCore = made.slice(m).find((x) => "memory" in x.exports)!;
        assert.ok(core !== undefined && freshCore !== undefined);
        assert.deepEqual(coreState(core), coreState(freshCore), `request ${i + 1}`);
        for (const x of [instance, other]) {
          const call = createIncomingCall(new Request(i % 2 ? "http://x/grow-not" : "http://x/"));
          await x.handler.handle(call.request, call.outparam);
          await call.response;
          x.host.dispose();
        }
        assert.notDeepEqual(coreState(core), coreState(freshCore), "a request changed the state");
      }
      assert.equal(linkStats(recycled.instantiate).idleInstances, 1);
    });
  },
});

Deno.test({
  name: "an instance ended as not reusable (a timed-out request) is not recycled; its memory is",
  ...COMPONENT_TEST,
  fn: async () => {
    const c = await leaky("recycled");
    const factory = instanceFactory(c, HANDLER, HOST);
    const a = factory(1);
    a.host.dispose();
    assert.equal(linkStats(c.instantiate).idleInstances, 1);
    const b = factory(2);
    assert.equal(linkStats(c.instantiate).idleInstances, 0);
    assert.ok(b.discard !== undefined);
    b.discard();
    b.host.dispose();
    assert.equal(linkStats(c.instantiate).idleInstances, 0, "not recycled");
    assert.deepEqual(linkStats(c.instantiate).pooledMemories, [1], "its memory went back, reset");
  },
});
