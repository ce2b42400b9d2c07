import assert from "node:assert/strict";
import { decode } from "../proto/messages.ts";
import { Kind, type ShimError } from "../errdefs/errors.ts";
import { encodeMessage } from "../proto/task_codec.ts";
import {
  CgroupManager,
  cleanPath,
  detectCgroupVersion,
  expandSlice,
  isSystemdPath,
  MetricsType,
  parseKeyedFile,
  parseProcCgroup,
  parseUint,
  sharesToWeight,
  swapToV2,
  taskCgroupPath,
  UINT64_MAX,
  V1_CONTROLLERS,
} from "./cgroup.ts";

const invalid = (e: ShimError) => e.kind === Kind.INVALID_ARGUMENT;

Deno.test("cleanPath: absolute, no dots, never above the root", () => {
  assert.equal(cleanPath("a//b/./c/"), "/a/b/c");
  assert.equal(cleanPath("/a/../../.."), "/");
  assert.equal(cleanPath("../../etc"), "/etc");
  assert.equal(cleanPath(""), "/");
});

Deno.test("expandSlice nests slices as systemd does", () => {
  assert.equal(expandSlice("system.slice"), "/system.slice");
  assert.equal(
    expandSlice("kubepods-besteffort-pod12.slice"),
    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice",
  );
  assert.equal(expandSlice("-.slice"), "/");
  for (const bad of ["", ".slice", "a", "a-.slice", "-a.slice", "a--b.slice", "a/b.slice"]) {
    assert.throws(() => expandSlice(bad), invalid, bad);
  }
});

Deno.test("taskCgroupPath: cgroupfs, relative, default and systemd notations", () => {
  // cgroupfs: absolute paths are taken as they are (what ctr 1.6 gives: /<namespace>/<id>).
  assert.equal(taskCgroupPath("/shim-e2e/t1", "t1", "/own"), "/shim-e2e/t1");
  assert.equal(taskCgroupPath("/a/../b//c", "t1"), "/b/c");
  // Relative paths and the default start from the shim's own cgroup, as runc's.
  assert.equal(taskCgroupPath("x/y", "t1", "/own"), "/own/x/y");
  assert.equal(taskCgroupPath("../../x", "t1", "/own"), "/x");
  assert.equal(taskCgroupPath(undefined, "t1", "/own"), "/own/t1");
  assert.equal(taskCgroupPath("", "t1", "/"), "/t1");
  // systemd: slice:prefix:name.
  assert.equal(
    taskCgroupPath("system.slice:docker:abc", "t1"),
    "/system.slice/docker-abc.scope",
  );
  assert.equal(
    taskCgroupPath("kubepods-besteffort-pod1.slice:cri-containerd:c1", "c1"),
    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/" +
      "cri-containerd-c1.scope",
  );
  assert.equal(taskCgroupPath(":runc:c1", "c1"), "/system.slice/runc-c1.scope");
  assert.equal(taskCgroupPath("user.slice::c1", "c1"), "/user.slice/c1.scope");
  assert.equal(taskCgroupPath("-.slice:p:c1", "c1"), "/p-c1.scope");
  assert.equal(taskCgroupPath("system.slice:p:my-app.slice", "c1"), "/my.slice/my-app.slice");
  assert.throws(() => taskCgroupPath("system.slice:p:", "c1"), invalid);
  assert.throws(() => taskCgroupPath("nope:p:c1", "c1"), invalid);
  assert.equal(isSystemdPath("/a:b:c"), false);
  assert.equal(isSystemdPath("a:b"), false);
});

Deno.test("parseProcCgroup reads v1 controllers and the v2 line", () => {
  const map = parseProcCgroup(
    "12:pids:/a\n4:cpu,cpuacct:/b\n1:name=systemd:/c\n0::/unified\n",
  );
  assert.equal(map.get("pids"), "/a");
  assert.equal(map.get("cpu"), "/b");
  assert.equal(map.get("cpuacct"), "/b");
  assert.equal(map.get("name=systemd"), "/c");
  assert.equal(map.get(""), "/unified");
});

Deno.test("keyed and single-value files, runc's v2 conversions", () => {
  assert.deepEqual(
    [...parseKeyedFile("oom_kill_disable 0\nunder_oom 1\noom_kill 12\nbad x\n")],
    [["oom_kill_disable", 0n], ["under_oom", 1n], ["oom_kill", 12n]],
  );
  assert.equal(parseUint("max\n"), UINT64_MAX);
  assert.equal(parseUint("9223372036854771712\n"), 9223372036854771712n);
  assert.equal(parseUint("-1"), undefined);
  assert.equal(parseUint(undefined), undefined);
  assert.equal(sharesToWeight(1024), 39);
  assert.equal(sharesToWeight(2), 1);
  assert.equal(sharesToWeight(262144), 10000);
  assert.equal(sharesToWeight(0), 0);
  assert.equal(swapToV2(undefined, -1), -1);
  assert.equal(swapToV2(-1, 100), -1);
  assert.equal(swapToV2(300, 100), 200);
  assert.equal(swapToV2(100, 100), 0);
  assert.throws(() => swapToV2(50, 100), invalid);
  assert.throws(() => swapToV2(50, undefined), invalid);
});

/** A temp dir standing in for /sys/fs/cgroup; `files` are what "the kernel" provides. */
async function fakeRoot(files: Record<string, string>, links: Record<string, string> = {}) {
  const root = await Deno.makeTempDir({ prefix: "cgroup-fake-" });
  for (const [path, text] of Object.entries(files)) {
    const full = `${root}/${path}`;
    await Deno.mkdir(full.slice(0, full.lastIndexOf("/")), { recursive: true });
    await Deno.writeTextFile(full, text);
  }
  for (const [path, target] of Object.entries(links)) await Deno.symlink(target, `${root}/${path}`);
  return root;
}

const read = (path: string) => Deno.readTextFile(path);

/** The files a v1 task cgroup has (as the kernel creates them), under `<root>/<ctl>/<path>`. */
function v1Files(path: string): Record<string, string> {
  return {
    [`memory${path}/cgroup.procs`]: "",
    [`memory${path}/memory.limit_in_bytes`]: "9223372036854771712\n",
    [`memory${path}/memory.memsw.limit_in_bytes`]: "9223372036854771712\n",
    [`memory${path}/memory.soft_limit_in_bytes`]: "9223372036854771712\n",
    [`memory${path}/memory.usage_in_bytes`]: "1052672\n",
    [`memory${path}/memory.max_usage_in_bytes`]: "2000000\n",
    [`memory${path}/memory.failcnt`]: "3\n",
    [`memory${path}/memory.memsw.usage_in_bytes`]: "1052672\n",
    [`memory${path}/memory.memsw.max_usage_in_bytes`]: "2000000\n",
    [`memory${path}/memory.memsw.failcnt`]: "0\n",
    [`memory${path}/memory.oom_control`]: "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    [`memory${path}/memory.stat`]: "cache 4096\nrss 1048576\npgpgin 10\npgpgout 5\n" +
      "pgfault 100\npgmajfault 1\nhierarchical_memory_limit 67108864\n" +
      "hierarchical_memsw_limit 9223372036854771712\ntotal_cache 4096\ntotal_pgfault 100\n",
    [`cpu${path}/cgroup.procs`]: "",
    [`cpu${path}/cpu.shares`]: "1024\n",
    [`cpu${path}/cpu.cfs_quota_us`]: "-1\n",
    [`cpu${path}/cpu.cfs_period_us`]: "100000\n",
    [`cpu${path}/cpu.stat`]: "nr_periods 5\nnr_throttled 1\nthrottled_time 1000\n",
    [`cpuacct${path}/cgroup.procs`]: "",
    [`cpuacct${path}/cpuacct.usage`]: "123456789\n",
    [`cpuacct${path}/cpuacct.usage_percpu`]: "100000000 23456789 \n",
    [`cpuacct${path}/cpuacct.stat`]: "user 7\nsystem 3\n",
    [`pids${path}/cgroup.procs`]: "",
    [`pids${path}/pids.current`]: "2\n",
    [`pids${path}/pids.max`]: "max\n",
  };
}

Deno.test("v1: detection, one directory per controller, limits written as runc does", async () => {
  const root = await fakeRoot(v1Files("/ns/t1"));
  try {
    assert.equal(detectCgroupVersion(root), 1);
    const cgroups = new CgroupManager({ root, selfCgroup: "" });
    const cg = await cgroups.create("/ns/t1", "t1", {
      memory: { limit: 64 << 20, swap: 128 << 20, reservation: 32 << 20 },
      cpu: { shares: 512, quota: 50000, period: 100000 },
      pids: { limit: 10 },
    });
    assert.equal(cg.version, 1);
    assert.deepEqual(
      cg.dirs,
      ["memory", "cpu", "cpuacct", "pids"].map((c) => `${root}/${c}/ns/t1`),
    );
    const at = (c: string, f: string) => read(`${root}/${c}/ns/t1/${f}`);
    assert.equal(await at("memory", "memory.limit_in_bytes"), String(64 << 20));
    assert.equal(await at("memory", "memory.memsw.limit_in_bytes"), String(128 << 20));
    assert.equal(await at("memory", "memory.soft_limit_in_bytes"), String(32 << 20));
    assert.equal(await at("cpu", "cpu.shares"), "512");
    assert.equal(await at("cpu", "cpu.cfs_quota_us"), "50000");
    assert.equal(await at("cpu", "cpu.cfs_period_us"), "100000");
    assert.equal(await at("pids", "pids.max"), "10");
    // Update: unlimited memory (and so swap), no pids limit, no quota.
    await cg.apply({ memory: { limit: -1 }, pids: { limit: -1 }, cpu: { quota: -1 } });
    assert.equal(await at("memory", "memory.limit_in_bytes"), "-1");
    assert.equal(await at("memory", "memory.memsw.limit_in_bytes"), "-1");
    assert.equal(await at("pids", "pids.max"), "max");
    assert.equal(await at("cpu", "cpu.cfs_quota_us"), "-1");
    await assert.rejects(() => cg.apply({ unified: { "memory.high": "1" } }), invalid);
    await cg.addProcess(4242);
    assert.equal(await at("pids", "cgroup.procs"), "4242");
    assert.deepEqual(await cg.pids(), [4242]);
    assert.equal(await cg.oomKillCount(), 1);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("v1: a missing control file is an error that names it; nothing new is left", async () => {
  const files = v1Files("/ns/t1");
  delete files["memory/ns/t1/memory.memsw.limit_in_bytes"]; // no swap accounting
  const root = await fakeRoot(files);
  try {
    const cgroups = new CgroupManager({ root, selfCgroup: "" });
    await assert.rejects(
      () => cgroups.create("/ns/t1", "t1", { memory: { limit: 1 << 20, swap: 2 << 20 } }),
      /cannot write "2097152" to .*\/memory\/ns\/t1\/memory.memsw.limit_in_bytes: no such file/,
    );
    // A cgroup that did not exist before is removed again.
    await assert.rejects(
      () => cgroups.create("/ns/t2", "t2", { memory: { limit: 1 } }),
      /memory\/ns\/t2\/memory.limit_in_bytes/,
    );
    await assert.rejects(() => Deno.stat(`${root}/memory/ns/t2`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("v1: co-mounted controllers share a directory; relative paths use the own cgroup", async () => {
  const root = await fakeRoot(
    { "memory/x": "", "cpu,cpuacct/x": "" },
    { cpu: "cpu,cpuacct", cpuacct: "cpu,cpuacct" },
  );
  try {
    const cgroups = new CgroupManager({
      root,
      selfCgroup: "9:memory:/shim\n4:cpu,cpuacct:/other\n",
    });
    const cg = cgroups.locate(undefined, "t1");
    assert.deepEqual(cg.dirs, [`${root}/memory/shim/t1`, `${root}/cpu/other/t1`]);
    assert.equal(cg.dir("cpuacct"), `${root}/cpu/other/t1`);
    assert.equal(cg.dir("pids"), undefined); // not mounted here
    // A path that resolves to a hierarchy's root is never a task's cgroup.
    assert.throws(() => cgroups.locate("/", "t1"), invalid);
    assert.throws(() => cgroups.locate("/a/..", "t1"), /names a root cgroup/);
    await assert.rejects(
      () => cg.apply({ pids: { limit: 5 } }),
      /the pids cgroup controller is not mounted/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("v1 metrics: encoded as io.containerd.cgroups.v1.Metrics, read back by protobufjs", async () => {
  const root = await fakeRoot(v1Files("/ns/t1"));
  try {
    const cg = new CgroupManager({ root, selfCgroup: "" }).locate("/ns/t1", "t1");
    const { typeName, metrics } = await cg.metrics();
    assert.equal(typeName, MetricsType.V1);
    // deno-lint-ignore no-explicit-any
    const m = decode<any>(typeName, encodeMessage(typeName, metrics));
    assert.deepEqual(m.pids, { current: 2, limit: 0 }); // v1 "max" is 0, as containerd/cgroups
    assert.deepEqual(m.cpu.usage, {
      total: 123456789,
      kernel: 30_000_000,
      user: 70_000_000,
      per_cpu: [100000000, 23456789],
    });
    assert.deepEqual(m.cpu.throttling, { periods: 5, throttled_periods: 1, throttled_time: 1000 });
    assert.deepEqual(m.memory.usage, {
      limit: 9223372036854771712,
      usage: 1052672,
      max: 2000000,
      failcnt: 3,
    });
    assert.equal(m.memory.swap.usage, 1052672);
    assert.equal(m.memory.kernel, undefined); // no kmem files here
    assert.equal(m.memory.cache, 4096);
    assert.equal(m.memory.rss, 1048576);
    assert.equal(m.memory.pg_pg_in, 10);
    assert.equal(m.memory.pg_maj_fault, 1);
    assert.equal(m.memory.hierarchical_memory_limit, 67108864);
    assert.equal(m.memory.total_pg_fault, 100);
    assert.deepEqual(m.memory_oom_control, { oom_kill_disable: 0, under_oom: 0, oom_kill: 1 });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

/** The files of a v2 hierarchy with a task cgroup at `path`. */
function v2Files(path: string): Record<string, string> {
  const files: Record<string, string> = {
    "cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n",
    "cgroup.subtree_control": "memory\n",
  };
  const parts = path.split("/").filter(Boolean);
  for (let i = 1; i < parts.length; i++) {
    const dir = parts.slice(0, i).join("/");
    files[`${dir}/cgroup.controllers`] = "cpu memory pids\n";
    files[`${dir}/cgroup.subtree_control`] = "";
  }
  const t = path.slice(1);
  Object.assign(files, {
    [`${t}/cgroup.controllers`]: "cpu memory pids\n",
    [`${t}/cgroup.procs`]: "",
    [`${t}/memory.max`]: "max\n",
    [`${t}/memory.low`]: "0\n",
    [`${t}/memory.swap.max`]: "max\n",
    [`${t}/memory.current`]: "4096\n",
    [`${t}/memory.peak`]: "8192\n",
    [`${t}/memory.swap.current`]: "0\n",
    [`${t}/memory.stat`]: "anon 1000\nfile 2000\nkernel_stack 16384\n" +
      "workingset_refault_anon 1\nworkingset_refault_file 2\npgfault 77\n",
    [`${t}/memory.events`]: "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
    [`${t}/cpu.weight`]: "100\n",
    [`${t}/cpu.max`]: "max 100000\n",
    [`${t}/cpu.stat`]: "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\n" +
      "nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
    [`${t}/pids.current`]: "1\n",
    [`${t}/pids.max`]: "max\n",
  });
  return files;
}

Deno.test("v2: detection, controllers enabled in every ancestor, runc's conversions", async () => {
  const path = "/kubepods.slice/kubepods-besteffort.slice/cri-containerd-c1.scope";
  const root = await fakeRoot(v2Files(path));
  try {
    assert.equal(detectCgroupVersion(root), 2);
    const cgroups = new CgroupManager({ root });
    const cg = await cgroups.create("kubepods-besteffort.slice:cri-containerd:c1", "c1", {
      memory: { limit: 64 << 20, swap: 96 << 20, reservation: 1 << 20 },
      cpu: { shares: 1024, quota: 50000, period: 100000 },
      pids: { limit: 20 },
    });
    assert.equal(cg.version, 2);
    assert.deepEqual(cg.dirs, [`${root}${path}`]);
    // The root had memory enabled already; the slices had nothing.
    assert.equal(await read(`${root}/cgroup.subtree_control`), "+cpu +pids");
    assert.equal(await read(`${root}/kubepods.slice/cgroup.subtree_control`), "+cpu +memory +pids");
    const at = (f: string) => read(`${root}${path}/${f}`);
    assert.equal(await at("memory.max"), String(64 << 20));
    assert.equal(await at("memory.swap.max"), String(32 << 20)); // memory+swap - memory
    assert.equal(await at("memory.low"), String(1 << 20));
    assert.equal(await at("cpu.weight"), "39");
    assert.equal(await at("cpu.max"), "50000 100000");
    assert.equal(await at("pids.max"), "20");
    // A unified file the kernel does not have fails, naming it.
    await assert.rejects(
      () => cg.apply({ unified: { "memory.high": "1" } }),
      /cannot write "1" to .*cri-containerd-c1.scope\/memory.high: no such file/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("v2: unlimited values, unified files, Update", async () => {
  const path = "/ns/t1";
  const files = v2Files(path);
  files["ns/t1/memory.high"] = "max\n";
  const root = await fakeRoot(files);
  try {
    const cg = await new CgroupManager({ root }).create(path, "t1", {
      memory: { limit: -1 },
      cpu: { quota: -1 },
      pids: { limit: -5 },
      unified: { "memory.high": "50000000" },
    });
    const at = (f: string) => read(`${root}${path}/${f}`);
    assert.equal(await at("memory.max"), "max");
    assert.equal(await at("memory.swap.max"), "max");
    assert.equal(await at("cpu.max"), "max");
    assert.equal(await at("pids.max"), "max");
    assert.equal(await at("memory.high"), "50000000");
    await cg.apply({ memory: { limit: 1 << 20 } });
    assert.equal(await at("memory.max"), String(1 << 20));
    await assert.rejects(() => cg.apply({ unified: { "../escape": "1" } }), invalid);
    await assert.rejects(() => cg.apply({ memory: { limit: 100, swap: 50 } }), invalid);
    assert.equal(await cg.oomKillCount(), 1);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("v2 metrics: encoded as io.containerd.cgroups.v2.Metrics, read back by protobufjs", async () => {
  const root = await fakeRoot(v2Files("/ns/t1"));
  try {
    const cg = new CgroupManager({ root }).locate("/ns/t1", "t1");
    const { typeName, metrics } = await cg.metrics();
    assert.equal(typeName, MetricsType.V2);
    // deno-lint-ignore no-explicit-any
    const m = decode<any>(typeName, encodeMessage(typeName, metrics));
    assert.deepEqual(m.pids, { current: 1, limit: 2 ** 64 }); // "max" = 2^64-1, as containerd
    assert.equal(m.cpu.usage_usec, 5000);
    assert.equal(m.cpu.user_usec, 3000);
    assert.equal(m.cpu.system_usec, 2000);
    assert.equal(m.memory.usage, 4096);
    assert.equal(m.memory.usage_limit, 2 ** 64);
    assert.equal(m.memory.max_usage, 8192);
    assert.equal(m.memory.anon, 1000);
    assert.equal(m.memory.kernel_stack, 16384);
    assert.equal(m.memory.workingset_refault, 3); // _anon + _file
    assert.equal(m.memory.pgfault, 77);
    assert.deepEqual(m.memory_events, { low: 0, high: 0, max: 3, oom: 1, oom_kill: 1 });
    // The exact uint64 max on the wire: ten bytes ending in 0x01.
    const pids = encodeMessage("io.containerd.cgroups.v2.PidsStat", metrics.pids as never);
    assert.deepEqual([...pids.slice(-11)], [0x10, ...Array(9).fill(0xff), 0x01]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("remove: gone afterwards, already-gone is fine, failures name the directory", async () => {
  const root = await fakeRoot({ "memory/ns/t1/x": "", "cpu/ns/t1/x": "" });
  try {
    const cg = new CgroupManager({ root, selfCgroup: "" }).locate("/ns/t1", "t1");
    // A real cgroup directory can be removed with its control files in it; a fake cannot.
    await assert.rejects(() => cg.remove(0), /cannot remove cgroup .*\/memory\/ns\/t1/);
    await Deno.remove(`${root}/memory/ns/t1/x`);
    await Deno.remove(`${root}/cpu/ns/t1/x`);
    await cg.remove();
    await assert.rejects(() => Deno.stat(`${root}/memory/ns/t1`), Deno.errors.NotFound);
    await assert.rejects(() => Deno.stat(`${root}/cpu/ns/t1`), Deno.errors.NotFound);
    await Deno.stat(`${root}/memory/ns`); // the parent stays, as with runc
    await cg.remove(); // again: nothing to do
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

/** A fake v1 tree with the parent cgroups `parents` in every controller's hierarchy. */
async function fakeV1Parents(...parents: string[]) {
  const root = await fakeRoot({});
  for (const c of V1_CONTROLLERS) {
    for (const p of parents) await Deno.mkdir(`${root}/${c}${p}`, { recursive: true });
  }
  return root;
}

Deno.test("warm cgroups, v1: sibling and make; adopt renames the sibling onto the task's", async () => {
  const root = await fakeV1Parents("/ns");
  try {
    const cgroups = new CgroupManager({ root, version: 1, selfCgroup: "" });
    const task = cgroups.locate("/ns/t1", "t1");
    await task.make();
    await task.make(); // existing directories are fine
    const warm = task.sibling("wasmtime-warm-1-1");
    assert.equal(warm.version, 1);
    assert.deepEqual(warm.dirs, V1_CONTROLLERS.map((c) => `${root}/${c}/ns/wasmtime-warm-1-1`));
    await assert.rejects(() => Deno.stat(warm.dirs[0]), Deno.errors.NotFound); // not made yet
    await warm.make();
    // The fake's directories are plain: a marker stands for the warm runner inside.
    for (const dir of warm.dirs) await Deno.writeTextFile(`${dir}/marker`, dir);
    assert.equal(await task.adopt(warm), true);
    for (const c of V1_CONTROLLERS) {
      const from = `${root}/${c}/ns/wasmtime-warm-1-1`;
      await assert.rejects(() => Deno.stat(from), Deno.errors.NotFound);
      assert.equal(await read(`${root}/${c}/ns/t1/marker`), from);
    }
    assert.deepEqual(task.dirs, V1_CONTROLLERS.map((c) => `${root}/${c}/ns/t1`));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("warm cgroups, v1: co-mounted controllers' shared directory is renamed once", async () => {
  const root = await fakeRoot(
    { "memory/ns/x": "", "cpu,cpuacct/ns/x": "" },
    { cpu: "cpu,cpuacct", cpuacct: "cpu,cpuacct" },
  );
  try {
    const task = new CgroupManager({ root, version: 1, selfCgroup: "" }).locate("/ns/t1", "t1");
    await task.make();
    const warm = task.sibling("wasmtime-warm-1-2");
    assert.deepEqual(warm.dirs, [
      `${root}/memory/ns/wasmtime-warm-1-2`,
      `${root}/cpu/ns/wasmtime-warm-1-2`,
    ]);
    await warm.make();
    for (const dir of warm.dirs) await Deno.writeTextFile(`${dir}/marker`, dir);
    assert.equal(await task.adopt(warm), true);
    assert.equal(await read(`${root}/memory/ns/t1/marker`), warm.dirs[0]);
    assert.equal(await read(`${root}/cpu,cpuacct/ns/t1/marker`), warm.dirs[1]);
    await assert.rejects(() => Deno.stat(warm.dirs[1]), Deno.errors.NotFound);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("warm cgroups: adopt changes nothing for another parent, or on v2", async () => {
  const root = await fakeV1Parents("/ns", "/other");
  try {
    const cgroups = new CgroupManager({ root, version: 1, selfCgroup: "" });
    const task = cgroups.locate("/ns/t1", "t1");
    await task.make();
    const elsewhere = cgroups.locate("/other/wasmtime-warm-1-1", "w");
    // A sibling in three hierarchies but not the fourth is not a sibling.
    const partly = new CgroupManager({
      root,
      version: 1,
      selfCgroup: "9:memory:/ns\n4:cpu:/ns\n3:cpuacct:/ns\n2:pids:/other\n",
    }).locate(undefined, "wasmtime-warm-1-2");
    assert.equal(partly.dir("pids"), `${root}/pids/other/wasmtime-warm-1-2`);
    for (const other of [elsewhere, partly]) {
      await other.make();
      for (const dir of other.dirs) await Deno.writeTextFile(`${dir}/marker`, dir);
      assert.equal(await task.adopt(other), false);
      for (const dir of other.dirs) assert.equal(await read(`${dir}/marker`), dir);
      for (const dir of task.dirs) assert.deepEqual([...Deno.readDirSync(dir)], [], dir);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }

  const root2 = await fakeRoot(v2Files("/ns/t1"));
  try {
    const task = new CgroupManager({ root: root2, version: 2 }).locate("/ns/t1", "t1");
    await task.make();
    const warm = task.sibling("wasmtime-warm-1-1");
    assert.deepEqual(warm.dirs, [`${root2}/ns/wasmtime-warm-1-1`]);
    await warm.make();
    await Deno.writeTextFile(`${warm.dirs[0]}/marker`, "");
    assert.equal(await task.adopt(warm), false);
    await Deno.stat(`${warm.dirs[0]}/marker`);
    assert.equal(await read(`${root2}/ns/t1/memory.max`), "max\n"); // untouched
  } finally {
    await Deno.remove(root2, { recursive: true });
  }
});

Deno.test("warm cgroups: sibling rejects names that are not one path element; make names the directory", async () => {
  const root = await fakeV1Parents("/ns");
  try {
    const task = new CgroupManager({ root, version: 1, selfCgroup: "" }).locate("/ns/t1", "t1");
    for (const bad of ["", "/", "a/b", "/a", "a/"]) {
      assert.throws(() => task.sibling(bad), /is not a cgroup name/, bad);
    }
    // make creates no parents.
    const orphan = new CgroupManager({ root, version: 1, selfCgroup: "" }).locate("/none/t1", "t1");
    await assert.rejects(() => orphan.make(), /cannot create cgroup .*\/memory\/none\/t1/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("warm cgroups, v1: adopt applies the resources to the renamed directories", async () => {
  const root = await fakeRoot({ "memory/ns/wasmtime-warm-1-1/memory.limit_in_bytes": "-1\n" });
  try {
    const task = new CgroupManager({ root, version: 1, selfCgroup: "" }).locate("/ns/t1", "t1");
    assert.deepEqual(task.dirs, [`${root}/memory/ns/t1`]); // only memory is mounted here
    await task.make();
    assert.equal(
      await task.adopt(task.sibling("wasmtime-warm-1-1"), { memory: { limit: 64 << 20 } }),
      true,
    );
    assert.equal(await read(`${root}/memory/ns/t1/memory.limit_in_bytes`), String(64 << 20));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
