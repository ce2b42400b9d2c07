/**
 * The `delete` action: containerd runs it after every task teardown and when a
 * server died. It cleans up what a dead server may have left (the guest process, a
 * native task's runc container, the rootfs mount, the task's cgroup, a stale socket)
 * and answers a `DeleteResponse` on stdout.
 *
 * @module
 */

import { encodeDeleteResponse } from "../protocol/wire.ts";
import { CgroupManager } from "../task/cgroup.ts";
import { unmountAll } from "../task/mount.ts";
import { readSpec } from "../task/spec.ts";
import type { ShimFlags } from "./flags.ts";
import { isListening, stripUnix } from "./socket_path.ts";
import { deleteMarkedContainer } from "../native/runc.ts";
import { removeSlot, SLOT_FILE, SLOT_PREFIX } from "../wasm/slot.ts";

/** Exit status reported for a task whose server is gone: 128 + SIGKILL. */
export const DELETED_EXIT_STATUS = 137;

/** The marker every guest runner has in its command line (see src/wasm/runner.ts). */
export const GUEST_ACTION = "guest";

async function readOptional(path: string): Promise<string> {
  try {
    return (await Deno.readTextFile(path)).trim();
  } catch {
    return "";
  }
}

/**
 * True if `pid` is a guest runner of this shim for task `id`, or the warm runner
 * of its slot (guards against pid reuse).
 */
async function isOurGuest(pid: number, id: string, slot: string): Promise<boolean> {
  const cmdline = await readOptional(`/proc/${pid}/cmdline`);
  const argv = cmdline.split("\0");
  const slotWord = slot ? SLOT_PREFIX + slot.slice(slot.lastIndexOf("/") + 1) : "";
  return argv.includes(GUEST_ACTION) &&
    (argv.includes(id) || (!!slotWord && argv.includes(slotWord)));
}

/** Runs `delete`. Always answers; problems go to stderr, which containerd logs. */
export async function deleteAction(flags: ShimFlags): Promise<number> {
  const bundle = flags.bundle || Deno.cwd();
  const problems: string[] = [];
  const pid = Number(await readOptional(`${bundle}/init.pid`)) || 0;
  const slot = await readOptional(`${bundle}/${SLOT_FILE}`);
  const kill = (victim: number) => {
    try {
      Deno.kill(victim, "SIGKILL");
    } catch (err) {
      problems.push(`killing guest ${victim}: ${(err as Error).message}`);
    }
  };
  if (pid > 0 && await isOurGuest(pid, flags.id, slot)) kill(pid);
  // A native task (the bundle's runc marker): runc kills what is left of it and
  // removes its cgroup and state; before the unmount below.
  await deleteMarkedContainer(bundle, flags.id).catch((err) =>
    problems.push(`native task ${flags.id}: ${(err as Error).message}`)
  );
  // The task's cgroup, from the spec as Create read it.
  const spec = await readSpec(bundle).catch(() => undefined);
  let cgroup;
  try {
    cgroup = spec && new CgroupManager().locate(spec.cgroupsPath, flags.id);
  } catch (err) {
    problems.push((err as Error).message);
  }
  // Any other runner of this task still in its cgroup goes too.
  for (const other of await cgroup?.pids().catch(() => []) ?? []) {
    if (other !== pid && await isOurGuest(other, flags.id, slot)) kill(other);
  }
  if (slot !== "" && !removeSlot(slot)) problems.push(`slot ${slot}: could not remove it`);
  try {
    unmountAll(`${bundle}/rootfs`);
  } catch (err) {
    problems.push((err as Error).message);
  }
  // Removed once the guest is gone (remove waits for that).
  await cgroup?.remove().catch((err) => problems.push((err as Error).message));
  const address = stripUnix(await readOptional(`${bundle}/address`));
  if (address !== "" && !(await isListening(address))) {
    await Deno.remove(address).catch(() => {});
  }
  const ms = Date.now();
  const seconds = Math.floor(ms / 1000);
  const bytes = encodeDeleteResponse({
    pid,
    exit_status: DELETED_EXIT_STATUS,
    exited_at: { seconds, nanos: (ms - seconds * 1000) * 1_000_000 },
  });
  await Deno.stdout.write(bytes);
  if (problems.length > 0) {
    await Deno.stderr.write(new TextEncoder().encode(problems.join("\n") + "\n"));
  }
  return 0;
}
