/**
 * Task cgroups: each task's guest runner is placed in the cgroup its OCI spec names
 * (`linux.cgroupsPath`, resolved by {@linkcode ./paths.ts}), with the spec's
 * `linux.resources` applied — memory, CPU and pids limits — and the cgroup's files
 * are what Stats reports and Update changes.
 *
 * Both cgroup versions are handled, detected as runc does: `<root>/cgroup.controllers`
 * exists → v2 (one unified hierarchy at the root), else v1 (one hierarchy per
 * controller). {@linkcode CgroupManager} picks the version's implementation
 * ({@linkcode ./v1.ts} or {@linkcode ./v2.ts}, behind {@linkcode CgroupDriver}) once;
 * what is the same in both (processes, removal, warm cgroups) is here.
 *
 * The root is injectable ({@linkcode CgroupManagerOptions.root}), so that tests run
 * against fake cgroup directories. This module loads nothing heavy: the `delete`
 * action uses it.
 *
 * @module
 */

import { invalidArgument } from "../errdefs/errors.ts";
import type { LinuxResources } from "../oci/spec.ts";
import { parentDir } from "../sys/path.ts";
import { procStat } from "../sys/proc.ts";
import { CgroupFile, exists, parseKeyedFile, readControl, why } from "./control.ts";
import type { CgroupDirs, CgroupDriver, CgroupMetrics, CgroupVersion } from "./driver.ts";
import { DEFAULT_CGROUP_ROOT, parseProcCgroup, PROC_SELF_CGROUP, taskCgroupPath } from "./paths.ts";
import { v1, V1_CONTROLLERS } from "./v1.ts";
import { v2 } from "./v2.ts";

/** How often {@linkcode TaskCgroup.remove} retries a cgroup that still has processes. */
const REMOVE_RETRY_MS = 20;
/** How long {@linkcode TaskCgroup.remove} waits for the processes to be gone. */
export const DEFAULT_REMOVE_TIMEOUT_MS = 3_000;

/** Detects the cgroup version mounted at `root`: v2 if `cgroup.controllers` is there. */
export function detectCgroupVersion(root: string = DEFAULT_CGROUP_ROOT): CgroupVersion {
  try {
    Deno.statSync(`${root}/${CgroupFile.CONTROLLERS}`);
    return 2;
  } catch {
    return 1;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A process's state letter and wait channel, for error messages ("R", "D folio_wait"…). */
async function procState(pid: number): Promise<string> {
  const state = procStat(pid)?.state || "gone";
  const wchan = await Deno.readTextFile(`/proc/${pid}/wchan`).catch(() => "");
  const comm = (await Deno.readTextFile(`/proc/${pid}/comm`).catch(() => "")).trim();
  return [state, wchan && wchan !== "0" ? wchan : "", comm].filter(Boolean).join(" ");
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
  #driver: CgroupDriver | undefined;
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

  /** The version's implementation, picked once. */
  get #impl(): CgroupDriver {
    return this.#driver ??= this.version === 2 ? v2 : v1;
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
    const pathIn = (controller: string) => {
      const path = taskCgroupPath(cgroupsPath, id, this.#own(controller));
      if (path === "/") {
        throw invalidArgument(`cgroupsPath "${cgroupsPath}" names a root cgroup, not a task's`);
      }
      return path;
    };
    return new TaskCgroup(this.#impl, this.root, this.#impl.locate(this.root, pathIn));
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
      await cgroup.prepare();
      if (resources) await cgroup.apply(resources);
    } catch (err) {
      for (const dir of created) await Deno.remove(dir).catch(() => {});
      throw err;
    }
    return cgroup;
  }
}

/** One task's cgroup: its directories, limits, counters and removal. */
export class TaskCgroup implements CgroupDirs {
  /** The hierarchies' mount root. */
  readonly root: string;
  #driver: CgroupDriver;
  #dirs: Map<string, string>;

  /**
   * @param driver the cgroup version's implementation
   * @param dirs the directories, keyed as `driver.dirKey` names them
   */
  constructor(driver: CgroupDriver, root: string, dirs: Map<string, string>) {
    this.#driver = driver;
    this.root = root;
    this.#dirs = dirs;
  }

  /** The cgroup version. */
  get version(): CgroupVersion {
    return this.#driver.version;
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
    return new TaskCgroup(this.#driver, this.root, dirs);
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
    if (
      !this.#driver.renamesProcesses || other.#driver !== this.#driver ||
      other.#dirs.size !== this.#dirs.size
    ) {
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
    return this.#dirs.get(this.#driver.dirKey(controller));
  }

  /**
   * The directory of `controller`.
   *
   * @throws {Error} naming the controller when its hierarchy is not mounted
   */
  need(controller: string): string {
    const dir = this.dir(controller);
    if (dir === undefined) {
      throw new Error(`the ${controller} cgroup controller is not mounted under ${this.root}`);
    }
    return dir;
  }

  /** Makes the newly created cgroup usable (v2: enables its controllers in its ancestors). */
  prepare(): Promise<void> {
    return this.#driver.prepare(this);
  }

  /**
   * Applies `resources` (see {@linkcode LinuxResources}) the way runc does for each
   * version; fields left out are left as they are.
   *
   * @throws {ShimError} INVALID_ARGUMENT for values that cannot be expressed
   * @throws {Error} naming the file when the kernel refuses a value
   */
  apply(resources: LinuxResources): Promise<void> {
    return this.#driver.apply(this, resources);
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
    const text = await readControl(dir, this.#driver.oomFile);
    return Number(parseKeyedFile(text ?? "").get("oom_kill") ?? 0n);
  }

  /** The cgroup's metrics, as the runc shim's Stats returns them for this version. */
  metrics(): Promise<CgroupMetrics> {
    return this.#driver.metrics(this);
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

/** What {@linkcode joinCgroup} needs of a task's cgroup ({@linkcode TaskCgroup} has it). */
export interface JoinableCgroup<Warm> {
  adopt(other: Warm, resources?: LinuxResources): Promise<boolean>;
  make(): Promise<void>;
  apply(resources: LinuxResources): Promise<void>;
  addProcess(pid: number): Promise<void>;
}

/**
 * Puts process `pid` (a task's runner) into the task's cgroup `task`: by adopting
 * `warm`, the warm cgroup the runner waits in, when a rename can do it (cgroup v1,
 * same parent: see {@linkcode TaskCgroup.adopt}); otherwise by moving the process.
 * A failed rename may have removed the task's directories, so they are made again
 * and `resources` applied again before the process is moved; `log` is told why.
 *
 * @returns how the process got there
 * @throws {Error} naming the directory when the process cannot be moved either
 */
export async function joinCgroup<Warm>(
  task: JoinableCgroup<Warm>,
  pid: number,
  warm: Warm | undefined,
  resources: LinuxResources | undefined,
  log: (line: string) => void = () => {},
): Promise<"adopted" | "moved"> {
  try {
    if (warm !== undefined && await task.adopt(warm, resources)) return "adopted";
  } catch (err) {
    log(`${(err as Error).message}; moving its process instead`);
    await task.make();
    if (resources) await task.apply(resources);
  }
  await task.addProcess(pid);
  return "moved";
}
