import assert from "node:assert/strict";
import { discardSink, EMPTY_SOURCE } from "../host/io.ts";
import { ENV, httpConfigFromEnv, ProxyServer } from "../http_server.ts";
import { instanceFactory } from "../http_workers.ts";
import { COMPONENT_TEST, fixture, FIXTURES } from "../test_util.ts";
import { ASYNC_EXPORTS, ASYNC_IMPORTS, compileCores } from "../transpile.ts";
import { LEAN_GLUE_HEADER, leanTranspile, linkStats, loadLeanGlue } from "./mod.ts";
import type { LeanPlan } from "./plan_data.ts";
import { VSIZE_EXPORT } from "./vsize.ts";

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
            const p = which === 5
              ? "/trap"
              : which === 11
              ? "/fill"
              : which % 3 === 0
              ? "/grow"
              : "/";
            const response = await fetch(`http://127.0.0.1:${addr.port}${p}`);
            const body = await response.text();
            if (p === "/trap" || p === "/fill") assert.equal(response.status, 500, p);
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
        // The requests were tried without JSPI first (see `plain_attempt.ts`).
        assert.equal(server.stats.plainAbandoned, 0);
        assert.equal(server.stats.plainServed, server.stats.served);
        assert.ok(stats().plainEntry);
      } finally {
        await server.stop();
      }
      const traps = /unreachable|out of bounds memory access/;
      assert.equal(lines.filter((l) => !traps.test(l)).length, 0, lines.join("\n"));
    },
  });
}

/** A proxy server of `c` on a free port, on this thread; `fn` gets a GET function. */
async function serving(
  c: Awaited<ReturnType<typeof leaky>>,
  env: [string, string][],
  fn: (get: (path: string) => Promise<[number, string]>, lines: string[]) => Promise<void>,
) {
  const lines: string[] = [];
  const config = httpConfigFromEnv(
    new Map([[ENV.addr, "127.0.0.1:0"], [ENV.workers, "0"], [ENV.pool, "0"], ...env]),
  );
  const server = new ProxyServer(
    instanceFactory(c, HANDLER, HOST, undefined, { recycleGrown: config.recycleGrown }),
    config,
    (l) => lines.push(l),
  );
  const addr = server.listen();
  server.start();
  try {
    await fn(async (path) => {
      const response = await fetch(`http://127.0.0.1:${addr.port}${path}`);
      return [response.status, await response.text()];
    }, lines);
  } finally {
    await server.stop();
  }
}

for (const recycleGrown of ["1", "0"]) {
  Deno.test({
    name: `${ENV.recycleGrown}=${recycleGrown}: an instance whose memory grew ${
      recycleGrown === "1" ? "is recycled with its initial size and zeros" : "is dropped"
    }; a bulk op past the size traps; grow past the maximum fails`,
    ...COMPONENT_TEST,
    fn: async () => {
      await spyInstances(async (made) => {
        const c = await leaky("recycled");
        await serving(c, [[ENV.recycleGrown, recycleGrown]], async (get, lines) => {
          const [, pristine] = await get("/");
          assert.equal(pristine[0], "@");
          const reuse = linkStats(c.instantiate).reuse;
          assert.equal(reuse.grownRecycled, recycleGrown === "1", reuse.grownReason ?? "");
          const before = made.length;
          // Each /grow finds its new pages zero (the secret the last one left is gone),
          // the size it grows from is the initial one, and the maximum holds.
          for (const path of ["/grow", "/grow", "/", "/fill", "/grow", "/fill", "/"]) {
            const [status, body] = await get(path);
            if (path === "/fill") assert.equal(status, 500, "traps out of bounds");
            else assert.deepEqual([status, body], [200, pristine], path);
          }
          // One request at a time: the one idle instance serves each of them, unless
          // it grew (and grown ones are dropped) or trapped.
          const fresh = made.slice(before).filter((m) => "memory" in m.exports).length;
          assert.equal(fresh, recycleGrown === "1" ? 2 : 5, `${fresh} core instances made`);
          assert.equal(lines.filter((l) => !/out of bounds memory access/.test(l)).length, 0);
          assert.equal(lines.length, 2, lines.join("\n"));
        });
      });
    },
  });
}

Deno.test({
  name: `a bad ${ENV.recycleGrown} fails with a message naming it`,
  fn: () => {
    assert.throws(
      () => httpConfigFromEnv(new Map([[ENV.recycleGrown, "yes"]])),
      new RegExp(`${ENV.recycleGrown}="yes" is not 0 \\(off\\) or 1 \\(on\\)`),
    );
    assert.equal(httpConfigFromEnv(new Map()).recycleGrown, true);
  },
});

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
    // g3: the virtual memory size (vsize.ts), which its memory.grow sets.
    assert.deepEqual(names(resets[0].globals), ["g0", "g1", "g3"]);
    assert.equal(resets[0].virtualSize, true);
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

/**
 * What a core instance's exports hold: memory bytes (up to the size its code sees,
 * checked to be zeros past it), global values, table entries.
 */
function coreState(instance: WebAssembly.Instance) {
  const out: Record<string, unknown> = {};
  const vsize = instance.exports[VSIZE_EXPORT] as WebAssembly.Global | undefined;
  for (const [name, value] of Object.entries(instance.exports)) {
    if (value instanceof WebAssembly.Memory) {
      const size = vsize === undefined ? value.buffer.byteLength : vsize.value * 65536;
      out[name] = new Uint8Array(value.buffer.slice(0, size));
      assert.ok(new Uint8Array(value.buffer, size).every((b) => b === 0), "zeros past its size");
    } else if (value instanceof WebAssembly.Global) out[name] = value.value;
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
          const call = createIncomingCall(new Request(i % 2 ? "http://x/grow" : "http://x/"));
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
