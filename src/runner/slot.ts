/**
 * Slots: the private directories through which a warm guest runner sees its
 * container (see `pool.ts`). Kept apart from the pool so that the `delete`
 * action can clean a slot up without loading the runner code.
 *
 * @module
 */

import { unmountAll } from "../sys/mount.ts";
import { procStat } from "../sys/proc.ts";

/** Default parent directory of the slots. */
export const DEFAULT_SLOT_ROOT = "/run/containerd-shim-wasmtime/slots";
/** The command-line word of a pooled runner before it has a container (see `delete.ts`). */
export const SLOT_PREFIX = "slot-";
/**
 * Name prefix of a warm runner's cgroup (`<prefix><server pid>-<n>`, beside the
 * task cgroups; see `pool.ts`).
 */
export const WARM_CGROUP_PREFIX = "wasmtime-warm-";

/**
 * The entries of `dir` named `<prefix><pid>-…` whose process `<pid>`, the server
 * that made them, is gone.
 */
export function deadServerEntries(dir: string, prefix = ""): Deno.DirEntry[] {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return [];
  }
  return entries.filter((entry) => {
    if (!entry.name.startsWith(prefix)) return false;
    const pid = Number(entry.name.slice(prefix.length).split("-")[0]);
    return Number.isInteger(pid) && pid > 0 && procStat(pid) === undefined;
  });
}

/**
 * Removes the warm cgroups in the cgroup directory `parent` whose server is gone
 * (a server killed with SIGKILL cannot). Ones still holding a process stay.
 */
export function sweepWarmCgroups(parent: string): void {
  for (const entry of deadServerEntries(parent, WARM_CGROUP_PREFIX)) {
    if (!entry.isDirectory) continue;
    try {
      Deno.removeSync(`${parent}/${entry.name}`);
    } catch { /* still has a process, or gone */ }
  }
}

/**
 * Removes a slot: unmounts its rootfs, then removes its (empty) directories. Never
 * removes recursively: a mount that did not come off must not lose the container's
 * files. Returns false if something stayed.
 */
export function removeSlot(slot: string): boolean {
  let ok = true;
  try {
    unmountAll(`${slot}/rootfs`);
  } catch {
    ok = false;
  }
  for (const path of [`${slot}/io/stdout`, `${slot}/io/stderr`, `${slot}/io`, `${slot}/rootfs`]) {
    try {
      Deno.removeSync(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) ok = false;
    }
  }
  try {
    Deno.removeSync(slot);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) ok = false;
  }
  return ok;
}
