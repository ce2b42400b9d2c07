import assert from "node:assert/strict";
import { firstClosedParent, resolveInRoot } from "./container_setup.ts";

Deno.test("resolveInRoot: creates what is missing, follows links inside, refuses escapes", () => {
  const root = Deno.makeTempDirSync();
  try {
    Deno.mkdirSync(`${root}/etc`);
    Deno.writeTextFileSync(`${root}/etc/hosts`, "");
    Deno.symlinkSync("/etc", `${root}/abs`); // absolute: from the root, as the container sees it
    Deno.symlinkSync("etc", `${root}/rel`);
    Deno.symlinkSync("../../../../../tmp", `${root}/out`);
    Deno.symlinkSync("loop", `${root}/loop`);
    assert.equal(resolveInRoot(root, "/a/b/c", "directory"), `${root}/a/b/c`);
    assert.ok(Deno.statSync(`${root}/a/b/c`).isDirectory);
    assert.equal(resolveInRoot(root, "/a/f", "file"), `${root}/a/f`);
    assert.ok(Deno.statSync(`${root}/a/f`).isFile);
    assert.equal(resolveInRoot(root, "/abs/hosts", "file"), `${root}/etc/hosts`);
    assert.equal(resolveInRoot(root, "/rel/x", "directory"), `${root}/etc/x`);
    assert.equal(resolveInRoot(root, "/a/../etc", "directory"), `${root}/etc`);
    assert.throws(() => resolveInRoot(root, "/out/x", "directory"), /leads outside/);
    assert.throws(() => resolveInRoot(root, "/loop", "file"), /too many symbolic links/);
    assert.throws(() => resolveInRoot(root, "/etc/hosts", "directory"), /is not a directory/);
    assert.throws(() => resolveInRoot(root, "/etc", "file"), /is a directory in the image/);
    assert.throws(() => resolveInRoot(root, "/etc/hosts/x", "file"), /is not a directory/);
    assert.equal(Deno.statSync("/tmp").isDirectory, true); // nothing made outside
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("firstClosedParent: the first parent others cannot search", () => {
  const modes: Record<string, number> = { "/run": 0o755, "/run/c": 0o700, "/run/c/b": 0o700 };
  assert.equal(firstClosedParent("/run/c/b/rootfs", (p) => modes[p]), "/run/c");
  assert.equal(firstClosedParent("/run/rootfs", (p) => modes[p]), undefined);
});
