/**
 * Small helpers the end-to-end suites (and the benchmarks) share: polling, a wasi:http
 * proxy under `ctr run`, `ctr task ls` parsing, task removal and /proc lookups.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Containerd, CtrResult } from "./harness.ts";

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

/**
 * Calls `probe` every `everyMs` until it returns a value other than undefined, and
 * returns that. A probe that throws is called again; after `timeoutMs` the error names
 * `what` and the probe's last error.
 */
export async function poll<T>(
  what: string,
  timeoutMs: number,
  probe: () => T | undefined | Promise<T | undefined>,
  everyMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}` +
          (last ? `; last error: ${(last as Error).message ?? last}` : ""),
      );
    }
    await sleep(everyMs);
  }
}

/** Polls `check` until it is true ({@linkcode poll} with a yes/no probe). */
export async function waitFor(
  what: string,
  check: () => Promise<boolean>,
  ms = 10_000,
): Promise<void> {
  await poll(what, ms, async () => (await check()) || undefined);
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

/** A wasi:http proxy started by {@linkcode runProxy}. */
export interface RunningProxy {
  /** `http://<addr>` */
  url: string;
  /** `ctr run`'s result, once the container has ended. */
  running: Promise<CtrResult>;
  /** Sends `signal` to the task and waits for `ctr run` to end. */
  stop(signal?: string): Promise<CtrResult>;
}

/** Options for {@linkcode runProxy}. */
export interface ProxyOptions {
  image: string;
  id: string;
  /** The component's path in the image. */
  wasm: string;
  /** `host:port` to serve on (`WASMTIME_HTTP_PROXY_SOCKET_ADDR`), in the node's network. */
  addr: string;
  /** More `ctr run` options (`--memory-limit …`, `--env …`). */
  runOptions?: string[];
  /** The path asked until it answers; default `/`. */
  probePath?: string;
  /** How long the first answer may take; default 30 s. */
  answerTimeoutMs?: number;
  /** How long `ctr run` may take in all; default 5 min. */
  timeoutMs?: number;
}

/**
 * Starts `wasm` from `image` with `ctr run --rm --net-host` and resolves once it answers
 * HTTP at `addr` (any status); fails at once, with ctr's stderr, if the container ends
 * first.
 */
export async function runProxy(cd: Containerd, opts: ProxyOptions): Promise<RunningProxy> {
  const running = cd.ctr([
    "run",
    "--rm",
    "--net-host",
    "--runtime",
    "io.containerd.wasmtime.v1",
    ...(opts.runOptions ?? []),
    "--env",
    `WASMTIME_HTTP_PROXY_SOCKET_ADDR=${opts.addr}`,
    opts.image,
    opts.id,
    opts.wasm,
  ], { timeoutMs: opts.timeoutMs ?? 300_000 });
  let ended: CtrResult | undefined;
  running.then((r) => ended = r);
  const url = `http://${opts.addr}`;
  const answered = await poll(
    `${opts.id} to answer on ${url}`,
    opts.answerTimeoutMs ?? 30_000,
    async () => {
      if (ended) return false;
      const r = await fetch(`${url}${opts.probePath ?? "/"}`).catch(() => undefined);
      await r?.body?.cancel();
      return r ? true : undefined;
    },
  ).catch(async (err) => {
    await cd.ctr(["task", "kill", "-s", "SIGKILL", opts.id]);
    await running;
    throw err;
  });
  if (!answered) {
    const r = await running;
    throw new Error(`ctr run ${opts.id} ended with ${r.code} before answering: ${r.stderr}`);
  }
  return {
    url,
    running,
    async stop(signal = "SIGINT") {
      await cd.ctr(["task", "kill", "-s", signal, opts.id]);
      return await running;
    },
  };
}
