/**
 * wasi:http figures: req/s and latency with wrk (50 connections, loopback, after a
 * warm-up run) for a hello component served with a fresh instance per request, beside
 * plain Deno.serve returning the same bytes (the ceiling) and `jco serve
 * --isolate-requests instance` on Node.js with the same component (the peer).
 *
 * @module
 */

import { runProxy } from "../tests/e2e/ctr_util.ts";
import type { Containerd } from "../tests/e2e/harness.ts";
import type { Row } from "./main.ts";

export const SECONDS = Number(Deno.env.get("BENCH_HTTP_SECONDS") ?? 10);
/**
 * An unrecorded wrk run before each measured one, the same for ours, the ceiling and
 * the peer: the figures are of a server in its steady state (JIT tiers, heap sizes),
 * not of its first seconds.
 */
export const WARMUP_SECONDS = Number(Deno.env.get("BENCH_HTTP_WARMUP") ?? 2);
const HELLO = "Hello, this is your first wasi:http/proxy world!\n";

/** Parsed wrk output. */
export interface WrkResult {
  /** Requests completed in the measured run. */
  requests: number;
  rps: number;
  p50: string;
  p99: string;
  errors: number;
}

/**
 * Runs wrk against `url` (after an unrecorded warm-up run of `warmup` seconds);
 * `measuring` is called right before the measured run starts.
 */
export async function wrk(
  url: string,
  connections = 50,
  seconds = SECONDS,
  warmup = WARMUP_SECONDS,
  measuring?: () => unknown,
): Promise<WrkResult> {
  const run = (secs: number) =>
    new Deno.Command("wrk", {
      args: ["-t2", `-c${connections}`, `-d${secs}s`, "--latency", url],
      stdout: "piped",
      stderr: "piped",
    }).output();
  if (warmup > 0) await run(warmup);
  await measuring?.();
  const out = await run(seconds);
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) throw new Error(`wrk failed: ${new TextDecoder().decode(out.stderr)}`);
  const rps = Number(text.match(/Requests\/sec:\s+([\d.]+)/)?.[1] ?? 0);
  const requests = Number(text.match(/(\d+) requests in/)?.[1] ?? 0);
  const p50 = text.match(/^\s+50%\s+([\d.]+\w+)/m)?.[1] ?? "?";
  const p99 = text.match(/^\s+99%\s+([\d.]+\w+)/m)?.[1] ?? "?";
  const errs = text.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/);
  const non2xx = Number(text.match(/Non-2xx or 3xx responses: (\d+)/)?.[1] ?? 0);
  const errors = (errs ? errs.slice(1).reduce((a, b) => a + Number(b), 0) : 0) + non2xx;
  return { requests, rps, p50, p99, errors };
}

/** wrk against a plain `Deno.serve` answering the hello text: the ceiling of this machine. */
export async function ceiling(): Promise<WrkResult> {
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: () => {} },
    () => new Response(HELLO),
  );
  const port = (server.addr as Deno.NetAddr).port;
  try {
    return await wrk(`http://127.0.0.1:${port}/`);
  } finally {
    ac.abort();
    await server.finished;
  }
}

const JCO = new URL("../node_modules/@bytecodealliance/jco/dist/jco.js", import.meta.url).pathname;
const PEER_PORT = 18182;

/**
 * The peer: jco's own server on Node.js, a fresh component instance per request.
 * Needs `node` and the jco dev dependency (`deno task setup` installs it).
 */
async function jcoPeer(): Promise<WrkResult | string> {
  try {
    await Deno.stat(JCO);
  } catch {
    return "not measured: jco is not installed (deno task setup)";
  }
  const jcoDir = await Deno.makeTempDir({ prefix: "bench-jco-" });
  const child = new Deno.Command("node", {
    args: [
      JCO,
      "serve",
      "--jco-dir",
      jcoDir,
      "--host",
      "127.0.0.1",
      "--port",
      String(PEER_PORT),
      "--isolate-requests",
      "instance",
      HTTP_FIXTURE,
    ],
    stdout: "null",
    stderr: "null",
    // jco serve runs the server in a child process: kill the whole group at the end.
    detached: true,
  }).spawn();
  try {
    const url = `http://127.0.0.1:${PEER_PORT}/`;
    for (let i = 0; i < 600; i++) {
      try {
        await (await fetch(url)).text();
        return await wrk(url);
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    return "not measured: jco serve did not answer within 60 s";
  } finally {
    try {
      Deno.kill(-child.pid, "SIGKILL");
    } catch { /* gone */ }
    await child.status;
    await Deno.remove(jcoDir, { recursive: true }).catch(() => {});
  }
}

export const HTTP_FIXTURE =
  new URL("../src/wasm/component/testdata/http_hello.wasm", import.meta.url)
    .pathname;
const ADDR = "127.0.0.1:18181";

/** Peak RSS (kB) over the processes whose cmdline contains `word`. */
export async function rssOf(word: string): Promise<number> {
  let kb = 0;
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const cmd = (await Deno.readTextFile(`/proc/${e.name}/cmdline`)).replaceAll("\0", " ");
      if (!cmd.includes(word)) continue;
      const status = await Deno.readTextFile(`/proc/${e.name}/status`);
      kb += Number(status.match(/VmHWM:\s+(\d+)/)?.[1] ?? 0);
    } catch { /* gone */ }
  }
  return kb;
}

/** The HTTP figures: our shim serving the WAT hello component, and the Deno.serve ceiling. */
export async function httpFigures(cd: Containerd, tmp: string): Promise<Row[]> {
  const { buildImage } = await import("../src/oci/image.ts");
  const img = await buildImage({
    name: "bench-http",
    outPath: `${tmp}/http.tar`,
    config: {},
    layers: [{ files: [{ path: "/hello.wasm", hostPath: HTTP_FIXTURE }] }],
  });
  await cd.importImage(img.path);
  const id = "bench-http";
  const proxy = await runProxy(cd, { image: img.reference, id, wasm: "/hello.wasm", addr: ADDR });
  const ours = await wrk(`${proxy.url}/`);
  const rss = await rssOf(`guest ${id}`);
  await proxy.stop();
  const c = await ceiling();
  const peer = await jcoPeer();
  const peerText = typeof peer === "string"
    ? peer
    : `${peer.rps.toFixed(0)} req/s, p50 ${peer.p50}, p99 ${peer.p99}, errors ${peer.errors}`;
  return [{
    figure:
      `wasi:http hello (WAT component), fresh instance per request, wrk -t2 -c50 ${SECONDS}s` +
      (WARMUP_SECONDS > 0 ? ` after a ${WARMUP_SECONDS}s warm-up` : ""),
    ours: `${ours.rps.toFixed(0)} req/s, p50 ${ours.p50}, p99 ${ours.p99}, errors ${ours.errors}`,
    baseline: `${c.rps.toFixed(0)} req/s, p50 ${c.p50}, p99 ${c.p99} (plain Deno.serve, ceiling)`,
    ratio: (ours.rps / c.rps).toFixed(3),
    target: "≥ 20,000 req/s, p99 ≤ 10 ms",
  }, {
    figure: "wasi:http hello, the peer: jco serve --isolate-requests instance (Node.js), same wrk",
    ours: `${ours.rps.toFixed(0)} req/s (ours, above)`,
    baseline: peerText,
    ratio: typeof peer === "string" ? "" : (ours.rps / peer.rps).toFixed(2),
    target: "≥ peer",
  }, {
    figure: "memory: the HTTP container's runner under that load (peak RSS)",
    ours: `${(rss / 1024).toFixed(1)} MB`,
    baseline: "–",
    ratio: "",
    target: "report",
  }];
}
