import assert from "node:assert/strict";
import { MountFlag, normalizeDestination, planMounts } from "./mounts.ts";
import { parseSpec, parseUser } from "./spec.ts";

const kinds = (path: string) =>
  path === "/srv/dir" ? "directory" as const : path === "/srv/file" ? "file" as const : "missing";

Deno.test("planMounts: bind files and dirs, tmpfs, in spec order; kernel types skipped", () => {
  const plan = planMounts(
    [
      { destination: "/proc", type: "proc", source: "proc", options: [] },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "mode=755"] },
      { destination: "/data", type: "bind", source: "/srv/dir", options: ["rbind", "rw"] },
      { destination: "/data/conf", type: "bind", source: "/srv/file", options: ["bind", "ro"] },
      {
        destination: "/x",
        type: "none",
        source: "/srv/dir",
        options: ["rbind", "nosuid", "rprivate"],
      },
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["ro"] },
    ],
    "spec",
    kinds,
  );
  assert.deepEqual(plan.map((m) => [m.destination, m.kind, m.directory, m.recursive]), [
    ["/dev", "tmpfs", true, false],
    ["/data", "bind", true, true],
    ["/data/conf", "bind", false, false],
    ["/x", "bind", true, true],
  ]);
  assert.equal(plan[0].flags, MountFlag.MS_NOSUID);
  assert.equal(plan[0].data, "mode=755");
  assert.equal(plan[1].flags, 0);
  assert.equal(plan[2].flags, MountFlag.MS_RDONLY);
  assert.equal(plan[3].flags, MountFlag.MS_NOSUID);
  assert.match(plan[2].name, /mounts\[3\] \(bind on \/data\/conf\)/);
});

Deno.test("planMounts refuses bad entries, naming them", () => {
  const one = (m: { destination: string; type: string; source: string; options?: string[] }) =>
    planMounts([{ options: [], ...m }], "spec", kinds);
  assert.throws(
    () => one({ destination: "/a", type: "bind", source: "/nope" }),
    /mounts\[0\] \(bind on \/a\): bind source \/nope does not exist/,
  );
  assert.throws(
    () => one({ destination: "/a/../../etc", type: "bind", source: "/srv/dir" }),
    /leads outside the container's root/,
  );
  assert.throws(
    () => one({ destination: "/a/..", type: "tmpfs", source: "tmpfs" }),
    /a mount over the container's root is not allowed/,
  );
  assert.throws(
    () => one({ destination: "/", type: "bind", source: "/srv/dir" }),
    /over the container's root/,
  );
  assert.throws(
    () => one({ destination: "/a", type: "nfs", source: "host:/x" }),
    /mounts\[0\] \(nfs on \/a\): mount type "nfs" is not supported/,
  );
  assert.throws(
    () => one({ destination: "rel", type: "tmpfs", source: "tmpfs" }),
    /is not an absolute path/,
  );
});

Deno.test("normalizeDestination drops . and .. that stay inside", () => {
  assert.equal(normalizeDestination("//a/./b/../c/", "m"), "/a/c");
  assert.throws(() => normalizeDestination("/..", "m"), /leads outside/);
});

Deno.test("parseUser: numeric ids; -1 and non-integers refused", () => {
  assert.deepEqual(parseUser(undefined, "s"), { uid: 0, gid: 0, additionalGids: [] });
  assert.deepEqual(parseUser({ uid: 1000, gid: 100, additionalGids: [10, 20] }, "s"), {
    uid: 1000,
    gid: 100,
    additionalGids: [10, 20],
  });
  assert.throws(() => parseUser({ uid: 4294967295 }, "s"), /process.user.uid 4294967295 is not/);
  assert.throws(() => parseUser({ uid: -1 }, "s"), /uid -1 is not a valid uid/);
  assert.throws(() => parseUser({ uid: 0, gid: 1.5 }, "s"), /gid 1.5/);
  assert.throws(() => parseUser({ additionalGids: ["x"] }, "s"), /additionalGids/);
  const spec = parseSpec({
    process: { args: ["a"], user: { uid: 5, gid: 6 } },
    mounts: [{ destination: "/m", type: "tmpfs", source: "tmpfs" }],
  }, "c");
  assert.deepEqual(spec.user, { uid: 5, gid: 6, additionalGids: [] });
  assert.deepEqual(spec.mounts, [{
    destination: "/m",
    type: "tmpfs",
    source: "tmpfs",
    options: [],
  }]);
  assert.throws(() => parseSpec({ process: { args: ["a"] }, mounts: [{}] }, "c"), /mounts\[0\]/);
});
