import assert from "node:assert/strict";
import { PathResolutionError } from "../rootfs_path.ts";
import { FILETYPE_DIRECTORY, FILETYPE_REGULAR_FILE, FILETYPE_SYMBOLIC_LINK } from "./abi.ts";
import { EEXIST, EISDIR, ELOOP, ENOENT, ENOTSUP, errnoOf } from "./errno.ts";
import { type OpenRequest, RootFs } from "./fs.ts";

const READ: OpenRequest = {
  follow: true,
  create: false,
  exclusive: false,
  truncate: false,
  directory: false,
  read: true,
  write: false,
  append: false,
};

function errno(fn: () => unknown): number | undefined {
  try {
    fn();
  } catch (err) {
    return errnoOf(err);
  }
  throw new Error("expected an error");
}

function withRoot(fn: (fs: RootFs, root: string) => void): void {
  const dir = Deno.makeTempDirSync({ prefix: "preview1-fs-" });
  try {
    Deno.mkdirSync(`${dir}/d`);
    Deno.writeTextFileSync(`${dir}/d/f`, "data");
    Deno.symlinkSync("d/f", `${dir}/ln`);
    // Given through a symlink: the root is made canonical.
    Deno.symlinkSync(dir, `${dir}.alias`);
    fn(new RootFs(`${dir}.alias`), Deno.realPathSync(dir));
  } finally {
    Deno.removeSync(`${dir}.alias`);
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("RootFs.open: files, directories, creation without write access", () => {
  withRoot((fs, root) => {
    assert.equal(fs.root, root);
    const file = fs.open([], "ln", READ);
    assert.equal(file.kind, "file");
    if (file.kind === "file") {
      assert.deepEqual(file.path, ["d", "f"]);
      file.file.close();
    }
    assert.deepEqual(fs.open([], "d", READ), { kind: "dir", path: ["d"] });
    assert.deepEqual(fs.open(["d"], "..", READ), { kind: "dir", path: [] });
    assert.equal(errno(() => fs.open([], "ln", { ...READ, follow: false })), ELOOP);
    assert.equal(errno(() => fs.open([], "d", { ...READ, write: true })), EISDIR);
    assert.equal(errno(() => fs.open([], "d", { ...READ, create: true })), EISDIR);
    assert.equal(errno(() => fs.open([], "new/", { ...READ, create: true })), EISDIR);
    assert.equal(errno(() => fs.open([], "missing", READ)), ENOENT);
    const made = fs.open([], "d/new", { ...READ, create: true, exclusive: true });
    assert.equal(made.kind, "file");
    if (made.kind === "file") made.file.close();
    assert.equal(Deno.statSync(`${root}/d/new`).isFile, true);
    assert.equal(
      errno(() => fs.open([], "d/new", { ...READ, create: true, exclusive: true })),
      EEXIST,
    );
  });
});

Deno.test("RootFs: listing, mkdir with a trailing slash, times, symlink targets", () => {
  withRoot((fs, root) => {
    const list = fs.list([]);
    assert.deepEqual(list.slice(0, 2).map((e) => e.name), [".", ".."]);
    assert.equal(list[0].ino, BigInt(Deno.statSync(root).ino!));
    const types = Object.fromEntries(list.map((e) => [e.name, e.type]));
    assert.equal(types.d, FILETYPE_DIRECTORY);
    assert.equal(types.ln, FILETYPE_SYMBOLIC_LINK);
    assert.equal(fs.list(["d"]).find((e) => e.name === "f")?.type, FILETYPE_REGULAR_FILE);
    fs.mkdir([], "made//");
    assert.ok(Deno.statSync(`${root}/made`).isDirectory);
    assert.equal(errno(() => fs.mkdir([], "made")), EEXIST);
    fs.setTimes([], "ln", true, null, 1_000_000);
    assert.equal(Deno.statSync(`${root}/d/f`).mtime?.getTime(), 1_000_000_000);
    assert.equal(errno(() => fs.setTimes([], "ln", false, "now", "now")), ENOTSUP);
    assert.throws(() => fs.symlink("a\0b", [], "x"), PathResolutionError);
    fs.symlink("d", [], "rel");
    assert.equal(fs.readlink([], "rel"), "d");
  });
});
