/**
 * Soak: many `ctr run --rm` of the preview1 probe through one shared shim server,
 * several at a time, then a wasi:http component under `wrk`; nothing may grow.
 *
 * 1. Runs: `SOAK_RUNS` (default 1,000) containers, `SOAK_PARALLEL` (default 4) at a
 *    time, cycling through modes with known exit codes and output (hello → 0,
 *    `exit 3` → 3, trap → 137, …). Every exit code must be right, and every output
 *    right or (a known shim bug, counted and reported) empty. A detached sentinel task
 *    keeps the server up, so that the server's open fds (from /proc/<pid>/fd), its
 *    threads stuck in FIFO reads, the mounts, processes, sockets, slots, cgroups and
 *    FIFO dirs can be compared after a warm-up and at the end: none may grow.
 * 2. wasi:http: `http_hello.wasm` served with `--net-host` under
 *    `wrk -t2 -c200 -d<SOAK_HTTP_SECONDS, default 60>s`: no socket errors, no
 *    non-2xx answers, and the runner's RSS at the end at most 1.5× its RSS after the
 *    first 10 s.
 *
 * Not part of `deno task test`: run it with `deno task test:soak`. It prints a summary.
 */

import assert from "node:assert/strict";
import { SHARED_GROUP } from "../../src/shim/group.ts";
import { socketPath } from "../../src/shim/socket_path.ts";
import { ok, sleep, waitFor, waitStatus } from "../e2e/ctr_util.ts";
import { type Containerd, type Leftovers, TEST_NAMESPACE } from "../e2e/harness.ts";
import { fixture } from "../e2e/shim_install.ts";
import { startSuite } from "../e2e/suite.ts";

const RUNTIME = "io.containerd.wasmtime.v1";
const HTTP_HELLO =
  new URL("../../src/wasm/component/testdata/http_hello.wasm", import.meta.url).pathname;
const HELLO_TEXT = "Hello, this is your first wasi:http/proxy world!\n";
/** Prefix of every container id here. */
const PREFIX = "soak-";

function envNumber(name: string, fallback: number): number {
  const raw = Deno.env.get(name);
  const n = raw === undefined || raw === "" ? fallback : Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}=${raw}: not a positive number`);
  return n;
}

const RUNS = envNumber("SOAK_RUNS", 1000);
const PARALLEL = envNumber("SOAK_PARALLEL", 4);
const HTTP_SECONDS = envNumber("SOAK_HTTP_SECONDS", 60);
/** Runs before the first sample (so that caches, the warm pool and V8 have settled). */
const WARMUP = Math.min(RUNS, 10 * PARALLEL);
/** Open fds of the server that may differ between samples for reasons other than a leak. */
const FD_SLACK = 6;
const opts = { sanitizeOps: false, sanitizeResources: false };

/** One kind of run: the probe's arguments and what must come back. */
interface Mode {
  args: string[];
  code: number;
  stdout?: string;
}

const MODES: readonly Mode[] = [
  { args: ["hello"], code: 0, stdout: "hello from wasm\n" },
  { args: ["exit", "3"], code: 3, stdout: "" },
  { args: ["trap"], code: 137, stdout: "" },
  { args: ["args", "x y"], code: 0, stdout: "argv[0]=/probe.wasm\nargv[1]=args\nargv[2]=x y\n" },
  { args: ["exit", "42"], code: 42, stdout: "" },
  { args: ["cat", "/nope"], code: 1, stdout: "" },
];

interface Env {
  cd: Containerd;
  image: string;
  tmp: string;
}

let env: Promise<Env> | undefined;

function setup(): Promise<Env> {
  env ??= startSuite({
    name: "soak",
    config: { entrypoint: ["/probe.wasm"] },
    files: [
      { path: "/probe.wasm", hostPath: fixture("probe.wasm") },
      { path: "/http_hello.wasm", hostPath: HTTP_HELLO },
    ],
    containerd: (tmp) => ({
      env: { WASMTIME_SHIM_CACHE_DIR: `${tmp}/cache` },
      // The log grows by ~20 lines per run: keep it small.
      logLevel: "info",
    }),
  });
  return env;
}

/** What the summary prints, filled as the tests go. */
const summary: Record<string, string> = {};

/** Counts of what could leak. */
interface Counts {
  serverFds: number;
  /** The server's threads blocked reading a FIFO (the sentinel's stdin pump: 1). */
  fifoReads: number;
  mounts: number;
  processes: number;
  sockets: number;
  slots: number;
  cgroups: number;
  fifoDirs: number;
}

/** Our part of {@linkcode Leftovers} (other suites may share the machine and namespace). */
async function ours(cd: Containerd, left: Leftovers): Promise<Leftovers> {
  const shared = await socketPath(cd.address, TEST_NAMESPACE, SHARED_GROUP);
  return {
    ...left,
    sockets: left.sockets.filter((s) => s === shared),
    cgroups: left.cgroups.filter((c) => c.split("/").pop()!.startsWith(PREFIX)),
  };
}

/** The shim servers of this containerd (guest runners excluded). */
async function servers(cd: Containerd): Promise<number[]> {
  return (await cd.leftovers()).processes.filter((p) => !p.cmdline.includes("guest"))
    .map((p) => p.pid);
}

async function fdCount(pid: number): Promise<number> {
  return (await Array.fromAsync(Deno.readDir(`/proc/${pid}/fd`))).length;
}

/** Threads of `pid` waiting in a pipe (FIFO) read: each holds one of Deno's blocking threads. */
async function pipeReads(pid: number): Promise<number> {
  let n = 0;
  for (const t of await Array.fromAsync(Deno.readDir(`/proc/${pid}/task`))) {
    const wchan = await Deno.readTextFile(`/proc/${pid}/task/${t.name}/wchan`).catch(() => "");
    if (wchan.includes("pipe_read")) n++;
  }
  return n;
}

async function counts(cd: Containerd): Promise<Counts> {
  const left = await ours(cd, await cd.leftovers());
  let serverFds = 0;
  let fifoReads = 0;
  for (const pid of await servers(cd)) {
    serverFds += await fdCount(pid);
    fifoReads += await pipeReads(pid);
  }
  return {
    serverFds,
    fifoReads,
    mounts: left.mounts.length,
    processes: left.processes.length,
    sockets: left.sockets.length,
    slots: left.slots.length,
    cgroups: left.cgroups.length,
    fifoDirs: (await Array.fromAsync(Deno.readDir(cd.fifoDir))).length,
  };
}

/** True if nothing in `now` is above `base` (the server's fds: within the slack). */
function noGrowth(base: Counts, now: Counts): boolean {
  return (Object.keys(base) as (keyof Counts)[]).every((k) =>
    now[k] <= base[k] + (k === "serverFds" ? FD_SLACK : 0)
  );
}

/** Resident set (kB) of `pid` and its descendants. */
async function rssKb(pid: number): Promise<number> {
  let kb = 0;
  const pending = [pid];
  while (pending.length > 0) {
    const p = pending.pop()!;
    try {
      const status = await Deno.readTextFile(`/proc/${p}/status`);
      kb += Number(status.match(/VmRSS:\s+(\d+)/)?.[1] ?? 0);
      for (const t of await Array.fromAsync(Deno.readDir(`/proc/${p}/task`))) {
        const children = await Deno.readTextFile(`/proc/${p}/task/${t.name}/children`);
        pending.push(...children.trim().split(/\s+/).filter(Boolean).map(Number));
      }
    } catch { /* exited */ }
  }
  return kb;
}

const SENTINEL = `${PREFIX}sentinel`;

Deno.test({
  name: `soak: ${RUNS} ctr run --rm, ${PARALLEL} at a time: every exit code right, nothing grows`,
  ...opts,
  async fn() {
    const { cd, image } = await setup();
    // Keeps the shared server up between batches (and its fds comparable).
    ok(
      await cd.ctr([
        ...["run", "-d", "--runtime", RUNTIME, image, SENTINEL],
        ...["/probe.wasm", "sleep", "3600"],
      ]),
      "the sentinel",
    );
    await waitStatus(cd, SENTINEL, "RUNNING");
    const failures: string[] = [];
    const byCode = new Map<number, number>();
    const lostOutput: string[] = [];
    let withOutput = 0;
    let next = 0;
    const batch = async (end: number) => {
      const worker = async () => {
        for (let i = next++; i < end; i = next++) {
          const mode = MODES[i % MODES.length];
          const r = await cd.ctr(
            ["run", "--rm", "--runtime", RUNTIME, image, `${PREFIX}${i}`, "/probe.wasm"].concat(
              mode.args,
            ),
            { stdin: "", timeoutMs: 60_000 },
          );
          byCode.set(r.code, (byCode.get(r.code) ?? 0) + 1);
          if (mode.stdout) withOutput++;
          if (r.code === mode.code && mode.stdout && r.stdout === "") {
            // The guest's output lost though it ran to its exit: what happened when
            // the shim held no writer on the stdout FIFO before Start (ctr gives up a
            // FIFO open still under way once the task has exited). A failure.
            lostOutput.push(`run ${i} (${mode.args.join(" ")})`);
          } else if (
            r.code !== mode.code || (mode.stdout !== undefined && r.stdout !== mode.stdout)
          ) {
            failures.push(
              `run ${i} (${mode.args.join(" ")}): exit ${r.code} (want ${mode.code}), ` +
                `stdout ${JSON.stringify(r.stdout.slice(0, 200))}, ` +
                `stderr ${JSON.stringify(r.stderr.slice(0, 300))}`,
            );
          }
        }
      };
      await Promise.all(Array.from({ length: PARALLEL }, worker));
      next = end;
    };

    const t0 = performance.now();
    await batch(WARMUP);
    const [server] = await servers(cd);
    assert.ok(server, "the shared server runs");
    const before = await counts(cd);
    const t1 = performance.now();
    await batch(RUNS);
    const seconds = (performance.now() - t1) / 1000;
    // The last containers' clean-up may still be under way: poll, with a generous bound.
    let after = await counts(cd);
    await waitFor("the counts to come back to their warm-up values", async () => {
      after = await counts(cd);
      return noGrowth(before, after);
    }, 30_000).catch(() => {});
    const serversNow = await servers(cd);

    summary["runs"] = `${RUNS} (${PARALLEL} in parallel), ${failures.length} wrong; ` +
      `${RUNS - WARMUP} after warm-up in ${seconds.toFixed(1)} s ` +
      `(${((RUNS - WARMUP) / seconds).toFixed(1)} runs/s); total ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s`;
    summary["exit codes"] = [...byCode].sort((a, b) => a[0] - b[0])
      .map(([code, n]) => `${code}×${n}`).join(", ");
    summary["lost stdout"] = `${lostOutput.length} of ${withOutput} runs that print ` +
      `(right exit code, empty stdout)${lostOutput.length ? `: ${lostOutput.join(", ")}` : ""}`;
    summary["server pid"] = `${server} after warm-up, ${serversNow.join(",")} at the end`;
    for (const k of Object.keys(before) as (keyof Counts)[]) {
      summary[k] = `${before[k]} after warm-up → ${after[k]} at the end`;
    }

    assert.deepEqual(failures.slice(0, 10), [], `${failures.length} runs went wrong`);
    assert.deepEqual(lostOutput.slice(0, 10), [], `${lostOutput.length} runs lost their stdout`);
    assert.deepEqual(serversNow, [server], "the same server served every run");
    assert.ok(
      noGrowth(before, after),
      `something grew: after warm-up ${JSON.stringify(before)}, at the end ${
        JSON.stringify(after)
      }`,
    );
  },
});

Deno.test({
  name: `soak: wasi:http under wrk -t2 -c200 -d${HTTP_SECONDS}s: no errors, memory flat`,
  ...opts,
  async fn() {
    const { cd, image } = await setup();
    const addr = `127.0.0.1:${19_000 + Math.floor(Math.random() * 1000)}`;
    const id = `${PREFIX}http`;
    const running = cd.ctr([
      ...["run", "--rm", "--net-host", "--runtime", RUNTIME],
      ...["--env", `WASMTIME_HTTP_PROXY_SOCKET_ADDR=${addr}`, image, id, "/http_hello.wasm"],
    ], { timeoutMs: (HTTP_SECONDS + 120) * 1000 });
    await waitFor(`the component to answer on ${addr}`, async () => {
      try {
        return (await (await fetch(`http://${addr}/`)).text()) === HELLO_TEXT;
      } catch {
        return false;
      }
    }, 60_000);
    const pid = await waitStatus(cd, id, "RUNNING");

    let wrk: Deno.ChildProcess;
    try {
      wrk = new Deno.Command("wrk", {
        args: ["-t2", "-c200", `-d${HTTP_SECONDS}s`, "--latency", `http://${addr}/`],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (err) {
      throw new Error(`cannot run wrk (apt-get install wrk): ${(err as Error).message}`);
    }
    const output = wrk.output();
    const baseAt = Math.min(10, HTTP_SECONDS / 2) * 1000;
    const started = performance.now();
    const samples: [number, number][] = [];
    let base = 0;
    let done = false;
    output.finally(() => done = true);
    while (!done) {
      await sleep(1000);
      const t = performance.now() - started;
      const kb = await rssKb(pid);
      samples.push([Math.round(t / 1000), kb]);
      if (base === 0 && t >= baseAt) base = kb;
    }
    const out = await output;
    const endKb = await rssKb(pid);
    const text = new TextDecoder().decode(out.stdout);
    assert.ok(out.success, `wrk failed: ${new TextDecoder().decode(out.stderr)}`);

    const requests = Number(text.match(/(\d+) requests in/)?.[1] ?? 0);
    const rps = Number(text.match(/Requests\/sec:\s+([\d.]+)/)?.[1] ?? 0);
    const socket = text.match(
      /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/,
    );
    const socketErrors = socket ? socket.slice(1).reduce((n, s) => n + Number(s), 0) : 0;
    const non2xx = Number(text.match(/Non-2xx or 3xx responses: (\d+)/)?.[1] ?? 0);
    const latency = ["50%", "99%"].map((p) =>
      `p${p.slice(0, -1)} ${text.match(new RegExp(`^\\s+${p}\\s+(\\S+)`, "m"))?.[1] ?? "?"}`
    ).join(", ");

    assert.equal((await cd.ctr(["task", "kill", "-s", "SIGINT", id])).code, 0);
    const r = await running;

    summary["http"] = `wrk -t2 -c200 -d${HTTP_SECONDS}s: ${requests} requests, ` +
      `${rps.toFixed(0)} req/s, ${latency}; socket errors ${
        socket ? socket[0].replace("Socket errors: ", "") : "none"
      }; non-2xx ${non2xx}`;
    summary["http runner RSS"] = `${(base / 1024).toFixed(1)} MiB after ${baseAt / 1000} s → ` +
      `${(endKb / 1024).toFixed(1)} MiB at the end (×${
        (endKb / base).toFixed(2)
      }); samples (s:MiB) ${
        samples.filter((_, i) => i % 5 === 4).map(([s, kb]) => `${s}:${(kb / 1024).toFixed(0)}`)
          .join(" ")
      }`;

    assert.equal(r.code, 0, `the HTTP task after SIGINT: ${r.stderr}`);
    assert.ok(requests > 0, `wrk made no request:\n${text}`);
    assert.equal(socketErrors, 0, `socket errors:\n${text}`);
    assert.equal(non2xx, 0, `non-2xx responses:\n${text}`);
    assert.ok(base > 0, "an RSS sample after the first seconds");
    assert.ok(endKb <= 1.5 * base, `RSS grew from ${base} kB to ${endKb} kB`);
  },
});

Deno.test({
  name: "soak: nothing left behind; summary",
  ...opts,
  async fn() {
    const { cd, tmp } = await setup();
    let containers = "";
    let fifos: Deno.DirEntry[] = [];
    let left: Leftovers;
    try {
      await cd.ctr(["task", "kill", "-s", "SIGKILL", SENTINEL]);
      await waitStatus(cd, SENTINEL, "STOPPED").catch(() => {});
      await cd.ctr(["task", "delete", SENTINEL]);
      await cd.ctr(["container", "delete", SENTINEL]);
      containers = (await cd.ctr(["container", "ls", "-q"])).stdout.trim();
      // The shared server goes 1 s after its last task (the harness's idle period).
      await waitFor(
        "the server to exit",
        async () => (await cd.leftovers()).processes.length === 0,
        15_000,
      ).catch(() => {});
      fifos = await Array.fromAsync(Deno.readDir(cd.fifoDir));
    } finally {
      // Whatever happened above: stop containerd, end its shims, remove the temp dirs.
      left = await ours(cd, await cd.stop());
      await Deno.remove(tmp, { recursive: true });
    }
    summary["left at the end"] = JSON.stringify({
      ...Object.fromEntries(Object.entries(left).map(([k, v]) => [k, v.length])),
      fifoDirs: fifos.length,
    });
    console.log(
      "\n== soak summary\n" +
        Object.entries(summary).map(([k, v]) => `${k.padEnd(16)} ${v}`).join("\n"),
    );
    assert.equal(containers, "", "containers left");
    assert.deepEqual(left.mounts, [], "mounts left");
    assert.deepEqual(left.sockets, [], "sockets left");
    assert.deepEqual(left.processes, [], "processes left");
    assert.deepEqual(left.slots, [], "slots left");
    assert.deepEqual(left.cgroups, [], "cgroups left");
    assert.deepEqual(fifos.map((e) => e.name), [], "FIFO dirs left");
  },
});
