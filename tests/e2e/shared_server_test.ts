/**
 * End to end: containers sharing one shim server (the default grouping), a
 * server's idle exit, `WASMTIME_SHIM_GROUPING=container`, and a server killed with
 * SIGKILL while its tasks run (containerd reports them exited and the `delete`
 * action cleans up after it).
 */

import assert from "node:assert/strict";
import { buildImage } from "../../src/oci/image.ts";
import { type Containerd, startContainerd } from "./harness.ts";
import { fixture, installShim } from "./shim_install.ts";

const RUNTIME = "io.containerd.wasmtime.v1";
const opts = { sanitizeOps: false, sanitizeResources: false };

async function withContainerd(
  env: Record<string, string>,
  fn: (cd: Containerd, image: string) => Promise<void>,
): Promise<void> {
  const { binDir } = await installShim();
  const cd = await startContainerd({ shimBinDir: binDir, env });
  const tmp = await Deno.makeTempDir({ prefix: "shim-e2e-shared-" });
  try {
    const built = await buildImage({
      name: "shared-probe",
      outPath: `${tmp}/probe.tar`,
      config: { entrypoint: ["/probe.wasm"] },
      layers: [{ files: [{ path: "/probe.wasm", hostPath: fixture("probe.wasm") }] }],
    });
    await cd.importImage(built.path);
    await fn(cd, built.reference);
  } finally {
    const left = await cd.stop();
    await Deno.remove(tmp, { recursive: true });
    assert.deepEqual(left.mounts, [], "mounts left");
    assert.deepEqual(left.sockets, [], "sockets left");
    assert.deepEqual(left.processes, [], "processes left");
    assert.deepEqual(left.slots, [], "slots left");
  }
}

function ok(r: { code: number; stderr: string }, what: string): void {
  assert.equal(r.code, 0, `${what}: ${r.stderr}`);
}

/** The parent pid of `pid` (the shim server of a guest runner). */
async function parentOf(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

/** Task pids by id, from `ctr task ls`. */
async function taskPids(cd: Containerd): Promise<Map<string, { pid: number; status: string }>> {
  const r = await cd.ctr(["task", "ls"]);
  const out = new Map<string, { pid: number; status: string }>();
  for (const line of r.stdout.trim().split("\n").slice(1)) {
    const [id, pid, status] = line.trim().split(/\s+/);
    if (id) out.set(id, { pid: Number(pid), status });
  }
  return out;
}

async function waitFor(what: string, check: () => Promise<boolean>, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function serverPids(cd: Containerd): Promise<number[]> {
  return (await cd.leftovers()).processes.filter((p) => !p.cmdline.includes("guest"))
    .map((p) => p.pid);
}

Deno.test({
  name: "containers of a namespace share one server, which exits when idle",
  ...opts,
  async fn() {
    await withContainerd({}, async (cd, image) => {
      for (const id of ["s-1", "s-2"]) {
        ok(
          await cd.ctr([
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            image,
            id,
            "/probe.wasm",
            "sleep",
            "60",
          ]),
          `run ${id}`,
        );
      }
      const tasks = await taskPids(cd);
      const parents = await Promise.all(["s-1", "s-2"].map((id) => parentOf(tasks.get(id)!.pid)));
      assert.equal(parents[0], parents[1], "both guests are children of one server");
      assert.deepEqual(await serverPids(cd), [parents[0]]);
      // A third container, run to completion, goes through the same server.
      const r = await cd.ctr([
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        image,
        "s-3",
        "/probe.wasm",
        "hello",
      ]);
      ok(r, "run s-3");
      assert.equal(r.stdout, "hello from wasm\n");
      assert.deepEqual(await serverPids(cd), [parents[0]]);
      for (const id of ["s-1", "s-2"]) {
        ok(await cd.ctr(["task", "kill", "-s", "SIGKILL", id]), `kill ${id}`);
        await waitFor(
          `${id} stopped`,
          async () => (await taskPids(cd)).get(id)?.status === "STOPPED",
        );
        ok(await cd.ctr(["task", "delete", id]), `task delete ${id}`);
        ok(await cd.ctr(["container", "delete", id]), `container delete ${id}`);
      }
      // The harness sets a 1 s idle period: the server and its warm runner go.
      await waitFor(
        "the idle server to exit",
        async () => (await cd.leftovers()).processes.length === 0,
      );
    });
  },
});

Deno.test({
  name: "WASMTIME_SHIM_GROUPING=container gives each container its own server",
  ...opts,
  async fn() {
    await withContainerd({ WASMTIME_SHIM_GROUPING: "container" }, async (cd, image) => {
      for (const id of ["c-1", "c-2"]) {
        ok(
          await cd.ctr([
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            image,
            id,
            "/probe.wasm",
            "sleep",
            "60",
          ]),
          `run ${id}`,
        );
      }
      const tasks = await taskPids(cd);
      const parents = await Promise.all(["c-1", "c-2"].map((id) => parentOf(tasks.get(id)!.pid)));
      assert.notEqual(parents[0], parents[1]);
      for (const id of ["c-1", "c-2"]) {
        ok(await cd.ctr(["task", "kill", "-s", "SIGKILL", id]), `kill ${id}`);
        await waitFor(
          `${id} stopped`,
          async () => (await taskPids(cd)).get(id)?.status === "STOPPED",
        );
        ok(await cd.ctr(["task", "delete", id]), `task delete ${id}`);
        ok(await cd.ctr(["container", "delete", id]), `container delete ${id}`);
      }
      // Each server goes at its Shutdown, without waiting for an idle period.
      await waitFor(
        "servers to exit",
        async () => (await cd.leftovers()).processes.length === 0,
        3_000,
      );
    });
  },
});

Deno.test({
  name: "a server killed with SIGKILL: its tasks end as exited, delete leaves nothing behind",
  ...opts,
  async fn() {
    await withContainerd({}, async (cd, image) => {
      for (const id of ["k-1", "k-2"]) {
        ok(
          await cd.ctr([
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            image,
            id,
            "/probe.wasm",
            "sleep",
            "60",
          ]),
          `run ${id}`,
        );
      }
      const tasks = await taskPids(cd);
      const server = await parentOf(tasks.get("k-1")!.pid);
      Deno.kill(server, "SIGKILL");
      // containerd sees the connection drop, runs the `delete` action for each task
      // (which kills the guest and removes its mounts and slot) and marks it stopped.
      await waitFor("the tasks to be reported stopped or gone", async () => {
        const now = await taskPids(cd);
        return ["k-1", "k-2"].every((id) => (now.get(id)?.status ?? "STOPPED") === "STOPPED");
      }, 20_000);
      for (const id of ["k-1", "k-2"]) {
        await waitFor(`guest of ${id} to be gone`, async () => {
          try {
            await Deno.stat(`/proc/${tasks.get(id)!.pid}`);
            return false;
          } catch {
            return true;
          }
        });
        await cd.ctr(["task", "delete", id]);
        ok(await cd.ctr(["container", "delete", id]), `container delete ${id}`);
      }
      // A new container after the crash gets a new server.
      const r = await cd.ctr([
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        image,
        "k-3",
        "/probe.wasm",
        "hello",
      ]);
      ok(r, "run after the crash");
      assert.equal(r.stdout, "hello from wasm\n");
      await waitFor(
        "the idle server to exit",
        async () => (await cd.leftovers()).processes.length === 0,
      );
    });
  },
});

Deno.test({
  name: "containerd killed with SIGKILL and restarted: tasks keep running and end right",
  ...opts,
  async fn() {
    await withContainerd({}, async (cd, image) => {
      for (const id of ["r-1", "r-2"]) {
        ok(
          await cd.ctr([
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            image,
            id,
            "/probe.wasm",
            "sleep",
            "60",
          ]),
          `run ${id}`,
        );
      }
      const before = await taskPids(cd);
      await cd.restart();
      // containerd reconnects to the server through each bundle's address file.
      const after = await taskPids(cd);
      for (const id of ["r-1", "r-2"]) {
        assert.equal(after.get(id)?.pid, before.get(id)?.pid, `${id} kept its pid`);
        assert.equal(after.get(id)?.status, "RUNNING", `${id} still runs`);
      }
      // Kill still works; Delete reports the exit codes of the signals.
      const cases: [string, string, number][] = [["r-1", "SIGTERM", 143], ["r-2", "SIGKILL", 137]];
      for (const [id, signal, code] of cases) {
        ok(await cd.ctr(["task", "kill", "-s", signal, id]), `kill ${id}`);
        await waitFor(
          `${id} stopped`,
          async () => (await taskPids(cd)).get(id)?.status === "STOPPED",
        );
        const d = await cd.ctr(["task", "delete", id]);
        assert.match(
          d.stdout + d.stderr,
          new RegExp(`exit code ${code}\\b`),
          `delete ${id}: ${d.stdout} ${d.stderr}`,
        );
        ok(await cd.ctr(["container", "delete", id]), `container delete ${id}`);
      }
      await waitFor(
        "the idle server to exit",
        async () => (await cd.leftovers()).processes.length === 0,
      );
    });
  },
});
