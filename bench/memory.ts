/**
 * Memory per running container: N idle containers (a sleeping guest), PSS of the
 * shim servers and all their descendants, from /proc/<pid>/smaps_rollup.
 *
 * @module
 */

import type { Containerd } from "../tests/e2e/harness.ts";
import type { BenchImages, Row } from "./main.ts";

const IDLE = Number(Deno.env.get("BENCH_IDLE") ?? 50);

/** PSS in kB of a process, 0 if it is gone. */
export async function pssKb(pid: number): Promise<number> {
  try {
    const text = await Deno.readTextFile(`/proc/${pid}/smaps_rollup`);
    return Number(text.match(/^Pss:\s+(\d+)/m)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

async function processTable(): Promise<{ pid: number; ppid: number; cmdline: string }[]> {
  const out = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = await Deno.readTextFile(`/proc/${e.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const cmdline = (await Deno.readTextFile(`/proc/${e.name}/cmdline`)).replaceAll("\0", " ");
      out.push({ pid: Number(e.name), ppid, cmdline });
    } catch { /* gone */ }
  }
  return out;
}

/** Total PSS (kB) of processes whose cmdline matches `shim` and of all their descendants. */
export async function treePss(
  shim: RegExp,
  address: string,
): Promise<{ kb: number; count: number }> {
  const procs = await processTable();
  const roots = procs.filter((p) => shim.test(p.cmdline) && p.cmdline.includes(address));
  const seen = new Set(roots.map((p) => p.pid));
  let grew = true;
  while (grew) {
    grew = false;
    for (const p of procs) {
      if (!seen.has(p.pid) && seen.has(p.ppid)) {
        seen.add(p.pid);
        grew = true;
      }
    }
  }
  let kb = 0;
  for (const pid of seen) kb += await pssKb(pid);
  return { kb, count: roots.length };
}

async function startIdle(
  cd: Containerd,
  runtime: string,
  image: string,
  args: string[],
  tag: string,
) {
  const ids: string[] = [];
  for (let i = 0; i < IDLE; i++) {
    const id = `idle-${tag}-${i}`;
    const r = await cd.ctr(["run", "-d", "--runtime", runtime, image, id, ...args]);
    if (r.code !== 0) throw new Error(`starting ${id}: ${r.stderr}`);
    ids.push(id);
  }
  await new Promise((r) => setTimeout(r, 2000));
  return ids;
}

async function stopAll(cd: Containerd, ids: string[]) {
  for (const id of ids) {
    await cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
  }
  await new Promise((r) => setTimeout(r, 500));
  for (const id of ids) {
    await cd.ctr(["task", "delete", id]);
    await cd.ctr(["container", "delete", id]);
  }
}

/** The idle-memory figure. */
export async function idleMemory(cd: Containerd, img: BenchImages): Promise<Row> {
  const ours = await startIdle(cd, "io.containerd.wasmtime.v1", img.wasm, [
    "/probe.wasm",
    "sleep",
    "3600",
  ], "w");
  const o = await treePss(/containerd-shim-wasmtime(-v1|\/main\.ts)/, cd.address);
  await stopAll(cd, ours);
  const base = await startIdle(cd, "io.containerd.runc.v2", img.native, ["/native_sleep"], "r");
  const b = await treePss(/containerd-shim-runc-v2/, cd.address);
  await stopAll(cd, base);
  const perO = o.kb / IDLE / 1024, perB = b.kb / IDLE / 1024;
  return {
    figure: `memory: ${IDLE} idle containers, PSS per container (shims + children)`,
    ours: `${perO.toFixed(1)} MB`,
    baseline: `${perB.toFixed(1)} MB (runc, native sleeper)`,
    ratio: (perO / perB).toFixed(2),
    target: "≤ 20 MB",
  };
}
