/**
 * `deno task bench`: the benchmark suite. Runs against a private containerd on this
 * machine, measures our shim and its baselines in the same run (shared machines
 * are noisy: compare ratios, not absolute figures), prints one table and writes it
 * to bench/RESULTS.md with the machine's description.
 *
 * Not a test: nothing here asserts a timing.
 *
 * Options (env): BENCH_RUNS (cold-start repetitions, default 10), BENCH_TASKS
 * (lifecycle containers, default 200), BENCH_IDLE (idle containers for memory,
 * default 50), BENCH_HTTP_SECONDS (wrk duration, default 10), BENCH_HTTP_WARMUP (an
 * unrecorded wrk run before each measured one, default 2 s), BENCH_ONLY (comma
 * list of figure keys: cold,solo,warm,lifecycle,artifact,http,memory,guests,otel,
 * per_request),
 * BENCH_GUESTS (a directory: each `*.wasm` wasi:http proxy in it is measured with the
 * guests, see bench/guests.ts), BENCH_GUEST_KEYS (only those guests),
 * BENCH_CURVE_ROUNDS and BENCH_CURVE_SECONDS (the memory-size curve, bench/curve.ts).
 *
 * @module
 */

import { buildImage } from "../src/oci/image.ts";
import { type Containerd, startContainerd } from "../tests/e2e/harness.ts";
import { fixture, installShim } from "../tests/e2e/shim_install.ts";
import { artifactFigures } from "./artifact.ts";
import { guestFigures } from "./guests.ts";
import { httpFigures } from "./http.ts";
import { idleMemory } from "./memory.ts";
import { otelFigures } from "./otel.ts";
import { perRequestFigures } from "./per_request.ts";

const WASM_RUNTIME = "io.containerd.wasmtime.v1";
const RUNC_RUNTIME = "io.containerd.runc.v2";
const RUNS = Number(Deno.env.get("BENCH_RUNS") ?? 10);
const TASKS = Number(Deno.env.get("BENCH_TASKS") ?? 200);
const ONLY = (Deno.env.get("BENCH_ONLY") ??
  "cold,solo,warm,lifecycle,artifact,http,memory,guests,otel,per_request")
  .split(",");

/** One row of the results table. */
export interface Row {
  figure: string;
  ours: string;
  baseline: string;
  ratio: string;
  target: string;
}

/** Median of numbers. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Images every figure uses. */
export interface BenchImages {
  wasm: string;
  native: string;
  component?: string;
}

async function images(cd: Containerd, tmp: string): Promise<BenchImages> {
  const wasm = await buildImage({
    name: "bench-wasm",
    outPath: `${tmp}/wasm.tar`,
    config: { entrypoint: ["/probe.wasm"] },
    layers: [{ files: [{ path: "/probe.wasm", hostPath: fixture("probe.wasm") }] }],
  });
  const native = await buildImage({
    name: "bench-native",
    outPath: `${tmp}/native.tar`,
    config: { os: "linux", architecture: "amd64", entrypoint: ["/native_hello"] },
    layers: [{
      files: [
        { path: "/native_hello", hostPath: fixture("native_hello"), mode: 0o755 },
        { path: "/native_sleep", hostPath: fixture("native_sleep"), mode: 0o755 },
      ],
    }],
  });
  await cd.importImage(wasm.path);
  await cd.importImage(native.path);
  const result: BenchImages = { wasm: wasm.reference, native: native.reference };
  const componentPath = new URL("../src/wasm/component/testdata/command.wasm", import.meta.url)
    .pathname;
  if (await Deno.stat(componentPath).then(() => true, () => false)) {
    // A custom section makes the digest new for this run, so its first start transpiles.
    const bytes = await Deno.readFile(componentPath);
    const tag = new TextEncoder().encode(`bench-${Date.now()}`);
    const unique = new Uint8Array(bytes.length + 3 + tag.length);
    unique.set(bytes);
    unique.set([0x00, tag.length + 1, tag.length, ...tag], bytes.length);
    await Deno.writeFile(`${tmp}/component.wasm`, unique);
    const component = await buildImage({
      name: "bench-component",
      outPath: `${tmp}/component.tar`,
      config: { entrypoint: ["/hello.wasm"] },
      layers: [{ files: [{ path: "/hello.wasm", hostPath: `${tmp}/component.wasm` }] }],
    });
    await cd.importImage(component.path);
    result.component = component.reference;
  }
  return result;
}

let seq = 0;
async function timedRun(cd: Containerd, runtime: string, image: string, args: string[]) {
  const id = `bench-${++seq}`;
  const t0 = performance.now();
  const r = await cd.ctr(["run", "--rm", "--runtime", runtime, image, id, ...args]);
  const ms = performance.now() - t0;
  if (r.code !== 0) throw new Error(`ctr run ${image} failed (${r.code}): ${r.stderr}`);
  return ms;
}

/**
 * Median wall times of `ctr run --rm` of the preview1 hello and of runc's native
 * hello, alternating, after one untimed run each (page cache, snapshots).
 */
async function pairedRuns(cd: Containerd, img: BenchImages): Promise<{ o: number; b: number }> {
  await timedRun(cd, WASM_RUNTIME, img.wasm, ["/probe.wasm", "hello"]);
  await timedRun(cd, RUNC_RUNTIME, img.native, ["/native_hello"]);
  const ours: number[] = [];
  const base: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    ours.push(await timedRun(cd, WASM_RUNTIME, img.wasm, ["/probe.wasm", "hello"]));
    base.push(await timedRun(cd, RUNC_RUNTIME, img.native, ["/native_hello"]));
  }
  return { o: median(ours), b: median(base) };
}

async function coldStart(cd: Containerd, img: BenchImages): Promise<Row> {
  const { o, b } = await pairedRuns(cd, img);
  return {
    figure: `cold start: ctr run --rm, preview1 hello, shared server up (median of ${RUNS})`,
    ours: `${o.toFixed(0)} ms`,
    baseline: `${b.toFixed(0)} ms (runc, native static hello)`,
    ratio: (o / b).toFixed(2),
    target: "≤ 1.0",
  };
}

/**
 * Cold start when no server is up: a second private containerd whose shims run one
 * server per container (`WASMTIME_SHIM_GROUPING=container`), so every run starts a
 * server — what the first container on a node, or one after the idle exit, pays.
 */
async function soloStart(img: BenchImages, tmp: string): Promise<Row> {
  const { binDir } = await installShim();
  const cd = await startContainerd({
    shimBinDir: binDir,
    logLevel: "info",
    env: { WASMTIME_SHIM_GROUPING: "container" },
  });
  try {
    await cd.importImage(`${tmp}/wasm.tar`);
    await cd.importImage(`${tmp}/native.tar`);
    const { o, b } = await pairedRuns(cd, img);
    return {
      figure:
        `cold start, no live server (a server per container), preview1 hello (median of ${RUNS})`,
      ours: `${o.toFixed(0)} ms`,
      baseline: `${b.toFixed(0)} ms (runc, native static hello)`,
      ratio: (o / b).toFixed(2),
      target: "report",
    };
  } finally {
    await cd.stop();
  }
}

async function warmStart(cd: Containerd, img: BenchImages): Promise<Row[]> {
  if (img.component === undefined) {
    return [{
      figure: "warm start: component image, second run",
      ours: "not measured: no command component fixture (src/wasm/component/testdata/command.wasm)",
      baseline: "",
      ratio: "",
      target: "≤ 1.2",
    }];
  }
  // The first run of a digest never seen before transpiles the component.
  const first = await timedRun(cd, WASM_RUNTIME, img.component, ["/hello.wasm"]);
  const ours: number[] = [];
  const base: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    ours.push(await timedRun(cd, WASM_RUNTIME, img.component, ["/hello.wasm"]));
    base.push(await timedRun(cd, RUNC_RUNTIME, img.native, ["/native_hello"]));
  }
  const o = median(ours), b = median(base);
  return [{
    figure: "component hello, first run of a new digest (transpile, then run)",
    ours: `${first.toFixed(0)} ms`,
    baseline: `${b.toFixed(0)} ms (runc)`,
    ratio: (first / b).toFixed(2),
    target: "report",
  }, {
    figure: `warm start: component hello, cached (median of ${RUNS})`,
    ours: `${o.toFixed(0)} ms`,
    baseline: `${b.toFixed(0)} ms (runc)`,
    ratio: (o / b).toFixed(2),
    target: "≤ 1.2",
  }];
}

async function throughput(
  cd: Containerd,
  runtime: string,
  image: string,
  args: string[],
): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < TASKS) {
      next++;
      await timedRun(cd, runtime, image, args);
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  return TASKS / ((performance.now() - t0) / 1000);
}

async function lifecycle(cd: Containerd, img: BenchImages): Promise<Row> {
  const ours = await throughput(cd, WASM_RUNTIME, img.wasm, ["/probe.wasm", "hello"]);
  const base = await throughput(cd, RUNC_RUNTIME, img.native, ["/native_hello"]);
  return {
    figure: `lifecycle: ${TASKS} containers, 4 in parallel (ctr run --rm)`,
    ours: `${ours.toFixed(1)} tasks/s`,
    baseline: `${base.toFixed(1)} tasks/s (runc)`,
    ratio: (ours / base).toFixed(2),
    target: "≥ 1.0",
  };
}

async function machine(): Promise<string> {
  const text = async (cmd: string, args: string[]) => {
    try {
      const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
      return new TextDecoder().decode(out.stdout).trim().split("\n")[0];
    } catch {
      return "?";
    }
  };
  const mem = (await Deno.readTextFile("/proc/meminfo")).match(/MemTotal:\s+(\d+)/)?.[1];
  return [
    `cores: ${navigator.hardwareConcurrency}`,
    `memory: ${mem ? (Number(mem) / 1024 / 1024).toFixed(1) : "?"} GiB`,
    `kernel: ${await text("uname", ["-r"])}`,
    `deno: ${Deno.version.deno}`,
    `containerd: ${await text("containerd", ["--version"])}`,
    `runc: ${await text("runc", ["--version"])}`,
  ].join(", ");
}

function table(rows: Row[]): string {
  const head = "| figure | ours | baseline (same run) | ratio | target |\n|---|---|---|---|---|\n";
  return head +
    rows.map((r) => `| ${r.figure} | ${r.ours} | ${r.baseline} | ${r.ratio} | ${r.target} |`).join(
      "\n",
    ) + "\n";
}

if (import.meta.main) {
  const { binDir } = await installShim();
  const cd = await startContainerd({ shimBinDir: binDir, logLevel: "info" });
  const tmp = await Deno.makeTempDir({ prefix: "shim-bench-" });
  const rows: Row[] = [];
  try {
    const img = await images(cd, tmp);
    const figures: [string, () => Promise<Row | Row[]>][] = [
      ["cold", () => coldStart(cd, img)],
      ["solo", () => soloStart(img, tmp)],
      ["warm", () => warmStart(cd, img)],
      ["lifecycle", () => lifecycle(cd, img)],
      ["artifact", () => artifactFigures(cd, img, tmp)],
      ["memory", () => idleMemory(cd, img)],
      ["http", () => httpFigures(cd, tmp)],
      ["guests", () => guestFigures(cd, tmp)],
      ["otel", () => otelFigures(cd, tmp, RUNS)],
      ["per_request", () => perRequestFigures(tmp)],
    ];
    for (const [key, fn] of figures) {
      if (!ONLY.includes(key)) continue;
      console.error(`bench: ${key}…`);
      try {
        const got = await fn();
        rows.push(...(Array.isArray(got) ? got : [got]));
      } catch (err) {
        rows.push({
          figure: key,
          ours: `failed: ${(err as Error).message.split("\n")[0]}`,
          baseline: "",
          ratio: "",
          target: "",
        });
      }
      console.error(table(rows));
    }
  } finally {
    await cd.stop();
    await Deno.remove(tmp, { recursive: true });
  }
  const md = `# Benchmark results\n\n${
    new Date().toISOString()
  }\n\nMachine: ${await machine()}\n\n${table(rows)}`;
  await Deno.writeTextFile(new URL("./RESULTS.md", import.meta.url), md);
  console.log(md);
}
