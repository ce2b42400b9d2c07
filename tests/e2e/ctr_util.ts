/**
 * Small helpers the end-to-end suites share: polling, `ctr task ls` parsing, task
 * removal and /proc lookups.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Containerd } from "./harness.ts";

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** True if something exists at `path`. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Asserts a ctr result succeeded, quoting its stderr. */
export function ok(r: { code: number; stderr: string }, what: string): void {
  assert.equal(r.code, 0, `${what}: ${r.stderr}`);
}

/** Polls `check` until it is true; throws naming `what` after `ms`. */
export async function waitFor(
  what: string,
  check: () => Promise<boolean>,
  ms = 10_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

/** One row of `ctr task ls`. */
export interface TaskRow {
  pid: number;
  status: string;
}

/** The tasks `ctr task ls` lists, by id. */
export async function taskList(cd: Containerd): Promise<Map<string, TaskRow>> {
  const r = await cd.ctr(["task", "ls"]);
  const out = new Map<string, TaskRow>();
  for (const line of r.stdout.trim().split("\n").slice(1)) {
    const [id, pid, status] = line.trim().split(/\s+/);
    if (id) out.set(id, { pid: Number(pid), status });
  }
  return out;
}

/** Polls `ctr task ls` until task `id` shows `status`; resolves with its pid. */
export async function waitStatus(
  cd: Containerd,
  id: string,
  status: string,
  ms = 10_000,
): Promise<number> {
  let pid = 0;
  await waitFor(`task ${id} to become ${status}`, async () => {
    const row = (await taskList(cd)).get(id);
    pid = row?.pid ?? 0;
    return row?.status === status;
  }, ms);
  return pid;
}

/** Deletes a stopped task and its container, asserting both succeed. */
export async function removeTask(cd: Containerd, id: string): Promise<void> {
  ok(await cd.ctr(["task", "delete", id]), `task delete ${id}`);
  ok(await cd.ctr(["container", "delete", id]), `container delete ${id}`);
}

/** The parent pid of `pid` (from /proc/<pid>/stat). */
export async function parentOf(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

/**
 * A suite's last check: no container left, the shim servers gone (they exit right after
 * containerd's Shutdown; give them a moment), then {@linkcode assertStoppedClean}.
 */
export async function assertNothingLeft(cd: Containerd, tmp: string): Promise<void> {
  const containers = await cd.ctr(["container", "ls", "-q"]);
  assert.equal(containers.stdout.trim(), "", "containers left: " + containers.stdout);
  for (let i = 0; i < 50 && (await cd.leftovers()).processes.length > 0; i++) await sleep(100);
  await assertStoppedClean(cd, tmp);
}

/**
 * Stops containerd, removes `tmp`, and fails if a mount, shim socket, shim process or
 * warm-runner slot was left behind.
 */
export async function assertStoppedClean(cd: Containerd, tmp: string): Promise<void> {
  const left = await cd.stop();
  await Deno.remove(tmp, { recursive: true });
  assert.deepEqual(left.mounts, [], "mounts left");
  assert.deepEqual(left.sockets, [], "sockets left");
  assert.deepEqual(left.processes, [], "processes left");
  assert.deepEqual(left.slots, [], "slots left");
}
