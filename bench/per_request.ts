/**
 * Per-request cost of serving wasi:http, in process: a guest served exactly as a runner
 * serves it (`bench/per_request_server.ts`: `prepare`, worker threads, the runners'
 * Deno and V8 flags and malloc settings from `src/runner/spawn.ts`), without containerd, under the same wrk
 * as the guest figures (`wrk -t2 -c50` after a warm-up). For each guest, over the
 * measured run:
 *
 * - CPU per request of each serving thread (`/proc/<pid>/task/<tid>/stat`, the two
 *   busiest threads: the workers) and of the whole process;
 * - system calls per request, per serving thread and in all (`perf stat` on the
 *   `raw_syscalls:sys_enter` tracepoint when perf may trace the process; else the read
 *   and write calls of `/proc/<pid>/task/<tid>/io`);
 * - involuntary context switches per second of the serving threads (a thread taken off
 *   its core while it had work);
 * - V8 heap bytes allocated per request and the collections (count, longest pause) of
 *   each worker isolate, from `--trace-gc` (allocation between two collections: heap
 *   use before one minus after the previous; 0.1 MB resolution each).
 *
 * Beside them, the ceiling of the same layout: plain `Deno.serve`s answering the hello's
 * text on as many threads as the runner serves with (`per_request_server.ts ceiling`),
 * measured the same way: what Deno's HTTP and the scheduler cost without any wasm.
 *
 * Guests: `wat` (the WAT hello, src/wasm/component/testdata/http_hello.wasm), `c`
 * (C behind the preview1 adapter, the shape of cargo-component output,
 * tests/fixtures/guests/built/http_c.wasm), and each `*.wasm` in `BENCH_GUESTS`;
 * `BENCH_GUEST_KEYS` picks some; `BENCH_GUEST_ENV` (`K=V` lines) is the guests'
 * container environment (e.g. `WASMTIME_HTTP_PROXY_WORKERS=1`: one serving thread, and
 * a one-thread ceiling). `deno task bench` runs it as `BENCH_ONLY=per_request`;
 * by hand, `deno run -A bench/per_request.ts [component.wasm …]` prints the same rows
 * for those files. The server gets the runners' V8 options (`src/runner/spawn.ts`; the
 * shim's `WASMTIME_SHIM_RUNNER_V8_FLAGS` replaces them there and here), and
 * `BENCH_PER_REQUEST_V8` adds some (e.g. `--prof`, then `node --prof-process` on the
 * isolate logs in the working directory).
 *
 * @module
 */

import { RUNNER_MALLOC_ENV, RUNNER_V8_FLAGS_ENV, runnerV8Flags } from "../src/runner/spawn.ts";
import { MAX_DEFAULT_WORKERS } from "../src/wasm/component/http_server.ts";
import { isProxy } from "./guests.ts";
import { SECONDS, WARMUP_SECONDS, wrk, type WrkResult } from "./http.ts";
import { CEILING, LISTENING } from "./per_request_server.ts";
import type { Row } from "./main.ts";

const here = (path: string) => new URL(path, import.meta.url).pathname;
const SERVER = here("./per_request_server.ts");
const KEYS = Deno.env.get("BENCH_GUEST_KEYS")?.split(",");
/** Clock ticks per second of /proc's CPU times (`getconf CLK_TCK` on Linux). */
const CLK_TCK = 100;
/**
 * Serving threads: the workers a runner starts on this machine (see `http_server.ts`:
 * the cores, at most 4), or as many as `BENCH_GUEST_ENV` sets (the container's
 * environment, see `per_request_server.ts`); the ceiling gets as many.
 */
const SERVING_THREADS = Math.max(
  1,
  Number(
    /^WASMTIME_HTTP_PROXY_WORKERS=(\d+)$/m.exec(Deno.env.get("BENCH_GUEST_ENV") ?? "")?.[1] ??
      Math.min(navigator.hardwareConcurrency || 1, MAX_DEFAULT_WORKERS),
  ),
);
const START_TIMEOUT_MS = 60_000;

/** One thread's counters. */
interface ThreadSample {
  comm: string;
  /** utime + stime, in clock ticks. */
  ticks: number;
  /** read + write system calls (`/proc/.../io`). */
  rw: number;
  nonvoluntary: number;
  /** ns waiting on a run queue (runnable, not running), and times it was given a core. */
  runDelayNs: number;
  slices: number;
}

/** What one isolate's `--trace-gc` lines said over the measured run. */
export interface GcTally {
  allocatedMb: number;
  scavenges: number;
  scavengeMaxMs: number;
  scavengeTotalMs: number;
  full: number;
  fullMaxMs: number;
  fullTotalMs: number;
  /** Incremental marking steps of the full collections (each a pause of its own). */
  markingTotalMs: number;
  markingMaxStepMs: number;
  /** Heap use after the last collection, MB. */
  lastAfter?: number;
}

/** A `--trace-gc` line: isolate, kind, heap use before and after, pause. */
const GC_LINE =
  /^\[\d+:(0x[0-9a-f]+)\]\s+\d+ ms: (?:Incremental )?(Scavenge|Mark-Compact|Minor Mark-Sweep|Mark-Sweep)[^\d]*([\d.]+) \([\d.]+\) -> ([\d.]+) \([\d.]+\) MB, (?:pooled: [\d.]+ MB, )?([\d.]+) \/ [\d.]+ ms(?: \(\+ ([\d.]+) ms in \d+ steps since start of marking, biggest step ([\d.]+) ms)?/;

/** Per-isolate GC tallies, counting only while `measuring` is set. */
export class GcLog {
  measuring = false;
  readonly isolates = new Map<string, GcTally>();

  line(text: string): void {
    const m = GC_LINE.exec(text);
    if (!m) return;
    const [, isolate, kind, before, after, pause, marking, biggestStep] = m;
    let t = this.isolates.get(isolate);
    if (t === undefined) {
      this.isolates.set(
        isolate,
        t = {
          allocatedMb: 0,
          scavenges: 0,
          scavengeMaxMs: 0,
          scavengeTotalMs: 0,
          full: 0,
          fullMaxMs: 0,
          fullTotalMs: 0,
          markingTotalMs: 0,
          markingMaxStepMs: 0,
        },
      );
    }
    const ms = Number(pause);
    if (this.measuring) {
      if (t.lastAfter !== undefined) t.allocatedMb += Math.max(0, Number(before) - t.lastAfter);
      if (kind === "Scavenge" || kind === "Minor Mark-Sweep") {
        t.scavenges++;
        t.scavengeTotalMs += ms;
        t.scavengeMaxMs = Math.max(t.scavengeMaxMs, ms);
      } else {
        t.full++;
        t.fullTotalMs += ms;
        t.fullMaxMs = Math.max(t.fullMaxMs, ms);
        t.markingTotalMs += Number(marking ?? 0);
        t.markingMaxStepMs = Math.max(t.markingMaxStepMs, Number(biggestStep ?? 0));
      }
    }
    t.lastAfter = Number(after);
  }
}

async function sampleThreads(pid: number): Promise<Map<number, ThreadSample>> {
  const out = new Map<number, ThreadSample>();
  for await (const e of Deno.readDir(`/proc/${pid}/task`)) {
    const dir = `/proc/${pid}/task/${e.name}`;
    try {
      const stat = await Deno.readTextFile(`${dir}/stat`);
      const close = stat.lastIndexOf(")");
      const fields = stat.slice(close + 2).split(" ");
      // Fields after the command: state is field 3, utime 14 and stime 15 (1-based).
      const ticks = Number(fields[11]) + Number(fields[12]);
      const io = await Deno.readTextFile(`${dir}/io`).catch(() => "");
      const rw = Number(/syscr: (\d+)/.exec(io)?.[1] ?? 0) +
        Number(/syscw: (\d+)/.exec(io)?.[1] ?? 0);
      const status = await Deno.readTextFile(`${dir}/status`);
      const [, runDelayNs, slices] = (await Deno.readTextFile(`${dir}/schedstat`).catch(() =>
        "0 0 0"
      )).trim().split(" ").map(Number);
      out.set(Number(e.name), {
        comm: stat.slice(stat.indexOf("(") + 1, close),
        ticks,
        rw,
        nonvoluntary: Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1] ?? 0),
        runDelayNs,
        slices,
      });
    } catch {
      // the thread ended
    }
  }
  return out;
}

/**
 * Counts the system calls of each thread of `pid` for `seconds` with perf, or resolves
 * null if perf is missing or may not trace it.
 */
function perfSyscalls(pid: number, seconds: number): Promise<Map<number, number> | null> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("perf", {
      args: [
        "stat",
        "-x",
        ",",
        "--per-thread",
        "-e",
        "raw_syscalls:sys_enter",
        "-p",
        String(pid),
        "--",
        "sleep",
        String(seconds),
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
  } catch {
    return Promise.resolve(null);
  }
  return child.output().then((out) => {
    const counts = new Map<number, number>();
    // `<comm>-<tid>,<count>,,raw_syscalls:sys_enter,…`
    for (const line of new TextDecoder().decode(out.stderr).split("\n")) {
      const m = /^.*-(\d+),(\d+),/.exec(line);
      if (m) counts.set(Number(m[1]), Number(m[2]));
    }
    return counts.size > 0 ? counts : null;
  }, () => null);
}

/** The figures of one guest. */
export interface PerRequest {
  load: WrkResult;
  /**
   * CPU µs per request (of all requests) of each serving thread, busiest first, and of
   * the process; each thread's share of a core.
   */
  threadUs: number[];
  busy: number[];
  processUs: number;
  /** System calls per request of each serving thread, and of the process. */
  threadSyscalls: number[];
  processSyscalls: number;
  /** Where the system calls were counted. */
  syscallSource: "perf" | "/proc io (reads and writes only)";
  /** Involuntary context switches per second of each serving thread. */
  preemptedPerSecond: number[];
  /**
   * Each serving thread's share of the run spent runnable but waiting for a core, and
   * its mean wait each time it got one, µs (`/proc/<pid>/task/<tid>/schedstat`).
   */
  waiting: number[];
  waitUs: number[];
  /** The worker isolates' GC, busiest first. */
  gc: GcTally[];
}

/**
 * Serves `wasm` as a runner does and measures it under wrk; `ceiling` instead of a
 * path measures the plain `Deno.serve` ceiling on as many threads.
 */
export async function measurePerRequest(wasm: string, cacheDir: string): Promise<PerRequest> {
  const extra = Deno.env.get("BENCH_PER_REQUEST_V8");
  // The runners' options, as the shim gives them (its environment variable replaces them).
  const runner = runnerV8Flags(Deno.env.get(RUNNER_V8_FLAGS_ENV))
    .map((f) => f.replace(/^--v8-flags=/, ""));
  const v8 = [...runner, "--trace-gc", ...(extra ? [extra] : [])].filter((f) => f !== "")
    .join(",");
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-net",
      `--v8-flags=${v8}`,
      SERVER,
      ...(wasm === CEILING ? [CEILING, String(SERVING_THREADS)] : [wasm, cacheDir]),
    ],
    env: RUNNER_MALLOC_ENV,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const gc = new GcLog();
  const port = Promise.withResolvers<number>();
  const stderr: string[] = [];
  const lines = async (stream: ReadableStream<Uint8Array>, each: (line: string) => void) => {
    let rest = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      parts.forEach(each);
    }
  };
  const reading = Promise.all([
    lines(child.stdout, (line) => {
      // V8's threads print GC lines on the same stdout, possibly into the middle of a line.
      const listening = new RegExp(`${LISTENING} (\\d+)`).exec(line);
      if (listening) port.resolve(Number(listening[1]));
      else gc.line(line);
    }),
    lines(child.stderr, (line) => stderr.push(line)),
  ]);
  const timer = setTimeout(
    () => port.reject(new Error(`the server did not listen within ${START_TIMEOUT_MS} ms`)),
    START_TIMEOUT_MS,
  );
  child.status.then((s) => port.reject(new Error(`the server exited (${s.code})`)));
  try {
    const url = `http://127.0.0.1:${await port.promise}/`;
    clearTimeout(timer);
    let before = new Map<number, ThreadSample>();
    let perf: Promise<Map<number, number> | null> = Promise.resolve(null);
    const load = await wrk(url, 50, SECONDS, WARMUP_SECONDS, async () => {
      before = await sampleThreads(child.pid);
      perf = perfSyscalls(child.pid, SECONDS);
      gc.measuring = true;
    });
    gc.measuring = false;
    const after = await sampleThreads(child.pid);
    const syscalls = await perf;
    const n = Math.max(1, load.requests);
    const deltas = [...after].map(([tid, a]) => {
      const b = before.get(tid);
      return {
        tid,
        ticks: a.ticks - (b?.ticks ?? 0),
        rw: a.rw - (b?.rw ?? 0),
        nonvoluntary: a.nonvoluntary - (b?.nonvoluntary ?? 0),
        runDelayNs: a.runDelayNs - (b?.runDelayNs ?? 0),
        slices: a.slices - (b?.slices ?? 0),
        syscalls: syscalls?.get(tid),
      };
    }).sort((x, y) => y.ticks - x.ticks);
    const serving = deltas.slice(0, SERVING_THREADS);
    const us = (ticks: number) => ticks * 1e6 / CLK_TCK / n;
    const calls = (d: (typeof deltas)[number]) => syscalls ? d.syscalls ?? 0 : d.rw;
    return {
      load,
      threadUs: serving.map((d) => us(d.ticks)),
      busy: serving.map((d) => d.ticks / CLK_TCK / SECONDS),
      processUs: us(deltas.reduce((a, d) => a + d.ticks, 0)),
      threadSyscalls: serving.map((d) => calls(d) / n),
      processSyscalls: deltas.reduce((a, d) => a + calls(d), 0) / n,
      syscallSource: syscalls ? "perf" : "/proc io (reads and writes only)",
      preemptedPerSecond: serving.map((d) => d.nonvoluntary / SECONDS),
      waiting: serving.map((d) => d.runDelayNs / 1e9 / SECONDS),
      waitUs: serving.map((d) => d.slices ? d.runDelayNs / 1e3 / d.slices : 0),
      gc: [...gc.isolates.values()].sort((a, b) => b.allocatedMb - a.allocatedMb)
        .slice(0, SERVING_THREADS),
    };
  } catch (err) {
    throw new Error(`${(err as Error).message}: ${stderr.slice(-3).join(" / ")}`);
  } finally {
    clearTimeout(timer);
    try {
      child.kill("SIGINT");
    } catch { /* gone */ }
    await child.status;
    await reading;
  }
}

const f1 = (x: number) => x.toFixed(1);

/** One row of the results table for `what`. */
export function perRequestRow(what: string, r: PerRequest): Row {
  const { load } = r;
  const gcText = r.gc.map((g) => {
    const perReq = g.allocatedMb * 1024 * 1024 / Math.max(1, load.requests / r.gc.length);
    const mean = (total: number, count: number) => f1(count ? total / count : 0);
    return `${(perReq / 1024).toFixed(1)} KB/req, ${g.scavenges} scavenges (mean ${
      mean(g.scavengeTotalMs, g.scavenges)
    }, max ${f1(g.scavengeMaxMs)} ms), ${g.full} full (mean ${mean(g.fullTotalMs, g.full)}, max ${
      f1(g.fullMaxMs)
    } ms; marking steps ${mean(g.markingTotalMs, g.full)} ms each, biggest step ${
      f1(g.markingMaxStepMs)
    } ms)`;
  }).join("; ");
  return {
    figure:
      `per request, in process (runner's flags, ${SERVING_THREADS} workers), wrk -t2 -c50 ${SECONDS}s` +
      (WARMUP_SECONDS > 0 ? ` after ${WARMUP_SECONDS}s` : "") + `: ${what}`,
    ours:
      `${load.rps.toFixed(0)} req/s, p50 ${load.p50}, p99 ${load.p99}, errors ${load.errors}; ` +
      `CPU µs/req: serving threads ${r.threadUs.map(f1).join(" + ")} (busy ${
        r.busy.map((b) => `${(b * 100).toFixed(0)}%`).join(", ")
      }), process ${f1(r.processUs)}; syscalls/req: serving ${
        r.threadSyscalls.map(f1).join(" + ")
      }, process ${f1(r.processSyscalls)} (${r.syscallSource}); preempted/s: ${
        r.preemptedPerSecond.map(f1).join(", ")
      }; ` +
      `waiting for a core: ${
        r.waiting.map((w, i) => `${(w * 100).toFixed(0)}% (${f1(r.waitUs[i])} µs a wait)`)
          .join(", ")
      }`,
    baseline: gcText ? `V8 per worker isolate: ${gcText}` : "no GC in the measured run",
    ratio: "",
    target: "report",
  };
}

/** The guests measured by `deno task bench` (see the module documentation). */
async function guestList(): Promise<[string, string][]> {
  const list: [string, string][] = [
    [`plain Deno.serve on ${SERVING_THREADS} threads (ceiling)`, CEILING],
    ["wat", here("../src/wasm/component/testdata/http_hello.wasm")],
    ["c", here("../tests/fixtures/guests/built/http_c.wasm")],
  ];
  const dir = Deno.env.get("BENCH_GUESTS");
  if (dir) {
    for await (const e of Deno.readDir(dir)) {
      const path = `${dir}/${e.name}`;
      // As the guest figures do: only wasi:http proxies (their rows say what was skipped).
      if (e.isFile && e.name.endsWith(".wasm") && isProxy(await Deno.readFile(path)) === true) {
        list.push([e.name, path]);
      }
    }
  }
  return list.filter(([key, path]) => path === CEILING || !KEYS || KEYS.includes(key));
}

/** The rows of `deno task bench`'s `per_request` figure. */
export async function perRequestFigures(tmp: string): Promise<Row[]> {
  const rows: Row[] = [];
  const cacheDir = await Deno.makeTempDir({ dir: tmp, prefix: "per-request-cache-" });
  for (const [key, path] of await guestList()) {
    try {
      rows.push(perRequestRow(key, await measurePerRequest(path, cacheDir)));
    } catch (err) {
      rows.push({
        figure: `per request, in process: ${key}`,
        ours: `failed: ${(err as Error).message.split("\n")[0]}`,
        baseline: "",
        ratio: "",
        target: "report",
      });
    }
  }
  return rows;
}

if (import.meta.main) {
  const tmp = await Deno.makeTempDir({ prefix: "bench-per-request-" });
  try {
    const paths = Deno.args.length > 0
      ? Deno.args.map((p) => [p === CEILING ? p : p.split("/").at(-1)!, p] as [string, string])
      : await guestList();
    for (const [key, path] of paths) {
      const r = await measurePerRequest(path, tmp);
      const row = perRequestRow(key, r);
      console.log(`${row.figure}\n  ${row.ours}\n  ${row.baseline}`);
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}
