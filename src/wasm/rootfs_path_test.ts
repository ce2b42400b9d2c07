import assert from "node:assert/strict";
import { MAX_SYMLINKS, PathResolutionError, RootfsResolver } from "./rootfs_path.ts";

/** A root with dir/file.txt and symlinks: relative, absolute, escaping, looping. */
function makeRoot(): string {
  const root = Deno.realPathSync(Deno.makeTempDirSync({ prefix: "rootfs-path-" }));
  Deno.mkdirSync(`${root}/dir`);
  Deno.writeTextFileSync(`${root}/dir/file.txt`, "inside");
  Deno.symlinkSync("dir/file.txt", `${root}/rel`);
  Deno.symlinkSync("/dir", `${root}/abs`);
  Deno.symlinkSync("../../../../etc", `${root}/escape`);
  Deno.symlinkSync("loop-b", `${root}/loop-a`);
  Deno.symlinkSync("loop-a", `${root}/loop-b`);
  return root;
}

function refusal(fn: () => unknown): PathResolutionError {
  try {
    fn();
  } catch (err) {
    if (err instanceof PathResolutionError) return err;
    throw err;
  }
  throw new Error("expected a PathResolutionError");
}

Deno.test("RootfsResolver keeps `..` inside the root and refuses absolute paths", () => {
  const root = makeRoot();
  try {
    const r = new RootfsResolver(root);
    assert.deepEqual(r.resolve([], "dir/../dir/./file.txt", true), ["dir", "file.txt"]);
    assert.deepEqual(r.resolve(["dir"], "..", true), []);
    for (const path of ["..", "dir/../../x"]) {
      const err = refusal(() => r.resolve([], path, true));
      assert.equal(err.reason, "escape");
      assert.equal(err.code, "EPERM");
      assert.ok(err.isEscape);
      assert.match(err.message, /leads outside the container's root/);
    }
    assert.equal(refusal(() => r.resolve([], "/etc", true)).reason, "absolute");
    assert.equal(refusal(() => r.resolve([], "", true)).code, "ENOENT");
    assert.equal(refusal(() => r.resolve([], "a\0b", true)).code, "EILSEQ");
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("RootfsResolver follows symlinks itself, never out of the root", () => {
  const root = makeRoot();
  try {
    const r = new RootfsResolver(`${root}/`);
    assert.equal(r.root, root);
    assert.deepEqual(r.resolve([], "rel", true), ["dir", "file.txt"]);
    assert.deepEqual(r.resolve([], "rel", false), ["rel"]);
    assert.deepEqual(r.resolve([], "abs/file.txt", false), ["dir", "file.txt"]);
    assert.equal(r.host(r.resolve([], "abs", true)), `${root}/dir`);
    assert.equal(r.host([]), root);
    assert.ok(refusal(() => r.resolve([], "escape/passwd", true)).isEscape);
    const loop = refusal(() => r.resolve([], "loop-a", true));
    assert.equal(loop.code, "ELOOP");
    assert.match(loop.message, new RegExp(`more than ${MAX_SYMLINKS} symbolic links`));
    assert.equal(refusal(() => r.resolve([], "dir/file.txt/x", true)).code, "ENOTDIR");
    assert.equal(refusal(() => r.resolve([], "rel/", false)).code, "ENOTDIR");
    // A missing last component is fine (about to be created); a missing directory is not.
    assert.deepEqual(r.resolve([], "dir/new", true), ["dir", "new"]);
    assert.throws(() => r.resolve([], "missing/new", true), Deno.errors.NotFound);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});
