/**
 * cgroup v2: one unified hierarchy at the root (`cgroup.controllers` there). The
 * task's cgroup gets {@linkcode V2_CONTROLLERS} enabled in its ancestors; limits are
 * converted from the spec's v1 terms as runc converts them.
 *
 * @module
 */

import { invalidArgument, ShimError } from "../errdefs/errors.ts";
import type { MemoryStat } from "../proto/gen/cgroups_v2_metrics.ts";
import type { LinuxResources } from "../oci/spec.ts";
import {
  CgroupFile,
  exists,
  MAX,
  parseKeyedFile,
  parseUint,
  pickKeys,
  readControl,
  writeControl,
} from "./control.ts";
import {
  applyPidsLimit,
  type CgroupDirs,
  type CgroupDriver,
  type CgroupMetrics,
  MetricsType,
} from "./driver.ts";

/** The v2 controllers enabled for a task's cgroup (in its ancestors' subtree_control). */
export const V2_CONTROLLERS = ["cpu", "memory", "pids"] as const;

/**
 * runc's conversion of v1 `cpu.shares` (2..262144) to v2 `cpu.weight` (1..10000);
 * 0 stays 0 (unset).
 */
export function sharesToWeight(shares: number): number {
  if (shares === 0) return 0;
  return 1 + Math.floor(((shares - 2) * 9999) / 262142);
}

/**
 * runc's conversion of the spec's memory+swap limit to v2 `memory.swap.max` (swap
 * alone): -1 stays -1 ("max"), 0 stays 0 (unset); unlimited memory without a swap
 * value means unlimited swap too.
 *
 * @throws {ShimError} INVALID_ARGUMENT when swap is set without a memory limit or below it
 */
export function swapToV2(swap: number | undefined, memory: number | undefined): number {
  const s = swap ?? 0;
  const m = memory ?? 0;
  if (m === -1 && s === 0) return -1;
  if (s === -1 || s === 0) return s;
  if (m === 0 || m === -1) throw invalidArgument("a swap limit needs a memory limit");
  if (s < m) {
    throw invalidArgument(`memory+swap limit ${s} is below the memory limit ${m}`);
  }
  return s - m;
}

/** A limit as a v2 file takes it: negative (or beyond 2^53) → "max". */
function v2Limit(n: number): string {
  return n < 0 || !Number.isSafeInteger(n) ? MAX : String(n);
}

/**
 * Enables {@linkcode V2_CONTROLLERS} (those available) in the subtree_control of
 * every ancestor, root included, so that the task's cgroup has their files.
 * Refusals (an ancestor with processes of its own) are left for `apply` to report.
 */
async function enableControllers(cgroup: CgroupDirs): Promise<void> {
  const dir = cgroup.dir("");
  if (dir === undefined) return;
  const parts = dir.slice(cgroup.root.length).split("/").filter(Boolean);
  let ancestor = cgroup.root;
  for (let i = 0; i < parts.length; i++) {
    const available = new Set(
      (await readControl(ancestor, CgroupFile.CONTROLLERS) ?? "").split(/\s+/),
    );
    const enabled = new Set(
      (await readControl(ancestor, CgroupFile.SUBTREE_CONTROL) ?? "").split(/\s+/),
    );
    const missing = V2_CONTROLLERS.filter((c) => available.has(c) && !enabled.has(c));
    if (missing.length > 0) {
      await writeControl(
        ancestor,
        CgroupFile.SUBTREE_CONTROL,
        missing.map((c) => `+${c}`).join(" "),
      )
        .catch(() => {});
    }
    ancestor += `/${parts[i]}`;
  }
}

async function apply(cgroup: CgroupDirs, r: LinuxResources): Promise<void> {
  const dir = cgroup.need("");
  const mem = r.memory ?? {};
  const limit = mem.limit || undefined;
  if (limit !== undefined || mem.swap || mem.reservation) {
    const swap = swapToV2(mem.swap, limit);
    // Swap equal to memory means no swap: write 0, never "" (which also means 0).
    if (swap !== 0 || (mem.swap ?? 0) > 0) {
      try {
        await writeControl(dir, CgroupFile.SWAP_MAX, v2Limit(swap));
      } catch (err) {
        // Without swap accounting, "unlimited" and "none" are what there is anyway.
        const noAccounting = !(await exists(`${dir}/${CgroupFile.SWAP_MAX}`));
        if (!noAccounting || (swap !== -1 && swap !== 0)) throw err;
      }
    }
    if (limit !== undefined) await writeControl(dir, CgroupFile.MEMORY_MAX, v2Limit(limit));
    if (mem.reservation) {
      await writeControl(dir, CgroupFile.MEMORY_LOW, v2Limit(mem.reservation));
    }
  }
  const cpu = r.cpu ?? {};
  if (cpu.shares) {
    await writeControl(dir, CgroupFile.CPU_WEIGHT, String(sharesToWeight(cpu.shares)));
  }
  if (cpu.quota || cpu.period) {
    let max = cpu.quota && cpu.quota > 0 ? String(cpu.quota) : MAX;
    if (cpu.period) max += ` ${cpu.period}`;
    await writeControl(dir, CgroupFile.CPU_MAX, max);
  }
  await applyPidsLimit(cgroup, r);
  for (const [file, value] of Object.entries(r.unified ?? {})) {
    if (file.includes("/") || file.startsWith(".")) {
      throw invalidArgument(`unified resource "${file}" is not a cgroup file name`);
    }
    await writeControl(dir, file, value);
  }
}

/**
 * The fields of `io.containerd.cgroups.v2.MemoryStat` that are `memory.stat` keys of the
 * same name (the others come from files of their own); typed, so that a field missing
 * from `proto/cgroups_v2_metrics.proto` fails the build.
 */
const MEMORY_STAT_KEYS: readonly (keyof MemoryStat)[] = [
  "anon",
  "file",
  "kernel_stack",
  "slab",
  "sock",
  "shmem",
  "file_mapped",
  "file_dirty",
  "file_writeback",
  "anon_thp",
  "inactive_anon",
  "active_anon",
  "inactive_file",
  "active_file",
  "unevictable",
  "slab_reclaimable",
  "slab_unreclaimable",
  "pgfault",
  "pgmajfault",
  "workingset_refault",
  "workingset_activate",
  "workingset_nodereclaim",
  "pgrefill",
  "pgscan",
  "pgsteal",
  "pgactivate",
  "pgdeactivate",
  "pglazyfree",
  "pglazyfreed",
  "thp_fault_alloc",
  "thp_collapse_alloc",
];

async function metrics(cgroup: CgroupDirs): Promise<CgroupMetrics> {
  const dir = cgroup.need("");
  const read = (file: string) => readControl(dir, file);
  const uint = async (file: string) => parseUint(await read(file)) ?? 0n;
  const m: Record<string, unknown> = {
    pids: {
      current: await uint(CgroupFile.PIDS_CURRENT),
      limit: await uint(CgroupFile.PIDS_MAX),
    },
  };
  const cpu = parseKeyedFile(await read(CgroupFile.CPU_STAT) ?? "");
  m.cpu = pickKeys(cpu, [
    "usage_usec",
    "user_usec",
    "system_usec",
    "nr_periods",
    "nr_throttled",
    "throttled_usec",
  ]);
  const stat = parseKeyedFile(await read(CgroupFile.MEMORY_STAT) ?? "");
  const memory: Record<string, unknown> = {};
  for (const key of MEMORY_STAT_KEYS) {
    // Linux 5.9+ splits the workingset counters into _anon and _file.
    const value = stat.get(key) ??
      (stat.has(`${key}_anon`) || stat.has(`${key}_file`)
        ? (stat.get(`${key}_anon`) ?? 0n) + (stat.get(`${key}_file`) ?? 0n)
        : undefined);
    if (value !== undefined) memory[key] = value;
  }
  memory.usage = await uint(CgroupFile.MEMORY_CURRENT);
  memory.usage_limit = await uint(CgroupFile.MEMORY_MAX);
  memory.swap_usage = await uint(CgroupFile.SWAP_CURRENT);
  memory.swap_limit = await uint(CgroupFile.SWAP_MAX);
  memory.max_usage = await uint(CgroupFile.MEMORY_PEAK);
  memory.swap_max_usage = await uint(CgroupFile.SWAP_PEAK);
  m.memory = memory;
  const events = await read(CgroupFile.MEMORY_EVENTS);
  if (events !== undefined) {
    m.memory_events = pickKeys(parseKeyedFile(events), ["low", "high", "max", "oom", "oom_kill"]);
  }
  return { typeName: MetricsType.V2, metrics: m };
}

/**
 * {@linkcode apply}, saying which controllers the hierarchy lacks when it fails: on a
 * hybrid host the v2 hierarchy holds none of those cgroup v1 has mounted.
 */
async function applyOrExplain(cgroup: CgroupDirs, r: LinuxResources): Promise<void> {
  try {
    await apply(cgroup, r);
  } catch (err) {
    if (!(err instanceof Error) || err instanceof ShimError) throw err;
    const available = (await readControl(cgroup.root, CgroupFile.CONTROLLERS).catch(() => ""))
      ?.trim() ?? "";
    const have = new Set(available.split(/\s+/));
    const lacking = V2_CONTROLLERS.filter((c) => !have.has(c));
    if (lacking.length === 0) throw err;
    throw new Error(
      `${err.message}; the cgroup v2 hierarchy at ${cgroup.root} has no ${
        lacking.join(", ")
      } controller (its ${CgroupFile.CONTROLLERS}: "${available}"; on a host that also ` +
        `mounts cgroup v1, v1 keeps the controllers it has)`,
    );
  }
}

/** cgroup v2's {@linkcode CgroupDriver}. */
export const v2: CgroupDriver = {
  version: 2,
  locate: (root, pathIn) => new Map([["", `${root}${pathIn("")}`]]),
  dirKey: () => "",
  prepare: enableControllers,
  apply: applyOrExplain,
  oomFile: CgroupFile.MEMORY_EVENTS,
  metrics,
  renamesProcesses: false,
};
