/**
 * The control files of a cgroup: their names, reading and writing them with errors
 * that name the file, and parsing what the kernel writes in them. Shared by both
 * versions' implementations ({@linkcode ./v1.ts}, {@linkcode ./v2.ts}).
 *
 * @module
 */

/** The largest uint64: what v2 reports for "max", as containerd/cgroups does. */
export const UINT64_MAX = (1n << 64n) - 1n;
/** What v2 limit files (and v1 `pids.max`) take and show for "unlimited". */
export const MAX = "max";

/** Control files the shim reads or writes. */
export const CgroupFile = {
  PROCS: "cgroup.procs",
  CONTROLLERS: "cgroup.controllers",
  SUBTREE_CONTROL: "cgroup.subtree_control",
  // v1 memory
  MEMORY_LIMIT: "memory.limit_in_bytes",
  MEMSW_LIMIT: "memory.memsw.limit_in_bytes",
  MEMORY_SOFT_LIMIT: "memory.soft_limit_in_bytes",
  MEMORY_OOM_CONTROL: "memory.oom_control",
  MEMORY_STAT: "memory.stat",
  // v1 cpu, cpuacct
  CPU_SHARES: "cpu.shares",
  CFS_QUOTA: "cpu.cfs_quota_us",
  CFS_PERIOD: "cpu.cfs_period_us",
  CPU_STAT: "cpu.stat",
  CPUACCT_USAGE: "cpuacct.usage",
  CPUACCT_PERCPU: "cpuacct.usage_percpu",
  CPUACCT_STAT: "cpuacct.stat",
  // pids (both)
  PIDS_MAX: "pids.max",
  PIDS_CURRENT: "pids.current",
  // v2
  MEMORY_MAX: "memory.max",
  MEMORY_LOW: "memory.low",
  MEMORY_CURRENT: "memory.current",
  MEMORY_PEAK: "memory.peak",
  SWAP_MAX: "memory.swap.max",
  SWAP_CURRENT: "memory.swap.current",
  SWAP_PEAK: "memory.swap.peak",
  MEMORY_EVENTS: "memory.events",
  CPU_WEIGHT: "cpu.weight",
  CPU_MAX: "cpu.max",
} as const;

/** Parses a flat keyed file (`key value` per line: memory.stat, cpu.stat, memory.events…). */
export function parseKeyedFile(text: string): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (const line of text.split("\n")) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value !== undefined && /^\d+$/.test(value)) out.set(key, BigInt(value));
  }
  return out;
}

/** The values of `keys` in a parsed keyed file, 0 for those it does not have. */
export function pickKeys(
  values: Map<string, bigint>,
  keys: readonly string[],
): Record<string, bigint> {
  return Object.fromEntries(keys.map((key) => [key, values.get(key) ?? 0n]));
}

/** Parses a single-value file: a decimal, or "max" (→ {@linkcode UINT64_MAX}). */
export function parseUint(text: string | undefined): bigint | undefined {
  const value = text?.trim();
  if (value === undefined) return undefined;
  if (value === MAX) return UINT64_MAX;
  return /^\d+$/.test(value) ? BigInt(value) : undefined;
}

/** Why a control file operation failed, for an error message. */
export function why(err: unknown): string {
  if (err instanceof Deno.errors.NotFound) return "no such file (controller not available?)";
  return (err as Error)?.message ?? String(err);
}

/** Reads a control file; undefined if it does not exist. */
export async function readControl(dir: string, file: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(`${dir}/${file}`);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw new Error(`cannot read ${dir}/${file}: ${why(err)}`);
  }
}

/** Writes a control file, which must exist (cgroupfs creates them; never create one). */
export async function writeControl(dir: string, file: string, value: string): Promise<void> {
  try {
    await Deno.writeTextFile(`${dir}/${file}`, value, { create: false });
  } catch (err) {
    throw new Error(`cannot write "${value}" to ${dir}/${file}: ${why(err)}`);
  }
}

/** True if `path` exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
