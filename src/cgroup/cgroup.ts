/**
 * Task cgroups: each task's guest runner is placed in the cgroup its OCI spec names
 * (`linux.cgroupsPath`), with the spec's `linux.resources` applied — memory, CPU and
 * pids limits — and the cgroup's files are what Stats reports and Update changes.
 *
 * Both cgroup versions are handled, detected as runc does: `<root>/cgroup.controllers`
 * exists → v2 (one unified hierarchy at the root), else v1 (one hierarchy per
 * controller at `<root>/<controller>`; the task joins {@linkcode V1_CONTROLLERS}).
 *
 * `cgroupsPath` notations (as runc's cgroupfs and systemd drivers read them):
 *
 * | cgroupsPath                      | cgroup, relative to each hierarchy's root                    |
 * | -------------------------------- | ------------------------------------------------------------ |
 * | `/a/b`                           | `/a/b`                                                       |
 * | `a/b` (relative)                 | `<the shim's own cgroup>/a/b`                                |
 * | absent or ""                     | `<the shim's own cgroup>/<task id>` (runc's default)         |
 * | `slice:prefix:name`              | `<expanded slice>/<prefix>-<name>.scope`                     |
 * | `kubepods-besteffort.slice:p:n`  | `/kubepods.slice/kubepods-besteffort.slice/p-n.scope`        |
 *
 * The systemd notation is mapped to the directories systemd would use, and those are
 * created directly (no transient unit is registered with systemd over D-Bus).
 *
 * The root is injectable ({@linkcode CgroupManagerOptions.root}), so that tests run
 * against fake cgroup directories. This module loads nothing heavy: the `delete`
 * action uses it.
 *
 * @module
 */

import { invalidArgument } from "../errdefs/errors.ts";
import { CGROUPS_V2_MEMORY_STAT_KEYS } from "../proto/task_codec.ts";
import { parentDir } from "../sys/path.ts";
import { procStat } from "../sys/proc.ts";
import type { LinuxResources } from "../oci/spec.ts";

/** Where the cgroup hierarchies are mounted. */
export const DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup";
/** The shim's own cgroups (for relative and default paths). */
export const PROC_SELF_CGROUP = "/proc/self/cgroup";
/** The systemd slice a `:prefix:name` path with an empty slice goes to (runc's default). */
export const DEFAULT_SYSTEMD_SLICE = "system.slice";

/** cgroup v1 or v2 (unified). */
export type CgroupVersion = 1 | 2;

/** The v1 hierarchies a task joins, each mounted at `<root>/<name>`. */
export const V1_CONTROLLERS = ["memory", "cpu", "cpuacct", "pids"] as const;
/** The v2 controllers enabled for a task's cgroup (in its ancestors' subtree_control). */
export const V2_CONTROLLERS = ["cpu", "memory", "pids"] as const;

/** Type names (and Any type URLs) of the metrics Stats returns, as the runc shim's. */
export const MetricsType = {
  V1: "io.containerd.cgroups.v1.Metrics",
  V2: "io.containerd.cgroups.v2.Metrics",
} as const;

/** The largest uint64: what v2 reports for "max", as containerd/cgroups does. */
export const UINT64_MAX = (1n << 64n) - 1n;
/** `USER_HZ`: the unit of v1 `cpuacct.stat` (clock ticks per second). */
export const USER_HZ = 100n;
const NS_PER_SECOND = 1_000_000_000n;

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

/** What v1 limit files take for "unlimited". */
const V1_UNLIMITED = "-1";
/** What v2 limit files take for "unlimited". */
const V2_MAX = "max";
/** How often {@linkcode TaskCgroup.remove} retries a cgroup that still has processes. */
const REMOVE_RETRY_MS = 20;
/** How long {@linkcode TaskCgroup.remove} waits for the processes to be gone. */
export const DEFAULT_REMOVE_TIMEOUT_MS = 3_000;

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

/** Detects the cgroup version mounted at `root`: v2 if `cgroup.controllers` is there. */
export function detectCgroupVersion(root: string = DEFAULT_CGROUP_ROOT): CgroupVersion {
  try {
    Deno.statSync(`${root}/${CgroupFile.CONTROLLERS}`);
    return 2;
  } catch {
    return 1;
  }
}

/** Normalizes a cgroup path: absolute, no `.`/`..`/empty parts; `..` never climbs above `/`. */
export function cleanPath(path: string): string {
  const parts: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return "/" + parts.join("/");
}

/**
 * Expands a systemd slice name into its cgroup path, as systemd nests slices:
 * `kubepods-besteffort-pod1.slice` → `/kubepods.slice/kubepods-besteffort.slice/
 * kubepods-besteffort-pod1.slice`; `-.slice` is the root.
 *
 * @throws {ShimError} INVALID_ARGUMENT for a name systemd would reject
 */
export function expandSlice(slice: string): string {
  const suffix = ".slice";
  if (slice.length <= suffix.length || !slice.endsWith(suffix) || slice.includes("/")) {
    throw invalidArgument(`invalid systemd slice name "${slice}"`);
  }
  const name = slice.slice(0, -suffix.length);
  if (name === "-") return "/";
  let path = "";
  let prefix = "";
  for (const component of name.split("-")) {
    if (component === "") throw invalidArgument(`invalid systemd slice name "${slice}"`);
    path += `/${prefix}${component}${suffix}`;
    prefix += `${component}-`;
  }
  return path;
}

/** True if `cgroupsPath` is in systemd notation (`slice:prefix:name`). */
export function isSystemdPath(cgroupsPath: string): boolean {
  return !cgroupsPath.startsWith("/") && cgroupsPath.split(":").length === 3;
}

/**
 * The cgroup of task `id` inside one hierarchy, from the spec's `cgroupsPath` (see
 * the module doc for the notations). `own` is the shim's own cgroup in that hierarchy,
 * which relative paths and the default start from.
 *
 * @throws {ShimError} INVALID_ARGUMENT for a malformed systemd path
 */
export function taskCgroupPath(cgroupsPath: string | undefined, id: string, own = "/"): string {
  if (!cgroupsPath) return cleanPath(`${own}/${id}`);
  if (cgroupsPath.startsWith("/")) return cleanPath(cgroupsPath);
  if (!isSystemdPath(cgroupsPath)) return cleanPath(`${own}/${cgroupsPath}`);
  const [slice, prefix, name] = cgroupsPath.split(":");
  if (name === "" || name.includes("/")) {
    throw invalidArgument(`cgroupsPath "${cgroupsPath}": the unit name must be a plain name`);
  }
  if (name.endsWith(".slice")) return expandSlice(name);
  const unit = prefix === "" ? `${name}.scope` : `${prefix}-${name}.scope`;
  return cleanPath(`${expandSlice(slice || DEFAULT_SYSTEMD_SLICE)}/${unit}`);
}

/**
 * Parses `/proc/<pid>/cgroup`: controller → path. v1 lines give each of their
 * controllers (and `name=systemd`); the v2 line (`0::/path`) gives the key "".
 */
export function parseProcCgroup(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split("\n")) {
    const first = line.indexOf(":");
    const second = line.indexOf(":", first + 1);
    if (first < 0 || second < 0) continue;
    const controllers = line.slice(first + 1, second);
    const path = line.slice(second + 1);
    if (controllers === "") out.set("", path);
    else for (const c of controllers.split(",")) out.set(c, path);
  }
  return out;
}

/** Parses a flat keyed file (`key value` per line: memory.stat, cpu.stat, memory.events…). */
export function parseKeyedFile(text: string): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (const line of text.split("\n")) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value !== undefined && /^\d+$/.test(value)) out.set(key, BigInt(value));
  }
  return out;
}

/** Parses a single-value file: a decimal, or "max" (→ {@linkcode UINT64_MAX}). */
export function parseUint(text: string | undefined): bigint | undefined {
  const value = text?.trim();
  if (value === undefined) return undefined;
  if (value === V2_MAX) return UINT64_MAX;
  return /^\d+$/.test(value) ? BigInt(value) : undefined;
}

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

/** A limit as a v1 file takes it: negative (or beyond 2^53, i.e. huge) → "-1". */
function v1Limit(n: number): string {
  return n < 0 || !Number.isSafeInteger(n) ? V1_UNLIMITED : String(n);
}

/** A limit as a v2 file takes it: negative (or beyond 2^53) → "max". */
function v2Limit(n: number): string {
  return n < 0 || !Number.isSafeInteger(n) ? V2_MAX : String(n);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function why(err: unknown): string {
  if (err instanceof Deno.errors.NotFound) return "no such file (controller not available?)";
  return (err as Error)?.message ?? String(err);
}

/** Reads a control file; undefined if it does not exist. */
async function readControl(dir: string, file: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(`${dir}/${file}`);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw new Error(`cannot read ${dir}/${file}: ${why(err)}`);
  }
}

/** Writes a control file, which must exist (cgroupfs creates them; never create one). */
async function writeControl(dir: string, file: string, value: string): Promise<void> {
  try {
    await Deno.writeTextFile(`${dir}/${file}`, value, { create: false });
  } catch (err) {
    throw new Error(`cannot write "${value}" to ${dir}/${file}: ${why(err)}`);
  }
}

/** A process's state letter and wait channel, for error messages ("R", "D folio_wait"…). */
async function procState(pid: number): Promise<string> {
  const state = procStat(pid)?.state || "gone";
  const wchan = await Deno.readTextFile(`/proc/${pid}/wchan`).catch(() => "");
  const comm = (await Deno.readTextFile(`/proc/${pid}/comm`).catch(() => "")).trim();
  return [state, wchan && wchan !== "0" ? wchan : "", comm].filter(Boolean).join(" ");
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Options of {@linkcode CgroupManager}. */
export interface CgroupManagerOptions {
  /** Where the hierarchies are mounted; default {@linkcode DEFAULT_CGROUP_ROOT}. */
  root?: string;
  /** The cgroup version; detected from `root` by default. */
  version?: CgroupVersion;
  /** The text of `/proc/self/cgroup` (the shim's own cgroups); read when first needed. */
  selfCgroup?: string;
}

/** Finds and creates task cgroups on this host. */
export class CgroupManager {
  /** Where the hierarchies are mounted. */
  readonly root: string;
  #version: CgroupVersion | undefined;
  #selfText: string | undefined;
  #self: Map<string, string> | undefined;

  /** A manager for the hierarchies under `options.root`. */
  constructor(options: CgroupManagerOptions = {}) {
    this.root = options.root ?? DEFAULT_CGROUP_ROOT;
    this.#version = options.version;
    this.#selfText = options.selfCgroup;
  }

  /** The cgroup version in use. */
  get version(): CgroupVersion {
    return this.#version ??= detectCgroupVersion(this.root);
  }

  /** The shim's own cgroup in the hierarchy of `controller` ("" for v2). */
  #own(controller: string): string {
    if (this.#self === undefined) {
      let text = this.#selfText;
      if (text === undefined) {
        try {
          text = Deno.readTextFileSync(PROC_SELF_CGROUP);
        } catch {
          text = "";
        }
      }
      this.#self = parseProcCgroup(text);
    }
    return this.#self.get(controller) ?? "/";
  }

  /**
   * The cgroup of task `id` (nothing is created): one directory per v1 controller
   * that is mounted (co-mounted controllers share one), or the v2 directory.
   *
   * @throws {ShimError} INVALID_ARGUMENT for a malformed `cgroupsPath`
   */
  locate(cgroupsPath: string | undefined, id: string): TaskCgroup {
    const dirs = new Map<string, string>();
    const pathIn = (controller: string) => {
      const path = taskCgroupPath(cgroupsPath, id, this.#own(controller));
      if (path === "/") {
        throw invalidArgument(`cgroupsPath "${cgroupsPath}" names a root cgroup, not a task's`);
      }
      return path;
    };
    if (this.version === 2) {
      dirs.set("", `${this.root}${pathIn("")}`);
      return new TaskCgroup(2, this.root, dirs);
    }
    const mounts = new Map<string, string>(); // real mount point → its name under root
    for (const controller of V1_CONTROLLERS) {
      let real: string;
      try {
        real = Deno.realPathSync(`${this.root}/${controller}`);
      } catch {
        continue; // not mounted on this host
      }
      const mount = mounts.get(real) ?? controller;
      mounts.set(real, mount);
      dirs.set(controller, `${this.root}/${mount}${pathIn(controller)}`);
    }
    return new TaskCgroup(1, this.root, dirs);
  }

  /**
   * Creates the cgroup of task `id` and applies `resources` to it. On failure nothing
   * new is left behind.
   *
   * @throws {ShimError} INVALID_ARGUMENT for a malformed path or resources
   * @throws {Error} naming the directory or file when the kernel refuses
   */
  async create(
    cgroupsPath: string | undefined,
    id: string,
    resources?: LinuxResources,
  ): Promise<TaskCgroup> {
    const cgroup = this.locate(cgroupsPath, id);
    if (cgroup.dirs.length === 0) {
      throw new Error(`no cgroup hierarchy of ${V1_CONTROLLERS.join(", ")} under ${this.root}`);
    }
    const created: string[] = [];
    try {
      for (const dir of cgroup.dirs) {
        if (!(await exists(dir))) created.push(dir);
        try {
          await Deno.mkdir(dir, { recursive: true });
        } catch (err) {
          throw new Error(`cannot create cgroup ${dir}: ${why(err)}`);
        }
      }
      if (cgroup.version === 2) await cgroup.enableControllers();
      if (resources) await cgroup.apply(resources);
    } catch (err) {
      for (const dir of created) await Deno.remove(dir).catch(() => {});
      throw err;
    }
    return cgroup;
  }
}

/** A `Metrics` message of {@linkcode MetricsType} as a plain object (uint64s as bigint). */
export interface CgroupMetrics {
  /** {@linkcode MetricsType.V1} or {@linkcode MetricsType.V2}. */
  typeName: string;
  /** The message's fields, snake_case as in the .proto. */
  metrics: Record<string, unknown>;
}

/** One task's cgroup: its directories, limits, counters and removal. */
export class TaskCgroup {
  /** The cgroup version. */
  readonly version: CgroupVersion;
  /** The hierarchies' mount root. */
  readonly root: string;
  #dirs: Map<string, string>;

  /**
   * @param dirs controller → directory (v1), or "" → the directory (v2)
   */
  constructor(version: CgroupVersion, root: string, dirs: Map<string, string>) {
    this.version = version;
    this.root = root;
    this.#dirs = dirs;
  }

  /**
   * The cgroup named `name` beside this one: same parent in every hierarchy.
   * Nothing is created (see {@linkcode make}).
   */
  sibling(name: string): TaskCgroup {
    if (name === "" || name === "." || name === ".." || name.includes("/")) {
      throw new Error(`"${name}" is not a cgroup name`);
    }
    const dirs = new Map<string, string>();
    for (const [key, dir] of this.#dirs) dirs.set(key, `${parentDir(dir)}/${name}`);
    return new TaskCgroup(this.version, this.root, dirs);
  }

  /** Creates the directories that do not exist yet (their parents must). */
  async make(): Promise<void> {
    for (const dir of this.dirs) {
      try {
        await Deno.mkdir(dir);
      } catch (err) {
        if (err instanceof Deno.errors.AlreadyExists) continue;
        throw new Error(`cannot create cgroup ${dir}: ${why(err)}`);
      }
    }
  }

  /**
   * Takes over the processes of `other`, a sibling cgroup, by renaming its
   * directories onto this cgroup's, which must hold no process (just created), and
   * applying `resources` again. rename(2) moves a cgroup with its processes at once,
   * where writing a pid to `cgroup.procs` waits for the kernel (an RCU grace period,
   * ~10 ms on cgroup v1). Only cgroup v1 renames cgroups: on v2, and when `other`
   * is not a sibling in every hierarchy, returns false without changing anything.
   *
   * @throws {Error} naming the directory when the kernel refuses; this cgroup's
   *   directories may then be gone (see {@linkcode make})
   */
  async adopt(other: TaskCgroup, resources?: LinuxResources): Promise<boolean> {
    if (this.version !== 1 || other.version !== 1 || other.#dirs.size !== this.#dirs.size) {
      return false;
    }
    const moves: [string, string][] = [];
    for (const [key, dir] of this.#dirs) {
      const from = other.#dirs.get(key);
      if (from === undefined || parentDir(from) !== parentDir(dir)) return false;
      if (!moves.some(([, to]) => to === dir)) moves.push([from, dir]);
    }
    for (const [from, to] of moves) {
      try {
        await Deno.remove(to);
        await Deno.rename(from, to);
      } catch (err) {
        throw new Error(`cannot rename cgroup ${from} to ${to}: ${why(err)}`);
      }
    }
    if (resources) await this.apply(resources);
    return true;
  }

  /** The distinct directories of this cgroup. */
  get dirs(): string[] {
    return [...new Set(this.#dirs.values())];
  }

  /** The directory of `controller` (v1), or the one directory (v2). */
  dir(controller: string): string | undefined {
    return this.version === 2 ? this.#dirs.get("") : this.#dirs.get(controller);
  }

  #need(controller: string): string {
    const dir = this.dir(controller);
    if (dir === undefined) {
      throw new Error(`the ${controller} cgroup controller is not mounted under ${this.root}`);
    }
    return dir;
  }

  /**
   * v2: enables {@linkcode V2_CONTROLLERS} (those available) in the subtree_control
   * of every ancestor, root included, so that the task's cgroup has their files.
   * Refusals (an ancestor with processes of its own) are left for `apply` to report.
   */
  async enableControllers(): Promise<void> {
    const dir = this.dir("");
    if (dir === undefined) return;
    const parts = dir.slice(this.root.length).split("/").filter(Boolean);
    let ancestor = this.root;
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

  /**
   * Applies `resources` (see {@linkcode LinuxResources}) the way runc does for each
   * version; fields left out are left as they are.
   *
   * @throws {ShimError} INVALID_ARGUMENT for values that cannot be expressed
   * @throws {Error} naming the file when the kernel refuses a value
   */
  apply(resources: LinuxResources): Promise<void> {
    return this.version === 2 ? this.#applyV2(resources) : this.#applyV1(resources);
  }

  async #applyV1(r: LinuxResources): Promise<void> {
    if (r.unified && Object.keys(r.unified).length > 0) {
      throw invalidArgument("unified (cgroup v2) resources given, but this host uses cgroup v1");
    }
    const mem = r.memory ?? {};
    const limit = mem.limit || undefined;
    let swap = mem.swap || undefined;
    if (limit !== undefined || swap !== undefined || mem.reservation) {
      const dir = this.#need("memory");
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
      const dir = this.#need("cpu");
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
    await this.#applyPids(r);
  }

  async #applyV2(r: LinuxResources): Promise<void> {
    const dir = this.#need("");
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
          if (!(await exists(`${dir}/${CgroupFile.SWAP_MAX}`)) && (swap === -1 || swap === 0)) {
            // nothing to do
          } else {
            throw err;
          }
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
      let max = cpu.quota && cpu.quota > 0 ? String(cpu.quota) : V2_MAX;
      if (cpu.period) max += ` ${cpu.period}`;
      await writeControl(dir, CgroupFile.CPU_MAX, max);
    }
    await this.#applyPids(r);
    for (const [file, value] of Object.entries(r.unified ?? {})) {
      if (file.includes("/") || file.startsWith(".")) {
        throw invalidArgument(`unified resource "${file}" is not a cgroup file name`);
      }
      await writeControl(dir, file, value);
    }
  }

  async #applyPids(r: LinuxResources): Promise<void> {
    const limit = r.pids?.limit;
    if (!limit) return;
    await writeControl(this.#need("pids"), CgroupFile.PIDS_MAX, limit > 0 ? String(limit) : "max");
  }

  /**
   * Moves process `pid` (all its threads) into this cgroup. Memory it already uses
   * stays charged where it was (the kernel's default): only later allocations count.
   *
   * @throws {Error} naming the directory when the kernel refuses
   */
  async addProcess(pid: number): Promise<void> {
    for (const dir of this.dirs) {
      try {
        await Deno.writeTextFile(`${dir}/${CgroupFile.PROCS}`, String(pid), {
          append: true,
          create: false,
        });
      } catch (err) {
        throw new Error(`cannot move pid ${pid} into cgroup ${dir}: ${why(err)}`);
      }
    }
  }

  /** The pids in this cgroup (any of its directories). */
  async pids(): Promise<number[]> {
    const pids = new Set<number>();
    for (const dir of this.dirs) {
      const text = await readControl(dir, CgroupFile.PROCS).catch(() => undefined);
      for (const line of (text ?? "").split("\n")) if (line.trim()) pids.add(Number(line));
    }
    return [...pids].sort((a, b) => a - b);
  }

  /**
   * How many processes the kernel's OOM killer killed in this cgroup (v1
   * `memory.oom_control`, v2 `memory.events`: `oom_kill`); 0 if it does not say.
   */
  async oomKillCount(): Promise<number> {
    const dir = this.dir("memory");
    if (dir === undefined) return 0;
    const file = this.version === 2 ? CgroupFile.MEMORY_EVENTS : CgroupFile.MEMORY_OOM_CONTROL;
    const text = await readControl(dir, file);
    return Number(parseKeyedFile(text ?? "").get("oom_kill") ?? 0n);
  }

  /** The cgroup's metrics, as the runc shim's Stats returns them for this version. */
  metrics(): Promise<CgroupMetrics> {
    return this.version === 2 ? this.#metricsV2() : this.#metricsV1();
  }

  async #metricsV1(): Promise<CgroupMetrics> {
    const m: Record<string, unknown> = {};
    const read = (dir: string, file: string) => readControl(dir, file);
    const pids = this.dir("pids");
    if (pids !== undefined) {
      const max = (await read(pids, CgroupFile.PIDS_MAX))?.trim();
      m.pids = {
        current: parseUint(await read(pids, CgroupFile.PIDS_CURRENT)) ?? 0n,
        // containerd/cgroups reports v1 "max" as 0.
        limit: max === undefined || max === V2_MAX ? 0n : parseUint(max) ?? 0n,
      };
    }
    const cpuacct = this.dir("cpuacct");
    const cpuDir = this.dir("cpu");
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
    const mem = this.dir("memory");
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
      m.memory_oom_control = {
        oom_kill_disable: oom.get("oom_kill_disable") ?? 0n,
        under_oom: oom.get("under_oom") ?? 0n,
        oom_kill: oom.get("oom_kill") ?? 0n,
      };
    }
    return { typeName: MetricsType.V1, metrics: m };
  }

  async #metricsV2(): Promise<CgroupMetrics> {
    const dir = this.#need("");
    const read = (file: string) => readControl(dir, file);
    const uint = async (file: string) => parseUint(await read(file)) ?? 0n;
    const m: Record<string, unknown> = {
      pids: {
        current: await uint(CgroupFile.PIDS_CURRENT),
        limit: await uint(CgroupFile.PIDS_MAX),
      },
    };
    const cpu = parseKeyedFile(await read(CgroupFile.CPU_STAT) ?? "");
    m.cpu = {
      usage_usec: cpu.get("usage_usec") ?? 0n,
      user_usec: cpu.get("user_usec") ?? 0n,
      system_usec: cpu.get("system_usec") ?? 0n,
      nr_periods: cpu.get("nr_periods") ?? 0n,
      nr_throttled: cpu.get("nr_throttled") ?? 0n,
      throttled_usec: cpu.get("throttled_usec") ?? 0n,
    };
    const stat = parseKeyedFile(await read(CgroupFile.MEMORY_STAT) ?? "");
    const memory: Record<string, unknown> = {};
    for (const key of CGROUPS_V2_MEMORY_STAT_KEYS) {
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
      const e = parseKeyedFile(events);
      m.memory_events = {
        low: e.get("low") ?? 0n,
        high: e.get("high") ?? 0n,
        max: e.get("max") ?? 0n,
        oom: e.get("oom") ?? 0n,
        oom_kill: e.get("oom_kill") ?? 0n,
      };
    }
    return { typeName: MetricsType.V2, metrics: m };
  }

  /**
   * Removes the cgroup's directories (only the task's own: parents such as the
   * namespace's stay, as with runc). A directory that still holds processes (a
   * runner that is exiting) is retried until `timeoutMs`; one already gone is fine.
   *
   * @throws {Error} naming the directory and the pids still in it
   */
  async remove(timeoutMs: number = DEFAULT_REMOVE_TIMEOUT_MS): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const dir of this.dirs) {
      for (;;) {
        try {
          await Deno.remove(dir);
          break;
        } catch (err) {
          if (err instanceof Deno.errors.NotFound) break;
          if (err instanceof Deno.errors.Busy && Date.now() < deadline) {
            await sleep(REMOVE_RETRY_MS);
            continue;
          }
          const pids = await this.pids();
          const states = await Promise.all(
            pids.map(async (pid) => `${pid} (${await procState(pid)})`),
          );
          const held = pids.length > 0 ? ` (pids still in it: ${states.join(", ")})` : "";
          throw new Error(`cannot remove cgroup ${dir}: ${why(err)}${held}`);
        }
      }
    }
  }
}
