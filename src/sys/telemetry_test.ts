import assert from "node:assert/strict";
import {
  counter,
  formatTraceparent,
  histogram,
  metricsSummary,
  OtelEnv,
  parseTraceparent,
  RUNNER_EXPORT_TIMEOUT_MS,
  runnerTelemetryEnv,
  serverTelemetryEnv,
  telemetryConfig,
  telemetryOn,
  traceContextFromEnv,
  withInstanceId,
  withSpan,
} from "./telemetry.ts";
import { startReceiver } from "../../tests/e2e/otlp_receiver.ts";

const TRACE = "0af7651916cd43dd8448eb211c80319c";
const SPAN = "b7ad6b7169203331";

Deno.test("telemetryConfig: off unless an endpoint is set; OTEL_SDK_DISABLED=true wins", () => {
  assert.deepEqual(telemetryConfig({}), { enabled: false, reason: "", env: {} });
  // Values Deno would refuse to start with turn telemetry off rather than every process.
  const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" };
  const badProtocol = telemetryConfig({ ...endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: "HTTP" });
  assert.equal(badProtocol.enabled, false);
  assert.equal(badProtocol.invalid, true);
  assert.match(
    badProtocol.reason,
    /OTEL_EXPORTER_OTLP_PROTOCOL="HTTP" is not one of http\/protobuf/,
  );
  const badSampler = telemetryConfig({ ...endpoint, OTEL_TRACES_SAMPLER: "xray" });
  assert.equal(badSampler.invalid, true);
  assert.match(badSampler.reason, /OTEL_TRACES_SAMPLER="xray"/);
  for (const ok of ["grpc", "http/json", "http/protobuf", ""]) {
    assert.equal(telemetryConfig({ ...endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: ok }).enabled, true);
  }
  assert.equal(telemetryConfig({ [OtelEnv.ENDPOINT]: "" }).enabled, false);
  assert.equal(telemetryConfig({ [OtelEnv.PROTOCOL]: "http/protobuf" }).enabled, false);
  const off = telemetryConfig({
    [OtelEnv.ENDPOINT]: "http://c:4318",
    [OtelEnv.SDK_DISABLED]: "TRUE",
  });
  assert.equal(off.enabled, false);
  assert.match(off.reason, /OTEL_SDK_DISABLED/);
  for (const name of [OtelEnv.ENDPOINT, OtelEnv.TRACES_ENDPOINT, OtelEnv.LOGS_ENDPOINT]) {
    assert.equal(telemetryConfig({ [name]: "http://c:4318" }).enabled, true, name);
  }
});

Deno.test("telemetryConfig: passes every OTEL_ variable on, with OTEL_DENO and the shim's name", () => {
  const on = telemetryConfig({
    [OtelEnv.TRACES_ENDPOINT]: "http://c:4318/v1/traces",
    [OtelEnv.TRACES_PROTOCOL]: "http/protobuf",
    OTEL_BSP_SCHEDULE_DELAY: "100",
    PATH: "/bin",
    UNDEFINED: undefined,
  });
  assert.deepEqual(on.env, {
    [OtelEnv.TRACES_ENDPOINT]: "http://c:4318/v1/traces",
    [OtelEnv.TRACES_PROTOCOL]: "http/protobuf",
    OTEL_BSP_SCHEDULE_DELAY: "100",
    [OtelEnv.DENO]: "true",
    [OtelEnv.SERVICE_NAME]: "containerd-shim-wasmtime-v1",
  });
  // containerd 2.x has OTEL_SERVICE_NAME=containerd in its environment: not the shim's.
  const named = telemetryConfig({ [OtelEnv.ENDPOINT]: "x", [OtelEnv.SERVICE_NAME]: "containerd" });
  assert.equal(named.env[OtelEnv.SERVICE_NAME], "containerd-shim-wasmtime-v1");
});

Deno.test("runnerTelemetryEnv caps the export timeout; serverTelemetryEnv exports console only", () => {
  const on = telemetryConfig({ [OtelEnv.ENDPOINT]: "x" });
  assert.equal(runnerTelemetryEnv(on)[OtelEnv.TIMEOUT], String(RUNNER_EXPORT_TIMEOUT_MS));
  const quick = telemetryConfig({ [OtelEnv.ENDPOINT]: "x", [OtelEnv.TIMEOUT]: "20" });
  assert.equal(runnerTelemetryEnv(quick)[OtelEnv.TIMEOUT], "20");
  const bad = telemetryConfig({ [OtelEnv.ENDPOINT]: "x", [OtelEnv.TIMEOUT]: "soon" });
  assert.equal(runnerTelemetryEnv(bad)[OtelEnv.TIMEOUT], String(RUNNER_EXPORT_TIMEOUT_MS));
  assert.deepEqual(runnerTelemetryEnv(telemetryConfig({})), {});
  assert.deepEqual(serverTelemetryEnv(telemetryConfig({})), {});
  const server = serverTelemetryEnv(on);
  assert.equal(server[OtelEnv.DENO_CONSOLE], "replace");
  assert.match(server[OtelEnv.RESOURCE_ATTRIBUTES], /^service\.instance\.id=[0-9a-f-]{36}$/);
});

Deno.test("withInstanceId appends to the operator's resource attributes, new each time", () => {
  const a = withInstanceId({ [OtelEnv.RESOURCE_ATTRIBUTES]: "k8s.node.name=n1" });
  const b = withInstanceId({ [OtelEnv.RESOURCE_ATTRIBUTES]: "k8s.node.name=n1" });
  assert.match(a[OtelEnv.RESOURCE_ATTRIBUTES], /^k8s\.node\.name=n1,service\.instance\.id=/);
  assert.notEqual(a[OtelEnv.RESOURCE_ATTRIBUTES], b[OtelEnv.RESOURCE_ATTRIBUTES]);
});

Deno.test("parseTraceparent reads W3C trace contexts and refuses malformed ones", () => {
  assert.deepEqual(parseTraceparent(`00-${TRACE}-${SPAN}-01`), {
    traceId: TRACE,
    spanId: SPAN,
    traceFlags: 1,
    isRemote: true,
  });
  assert.equal(parseTraceparent(` 00-${TRACE.toUpperCase()}-${SPAN}-00 `)?.traceFlags, 0);
  // A later version may append fields; version 00 may not.
  assert.equal(parseTraceparent(`01-${TRACE}-${SPAN}-01-extra`)?.traceId, TRACE);
  for (
    const bad of [
      undefined,
      "",
      `00-${TRACE}-${SPAN}-01-extra`,
      `ff-${TRACE}-${SPAN}-01`,
      `00-${"0".repeat(32)}-${SPAN}-01`,
      `00-${TRACE}-${"0".repeat(16)}-01`,
      `00-${TRACE.slice(1)}-${SPAN}-01`,
      `00-${TRACE}-${SPAN}`,
    ]
  ) {
    assert.equal(parseTraceparent(bad), undefined, String(bad));
  }
  assert.equal(
    formatTraceparent({ traceId: TRACE, spanId: SPAN, traceFlags: 1 }),
    `00-${TRACE}-${SPAN}-01`,
  );
});

Deno.test("traceContextFromEnv reads runwasi's JSON headers or a bare traceparent", () => {
  const tp = `00-${TRACE}-${SPAN}-01`;
  assert.equal(traceContextFromEnv(JSON.stringify({ traceparent: tp }))?.spanId, SPAN);
  assert.equal(traceContextFromEnv(tp)?.traceId, TRACE);
  assert.equal(traceContextFromEnv("{not json"), undefined);
  assert.equal(traceContextFromEnv("{}"), undefined);
  assert.equal(traceContextFromEnv(undefined), undefined);
});

Deno.test("with telemetry off, withSpan runs its function and rethrows; metrics are still kept", async () => {
  assert.equal(telemetryOn(), false, "tests run without OTEL_DENO");
  assert.equal(await withSpan("x", {}, (span) => span === undefined ? 7 : 0), 7);
  await assert.rejects(withSpan("x", {}, () => Promise.reject(new Error("boom"))), /boom/);
  const c = counter("test.count");
  c.add(2);
  c.add(3);
  const h = histogram("test.ms");
  h.record(1);
  h.record(3);
  const series = counter("test.series").series({ k: "v" });
  series.add(4);
  series.add(1);
  counter("test.never");
  const line = metricsSummary();
  assert.match(line, /test\.count=5/);
  assert.match(line, /test\.ms=2\/2\.00\/3\.00/);
  assert.match(line, /test\.series=5/);
  assert.doesNotMatch(line, /test\.never/, "a counter nothing was added to is left out");
});

/** Batched counter series of a child process that exports, through this module. */
const SERIES_CHILD = `
import { counter, flushMetrics } from "${new URL("./telemetry.ts", import.meta.url).href}";
const requests = counter("test.requests");
const ok = requests.series({ status: 200 });
const failed = requests.series({ status: 500 });
for (let i = 0; i < 1000; i++) ok.add(1);
failed.add(2);
const inFlight = counter("test.in_flight", {}, true).series({});
inFlight.add(1);
inFlight.add(1);
inFlight.add(-1);
flushMetrics();
`;

Deno.test("with telemetry on, counter series are exported in batches, with their totals", async () => {
  const receiver = startReceiver();
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/child.ts`, SERIES_CHILD);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-check", `${dir}/child.ts`],
      env: { OTEL_DENO: "true", OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint },
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const value = (metric: string, attrs: Record<string, unknown> = {}) =>
      receiver.points.find((p) =>
        p.metric === metric && Object.entries(attrs).every(([k, v]) => p.attributes[k] === v)
      )?.value;
    for (let i = 0; i < 100 && value("test.in_flight") === undefined; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(value("test.requests", { status: 200 }), 1000);
    assert.equal(value("test.requests", { status: 500 }), 2);
    assert.equal(value("test.in_flight"), 1);
  } finally {
    await receiver.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Every part of this module, in a child process where Deno exports some signals only. */
const PARTIAL_CHILD = `
import { activeSpan, counter, flushMetrics, gauge, histogram, startSpan, withSpan } from "${
  new URL("./telemetry.ts", import.meta.url).href
}";
await withSpan("x", {}, () => activeSpan());
startSpan("y")?.end();
counter("c").add(1, { k: "v" });
counter("s").series({}).add(1);
histogram("h").record(1);
gauge("g", {}, () => 1);
flushMetrics();
`;

Deno.test("with traces or metrics off in Deno (OTEL_DENO_TRACING/METRICS=false), the rest works", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/child.ts`, PARTIAL_CHILD);
    for (const off of ["OTEL_DENO_TRACING", "OTEL_DENO_METRICS"]) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--no-check", `${dir}/child.ts`],
        // A closed port: nothing is exported, and nothing waits for it.
        env: {
          OTEL_DENO: "true",
          [off]: "false",
          OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9",
        },
        stderr: "piped",
      }).output();
      assert.equal(out.code, 0, `${off}=false: ${new TextDecoder().decode(out.stderr)}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Spans made by a child process with `OTEL_DENO=true`, through this module. */
const CHILD = `
import { withSpan, startSpan, activeTraceparent, failSpan } from "${
  new URL("./telemetry.ts", import.meta.url).href
}";
const parent = { traceId: "${TRACE}", spanId: "${SPAN}", traceFlags: 1, isRemote: true };
await withSpan("outer", { k: "v" }, async () => {
  await new Promise((r) => setTimeout(r, 5));
  await withSpan("inner", {}, () => {
    console.log(activeTraceparent());
  });
  const failed = startSpan("failed");
  failSpan(failed, new Error("it broke"));
  failed.end();
}, parent);
`;

Deno.test("with telemetry on, spans nest (across awaits) under a remote parent; failures are marked", async () => {
  const receiver = startReceiver();
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/child.ts`, CHILD);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-check", `${dir}/child.ts`],
      env: { OTEL_DENO: "true", OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    for (let i = 0; i < 100 && receiver.spans.length < 3; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const by = (name: string) => receiver.spans.find((s) => s.name === name)!;
    const outer = by("outer");
    assert.equal(outer.traceId, TRACE);
    assert.equal(outer.parentSpanId, SPAN);
    assert.equal(outer.attributes.k, "v");
    assert.equal(by("inner").parentSpanId, outer.spanId);
    assert.equal(by("failed").parentSpanId, outer.spanId);
    assert.equal(by("failed").statusCode, 2);
    const printed = new TextDecoder().decode(out.stdout).trim();
    assert.equal(printed, `00-${TRACE}-${by("inner").spanId}-01`);
  } finally {
    await receiver.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("exitWatchdog ends a process whose exit waits for a stalled collector", async () => {
  const receiver = startReceiver();
  receiver.stalled = true;
  const dir = await Deno.makeTempDir();
  try {
    const module = new URL("./telemetry.ts", import.meta.url).href;
    await Deno.writeTextFile(
      `${dir}/child.ts`,
      `import { exitWatchdog, startSpan } from "${module}";
      startSpan("left for the exit")!.end();
      exitWatchdog(300);
      Deno.exit(0);`,
    );
    const started = performance.now();
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-check", `${dir}/child.ts`],
      env: { OTEL_DENO: "true", OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint },
      stdout: "null",
      stderr: "piped",
    }).output();
    const ms = performance.now() - started;
    assert.equal(out.signal, "SIGKILL", new TextDecoder().decode(out.stderr));
    assert.ok(ms < 5_000, `gone after ${ms.toFixed(0)} ms (10 s per signal without it)`);
  } finally {
    await receiver.close();
    await Deno.remove(dir, { recursive: true });
  }
});
