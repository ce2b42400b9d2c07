/**
 * End to end: OpenTelemetry. A test OTLP receiver (`otlp_receiver.ts`) collects what
 * the shim sends under a private containerd started with the standard `OTEL_*`
 * variables: one container's task RPC spans as one trace with the runner's spans in
 * it, a wasi:http request's span joined to the caller's trace, metrics and log
 * records. A receiver that stalls or is down delays no container; with the variables
 * unset nothing is sent.
 */

import assert from "node:assert/strict";
import { buildImage } from "../../src/oci/image.ts";
import { type Containerd, containerdVersion, startContainerd } from "./harness.ts";
import { installShim } from "./shim_install.ts";
import { assertNothingLeft, poll, runProxy } from "./ctr_util.ts";
import {
  type OtlpReceiver,
  type ReceivedPoint,
  type ReceivedSpan,
  startReceiver,
} from "./otlp_receiver.ts";

const RUNTIME = "io.containerd.wasmtime.v1";
const FIXTURES = new URL("../fixtures/built/", import.meta.url).pathname;
const TESTDATA = new URL("../../src/wasm/component/testdata/", import.meta.url).pathname;
const PORT = 19_000 + Math.floor(Math.random() * 1000);
const ADDR = `127.0.0.1:${PORT}`;
/** The OTLP/HTTP port an exporter uses when no endpoint is set. */
const OTLP_DEFAULT_PORT = 4318;
/** OTLP span kinds. */
const SERVER = 2;
const CLIENT = 3;
const opts = { sanitizeOps: false, sanitizeResources: false };

/**
 * runwasi's form of a trace context for the shim (`TRACECONTEXT`, which its `start`
 * sets for its server): containerd never sets it, but passes its own environment,
 * where an operator may, to every shim. The shim's servers join this trace.
 */
const OUTER_TRACE = {
  traceId: crypto.randomUUID().replaceAll("-", ""),
  spanId: "00000000000000f1",
};
const TRACECONTEXT = JSON.stringify({
  traceparent: `00-${OUTER_TRACE.traceId}-${OUTER_TRACE.spanId}-01`,
});

/** Short export intervals, so that the test waits for tenths of seconds, not seconds. */
const FAST_EXPORT = {
  OTEL_BSP_SCHEDULE_DELAY: "100",
  OTEL_BLRP_SCHEDULE_DELAY: "100",
  OTEL_METRIC_EXPORT_INTERVAL: "300",
};

interface Env {
  cd: Containerd;
  image: string;
  tmp: string;
  receiver: OtlpReceiver;
}

let env: Promise<Env> | undefined;

async function buildTestImage(tmp: string): Promise<string> {
  const built = await buildImage({
    name: "otel",
    tag: "e2e",
    outPath: `${tmp}/otel.tar`,
    config: {},
    layers: [{
      files: [
        { path: "/probe.wasm", hostPath: `${FIXTURES}probe.wasm` },
        { path: "/http_app.wasm", hostPath: `${TESTDATA}http_app.wasm` },
      ],
    }],
  });
  return built.reference;
}

function setup(): Promise<Env> {
  env ??= (async () => {
    const { binDir } = await installShim();
    const tmp = await Deno.makeTempDir({ prefix: "shim-e2e-otel-" });
    const receiver = startReceiver();
    const cd = await startContainerd({
      shimBinDir: binDir,
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, TRACECONTEXT, ...FAST_EXPORT },
    });
    const image = await buildTestImage(tmp);
    await cd.importImage(`${tmp}/otel.tar`);
    return { cd, image, tmp, receiver };
  })();
  return env;
}

async function run(cd: Containerd, image: string, id: string, args: string[]) {
  const started = performance.now();
  const r = await cd.ctr(["run", "--rm", "--runtime", RUNTIME, image, id, ...args], {
    timeoutMs: 60_000,
  });
  return { ...r, ms: performance.now() - started };
}

const spansOf = (r: OtlpReceiver, id: string) =>
  r.spans.filter((s) => s.attributes["container.id"] === id);
const named = (spans: ReceivedSpan[], name: string) => spans.find((s) => s.name.endsWith(name));

Deno.test({
  name: "otel: one container's task RPCs are one trace under its Create, with the runner's spans",
  ...opts,
  async fn() {
    const { cd, image, receiver } = await setup();
    const r = await run(cd, image, "otel-p1", ["/probe.wasm", "hello"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /hello from wasm/);
    const spans = await poll("the Delete and runner spans of otel-p1", 10_000, () => {
      const s = spansOf(receiver, "otel-p1");
      return named(s, "/Delete") && named(s, "run guest") ? s : undefined;
    });
    const create = named(spans, "/Create")!;
    assert.ok(create, "a Create span");
    assert.equal(create.kind, SERVER);
    assert.equal(create.attributes["rpc.system"], "ttrpc");
    assert.equal(create.resource["service.name"], "containerd-shim-wasmtime-v1");
    // containerd 1.x sends no trace context: Create joins the one the server started
    // with (TRACECONTEXT), and the task's later calls are children of its Create.
    // containerd 2.x, which traces its own calls to the same collector here, sends its
    // span's context in the ttrpc metadata: each call is that span's child (the
    // metadata wins over TRACECONTEXT).
    const { major } = await containerdVersion();
    if (major === 1) {
      assert.equal(create.parentSpanId, OUTER_TRACE.spanId, "Create joins TRACECONTEXT");
      assert.equal(create.traceId, OUTER_TRACE.traceId);
    }
    for (const call of [create, ...["/Start", "/Wait", "/Delete"].map((m) => named(spans, m))]) {
      assert.ok(call, "a Start, Wait and Delete span");
      if (major === 1) {
        if (call !== create) assert.equal(call.parentSpanId, create.spanId, call.name);
        assert.equal(call.traceId, create.traceId, `${call.name} is in the Create's trace`);
        continue;
      }
      // A call sent without a context joins as on 1.x.
      if (call.parentSpanId === (call === create ? OUTER_TRACE.spanId : create.spanId)) continue;
      const parent = await poll(
        `the parent of ${call.name}`,
        10_000,
        () => receiver.spans.find((s) => s.spanId === call.parentSpanId),
      );
      assert.equal(parent.traceId, call.traceId);
      assert.equal(parent.resource["service.name"], "containerd", `${call.name}'s parent`);
    }
    // The Create's spans and theirs, down to the runner's (other containers' Creates of
    // this server join the same TRACECONTEXT trace on 1.x).
    const all = [create];
    for (let i = 0; i < all.length; i++) {
      all.push(...receiver.spans.filter((s) => s.parentSpanId === all[i].spanId));
    }
    const byName = (name: string) => all.find((s) => s.name === name);
    const guest = byName("create guest");
    const handOff = byName("runner hand-off");
    const prepare = byName("prepare guest");
    const runGuest = byName("run guest");
    assert.ok(guest && handOff && prepare && runGuest, all.map((s) => s.name).join(", "));
    assert.equal(guest.parentSpanId, create.spanId);
    assert.equal(handOff.parentSpanId, guest.spanId);
    // The runner's spans (another process) join through the traceparent it was given.
    assert.equal(prepare.parentSpanId, handOff.spanId);
    assert.equal(runGuest.parentSpanId, handOff.spanId);
    assert.equal(runGuest.attributes["process.exit.code"], 0);
    assert.ok(guest.attributes["runner.pid"], "the runner's pid is on the span");
    if (Deno.env.get("OTEL_TEST_DUMP")) {
      const order = all.toSorted((a, b) => a.startNs - b.startNs);
      for (const s of order) console.log(JSON.stringify(s));
    }
  },
});

/**
 * A metric's total over its series (a process, a thread, a set of attributes) whose
 * attributes match `attrs`: each series' largest value (cumulative sums grow), added
 * up. Undefined when no point matches.
 */
function largest(points: ReceivedPoint[], metric: string, attrs: Record<string, unknown> = {}) {
  const series = new Map<string, number>();
  for (const p of points) {
    if (p.metric !== metric) continue;
    if (!Object.entries(attrs).every(([k, v]) => p.attributes[k] === v)) continue;
    const key = JSON.stringify([p.resource["service.instance.id"], p.attributes]);
    series.set(key, Math.max(series.get(key) ?? -Infinity, p.value));
  }
  return series.size === 0 ? undefined : [...series.values()].reduce((a, b) => a + b, 0);
}

Deno.test({
  name: "otel: a wasi:http request's span joins the caller's trace, with its status; metrics",
  ...opts,
  async fn() {
    const { cd, image, receiver } = await setup();
    const { running } = await runProxy(cd, {
      image,
      id: "otel-http",
      wasm: "/http_app.wasm",
      addr: ADDR,
      probePath: "/count",
      timeoutMs: 60_000,
    });
    const traceId = crypto.randomUUID().replaceAll("-", "");
    const ok = await fetch(`http://${ADDR}/count`, {
      headers: { traceparent: `00-${traceId}-00000000000000a1-01` },
    });
    assert.equal(ok.status, 200);
    await ok.text();
    const trap = await fetch(`http://${ADDR}/trap`, {
      headers: { traceparent: `00-${traceId}-00000000000000a2-01` },
    });
    assert.equal(trap.status, 500);
    await trap.text().catch(() => {});
    // An outgoing request of the guest carries the trace on, from a span of its own.
    const upstreamSeen: (string | null)[] = [];
    const upstream = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
      upstreamSeen.push(req.headers.get("traceparent"));
      return new Response("upstream");
    });
    const out = await fetch(
      `http://${ADDR}/fetch?url=http://127.0.0.1:${upstream.addr.port}/`,
      { headers: { traceparent: `00-${traceId}-00000000000000a3-01` } },
    );
    assert.equal(out.status, 200);
    assert.match(await out.text(), /upstream/);
    await upstream.shutdown();
    // The runner's gauges are read at each export while it runs: wait for one first.
    const points = await poll(
      "the wasi:http metrics and the runner's memory",
      10_000,
      () =>
        largest(receiver.points, "wasi_http.requests", { "http.response.status_code": 500 }) &&
          largest(receiver.points, "runner.memory.rss")
          ? receiver.points
          : undefined,
    );
    assert.equal((await cd.ctr(["task", "kill", "-s", "SIGINT", "otel-http"])).code, 0);
    assert.equal((await running).code, 0);

    const served = await poll("the request spans and the outgoing one", 10_000, () => {
      const s = receiver.spans.filter((s) => s.traceId === traceId);
      return s.length >= 4 ? s : undefined;
    });
    const okSpan = served.find((s) => s.parentSpanId === "00000000000000a1")!;
    const trapSpan = served.find((s) => s.parentSpanId === "00000000000000a2")!;
    assert.ok(okSpan && trapSpan, JSON.stringify(served));
    assert.equal(okSpan.kind, SERVER);
    assert.equal(Number(okSpan.attributes["http.response.status_code"]), 200);
    assert.equal(Number(trapSpan.attributes["http.response.status_code"]), 500);
    assert.equal(typeof okSpan.attributes["wasi_http.queue_ms"], "number");
    assert.equal(typeof okSpan.attributes["wasi_http.instance_ms"], "number");
    assert.equal(typeof okSpan.attributes["wasi_http.instance.fresh"], "boolean");
    const fetchSpan = served.find((s) => s.parentSpanId === "00000000000000a3")!;
    const outgoing = served.find((s) => s.parentSpanId === fetchSpan?.spanId);
    assert.ok(outgoing, `a child span of the request: ${JSON.stringify(served)}`);
    assert.equal(outgoing.kind, CLIENT);
    assert.equal(upstreamSeen.length, 1);
    assert.equal(upstreamSeen[0], `00-${traceId}-${outgoing.spanId}-01`);
    if (Deno.env.get("OTEL_TEST_DUMP")) console.log(JSON.stringify(served));

    assert.ok(largest(points, "wasi_http.requests", { "http.response.status_code": 200 })! >= 2);
    assert.ok(largest(points, "wasi_http.errors")! >= 1);
    const latency = points.find((p) => p.metric === "wasi_http.request.duration")!;
    assert.ok(latency.count >= 1 && latency.value > 0 && latency.value < 60_000);
    assert.ok(points.some((p) => p.metric === "wasi_http.instantiation.duration"));
    assert.ok(largest(points, "wasm.transpile_cache.lookups")! >= 1);
    const rss = points.filter((p) => p.metric === "runner.memory.rss").map((p) => p.value);
    assert.ok(rss.length > 0 && rss.every((v) => v > 10 * 2 ** 20 && v < 4 * 2 ** 30), `${rss}`);
    assert.ok(largest(points, "shim.rpc.calls", { "rpc.method": "Create" })! >= 1);
    assert.ok(points.some((p) => p.metric === "shim.rpc.duration" && p.count >= 1));
  },
});

Deno.test({
  name: "otel: the server's log lines are log records; -debug lines carry the container id",
  ...opts,
  async fn() {
    const { receiver } = await setup();
    const line = await poll(
      "a log record naming otel-p1",
      10_000,
      () =>
        receiver.logs.find((l) => typeof l.body === "string" && l.body.includes('id="otel-p1"')),
    );
    assert.match(String(line.body), /namespace="[^"]+"/);
    assert.deepEqual(receiver.errors, [], "every payload decoded");
    // containerd runs the shim with -debug at its debug level (the harness's): the debug
    // lines about a task reach containerd's log with the task's fields.
    const { cd } = await setup();
    const log = await Deno.readTextFile(`${cd.dir}/containerd.log`);
    for (
      const what of ["create: args", "Create ok in", "Start ok in", "deleted \\(exit status 0\\)"]
    ) {
      assert.match(log, new RegExp(`level=debug msg="task otel-p1: ${what}.*id="otel-p1"`), what);
    }
    // The runner's own, through the same path (its runner was a warm one).
    assert.match(
      log,
      /level=debug msg="guest otel-p1 \(runner pid \d+\): prepared \/probe\.wasm in [^"]*" .*id="otel-p1"/,
    );
    // Without a collector, the counts are in the log too: each wasi:http thread's at its
    // stop, under the container's id (its runner was a warm one: named by it from Create).
    assert.match(
      log,
      /msg="guest otel-http \(runner pid \d+\): wasi:http thread \d+: metrics: [^"]*wasi_http\.requests=\d+[^"]*" .*id="otel-http"/,
    );
  },
});

Deno.test({
  name: "otel: a receiver that stalls, or is down, delays no container",
  ...opts,
  async fn() {
    const { cd, image, receiver } = await setup();
    const base = await run(cd, image, "otel-base", ["/probe.wasm", "hello"]);
    assert.equal(base.code, 0, base.stderr);
    receiver.stalled = true;
    const stalled = await run(cd, image, "otel-stalled", ["/probe.wasm", "hello"]);
    assert.equal(stalled.code, 0, stalled.stderr);
    await receiver.close();
    const down = await run(cd, image, "otel-down", ["/probe.wasm", "hello"]);
    assert.equal(down.code, 0, down.stderr);
    // Without a bound, a runner's last export would wait 10 s per signal at its exit.
    for (const [what, r] of [["stalled", stalled], ["down", down]] as const) {
      assert.ok(
        r.ms < base.ms + 1_500,
        `ctr run took ${r.ms.toFixed(0)} ms with the receiver ${what}, ` +
          `${base.ms.toFixed(0)} ms with it up`,
      );
    }
  },
});

Deno.test({
  name: "otel: nothing left behind",
  ...opts,
  async fn() {
    const { cd, tmp } = await setup();
    await assertNothingLeft(cd, tmp);
  },
});

/** Tries to listen on the OTLP default port; undefined if it is taken. */
function defaultPortReceiver(): OtlpReceiver | undefined {
  try {
    return startReceiver(OTLP_DEFAULT_PORT);
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) return undefined;
    throw err;
  }
}

/**
 * Runs one container under a containerd with `cdEnv` and checks that no process of the
 * shim exports (none started with Deno's switch), that `listeners` got nothing, and
 * that containerd's log (the shim's `-debug` lines in it) matches `logged`.
 */
async function assertNoExport(
  tag: string,
  cdEnv: Record<string, string>,
  listeners: OtlpReceiver[],
  logged?: RegExp,
): Promise<void> {
  const { binDir } = await installShim();
  const tmp = await Deno.makeTempDir({ prefix: `shim-e2e-otel-${tag}-` });
  const cd = await startContainerd({ shimBinDir: binDir, env: cdEnv });
  const image = await buildTestImage(tmp);
  await cd.importImage(`${tmp}/otel.tar`);
  const id = `otel-${tag}`;
  const r = await cd.ctr([
    "run",
    "-d",
    "--runtime",
    RUNTIME,
    image,
    id,
    "/probe.wasm",
    "sleep",
    "30",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const { processes } = await cd.leftovers();
  assert.ok(processes.length > 0, "the shim server and the runner run");
  for (const proc of processes) {
    const environ = await Deno.readTextFile(`/proc/${proc.pid}/environ`).catch(() => "");
    assert.doesNotMatch(environ, /(^|\0)OTEL_DENO=/, `${proc.cmdline} does not export`);
  }
  assert.equal((await cd.ctr(["task", "kill", "-s", "SIGKILL", id])).code, 0);
  await cd.ctr(["task", "wait", id]);
  assert.equal((await cd.ctr(["task", "delete", id])).code, 0);
  assert.equal((await cd.ctr(["container", "delete", id])).code, 0);
  for (const listener of listeners) {
    assert.deepEqual([...listener.requests], [], `nothing was sent to ${listener.endpoint}`);
  }
  if (logged) assert.match(await cd.logs(), logged);
  await assertNothingLeft(cd, tmp);
}

Deno.test({
  name: "otel: with the variables unset, the shim's processes do not export",
  ...opts,
  async fn() {
    // An exporter with no endpoint would send to the default port: listen there.
    const listener = defaultPortReceiver();
    try {
      await assertNoExport("off", {}, listener ? [listener] : []);
    } finally {
      await listener?.close();
    }
  },
});

Deno.test({
  name: "otel: OTEL_SDK_DISABLED=true turns export off, whatever endpoint is set",
  ...opts,
  async fn() {
    const listener = startReceiver();
    try {
      await assertNoExport(
        "disabled",
        {
          OTEL_EXPORTER_OTLP_ENDPOINT: listener.endpoint,
          OTEL_SDK_DISABLED: "true",
          ...FAST_EXPORT,
        },
        [listener],
        /level=debug msg="no OpenTelemetry export \(OTEL_SDK_DISABLED=true\)"/,
      );
    } finally {
      await listener.close();
    }
  },
});

Deno.test({
  name: "otel: a protocol Deno cannot start with turns export off with a warning; containers run",
  ...opts,
  async fn() {
    const listener = startReceiver();
    try {
      await assertNoExport(
        "badprotocol",
        {
          OTEL_EXPORTER_OTLP_ENDPOINT: listener.endpoint,
          OTEL_EXPORTER_OTLP_PROTOCOL: "http",
          ...FAST_EXPORT,
        },
        [listener],
        /level=warning msg="no OpenTelemetry export: OTEL_EXPORTER_OTLP_PROTOCOL=\\"http\\" is not one of/,
      );
    } finally {
      await listener.close();
    }
  },
});
