/**
 * wasi:http figures for guests built by real toolchains, not only the hand-written WAT
 * hello: for each, the first answer after `ctr run` (a digest never seen, then the same
 * image cached), req/s, p50, p99 and errors under wrk, the runner's peak RSS, and the
 * same again under `ctr run --memory-limit 268435456` (with whether it was OOM-killed),
 * beside the plain Deno.serve ceiling measured in the same run.
 *
 * Guests:
 * - `js`: the componentize-js (StarlingMonkey) proxy the tests use
 *   (src/wasm/component/testdata/http_app.wasm);
 * - `c`: C on wasi-libc behind jco's preview1 adapter, the shape of cargo-component output
 *   (tests/fixtures/guests/built/http_c.wasm);
 * - `grow`: grows its memory by 32 MiB and writes it on every request, as the .NET
 *   runtime does (tests/fixtures/guests/built/grow.wasm); its baseline is the machine's
 *   bound for that work (bench/memset_bound.ts), measured right before each run;
 * - `mem1`, `mem8`, `mem64`: the hello with a 1, 8 and 64 MiB initial memory and data
 *   segments over an eighth of it, built here into the temp dir (too big to commit), and
 *   a line with the per-request time across them (bench/curve.ts);
 * - every `*.wasm` wasi:http proxy in `BENCH_GUESTS=<dir>`.
 *
 * `BENCH_GUEST_KEYS=js,grow,…` measures only those (keys as in the table; a
 * `BENCH_GUESTS` guest's key is its file name).
 *
 * @module
 */

import { buildImage } from "../src/oci/image.ts";
import { inspectComponent, isWasi02 } from "../src/wasm/component/inspect.ts";
import type { Containerd } from "../tests/e2e/harness.ts";
import { sleep } from "../tests/e2e/ctr_util.ts";
import { unique } from "./artifact.ts";
import { curveFigure, type CurvePoint } from "./curve.ts";
import { memsetBound } from "./memset_bound.ts";
import { MAX_DEFAULT_WORKERS } from "../src/wasm/component/http_server.ts";
import { ceiling, rssOf, SECONDS, WARMUP_SECONDS, wrk, type WrkResult } from "./http.ts";
import type { Row } from "./main.ts";

const RUNTIME = "io.containerd.wasmtime.v1";
const ADDR = "127.0.0.1:18183";
/** The pod memory limit the issue's targets name: 256 MiB. */
const MEMORY_LIMIT = 268435456;
/** How long a first answer may take: the componentize-js guest's first run transpiles. */
const FIRST_ANSWER_TIMEOUT_MS = 300_000;
const MEM_CURVE_MIB = [1, 8, 64];
/** Threads of the memset bound: as many as a runner serves on by default. */
const BOUND_THREADS = Math.max(1, Math.min(navigator.hardwareConcurrency, MAX_DEFAULT_WORKERS));
const KEYS = Deno.env.get("BENCH_GUEST_KEYS")?.split(",");

const here = (path: string) => new URL(path, import.meta.url).pathname;

/** One guest to measure. */
interface Guest {
  key: string;
  path: string;
  what: string;
  target: string;
  /**
   * Bytes the guest writes per request into memory it grew: its baseline is then the
   * machine's bound for that (`memset_bound.ts`), measured right before each run.
   */
  writesBytes?: number;
}

/** What one `ctr run` of a guest gave. */
interface Served {
  /** ms from `ctr run` to the first HTTP answer, or undefined if none came. */
  firstMs?: number;
  load?: WrkResult;
  /** Peak RSS (kB) of the guest's runner, sampled through the load. */
  rssKb: number;
  /** wrk could not run to its end (e.g. nothing listened any more). */
  loadError?: string;
  /** The container ended by itself (before we stopped it), with this ctr exit code. */
  endedEarly?: number;
  /** The last lines about this container: its stderr, else containerd's log. */
  why: string;
}

/**
 * True if `bytes` is a component exporting wasi:http/incoming-handler@0.2.x, else what
 * it is instead.
 */
export function isProxy(bytes: Uint8Array): boolean | string {
  try {
    const shape = inspectComponent(bytes);
    return shape.exports.some((e) => isWasi02(e.name, "wasi:http/incoming-handler")) ||
      `exports ${shape.exports.map((e) => e.name).join(", ") || "nothing"}`;
  } catch (err) {
    return (err as Error).message;
  }
}

let seq = 0;

/**
 * Runs `image` with `ctr run --net-host`, times its first answer, then (if `load`) puts
 * wrk on it while sampling the runner's RSS, and stops it.
 */
async function serve(
  cd: Containerd,
  image: string,
  opts: { load: boolean; memoryLimit?: number },
): Promise<Served> {
  const id = `bench-guest-${++seq}`;
  const limit = opts.memoryLimit === undefined ? [] : ["--memory-limit", String(opts.memoryLimit)];
  const t0 = performance.now();
  const running = cd.ctr([
    "run",
    "--rm",
    "--net-host",
    "--runtime",
    RUNTIME,
    ...limit,
    "--env",
    `WASMTIME_HTTP_PROXY_SOCKET_ADDR=${ADDR}`,
    image,
    id,
    "/guest.wasm",
  ], { timeoutMs: FIRST_ANSWER_TIMEOUT_MS + 600_000 });
  let ended: { code: number; stderr: string } | undefined;
  running.then((r) => ended = r);
  const url = `http://${ADDR}/`;
  const out: Served = { rssKb: 0, why: "" };
  // Any HTTP answer counts: a guest that answers 500 has still started; wrk counts those.
  while (!ended && performance.now() - t0 < FIRST_ANSWER_TIMEOUT_MS) {
    try {
      await (await fetch(url)).arrayBuffer();
      out.firstMs = performance.now() - t0;
      break;
    } catch {
      await sleep(5);
    }
  }
  if (out.firstMs !== undefined && opts.load && !ended) {
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        out.rssKb = Math.max(out.rssKb, await rssOf(`guest ${id}`));
        await sleep(500);
      }
    })();
    try {
      out.load = await wrk(url);
    } catch (err) {
      out.loadError = (err as Error).message.replace(/^wrk failed: /, "").trim().split("\n")[0];
    } finally {
      sampling = false;
      await sampler;
    }
    out.rssKb = Math.max(out.rssKb, await rssOf(`guest ${id}`));
  }
  if (ended) {
    out.endedEarly = ended.code;
  } else {
    await cd.ctr(["task", "kill", "-s", "SIGINT", id]);
    const stopped = await Promise.race([running, sleep(15_000).then(() => undefined)]);
    if (!stopped) await cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
  }
  const stderr = (await running).stderr.trim();
  if (out.endedEarly !== undefined || out.loadError || out.firstMs === undefined) {
    // The runner's own last words are in the shim's log, which containerd keeps.
    const log = (await cd.logs()).split("\n").filter((l) =>
      l.includes(id) && /error|fail|exit|kill/i.test(l)
    );
    out.why = stderr.split("\n").at(-1) || log.at(-1)?.slice(0, 300) || "";
  }
  return out;
}

const ms = (x?: number) => x === undefined ? "no answer" : `${x.toFixed(0)} ms`;
const mb = (kb: number) => kb > 0 ? `${(kb / 1024).toFixed(0)} MB` : "?";
function loadText(w?: WrkResult): string {
  if (!w) return "no load figures";
  // wrk prints zero latencies when no request completed inside the run.
  if (w.rps === 0) return `0 req/s (no request completed in ${SECONDS}s), errors ${w.errors}`;
  // wrk leaves answers later than its 2 s timeout out of the latencies (they count as
  // timeout errors): all-zero latencies mean no answer came in time.
  const latency = /^0(\.0+)?\w*$/.test(w.p99)
    ? "p50/p99 – (every answer later than wrk's 2 s timeout)"
    : `p50 ${w.p50}, p99 ${w.p99}`;
  return `${w.rps.toFixed(0)} req/s, ${latency}, errors ${w.errors}`;
}

/** What went wrong in a run, in words ("" if nothing). */
function trouble(s: Served): string {
  const parts = [];
  if (s.loadError) parts.push(`wrk failed: ${s.loadError}`);
  if (s.endedEarly !== undefined) {
    parts.push(
      s.endedEarly === 137
        ? "**OOM-killed** (exit 137)"
        : `**ended by itself** (exit ${s.endedEarly})`,
    );
  }
  if (parts.length === 0) return "";
  return `; ${parts.join(", ")}${s.why ? ` (${s.why.replaceAll("|", "/").slice(0, 200)})` : ""}`;
}

async function fileSize(path: string): Promise<string> {
  const size = (await Deno.stat(path)).size;
  return size >= 1 << 20 ? `${(size / (1 << 20)).toFixed(1)} MB` : `${(size / 1024).toFixed(0)} KB`;
}

/** The committed guests, the memN guests built now, and those of `BENCH_GUESTS`. */
async function guests(tmp: string, notes: Row[]): Promise<Guest[]> {
  const list: Guest[] = [
    {
      key: "js",
      path: here("../src/wasm/component/testdata/http_app.wasm"),
      what: "componentize-js 0.23 (StarlingMonkey) JS proxy",
      target: "≥ 3,000 req/s, p99 ≤ 25 ms",
    },
    {
      key: "c",
      path: here("../tests/fixtures/guests/built/http_c.wasm"),
      what: "C on wasi-libc behind jco's preview1 reactor adapter (cargo-component's shape)",
      target: "as the WAT hello",
    },
    {
      key: "grow",
      path: here("../tests/fixtures/guests/built/grow.wasm"),
      what: "grows its memory by 32 MiB and writes it on every request (as .NET does)",
      target: "≥ 1,000 req/s, no errors",
      writesBytes: 32 << 20,
    },
  ];
  const built = await new Deno.Command("node", {
    args: [
      here("../tests/fixtures/guests/build.mjs"),
      "--out",
      tmp,
      ...MEM_CURVE_MIB.map((m) => `mem${m}`),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output().catch((err: Error) => ({
    success: false,
    stderr: new TextEncoder().encode(err.message),
  }));
  if (built.success) {
    for (const mib of MEM_CURVE_MIB) {
      list.push({
        key: `mem${mib}`,
        path: `${tmp}/mem${mib}.wasm`,
        what: `WAT hello, ${mib} MiB initial memory, ${mib * 128} KiB of data segments`,
        target: "flat from 1 to 64 MiB (±20%)",
      });
    }
  } else {
    notes.push({
      figure: "guests mem1/mem8/mem64",
      ours: `not measured: tests/fixtures/guests/build.mjs failed: ${
        new TextDecoder().decode(built.stderr).trim().split("\n")[0]
      }`,
      baseline: "",
      ratio: "",
      target: "",
    });
  }
  const dir = Deno.env.get("BENCH_GUESTS");
  if (dir) {
    const names = [];
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && e.name.endsWith(".wasm")) names.push(e.name);
    }
    for (const name of names.sort()) {
      const path = `${dir}/${name}`;
      const proxy = isProxy(await Deno.readFile(path));
      if (proxy === true) {
        list.push({
          key: name,
          path,
          what: `from BENCH_GUESTS`,
          target: name === "hello_wasi_http.wasm"
            ? "≥ 25,000 req/s, p99 ≤ 5 ms (runwasi: ~20,500)"
            : "report",
        });
      } else {
        notes.push({
          figure: `BENCH_GUESTS: ${name}`,
          ours: `skipped: not a wasi:http proxy (${proxy})`,
          baseline: "",
          ratio: "",
          target: "",
        });
      }
    }
  }
  return list;
}

/** The guest figures (`BENCH_ONLY=guests`). */
export async function guestFigures(cd: Containerd, tmp: string): Promise<Row[]> {
  const rows: Row[] = [];
  const list = (await guests(tmp, rows)).filter((g) => !KEYS || KEYS.includes(g.key));
  const c = await ceiling();
  const baseline = `${loadText(c)} (plain Deno.serve, ceiling)`;
  const load = `wrk -t2 -c50 ${SECONDS}s` +
    (WARMUP_SECONDS > 0 ? ` after a ${WARMUP_SECONDS}s warm-up` : "");
  const curve: CurvePoint[] = [];
  for (const g of list) {
    console.error(`bench: guest ${g.key}…`);
    const title = `guest ${g.key}: ${g.what}, ${await fileSize(g.path)}`;
    try {
      const bytes = unique(await Deno.readFile(g.path), `bench-${Date.now()}-${seq}`);
      await Deno.writeFile(`${tmp}/guest.wasm`, bytes);
      const img = await buildImage({
        name: `bench-guest-${g.key.replace(/[^a-z0-9]+/gi, "-").toLowerCase()}`,
        outPath: `${tmp}/guest.tar`,
        config: {},
        layers: [{ files: [{ path: "/guest.wasm", hostPath: `${tmp}/guest.wasm` }] }],
      });
      await cd.importImage(img.path);
      const fresh = await serve(cd, img.reference, { load: false });
      // The baseline of a guest that writes grown memory: the machine's bound for that,
      // just before and just after its run (the machine's memory bandwidth drifts); the
      // ratio is to the higher.
      const bounded = async (run: () => Promise<Served>) => {
        if (g.writesBytes === undefined) return { served: await run(), text: baseline, rps: c.rps };
        const before = await memsetBound(g.writesBytes, BOUND_THREADS);
        const served = await run();
        const after = await memsetBound(g.writesBytes, BOUND_THREADS);
        return {
          served,
          rps: Math.max(before, after),
          text: `${before.toFixed(0)} / ${after.toFixed(0)} req/s: the machine's bound just ` +
            `before / after, ${BOUND_THREADS} threads each writing ${g.writesBytes >> 20} MiB ` +
            `and zeroing it (libc memset, huge pages); the Deno.serve ceiling ${
              c.rps.toFixed(0)
            } req/s`,
        };
      };
      const { served: plain, ...plainBound } = await bounded(() =>
        serve(cd, img.reference, { load: true })
      );
      const { served: limited, ...limitedBound } = await bounded(() =>
        serve(cd, img.reference, { load: true, memoryLimit: MEMORY_LIMIT })
      );
      const ratio = (s: Served, of: number) => s.load ? (s.load.rps / of).toFixed(3) : "";
      rows.push({
        figure: `${title}; ${load}`,
        ours: `${loadText(plain.load)}; first answer: new digest ${ms(fresh.firstMs)}${
          trouble(fresh)
        }, cached ${ms(plain.firstMs)}; runner peak RSS ${mb(plain.rssKb)}${trouble(plain)}`,
        baseline: plainBound.text,
        ratio: ratio(plain, plainBound.rps),
        target: g.target,
      }, {
        figure: `guest ${g.key} under ctr run --memory-limit ${MEMORY_LIMIT} (256 MiB); same wrk`,
        ours: `${loadText(limited.load)}; first answer ${ms(limited.firstMs)}; runner peak RSS ${
          mb(limited.rssKb)
        }${limited.endedEarly === 137 ? "" : "; not OOM-killed"}${trouble(limited)}`,
        baseline: limitedBound.text,
        ratio: ratio(limited, limitedBound.rps),
        target: "completes, no OOM kill, RSS ≤ 256 MiB",
      });
      const mib = g.key.match(/^mem(\d+)$/)?.[1];
      if (mib) curve.push({ mib: Number(mib), image: img.reference });
    } catch (err) {
      rows.push({
        figure: title,
        ours: `failed: ${(err as Error).message.split("\n")[0]}`,
        baseline: "",
        ratio: "",
        target: g.target,
      });
    }
  }
  if (curve.length > 0) {
    console.error("bench: guests' per-request time vs initial memory…");
    rows.push(await curveFigure(cd, curve));
  }
  return rows;
}
