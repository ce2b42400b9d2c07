import assert from "node:assert/strict";
import { decode } from "../proto/messages.ts";
import { Kind, type ShimError } from "../errdefs/errors.ts";
import * as cgroupsV1 from "../proto/gen/cgroups_v1_metrics.ts";
import { CgroupManager, detectCgroupVersion } from "./cgroup.ts";
import { MetricsType } from "./driver.ts";
import { fakeRoot, read, v1Files } from "./test_util.ts";

const invalid = (e: ShimError) => e.kind === Kind.INVALID_ARGUMENT;

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
    const m = decode<any>(typeName, cgroupsV1.encodeMetrics(metrics));
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
