/**
 * wasi:http figures: req/s and latency with wrk (50 connections, loopback) for a
 * hello component served with a fresh instance per request, beside plain
 * Deno.serve returning the same bytes (the ceiling).
 *
 * @module
 */

import type { Containerd } from "../tests/e2e/harness.ts";
import type { Row } from "./main.ts";

const SECONDS = Number(Deno.env.get("BENCH_HTTP_SECONDS") ?? 10);
const HELLO = "Hello, this is your first wasi:http/proxy world!\n";

/** Parsed wrk output. */
export interface WrkResult {
  rps: number;
  p50: string;
  p99: string;
  errors: number;
}

/** Runs wrk against `url`. */
export async function wrk(url: string, connections = 50, seconds = SECONDS): Promise<WrkResult> {
  const out = await new Deno.Command("wrk", {
    args: ["-t2", `-c${connections}`, `-d${seconds}s`, "--latency", url],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) throw new Error(`wrk failed: ${new TextDecoder().decode(out.stderr)}`);
  const rps = Number(text.match(/Requests\/sec:\s+([\d.]+)/)?.[1] ?? 0);
  const p50 = text.match(/50%\s+(\S+)/)?.[1] ?? "?";
  const p99 = text.match(/99%\s+(\S+)/)?.[1] ?? "?";
  const errs = text.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/);
  const non2xx = Number(text.match(/Non-2xx or 3xx responses: (\d+)/)?.[1] ?? 0);
  const errors = (errs ? errs.slice(1).reduce((a, b) => a + Number(b), 0) : 0) + non2xx;
  return { rps, p50, p99, errors };
}

async function ceiling(): Promise<WrkResult> {
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

/** The HTTP figures (ours needs the wasi:http fixture image; see bench/README). */
export async function httpFigures(_cd: Containerd, _tmp: string): Promise<Row[]> {
  const c = await ceiling();
  return [{
    figure: `wasi:http hello, wrk -c50 ${SECONDS}s: plain Deno.serve (ceiling)`,
    ours: "–",
    baseline: `${c.rps.toFixed(0)} req/s, p50 ${c.p50}, p99 ${c.p99}`,
    ratio: "",
    target: "ceiling",
  }];
}
