import assert from "node:assert/strict";
import { CgroupManager, type JoinableCgroup, joinCgroup } from "./cgroup.ts";
import { fakeRoot, read, v2Files } from "./test_util.ts";
import { V1_CONTROLLERS } from "./v1.ts";

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

/** A task cgroup that records what {@linkcode joinCgroup} does to it. */
function recordingCgroup(adopt: () => Promise<boolean>) {
  const calls: string[] = [];
  const cgroup: JoinableCgroup<string> = {
    adopt: (warm, resources) => {
      calls.push(`adopt ${warm} ${JSON.stringify(resources)}`);
      return adopt();
    },
    make: () => (calls.push("make"), Promise.resolve()),
    apply: (resources) => (calls.push(`apply ${JSON.stringify(resources)}`), Promise.resolve()),
    addProcess: (pid) => (calls.push(`addProcess ${pid}`), Promise.resolve()),
  };
  return { cgroup, calls };
}

Deno.test("joinCgroup: a warm cgroup is adopted, the process is not moved", async () => {
  const { cgroup, calls } = recordingCgroup(() => Promise.resolve(true));
  const resources = { pids: { limit: 10 } };
  assert.equal(await joinCgroup(cgroup, 42, "warm-1", resources), "adopted");
  assert.deepEqual(calls, [`adopt warm-1 ${JSON.stringify(resources)}`]);
});

Deno.test("joinCgroup: no warm cgroup, or one a rename cannot take: the process is moved", async () => {
  const none = recordingCgroup(() => Promise.resolve(true));
  assert.equal(await joinCgroup(none.cgroup, 42, undefined, undefined), "moved");
  assert.deepEqual(none.calls, ["addProcess 42"]);
  const v2 = recordingCgroup(() => Promise.resolve(false));
  assert.equal(await joinCgroup(v2.cgroup, 42, "warm-1", undefined), "moved");
  assert.deepEqual(v2.calls, ["adopt warm-1 undefined", "addProcess 42"]);
});

Deno.test("joinCgroup: a failed rename falls back to remaking the cgroup and moving the process", async () => {
  const { cgroup, calls } = recordingCgroup(() =>
    Promise.reject(new Error("cannot rename cgroup /a/warm-1 to /a/t1: EBUSY"))
  );
  const logged: string[] = [];
  const resources = { memory: { limit: 1 << 20 } };
  assert.equal(
    await joinCgroup(cgroup, 42, "warm-1", resources, (line) => logged.push(line)),
    "moved",
  );
  assert.deepEqual(calls, [
    `adopt warm-1 ${JSON.stringify(resources)}`,
    "make",
    `apply ${JSON.stringify(resources)}`,
    "addProcess 42",
  ]);
  assert.deepEqual(logged, [
    "cannot rename cgroup /a/warm-1 to /a/t1: EBUSY; moving its process instead",
  ]);
});

Deno.test("joinCgroup, v1: a warm cgroup that is gone leaves the task's remade for the process", async () => {
  const root = await fakeV1Parents("/ns");
  try {
    const task = new CgroupManager({ root, version: 1, selfCgroup: "" }).locate("/ns/t1", "t1");
    await task.make();
    // The warm cgroup was never made: the rename fails after the task's directories went.
    const logged: string[] = [];
    await assert.rejects(
      () =>
        joinCgroup(task, 42, task.sibling("wasmtime-warm-9-9"), undefined, (l) => logged.push(l)),
      /cannot move pid 42 into cgroup .*\/ns\/t1/,
    );
    assert.match(
      logged[0],
      /cannot rename cgroup .*wasmtime-warm-9-9.*; moving its process instead/,
    );
    for (const dir of task.dirs) await Deno.stat(dir); // made again
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
