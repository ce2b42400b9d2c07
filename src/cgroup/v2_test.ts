import assert from "node:assert/strict";
import { decode } from "../proto/messages.ts";
import { Kind, type ShimError } from "../errdefs/errors.ts";
import * as cgroupsV2 from "../proto/gen/cgroups_v2_metrics.ts";
import { CgroupManager, detectCgroupVersion } from "./cgroup.ts";
import { MetricsType } from "./driver.ts";
import { fakeRoot, read, v2Files } from "./test_util.ts";
import { sharesToWeight, swapToV2 } from "./v2.ts";

const invalid = (e: ShimError) => e.kind === Kind.INVALID_ARGUMENT;

Deno.test("runc's v2 conversions", () => {
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
    const m = decode<any>(typeName, cgroupsV2.encodeMetrics(metrics));
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
    const pids = cgroupsV2.encodePidsStat(metrics.pids as never);
    assert.deepEqual([...pids.slice(-11)], [0x10, ...Array(9).fill(0xff), 0x01]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("v2: a hierarchy without the controllers (a hybrid host's) says which it lacks", async () => {
  const root = await fakeRoot({
    "cgroup.controllers": "hugetlb\n",
    "cgroup.subtree_control": "",
    "ns/t1/cgroup.controllers": "",
    "ns/t1/cgroup.procs": "",
    "ns/cgroup.controllers": "",
    "ns/cgroup.subtree_control": "",
  });
  try {
    const cgroups = new CgroupManager({ root });
    await assert.rejects(
      () => cgroups.create("/ns/t1", "t1", { memory: { limit: 64 << 20 } }),
      /memory\.max: no such file .*the cgroup v2 hierarchy at .* has no cpu, memory, pids controller \(its cgroup\.controllers: "hugetlb"/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
