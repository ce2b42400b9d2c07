/**
 * cgroup v1: one hierarchy per controller, mounted at `<root>/<controller>`; a task
 * joins {@linkcode V1_CONTROLLERS} (co-mounted ones share a directory). Limits and
 * metrics as runc and containerd/cgroups write and read them.
 *
 * @module
 */

import { invalidArgument } from "../errdefs/errors.ts";
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

/** The v1 hierarchies a task joins, each mounted at `<root>/<name>`. */
export const V1_CONTROLLERS = ["memory", "cpu", "cpuacct", "pids"] as const;
/** `USER_HZ`: the unit of v1 `cpuacct.stat` (clock ticks per second). */
export const USER_HZ = 100n;
const NS_PER_SECOND = 1_000_000_000n;
/** What v1 limit files take for "unlimited". */
const V1_UNLIMITED = "-1";

/** v1 `memory.stat` keys → `io.containerd.cgroups.v1.MemoryStat` fields (where they differ). */
const V1_MEMORY_STAT_FIELDS: Readonly<Record<string, string>> = {
  cache: "cache",
  rss: "rss",
  rss_huge: "rss_huge",
  mapped_file: "mapped_file",
  dirty: "dirty",
  writeback: "writeback",
  pgpgin: "pg_pg_in",
  pgpgout: "pg_pg_out",
  pgfault: "pg_fault",
  pgmajfault: "pg_maj_fault",
  inactive_anon: "inactive_anon",
  active_anon: "active_anon",
  inactive_file: "inactive_file",
  active_file: "active_file",
  unevictable: "unevictable",
  hierarchical_memory_limit: "hierarchical_memory_limit",
  hierarchical_memsw_limit: "hierarchical_swap_limit",
  total_cache: "total_cache",
  total_rss: "total_rss",
  total_rss_huge: "total_rss_huge",
  total_mapped_file: "total_mapped_file",
  total_dirty: "total_dirty",
  total_writeback: "total_writeback",
  total_pgpgin: "total_pg_pg_in",
  total_pgpgout: "total_pg_pg_out",
  total_pgfault: "total_pg_fault",
  total_pgmajfault: "total_pg_maj_fault",
  total_inactive_anon: "total_inactive_anon",
  total_active_anon: "total_active_anon",
  total_inactive_file: "total_inactive_file",
  total_active_file: "total_active_file",
  total_unevictable: "total_unevictable",
};

/** The v1 files behind each `MemoryEntry` of `MemoryStat`: usage, swap, kernel, kernel_tcp. */
const V1_MEMORY_ENTRIES = {
  usage: "memory",
  swap: "memory.memsw",
  kernel: "memory.kmem",
  kernel_tcp: "memory.kmem.tcp",
} as const;

/** A limit as a v1 file takes it: negative (or beyond 2^53, i.e. huge) → "-1". */
function v1Limit(n: number): string {
  return n < 0 || !Number.isSafeInteger(n) ? V1_UNLIMITED : String(n);
}

/**
 * One directory per mounted controller of {@linkcode V1_CONTROLLERS}; controllers
 * mounted together (`cpu,cpuacct`) share the first one's.
 */
function locate(root: string, pathIn: (controller: string) => string): Map<string, string> {
  const dirs = new Map<string, string>();
  const mounts = new Map<string, string>(); // real mount point → its name under root
  for (const controller of V1_CONTROLLERS) {
    let real: string;
    try {
      real = Deno.realPathSync(`${root}/${controller}`);
    } catch {
      continue; // not mounted on this host
    }
    const mount = mounts.get(real) ?? controller;
    mounts.set(real, mount);
    dirs.set(controller, `${root}/${mount}${pathIn(controller)}`);
  }
  return dirs;
}

async function apply(cgroup: CgroupDirs, r: LinuxResources): Promise<void> {
  if (r.unified && Object.keys(r.unified).length > 0) {
    throw invalidArgument("unified (cgroup v2) resources given, but this host uses cgroup v1");
  }
  const mem = r.memory ?? {};
  const limit = mem.limit || undefined;
  let swap = mem.swap || undefined;
  if (limit !== undefined || swap !== undefined || mem.reservation) {
    const dir = cgroup.need("memory");
    // Unlimited memory without a swap value: unlimited swap too (if accounted).
    if (limit === -1 && swap === undefined && await exists(`${dir}/${CgroupFile.MEMSW_LIMIT}`)) {
      swap = -1;
    }
    const setLimit = () => writeControl(dir, CgroupFile.MEMORY_LIMIT, v1Limit(limit!));
    const setSwap = () => writeControl(dir, CgroupFile.MEMSW_LIMIT, v1Limit(swap!));
    if (limit !== undefined && swap !== undefined) {
      // The kernel wants memory <= memory+swap at every step: order the writes.
      const current = parseUint(await readControl(dir, CgroupFile.MEMORY_LIMIT)) ?? 0n;
      if (swap === -1 || current < BigInt(swap)) {
        await setSwap();
        await setLimit();
      } else {
        await setLimit();
        await setSwap();
      }
    } else if (limit !== undefined) {
      await setLimit();
    } else if (swap !== undefined) {
      await setSwap();
    }
    if (mem.reservation) {
      await writeControl(dir, CgroupFile.MEMORY_SOFT_LIMIT, v1Limit(mem.reservation));
    }
  }
  const cpu = r.cpu ?? {};
  if (cpu.shares || cpu.quota || cpu.period) {
    const dir = cgroup.need("cpu");
    if (cpu.shares) await writeControl(dir, CgroupFile.CPU_SHARES, String(cpu.shares));
    let periodPending = false;
    if (cpu.period) {
      try {
        await writeControl(dir, CgroupFile.CFS_PERIOD, String(cpu.period));
      } catch (err) {
        // A shorter period can exceed the current quota's ratio: retry after the quota.
        if (!cpu.quota) throw err;
        periodPending = true;
      }
    }
    if (cpu.quota) {
      await writeControl(dir, CgroupFile.CFS_QUOTA, cpu.quota < 0 ? "-1" : String(cpu.quota));
      if (periodPending) await writeControl(dir, CgroupFile.CFS_PERIOD, String(cpu.period));
    }
  }
  await applyPidsLimit(cgroup, r);
}

async function metrics(cgroup: CgroupDirs): Promise<CgroupMetrics> {
  const m: Record<string, unknown> = {};
  const read = (dir: string, file: string) => readControl(dir, file);
  const pids = cgroup.dir("pids");
  if (pids !== undefined) {
    const max = (await read(pids, CgroupFile.PIDS_MAX))?.trim();
    m.pids = {
      current: parseUint(await read(pids, CgroupFile.PIDS_CURRENT)) ?? 0n,
      // containerd/cgroups reports v1 "max" as 0.
      limit: max === undefined || max === MAX ? 0n : parseUint(max) ?? 0n,
    };
  }
  const cpuacct = cgroup.dir("cpuacct");
  const cpuDir = cgroup.dir("cpu");
  if (cpuacct !== undefined || cpuDir !== undefined) {
    const cpu: Record<string, unknown> = {};
    if (cpuacct !== undefined) {
      const stat = parseKeyedFile(await read(cpuacct, CgroupFile.CPUACCT_STAT) ?? "");
      const ticks = (key: string) => (stat.get(key) ?? 0n) * NS_PER_SECOND / USER_HZ;
      const perCpu = (await read(cpuacct, CgroupFile.CPUACCT_PERCPU) ?? "").trim();
      cpu.usage = {
        total: parseUint(await read(cpuacct, CgroupFile.CPUACCT_USAGE)) ?? 0n,
        kernel: ticks("system"),
        user: ticks("user"),
        per_cpu: perCpu === "" ? [] : perCpu.split(/\s+/).map((v) => parseUint(v) ?? 0n),
      };
    }
    if (cpuDir !== undefined) {
      const stat = parseKeyedFile(await read(cpuDir, CgroupFile.CPU_STAT) ?? "");
      cpu.throttling = {
        periods: stat.get("nr_periods") ?? 0n,
        throttled_periods: stat.get("nr_throttled") ?? 0n,
        throttled_time: stat.get("throttled_time") ?? 0n,
      };
    }
    m.cpu = cpu;
  }
  const mem = cgroup.dir("memory");
  if (mem !== undefined) {
    const memory: Record<string, unknown> = {};
    const stat = parseKeyedFile(await read(mem, CgroupFile.MEMORY_STAT) ?? "");
    for (const [key, field] of Object.entries(V1_MEMORY_STAT_FIELDS)) {
      const value = stat.get(key);
      if (value !== undefined) memory[field] = value;
    }
    for (const [field, prefix] of Object.entries(V1_MEMORY_ENTRIES)) {
      const usage = parseUint(await read(mem, `${prefix}.usage_in_bytes`));
      if (usage === undefined) continue; // no swap or kmem accounting
      memory[field] = {
        limit: parseUint(await read(mem, `${prefix}.limit_in_bytes`)) ?? 0n,
        usage,
        max: parseUint(await read(mem, `${prefix}.max_usage_in_bytes`)) ?? 0n,
        failcnt: parseUint(await read(mem, `${prefix}.failcnt`)) ?? 0n,
      };
    }
    m.memory = memory;
    const oom = parseKeyedFile(await read(mem, CgroupFile.MEMORY_OOM_CONTROL) ?? "");
    m.memory_oom_control = pickKeys(oom, ["oom_kill_disable", "under_oom", "oom_kill"]);
  }
  return { typeName: MetricsType.V1, metrics: m };
}

/** cgroup v1's {@linkcode CgroupDriver}. */
export const v1: CgroupDriver = {
  version: 1,
  locate,
  dirKey: (controller) => controller,
  prepare: () => Promise.resolve(),
  apply,
  oomFile: CgroupFile.MEMORY_OOM_CONTROL,
  metrics,
  renamesProcesses: true,
};
