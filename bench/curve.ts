/**
 * The per-request time across initial memory sizes (issue: flat within 20% from 1 to 64
 * MiB), measured so that the machine's drift does not read as a slope: the memN guests
 * all run at once (each its own container and port, idle while another is measured),
 * and wrk visits them in rounds, in a rotated order, so every size is measured early
 * and late in the window; each size's figure is the median of its rounds.
 *
 * Options (env): BENCH_CURVE_ROUNDS (default 3), BENCH_CURVE_SECONDS (wrk per visit,
 * default 4).
 *
 * @module
 */

import type { Containerd } from "../tests/e2e/harness.ts";
import { type RunningProxy, runProxy } from "../tests/e2e/ctr_util.ts";
import { WARMUP_SECONDS, wrk } from "./http.ts";
import type { Row } from "./main.ts";

const ROUNDS = Number(Deno.env.get("BENCH_CURVE_ROUNDS") ?? 3);
const VISIT_SECONDS = Number(Deno.env.get("BENCH_CURVE_SECONDS") ?? 4);
/** Ports of the curve's containers: FIRST_PORT, FIRST_PORT + 1, … */
const FIRST_PORT = 18191;

/** A memN guest's image, already imported. */
export interface CurvePoint {
  mib: number;
  image: string;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** The curve's row: µs per request (1 s ÷ req/s) for each size, median of the rounds. */
export async function curveFigure(cd: Containerd, points: CurvePoint[]): Promise<Row> {
  const running: { point: CurvePoint; proxy: RunningProxy }[] = [];
  const rps = new Map<number, number[]>(points.map((p) => [p.mib, []]));
  try {
    for (const [i, point] of points.entries()) {
      const proxy = await runProxy(cd, {
        image: point.image,
        id: `bench-curve-${point.mib}`,
        wasm: "/guest.wasm",
        addr: `127.0.0.1:${FIRST_PORT + i}`,
      });
      running.push({ point, proxy });
      // Its steady state (JIT tiers, heap sizes, recycled instances), once.
      if (WARMUP_SECONDS > 0) await wrk(`${proxy.url}/`, 50, WARMUP_SECONDS, 0);
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (let k = 0; k < running.length; k++) {
        const { point, proxy } = running[(round + k) % running.length];
        const w = await wrk(`${proxy.url}/`, 50, VISIT_SECONDS, 0);
        if (w.rps > 0) rps.get(point.mib)!.push(w.rps);
      }
    }
  } finally {
    for (const { proxy } of running) await proxy.stop().catch(() => {});
  }
  const us = new Map(
    [...rps].filter(([, xs]) => xs.length > 0).map(([mib, xs]) => [mib, 1e6 / median(xs)]),
  );
  const first = us.get(points[0].mib);
  const spread = (xs: number[]) =>
    xs.length > 1 ? ` (req/s ${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)})` : "";
  const text = points.map((p) => {
    const t = us.get(p.mib);
    return t === undefined
      ? `${p.mib} MiB: no request completed`
      : `${p.mib} MiB ${t.toFixed(1)} µs${first ? ` ×${(t / first).toFixed(2)}` : ""}${
        spread(rps.get(p.mib)!)
      }`;
  });
  const values = [...us.values()];
  return {
    figure: `per-request time vs initial memory: the memN guests side by side, wrk -t2 -c50 ` +
      `${VISIT_SECONDS}s per visit, ${ROUNDS} rounds in rotated order, median`,
    ours: text.join("; "),
    baseline: `the ${points[0].mib} MiB guest`,
    ratio: values.length === points.length
      ? (Math.max(...values) / Math.min(...values)).toFixed(2)
      : "",
    target: "≤ 1.20 (flat within 20%)",
  };
}
