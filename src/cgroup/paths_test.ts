import assert from "node:assert/strict";
import { Kind, type ShimError } from "../errdefs/errors.ts";
import { cleanPath, expandSlice, isSystemdPath, parseProcCgroup, taskCgroupPath } from "./paths.ts";

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
