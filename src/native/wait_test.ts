import assert from "node:assert/strict";
import { kill, PR_SET_CHILD_SUBREAPER, prctl } from "../sys/libc.ts";
import { decodeWaitStatus, procParent, UNKNOWN_EXIT_STATUS, waitForExit } from "./wait.ts";

Deno.test("wait statuses: exit codes stay, deaths by signal N are 128+N", () => {
  assert.equal(decodeWaitStatus(0), 0);
  assert.equal(decodeWaitStatus(42 << 8), 42);
  assert.equal(decodeWaitStatus(255 << 8), 255);
  assert.equal(decodeWaitStatus(9), 137, "SIGKILL");
  assert.equal(decodeWaitStatus(15), 143, "SIGTERM");
  assert.equal(decodeWaitStatus(0x80 | 11), 139, "SIGSEGV with a core dump");
  assert.throws(() => decodeWaitStatus((19 << 8) | 0x7f), /stopped or continued/);
  assert.throws(() => decodeWaitStatus(0xffff), /stopped or continued/);
});

/**
 * Starts `script` in the background of a shell that exits at once, so that the
 * script's process is orphaned and adopted by this (subreaper) process.
 */
async function orphan(script: string): Promise<number> {
  const out = await new Deno.Command("sh", {
    args: ["-c", `sh -c '${script}' >/dev/null 2>&1 </dev/null & echo $!`],
    stdout: "piped",
  }).output();
  const pid = Number(new TextDecoder().decode(out.stdout).trim());
  assert.ok(pid > 0);
  assert.equal(procParent(pid)?.ppid, Deno.pid, "the orphan was adopted");
  return pid;
}

/** Runs `fn` with this process as a child subreaper (as the shim server is). */
async function asSubreaper(fn: () => Promise<void>): Promise<void> {
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  try {
    await fn();
  } finally {
    prctl(PR_SET_CHILD_SUBREAPER, 0);
  }
}

Deno.test("an adopted process is reaped with its status; Deno's own child handling does not steal it", async () => {
  await asSubreaper(async () => {
    const pid = await orphan("sleep 0.5; exit 7");
    const waiting = waitForExit(pid);
    // Meanwhile Deno spawns and reaps children of its own (its SIGCHLD handling).
    const signals = () => {};
    Deno.addSignalListener("SIGCHLD", signals);
    try {
      for (let i = 0; i < 10; i++) {
        assert.equal((await new Deno.Command("true").output()).code, 0);
      }
      const child = new Deno.Command("sleep", { args: ["0.2"] }).spawn();
      assert.equal((await child.status).code, 0);
    } finally {
      Deno.removeSignalListener("SIGCHLD", signals);
    }
    assert.equal(await waiting, 7);
    assert.equal(procParent(pid), undefined, "reaped: no zombie is left");
  });
});

Deno.test("an adopted process killed by a signal ends with 128+signal", async () => {
  await asSubreaper(async () => {
    const pid = await orphan("exec sleep 30");
    const waiting = waitForExit(pid);
    kill(pid, 9);
    assert.equal(await waiting, 137);
    const term = await orphan("exec sleep 30");
    const waitingTerm = waitForExit(term);
    kill(term, 15);
    assert.equal(await waitingTerm, 143);
  });
});

Deno.test("a process that is not our child is polled until gone, status unknown", async () => {
  const child = new Deno.Command("sleep", { args: ["0.3"] }).spawn();
  const lines: string[] = [];
  const status = await waitForExit(child.pid, {
    waitpid: () => Promise.resolve({ pid: -1, status: 0 }),
    self: 1, // pretend to be someone else: the pid is not "ours"
    pollMs: 20,
    log: (line) => lines.push(line),
  });
  assert.equal(status, UNKNOWN_EXIT_STATUS);
  assert.match(lines.join("\n"), new RegExp(`pid ${child.pid} cannot be reaped`));
  await child.status;
});
