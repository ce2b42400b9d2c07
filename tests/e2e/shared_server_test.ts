/**
 * End to end: containers sharing one shim server (the default grouping), a
 * server's idle exit, `WASMTIME_SHIM_GROUPING=container`, a server killed with
 * SIGKILL while its tasks run (containerd reports them exited and the `delete`
 * action cleans up after it), and containerd killed and restarted under running tasks.
 */

import assert from "node:assert/strict";
import { buildImage } from "../../src/oci/image.ts";
import { assertStoppedClean, ok, parentOf, taskList, waitFor, waitStatus } from "./ctr_util.ts";
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
    await assertStoppedClean(cd, tmp);
  }
}

/** Starts detached sleeping guests; resolves with their shim servers' pids, in order. */
async function runSleepers(cd: Containerd, image: string, ids: string[]): Promise<number[]> {
  for (const id of ids) {
    const r = await cd.ctr([
      "run",
      "-d",
      "--runtime",
      RUNTIME,
      image,
      id,
      "/probe.wasm",
      "sleep",
      "60",
    ]);
    ok(r, `run ${id}`);
  }
  const tasks = await taskList(cd);
  return await Promise.all(ids.map((id) => parentOf(tasks.get(id)!.pid)));
}

/** Kills tasks with `signal`, waits until they stop, deletes them; returns delete's stderr. */
async function killAndRemove(cd: Containerd, ids: string[], signal = "SIGKILL"): Promise<string[]> {
  const said: string[] = [];
  for (const id of ids) {
    ok(await cd.ctr(["task", "kill", "-s", signal, id]), `kill ${id}`);
    await waitStatus(cd, id, "STOPPED");
    const del = await cd.ctr(["task", "delete", id]);
    ok(del, `task delete ${id}`);
    said.push(del.stderr);
    ok(await cd.ctr(["container", "delete", id]), `container delete ${id}`);
  }
  return said;
}

/** Waits until no shim server or runner of this containerd is left (idle exit). */
function serversGone(cd: Containerd, ms = 10_000): Promise<void> {
  return waitFor(
    "the servers to exit",
    async () => (await cd.leftovers()).processes.length === 0,
    ms,
  );
}

async function hello(cd: Containerd, image: string, id: string): Promise<void> {
  const r = await cd.ctr(["run", "--rm", "--runtime", RUNTIME, image, id, "/probe.wasm", "hello"]);
  ok(r, `run ${id}`);
  assert.equal(r.stdout, "hello from wasm\n");
}

Deno.test({
  name: "containers of a namespace share one server, which exits when idle",
  ...opts,
  async fn() {
    await withContainerd({}, async (cd, image) => {
      const parents = await runSleepers(cd, image, ["s-1", "s-2"]);
      assert.equal(parents[0], parents[1], "both guests are children of one server");
      const servers = async () =>
        (await cd.leftovers()).processes.filter((p) => !p.cmdline.includes("guest"))
          .map((p) => p.pid);
      assert.deepEqual(await servers(), [parents[0]]);
      // A third container, run to completion, goes through the same server.
      await hello(cd, image, "s-3");
      assert.deepEqual(await servers(), [parents[0]]);
      await killAndRemove(cd, ["s-1", "s-2"]);
      // The harness sets a 1 s idle period: the server and its warm runner go.
      await serversGone(cd);
    });
  },
});

Deno.test({
  name: "WASMTIME_SHIM_GROUPING=container gives each container its own server " +
    "(and WASMTIME_SHIM_RUNNER_V8_FLAGS reaches its runners)",
  ...opts,
  async fn() {
    const env = {
      WASMTIME_SHIM_GROUPING: "container",
      WASMTIME_SHIM_RUNNER_V8_FLAGS: "--max-semi-space-size=4",
    };
    await withContainerd(env, async (cd, image) => {
      const parents = await runSleepers(cd, image, ["c-1", "c-2"]);
      assert.notEqual(parents[0], parents[1]);
      for (const { pid } of (await taskList(cd)).values()) {
        const argv = (await Deno.readTextFile(`/proc/${pid}/cmdline`)).split("\0");
        assert.ok(argv.includes("--v8-flags=--max-semi-space-size=4"), argv.join(" "));
      }
      await killAndRemove(cd, ["c-1", "c-2"]);
      // Each server goes at its Shutdown, without waiting for an idle period.
      await serversGone(cd, 3_000);
    });
  },
});

Deno.test({
  name: "a server killed with SIGKILL: its tasks end as exited, delete leaves nothing behind",
  ...opts,
  async fn() {
    await withContainerd({}, async (cd, image) => {
      const [server] = await runSleepers(cd, image, ["k-1", "k-2"]);
      const tasks = await taskList(cd);
      Deno.kill(server, "SIGKILL");
      // containerd sees the connection drop, runs the `delete` action for each task
      // (which kills the guest and removes its mounts and slot) and marks it stopped.
      await waitFor("the tasks to be reported stopped or gone", async () => {
        const now = await taskList(cd);
        return ["k-1", "k-2"].every((id) => (now.get(id)?.status ?? "STOPPED") === "STOPPED");
      }, 20_000);
      for (const id of ["k-1", "k-2"]) {
        const pid = tasks.get(id)!.pid;
        await waitFor(`guest of ${id} to be gone`, async () => {
          return await Deno.stat(`/proc/${pid}`).then(() => false, () => true);
        });
        await cd.ctr(["task", "delete", id]);
        ok(await cd.ctr(["container", "delete", id]), `container delete ${id}`);
      }
      // A new container after the crash gets a new server.
      await hello(cd, image, "k-3");
      await serversGone(cd);
    });
  },
});

Deno.test({
  name: "containerd killed with SIGKILL and restarted: tasks keep running and end right",
  ...opts,
  async fn() {
    await withContainerd({}, async (cd, image) => {
      await runSleepers(cd, image, ["r-1", "r-2"]);
      const before = await taskList(cd);
      await cd.restart();
      // containerd reconnects to the server through each bundle's address file.
      const after = await taskList(cd);
      for (const id of ["r-1", "r-2"]) {
        assert.equal(after.get(id)?.pid, before.get(id)?.pid, `${id} kept its pid`);
        assert.equal(after.get(id)?.status, "RUNNING", `${id} still runs`);
      }
      // Kill still works; Delete reports the exit codes of the signals.
      const [term] = await killAndRemove(cd, ["r-1"], "SIGTERM");
      assert.match(term, /exit code 143\b/);
      const [kill] = await killAndRemove(cd, ["r-2"], "SIGKILL");
      assert.match(kill, /exit code 137\b/);
      await serversGone(cd);
    });
  },
});
