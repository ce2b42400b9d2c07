/**
 * The `delete` action: containerd runs it after every task teardown and when a
 * server died. It cleans up what a dead server may have left (the guest process, a
 * native task's runc container, the rootfs mount, the task's cgroup, a stale socket)
 * and answers a `DeleteResponse` on stdout.
 *
 * After a task the server deleted cleanly (its `BundleFile.CLEANED` is in the bundle and
 * its slot is gone) there is nothing left to clean: the action answers at once and
 * loads none of the cleanup code. It runs on the critical path of every
 * `ctr run --rm` and every pod teardown, so it only uses synchronous file calls and
 * no timers (both cost milliseconds on first use in a fresh Deno process).
 *
 * @module
 */

import { encodeDeleteResponse } from "../proto/gen/task.ts";
import type { ShimFlags } from "./flags.ts";
import { unmountAll } from "../sys/mount.ts";
import { baseName, parentDir } from "../sys/path.ts";
import { writeAllSync } from "../sys/write_all.ts";
import { removeSlot, SLOT_PREFIX, sweepWarmCgroups } from "../runner/slot.ts";
import { RUNNER_ACTION } from "../wasm/runner_protocol.ts";
import { BundleFile, bundlePath } from "../oci/bundle.ts";

/**
 * How long cleaning up after a dead server may wait for killed guests and their
 * cgroup (containerd gives the `delete` action 5 s in all).
 */
const CLEANUP_BUDGET_MS = 4_000;

/** Exit status reported for a task whose server is gone: 128 + SIGKILL. */
export const DELETED_EXIT_STATUS = 137;

/**
 * The `DeleteResponse` of `delete`: the task's pid, 128+SIGKILL (as runc's shim
 * answers for a task it cleans up), and `ms` as the exit time.
 */
export function deleteAnswer(pid: number, ms: number = Date.now()): Uint8Array {
  const seconds = Math.floor(ms / 1000);
  return encodeDeleteResponse({
    pid,
    exit_status: DELETED_EXIT_STATUS,
    exited_at: { seconds, nanos: (ms - seconds * 1000) * 1_000_000 },
  });
}

function readOptional(path: string): string {
  try {
    return Deno.readTextFileSync(path).trim();
  } catch {
    return "";
  }
}

/**
 * The names in directory `dir` (empty if it cannot be read). Used instead of
 * stat calls that fail: in a fresh Deno process the first thrown error costs about
 * a millisecond.
 */
function namesIn(dir: string): Set<string> {
  const names = new Set<string>();
  try {
    for (const entry of Deno.readDirSync(dir)) names.add(entry.name);
  } catch { /* gone or unreadable: empty */ }
  return names;
}

/** How long the background removal of a cgroup held by unreaped guests keeps trying. */
const LATE_REMOVAL_TRIES = 300;

/**
 * Removes the directories `dirs` in the background, once they can be: a cgroup v1
 * directory stays busy until its exited processes are reaped, which, their server
 * being gone, the node's init does in its own time.
 */
function removeLater(dirs: string[]): void {
  const script = 'i=0; while [ "$i" -lt ' + LATE_REMOVAL_TRIES + " ]; do left=0; " +
    'for d; do [ -d "$d" ] && ! rmdir "$d" 2>/dev/null && left=1; done; ' +
    '[ "$left" = 0 ] && exit 0; sleep 0.2; i=$((i + 1)); done';
  new Deno.Command("/bin/sh", {
    args: ["-c", script, "sh", ...dirs],
    stdin: "null",
    stdout: "null",
    stderr: "null",
    detached: true,
  }).spawn().unref();
}

/**
 * True if `pid` is a guest runner of this shim for task `id`, or the warm runner
 * of its slot (guards against pid reuse).
 */
function isOurGuest(pid: number, id: string, slot: string): boolean {
  const cmdline = readOptional(`/proc/${pid}/cmdline`);
  const argv = cmdline.split("\0");
  const slotWord = slot ? SLOT_PREFIX + baseName(slot) : "";
  return argv.includes(RUNNER_ACTION) &&
    (argv.includes(id) || (!!slotWord && argv.includes(slotWord)));
}

/** Runs `delete`. Always answers; problems go to stderr, which containerd logs. */
export async function deleteAction(flags: ShimFlags): Promise<number> {
  const bundle = flags.bundle || Deno.cwd();
  const files = namesIn(bundle);
  const read = (name: string) => files.has(name) ? readOptional(`${bundle}/${name}`) : "";
  const pid = Number(read(BundleFile.INIT_PID)) || 0;
  const slot = read(BundleFile.SLOT);
  const slotGone = slot === "" || !namesIn(parentDir(slot)).has(baseName(slot));
  const cleaned = files.has(BundleFile.CLEANED) && slotGone;
  const problems = cleaned ? [] : await cleanUp(bundle, flags.id, pid, slot);
  writeAllSync(Deno.stdout, deleteAnswer(pid));
  if (problems.length > 0) {
    writeAllSync(Deno.stderr, new TextEncoder().encode(problems.join("\n") + "\n"));
  }
  return 0;
}

/**
 * Cleans up after a server that did not delete the task itself (it died, or its
 * cleanup failed); returns the problems met.
 */
async function cleanUp(bundle: string, id: string, pid: number, slot: string): Promise<string[]> {
  const [{ CgroupManager }, { readSpec }, { isListening, stripUnix }, { deleteMarkedContainer }] =
    await Promise.all([
      import("../cgroup/cgroup.ts"),
      import("../oci/spec.ts"),
      import("./socket_path.ts"),
      import("../native/runc.ts"),
    ]);
  const started = Date.now();
  const problems: string[] = [];
  const killed: number[] = [];
  const kill = (victim: number) => {
    try {
      Deno.kill(victim, "SIGKILL");
      killed.push(victim);
    } catch (err) {
      problems.push(`killing guest ${victim}: ${(err as Error).message}`);
    }
  };
  if (pid > 0 && isOurGuest(pid, id, slot)) kill(pid);
  // A native task (the bundle's runc marker): runc kills what is left of it and
  // removes its cgroup and state; before the unmount below.
  await deleteMarkedContainer(bundle, id).catch((err) =>
    problems.push(`native task ${id}: ${(err as Error).message}`)
  );
  // The task's cgroup, from the spec as Create read it.
  const spec = await readSpec(bundle).catch(() => undefined);
  let cgroup;
  try {
    cgroup = spec && new CgroupManager().locate(spec.cgroupsPath, id);
  } catch (err) {
    problems.push((err as Error).message);
  }
  // Warm runners' cgroups beside it that a dead server left (see src/runner/pool.ts).
  for (const dir of cgroup?.dirs ?? []) sweepWarmCgroups(parentDir(dir));
  // Any other runner of this task still in its cgroup goes too.
  for (const other of await cgroup?.pids().catch(() => []) ?? []) {
    if (other !== pid && isOurGuest(other, id, slot)) kill(other);
  }
  if (slot !== "" && !removeSlot(slot)) problems.push(`slot ${slot}: could not remove it`);
  try {
    unmountAll(bundlePath(bundle, BundleFile.ROOTFS));
  } catch (err) {
    problems.push((err as Error).message);
  }
  // Removed once what was killed is gone and reaped (remove waits for that), within
  // containerd's budget for this action.
  try {
    await cgroup?.remove(Math.max(started + CLEANUP_BUDGET_MS - Date.now(), 500));
  } catch (err) {
    // Held only by the guests killed here, exiting or not reaped yet (an exited
    // process is no longer listed, but holds a v1 cgroup until reaped): removed when
    // they are gone.
    const left = await cgroup?.pids().catch(() => [0]) ?? [0];
    if (cgroup && left.every((pid) => killed.includes(pid))) removeLater(cgroup.dirs);
    else problems.push((err as Error).message);
  }
  const address = stripUnix(readOptional(bundlePath(bundle, BundleFile.ADDRESS)));
  if (address !== "" && !(await isListening(address))) {
    await Deno.remove(address).catch(() => {});
  }
  return problems;
}
