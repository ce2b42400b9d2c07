/**
 * End to end: task cgroups under a real, private containerd (cgroup v1 or v2 host) —
 * limits from `ctr run`, an OOM kill with its TaskOOM event, `ctr task metrics`,
 * Update through containerd's Tasks API, and cleanup after delete and after a dead
 * server.
 *
 * containerd 1.6's ctr has no `task update`: Update is sent the way ctr/nerdctl send
 * it, as `containerd.services.tasks.v1.Tasks/Update` on containerd's gRPC socket.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import { detectCgroupVersion } from "../../src/cgroup/cgroup.ts";
import { LINUX_RESOURCES_TYPE_URL } from "../../src/task/task_api.ts";
import { ProtoWriter } from "../../src/proto/wire.ts";
import { encodeAny } from "../../src/proto/gen/well_known.ts";
import { type Containerd, CTR_BIN } from "./harness.ts";
import { fixture } from "./shim_install.ts";
import { exists, sleep, waitFor, waitStatus } from "./ctr_util.ts";
import { once, startSuite } from "./suite.ts";

const RUNTIME = "io.containerd.wasmtime.v1";
const CGROUP_ROOT = "/sys/fs/cgroup";
const VERSION = detectCgroupVersion(CGROUP_ROOT);
/** The v1 hierarchies a task joins (see src/cgroup/v1.ts). */
const V1_CONTROLLERS = ["memory", "cpu", "cpuacct", "pids"];
const MIB = 1 << 20;
/** Every task of this file has an id with this prefix (other suites may share the namespace). */
const PREFIX = "cg-";
const opts = { sanitizeOps: false, sanitizeResources: false };

const setup = once(() =>
  startSuite({
    name: "cgroup",
    config: { entrypoint: ["/probe.wasm"] },
    files: [
      { path: "/probe.wasm", hostPath: fixture("probe.wasm") },
      { path: "/memhog.wasm", hostPath: fixture("memhog.wasm") },
    ],
  })
);

/** The task's cgroup directories: one per v1 controller, or the v2 one. */
function cgroupDirs(cd: Containerd, id: string): string[] {
  const path = `${cd.namespace}/${id}`;
  return VERSION === 2
    ? [`${CGROUP_ROOT}/${path}`]
    : V1_CONTROLLERS.map((c) => `${CGROUP_ROOT}/${c}/${path}`);
}

/** The directory holding `controller`'s files. */
function cgroupDir(cd: Containerd, id: string, controller: string): string {
  return VERSION === 2
    ? `${CGROUP_ROOT}/${cd.namespace}/${id}`
    : `${CGROUP_ROOT}/${controller}/${cd.namespace}/${id}`;
}

/** Starts a detached task running `args`. Returns its pid once it runs. */
async function runDetached(id: string, args: string[], runOpts: string[] = []) {
  const { cd, image } = await setup();
  const r = await cd.ctr(["run", "-d", "--runtime", RUNTIME, ...runOpts, image, id, ...args]);
  assert.equal(r.code, 0, r.stderr);
  return await waitStatus(cd, id, "RUNNING");
}

/** Kills and deletes a task and its container. */
async function remove(cd: Containerd, id: string) {
  await cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
  await waitStatus(cd, id, "STOPPED").catch(() => {});
  const del = await cd.ctr(["task", "delete", id]);
  assert.equal(del.code, 0, del.stderr);
  assert.equal((await cd.ctr(["container", "delete", id])).code, 0);
}

/** `ctr task metrics --format json` as an object. */
// deno-lint-ignore no-explicit-any
async function metrics(cd: Containerd, id: string): Promise<any> {
  const r = await cd.ctr(["task", "metrics", "--format", "json", id]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

/** containerd's `Tasks/Update` with `resources` (OCI LinuxResources) as JSON. */
async function updateTask(cd: Containerd, id: string, resources: unknown): Promise<void> {
  const request = new ProtoWriter()
    .string(1, id)
    .message(
      2,
      encodeAny({
        type_url: LINUX_RESOURCES_TYPE_URL,
        value: new TextEncoder().encode(JSON.stringify(resources)),
      }),
    )
    .finish();
  const client = new grpc.Client(`unix://${cd.address}`, grpc.credentials.createInsecure());
  try {
    const md = new grpc.Metadata();
    md.set("containerd-namespace", cd.namespace);
    await new Promise<void>((resolve, reject) => {
      client.makeUnaryRequest(
        "/containerd.services.tasks.v1.Tasks/Update",
        (bytes: Uint8Array) => Buffer.from(bytes),
        (bytes: Buffer) => bytes,
        request,
        md,
        { deadline: Date.now() + 10_000 },
        (err) => err ? reject(err) : resolve(),
      );
    });
  } finally {
    client.close();
  }
}

/** Collects `ctr events` lines while `fn` runs. */
async function withEvents(cd: Containerd, fn: () => Promise<void>): Promise<string[]> {
  const events = new Deno.Command(CTR_BIN, {
    args: ["--address", cd.address, "events"],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  try {
    await sleep(300);
    await fn();
    await sleep(500);
  } finally {
    events.kill("SIGTERM");
  }
  return new TextDecoder().decode((await events.output()).stdout).split("\n");
}

Deno.test({
  name: "ctr's default cgroupsPath /<namespace>/<id>: the runner is in it, limits applied",
  ...opts,
  async fn() {
    const { cd } = await setup();
    const id = `${PREFIX}limits`;
    const pid = await runDetached(id, ["/probe.wasm", "loop"], [
      "--memory-limit",
      String(64 * MIB),
      "--cpus",
      "0.5",
    ]);
    const bundle = `${cd.dir}/state/io.containerd.runtime.v2.task/${cd.namespace}/${id}`;
    const spec = JSON.parse(await Deno.readTextFile(`${bundle}/config.json`));
    assert.equal(spec.linux.cgroupsPath, `/${cd.namespace}/${id}`);
    for (const dir of cgroupDirs(cd, id)) {
      const procs = (await Deno.readTextFile(`${dir}/cgroup.procs`)).trim().split("\n");
      assert.deepEqual(procs, [String(pid)], dir);
    }
    const self = await Deno.readTextFile(`/proc/${pid}/cgroup`);
    assert.ok(self.includes(`/${cd.namespace}/${id}\n`), self);
    const mem = cgroupDir(cd, id, "memory");
    const cpu = cgroupDir(cd, id, "cpu");
    if (VERSION === 1) {
      assert.equal((await Deno.readTextFile(`${mem}/memory.limit_in_bytes`)).trim(), `${64 * MIB}`);
      assert.equal((await Deno.readTextFile(`${cpu}/cpu.cfs_quota_us`)).trim(), "50000");
      assert.equal((await Deno.readTextFile(`${cpu}/cpu.cfs_period_us`)).trim(), "100000");
      assert.equal((await Deno.readTextFile(`${cpu}/cpu.shares`)).trim(), "1024");
    } else {
      assert.equal((await Deno.readTextFile(`${mem}/memory.max`)).trim(), `${64 * MIB}`);
      assert.equal((await Deno.readTextFile(`${cpu}/cpu.max`)).trim(), "50000 100000");
    }

    // Metrics: a looping guest uses CPU (user/kernel time comes in 10 ms ticks: wait for
    // one), and memory since it joined.
    let m = await metrics(cd, id);
    for (let i = 0; i < 50; i++) {
      const cpu = VERSION === 1 ? m.cpu.usage.user + m.cpu.usage.kernel : m.cpu.user_usec;
      if (cpu > 0) break;
      await sleep(100);
      m = await metrics(cd, id);
    }
    if (VERSION === 1) {
      assert.ok(m.cpu.usage.total > 0, JSON.stringify(m.cpu));
      assert.ok(m.cpu.usage.user > 0 || m.cpu.usage.kernel > 0, JSON.stringify(m.cpu));
      assert.ok(m.memory.usage.usage > 0, JSON.stringify(m.memory.usage));
      assert.equal(m.memory.usage.limit, 64 * MIB);
      assert.ok(m.pids.current >= 1, JSON.stringify(m.pids));
    } else {
      assert.ok(m.cpu.usage_usec > 0, JSON.stringify(m.cpu));
      assert.ok(m.memory.usage > 0, JSON.stringify(m.memory));
      assert.equal(m.memory.usage_limit, 64 * MIB);
      assert.ok(m.pids.current >= 1, JSON.stringify(m.pids));
    }
    const table = await cd.ctr(["task", "metrics", id]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(
      table.stdout,
      VERSION === 1 ? /memory\.usage_in_bytes\s+[1-9]/ : /memory\.usage\s+[1-9]/,
    );

    // Update through containerd: the cgroup file changes, and metrics show it.
    await updateTask(cd, id, { memory: { limit: 128 * MIB }, pids: { limit: 64 } });
    if (VERSION === 1) {
      assert.equal(
        (await Deno.readTextFile(`${mem}/memory.limit_in_bytes`)).trim(),
        `${128 * MIB}`,
      );
      assert.equal((await metrics(cd, id)).memory.usage.limit, 128 * MIB);
    } else {
      assert.equal((await Deno.readTextFile(`${mem}/memory.max`)).trim(), `${128 * MIB}`);
      assert.equal((await metrics(cd, id)).memory.usage_limit, 128 * MIB);
    }
    const pidsDir = cgroupDir(cd, id, "pids");
    assert.equal((await Deno.readTextFile(`${pidsDir}/pids.max`)).trim(), "64");
    assert.equal((await metrics(cd, id)).pids.limit, 64);
    // A value the kernel refuses (a CFS quota under 1 ms) is an error naming the file.
    await assert.rejects(
      () => updateTask(cd, id, { cpu: { quota: 10, period: 100000 } }),
      /cpu\.(cfs_quota_us|max).*Invalid argument/,
    );

    await remove(cd, id);
    for (const dir of cgroupDirs(cd, id)) assert.ok(!(await exists(dir)), `${dir} is left`);
  },
});

/** The cgroup of `pid` in the memory hierarchy (v1) or the unified one (v2). */
async function memoryCgroupOf(pid: number): Promise<string> {
  const text = await Deno.readTextFile(`/proc/${pid}/cgroup`);
  const want = VERSION === 2 ? "" : "memory";
  for (const line of text.split("\n")) {
    const [, controllers, path] = line.split(":");
    if (controllers !== undefined && controllers.split(",").includes(want)) return path;
  }
  throw new Error(`pid ${pid} has no ${want || "v2"} cgroup: ${text}`);
}

Deno.test({
  name: "an empty cgroupsPath means <the server's own cgroup>/<id>; systemd paths are expanded",
  ...opts,
  async fn() {
    const { cd } = await setup();
    const root = VERSION === 2 ? CGROUP_ROOT : `${CGROUP_ROOT}/memory`;
    // `--cgroup ""`: no cgroupsPath in the spec, as runc: under the creator's own cgroup.
    const id = `${PREFIX}default`;
    const pid = await runDetached(id, ["/probe.wasm", "loop"], ["--cgroup", ""]);
    const bundle = `${cd.dir}/state/io.containerd.runtime.v2.task/${cd.namespace}/${id}`;
    const spec = JSON.parse(await Deno.readTextFile(`${bundle}/config.json`));
    assert.ok(!spec.linux.cgroupsPath, `cgroupsPath ${spec.linux.cgroupsPath}`);
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    const server = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    const own = await memoryCgroupOf(server);
    const expected = `${own === "/" ? "" : own}/${id}`;
    assert.equal(await memoryCgroupOf(pid), expected);
    await remove(cd, id);
    assert.ok(!(await exists(`${root}${expected}`)), `${root}${expected} is left`);

    // systemd notation: slice:prefix:name, nested slices expanded.
    const sid = `${PREFIX}systemd`;
    const slices = ["/cgshime2e.slice", "/cgshime2e.slice/cgshime2e-x.slice"];
    try {
      const spid = await runDetached(sid, ["/probe.wasm", "loop"], [
        "--cgroup",
        `cgshime2e-x.slice:cgtest:${sid}`,
        "--memory-limit",
        String(32 * MIB),
      ]);
      const path = `${slices[1]}/cgtest-${sid}.scope`;
      assert.equal(await memoryCgroupOf(spid), path);
      const limitFile = VERSION === 2 ? "memory.max" : "memory.limit_in_bytes";
      assert.equal((await Deno.readTextFile(`${root}${path}/${limitFile}`)).trim(), `${32 * MIB}`);
      await remove(cd, sid);
      assert.ok(!(await exists(`${root}${path}`)), `${root}${path} is left`);
    } finally {
      // The slices stay, as systemd's would: remove what this test made.
      const hierarchies = VERSION === 2
        ? [CGROUP_ROOT]
        : ["memory", "cpu", "cpuacct", "pids"].map((c) => `${CGROUP_ROOT}/${c}`);
      for (const h of hierarchies) {
        for (const slice of [...slices].reverse()) {
          await Deno.remove(`${h}${slice}`).catch(() => {});
        }
      }
    }
  },
});

Deno.test({
  name: "a guest over its memory limit is OOM killed: exit 137 and TaskOOM before TaskExit",
  ...opts,
  async fn() {
    const { cd, image } = await setup();
    const id = `${PREFIX}oom`;
    let code = -1;
    let stderr = "";
    const lines = await withEvents(cd, async () => {
      const r = await cd.ctr(
        [
          "run",
          "--rm",
          "--runtime",
          RUNTIME,
          "--memory-limit",
          String(64 * MIB),
          image,
          id,
          "/memhog.wasm",
        ],
        { timeoutMs: 60_000 },
      );
      code = r.code;
      stderr = r.stderr;
    });
    assert.equal(code, 137, stderr);
    assert.doesNotMatch(stderr, /wasm trap/); // killed, not trapped on a failed memory.grow
    const topics = lines.filter((l) => l.includes(`"${id}"`)).map((l) =>
      l.match(/\/tasks\/\w+/)?.[0]
    ).filter(Boolean);
    assert.deepEqual(topics, [
      "/tasks/create",
      "/tasks/start",
      "/tasks/oom",
      "/tasks/exit",
      "/tasks/delete",
    ]);
    const exit = lines.find((l) => l.includes("/tasks/exit") && l.includes(`"${id}"`));
    assert.match(exit ?? "", /"exit_status":137/);
    for (const dir of cgroupDirs(cd, id)) assert.ok(!(await exists(dir)), `${dir} is left`);
  },
});

/** The parent (the server) of process `pid`. */
async function parentOf(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

/** The pids listed in a cgroup directory's `cgroup.procs`. */
async function procsOf(dir: string): Promise<number[]> {
  const text = await Deno.readTextFile(`${dir}/cgroup.procs`);
  return text.split("\n").filter(Boolean).map(Number);
}

Deno.test({
  name: "warm cgroups (v1): the next task's runner comes in by a rename; none are left after",
  ignore: VERSION !== 1,
  ...opts,
  async fn() {
    const { cd } = await setup();
    const ns = `${CGROUP_ROOT}/memory/${cd.namespace}`;
    const ids = [`${PREFIX}warm-1`, `${PREFIX}warm-2`];
    const limit = ["--memory-limit", String(48 * MIB)];
    const guest = ["/probe.wasm", "sleep", "60"];
    /** The warm cgroups of `server` in the memory hierarchy (another run may share it). */
    const warmOf = async (server: number) => {
      const out: string[] = [];
      for await (const e of Deno.readDir(ns)) {
        if (e.isDirectory && e.name.startsWith(`wasmtime-warm-${server}-`)) out.push(e.name);
      }
      return out.sort();
    };
    const started: string[] = [];
    try {
      started.push(ids[0]);
      const first = await runDetached(ids[0], guest, limit);
      const server = await parentOf(first);
      assert.ok(server > 1, `server of ${first}`);
      // The runner that replaced the taken one says it is idle, then waits in a warm
      // cgroup beside the task's: in every hierarchy, with nothing else in it.
      let warm = "";
      let waiting: number[] = [];
      await waitFor(`a warm cgroup of server ${server} holding its runner`, async () => {
        [warm] = await warmOf(server);
        if (!warm) return false;
        waiting = await procsOf(`${ns}/${warm}`).catch(() => []);
        return waiting.length === 1;
      });
      for (const c of V1_CONTROLLERS) {
        const dir = `${CGROUP_ROOT}/${c}/${cd.namespace}/${warm}`;
        assert.deepEqual(await procsOf(dir), waiting, dir);
      }
      assert.equal(await parentOf(waiting[0]), server);

      // The second task gets that runner, and its cgroup is the warm one, renamed.
      started.push(ids[1]);
      const second = await runDetached(ids[1], guest, limit);
      assert.equal(second, waiting[0], "the second task did not get the warm runner");
      assert.equal(await parentOf(second), server, "the second task has another server");
      for (const dir of cgroupDirs(cd, ids[1])) {
        assert.deepEqual(await procsOf(dir), [second], dir);
      }
      assert.equal(
        (await Deno.readTextFile(`${ns}/${ids[1]}/memory.limit_in_bytes`)).trim(),
        `${48 * MIB}`,
      );
      const self = await Deno.readTextFile(`/proc/${second}/cgroup`);
      assert.match(self, new RegExp(`:memory:/${cd.namespace}/${ids[1]}\n`));
      for (const c of V1_CONTROLLERS) {
        const dir = `${CGROUP_ROOT}/${c}/${cd.namespace}/${warm}`;
        assert.ok(!(await exists(dir)), `${dir} is still there: not renamed`);
      }
      // And the next warm runner waits in a new warm cgroup, while the server runs.
      await waitFor(
        `a new warm cgroup of server ${server}`,
        async () => (await warmOf(server)).some((w) => w !== warm),
      );

      for (const id of ids) await remove(cd, id);
      started.length = 0;
      for (const id of ids) {
        for (const dir of cgroupDirs(cd, id)) assert.ok(!(await exists(dir)), `${dir} is left`);
      }
      // The server exits after its idle timeout (1 s here), removing its warm cgroups.
      await waitFor(`server ${server} to exit`, async () => !(await exists(`/proc/${server}`)));
      await waitFor(
        `server ${server}'s warm cgroups to go`,
        async () => (await warmOf(server)).length === 0,
        3_000,
      ).catch(() => {});
      for (const c of V1_CONTROLLERS) {
        const left: string[] = [];
        for await (const e of Deno.readDir(`${CGROUP_ROOT}/${c}/${cd.namespace}`)) {
          if (e.name.startsWith("wasmtime-warm-")) left.push(e.name);
        }
        assert.deepEqual(left.filter((w) => w.startsWith(`wasmtime-warm-${server}-`)), [], c);
      }
    } finally {
      for (const id of started) await remove(cd, id).catch(() => {});
    }
  },
});

Deno.test({
  name: "the delete action removes the cgroup of a task whose server died",
  ...opts,
  async fn() {
    const { cd } = await setup();
    const id = `${PREFIX}dead`;
    const pid = await runDetached(id, ["/probe.wasm", "loop"]);
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    const server = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    assert.ok(server > 1, stat);
    Deno.kill(server, "SIGKILL");
    // containerd notices, runs `containerd-shim-wasmtime-v1 delete`, and drops the task.
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      const ls = await cd.ctr(["task", "ls"]);
      if (!new RegExp(`^${id}\\s+\\d+\\s+RUNNING`, "m").test(ls.stdout)) break;
      await sleep(100);
    }
    await cd.ctr(["task", "delete", "-f", id]);
    assert.equal((await cd.ctr(["container", "delete", id])).code, 0);
    for (let i = 0; i < 50 && await exists(`/proc/${pid}`); i++) await sleep(100);
    assert.ok(!(await exists(`/proc/${pid}`)), `guest runner ${pid} survived its server`);
    // The cgroup goes once the killed runner is reaped (by the node's init, its server
    // being gone): at once, or in the background if that takes longer than `delete` may.
    for (const dir of cgroupDirs(cd, id)) {
      for (let i = 0; i < 100 && await exists(dir); i++) await sleep(100);
      assert.ok(!(await exists(dir)), `${dir} is left`);
    }
    // The next task gets a new server, which also sweeps the dead one's idle slots.
    const { image } = await setup();
    const after = await cd.ctr([
      "run",
      "--rm",
      "--runtime",
      RUNTIME,
      image,
      `${id}-2`,
      "/probe.wasm",
      "hello",
    ]);
    assert.equal(after.code, 0, after.stderr);
  },
});

Deno.test({
  name: "after everything: no leftover cgroups, mounts, sockets or processes",
  ...opts,
  async fn() {
    const { cd, tmp } = await setup();
    for (let i = 0; i < 50 && (await cd.leftovers()).processes.length > 0; i++) await sleep(100);
    const problems = (await cd.logs()).split("\n").filter((l) =>
      /removing its cgroup|reading its OOM count|cannot remove cgroup/.test(l)
    );
    assert.deepEqual(problems, []);
    const left = await cd.stop();
    await Deno.remove(tmp, { recursive: true });
    // Other suites may share the namespace's cgroup directory: only ours count.
    assert.deepEqual(left.cgroups.filter((c) => c.split("/").pop()!.startsWith(PREFIX)), []);
    assert.deepEqual(left.mounts, []);
    assert.deepEqual(left.sockets, []);
    assert.deepEqual(left.processes, []);
    assert.deepEqual(left.slots, []);
  },
});
