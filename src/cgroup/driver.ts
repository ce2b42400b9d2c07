/**
 * The one interface behind which cgroup v1 ({@linkcode ./v1.ts}) and v2
 * ({@linkcode ./v2.ts}) differ. {@linkcode ./cgroup.ts}'s manager picks the
 * implementation once, from the host's hierarchy; a task's cgroup calls it for
 * everything that is not the same on both.
 *
 * @module
 */

import type { LinuxResources } from "../oci/spec.ts";
import { CgroupFile, MAX, writeControl } from "./control.ts";

/** cgroup v1 or v2 (unified). */
export type CgroupVersion = 1 | 2;

/** Type names (and Any type URLs) of the metrics Stats returns, as the runc shim's. */
export const MetricsType = {
  V1: "io.containerd.cgroups.v1.Metrics",
  V2: "io.containerd.cgroups.v2.Metrics",
} as const;

/** A `Metrics` message of {@linkcode MetricsType} as a plain object (uint64s as bigint). */
export interface CgroupMetrics {
  /** {@linkcode MetricsType.V1} or {@linkcode MetricsType.V2}. */
  typeName: string;
  /** The message's fields, snake_case as in the .proto. */
  metrics: Record<string, unknown>;
}

/** A task's cgroup directories, as a version's implementation sees them. */
export interface CgroupDirs {
  /** The hierarchies' mount root. */
  readonly root: string;
  /** The directory of `controller`, if its hierarchy is mounted. */
  dir(controller: string): string | undefined;
  /**
   * The directory of `controller`.
   *
   * @throws {Error} naming the controller when its hierarchy is not mounted
   */
  need(controller: string): string;
}

/** What cgroup v1 and v2 do differently. */
export interface CgroupDriver {
  /** The version implemented. */
  readonly version: CgroupVersion;
  /**
   * The directories of a task's cgroup, keyed as {@linkcode dirKey} looks them up;
   * `pathIn(controller)` is the cgroup's path inside that controller's hierarchy.
   */
  locate(root: string, pathIn: (controller: string) => string): Map<string, string>;
  /** The key of `controller`'s directory in the map {@linkcode locate} returns. */
  dirKey(controller: string): string;
  /** Makes a newly created cgroup usable (v2: enables controllers in its ancestors). */
  prepare(cgroup: CgroupDirs): Promise<void>;
  /**
   * Applies `resources` the way runc does for this version; fields left out are left
   * as they are.
   *
   * @throws {ShimError} INVALID_ARGUMENT for values that cannot be expressed
   * @throws {Error} naming the file when the kernel refuses a value
   */
  apply(cgroup: CgroupDirs, resources: LinuxResources): Promise<void>;
  /** The memory controller's file with the `oom_kill` count. */
  readonly oomFile: string;
  /** The cgroup's metrics, as the runc shim's Stats returns them for this version. */
  metrics(cgroup: CgroupDirs): Promise<CgroupMetrics>;
  /** Whether rename(2) of a cgroup directory moves its processes (only v1 allows it). */
  readonly renamesProcesses: boolean;
}

/** Writes the spec's pids limit (the same file and values in both versions). */
export async function applyPidsLimit(cgroup: CgroupDirs, r: LinuxResources): Promise<void> {
  const limit = r.pids?.limit;
  if (!limit) return;
  await writeControl(cgroup.need("pids"), CgroupFile.PIDS_MAX, limit > 0 ? String(limit) : MAX);
}
