/**
 * What telemetry costs: the same figures under two private containerds, one with
 * `OTEL_EXPORTER_OTLP_ENDPOINT` (a test OTLP receiver in this process that only counts
 * what it gets, default export intervals; `BENCH_OTEL_ENV`, a JSON object, adds
 * variables) and one without: cold start of the preview1 hello (alternating, median),
 * and wasi:http hello under wrk.
 *
 * @module
 */

import { buildImage } from "../src/oci/image.ts";
import { type Containerd, startContainerd } from "../tests/e2e/harness.ts";
import { installShim } from "../tests/e2e/shim_install.ts";
import { startReceiver } from "../tests/e2e/otlp_receiver.ts";
import { runProxy } from "../tests/e2e/ctr_util.ts";
import { HTTP_FIXTURE, SECONDS, wrk, type WrkResult } from "./http.ts";
import { median, type Row } from "./main.ts";

const RUNTIME = "io.containerd.wasmtime.v1";
const ADDR = "127.0.0.1:18182";

let seq = 0;
async function coldRun(cd: Containerd, image: string): Promise<number> {
  const t0 = performance.now();
  const r = await cd.ctr([
    "run",
    "--rm",
    "--runtime",
    RUNTIME,
    image,
    `otel-b-${++seq}`,
    "/probe.wasm",
    "hello",
  ]);
  if (r.code !== 0) throw new Error(`ctr run failed (${r.code}): ${r.stderr}`);
  return performance.now() - t0;
}

async function serveHttp(cd: Containerd, image: string): Promise<WrkResult> {
  const id = `otel-http-${++seq}`;
  const proxy = await runProxy(cd, { image, id, wasm: "/hello.wasm", addr: ADDR });
  const result = await wrk(`${proxy.url}/`);
  await proxy.stop();
  return result;
}

const text = (r: WrkResult) => `${r.rps.toFixed(0)} req/s, p50 ${r.p50}, p99 ${r.p99}`;

/** Cold start and wasi:http with telemetry on (ours) against off (baseline). */
export async function otelFigures(off: Containerd, tmp: string, runs: number): Promise<Row[]> {
  const receiver = startReceiver(0, false);
  // More variables for the exporting containerd, e.g. a sampler: BENCH_OTEL_ENV='{"OTEL_TRACES_SAMPLER":"traceidratio","OTEL_TRACES_SAMPLER_ARG":"0.01"}'
  const extra = JSON.parse(Deno.env.get("BENCH_OTEL_ENV") ?? "{}") as Record<string, string>;
  const { binDir } = await installShim();
  const on = await startContainerd({
    shimBinDir: binDir,
    logLevel: "info",
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, ...extra },
  });
  try {
    const probe = await buildImage({
      name: "bench-otel",
      outPath: `${tmp}/otel-probe.tar`,
      config: {},
      layers: [{
        files: [
          {
            path: "/probe.wasm",
            hostPath: new URL("../tests/fixtures/built/probe.wasm", import.meta.url).pathname,
          },
          { path: "/hello.wasm", hostPath: HTTP_FIXTURE },
        ],
      }],
    });
    for (const cd of [on, off]) {
      await cd.importImage(probe.path);
      await coldRun(cd, probe.reference);
    }
    const withOtel: number[] = [];
    const without: number[] = [];
    for (let i = 0; i < runs; i++) {
      withOtel.push(await coldRun(on, probe.reference));
      without.push(await coldRun(off, probe.reference));
    }
    const httpOn = await serveHttp(on, probe.reference);
    const httpOff = await serveHttp(off, probe.reference);
    const o = median(withOtel), b = median(without);
    return [{
      figure:
        `telemetry on vs off: cold start, preview1 hello, shared server up (median of ${runs})`,
      ours: `${o.toFixed(0)} ms (on)`,
      baseline: `${b.toFixed(0)} ms (off)`,
      ratio: (o / b).toFixed(2),
      target: "report",
    }, {
      figure: `telemetry on vs off: wasi:http hello, wrk -t2 -c50 ${SECONDS}s (${
        receiver.requests.get("/v1/traces") ?? 0
      } trace exports received)${
        Object.keys(extra).length ? ` with ${JSON.stringify(extra)}` : ""
      }`,
      ours: `${text(httpOn)} (on)`,
      baseline: `${text(httpOff)} (off)`,
      ratio: (httpOn.rps / httpOff.rps).toFixed(2),
      target: "report",
    }];
  } finally {
    await on.stop();
    await receiver.close();
  }
}
