import assert from "node:assert/strict";
import { createFilesystem, Descriptor, Resolver } from "./filesystem.ts";
import type { InputStream, OutputStream } from "./io.ts";

/** A root with: dir/file.txt, link-rel -> dir/file.txt, link-abs -> /dir, escape -> ../../.. */
async function makeRoot(): Promise<string> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "fs-root-" }));
  await Deno.mkdir(`${root}/dir`);
  await Deno.writeTextFile(`${root}/dir/file.txt`, "inside");
  await Deno.symlink("dir/file.txt", `${root}/link-rel`);
  await Deno.symlink("/dir", `${root}/link-abs`);
  await Deno.symlink("../../../../../../etc", `${root}/escape`);
  await Deno.symlink("loop-b", `${root}/loop-a`);
  await Deno.symlink("loop-a", `${root}/loop-b`);
  return root;
}

function code(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return "no error";
}

function preopen(root: string): Descriptor {
  const fs = createFilesystem(root);
  const dirs =
    (fs.imports["wasi:filesystem/preopens"].getDirectories as () => [Descriptor, string][])();
  assert.equal(dirs.length, 1);
  assert.equal(dirs[0][1], "/");
  return dirs[0][0];
}

Deno.test("Resolver keeps `..` inside the root", async () => {
  const root = await makeRoot();
  try {
    const r = new Resolver(root);
    assert.deepEqual(r.resolve([], "dir/../dir/./file.txt", true), ["dir", "file.txt"]);
    assert.deepEqual(r.resolve(["dir"], "..", true), []);
    assert.equal(code(() => r.resolve([], "..", true)), "not-permitted");
    assert.equal(code(() => r.resolve(["dir"], "../../etc/passwd", true)), "not-permitted");
    assert.equal(code(() => r.resolve([], "/etc/passwd", true)), "not-permitted");
    assert.equal(code(() => r.resolve([], "", true)), "no-entry");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("Resolver follows symlinks itself: relative from the link, absolute from the root", async () => {
  const root = await makeRoot();
  try {
    const r = new Resolver(root);
    assert.deepEqual(r.resolve([], "link-rel", true), ["dir", "file.txt"]);
    assert.deepEqual(r.resolve([], "link-rel", false), ["link-rel"]);
    assert.deepEqual(r.resolve([], "link-abs/file.txt", false), ["dir", "file.txt"]);
    assert.equal(r.host(r.resolve([], "link-abs", true)), `${root}/dir`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("Resolver refuses symlinks that lead out of the root, and loops", async () => {
  const root = await makeRoot();
  try {
    const r = new Resolver(root);
    assert.equal(code(() => r.resolve([], "escape/passwd", true)), "not-permitted");
    assert.equal(code(() => r.resolve([], "escape", true)), "not-permitted");
    assert.equal(code(() => r.resolve([], "loop-a", true)), "loop");
    assert.equal(code(() => r.resolve([], "missing/file", true)), "no-entry");
    assert.equal(code(() => r.resolve([], "dir/file.txt/more", true)), "not-directory");
    // The last component may be missing (it is about to be created).
    assert.deepEqual(r.resolve([], "dir/new.txt", true), ["dir", "new.txt"]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("descriptors: create, write, read, stat, list, rename, unlink", async () => {
  const root = await makeRoot();
  try {
    const dir = preopen(root);
    const file = dir.openAt({}, "dir/new.txt", { create: true, exclusive: true }, {
      read: true,
      write: true,
    });
    assert.equal(file.write(new TextEncoder().encode("hello"), 0n), 5n);
    const [bytes, eof] = file.read(100n, 0n);
    assert.equal(new TextDecoder().decode(bytes), "hello");
    assert.equal(eof, false);
    assert.equal(file.read(100n, 5n)[1], true);
    assert.equal(file.stat().type, "regular-file");
    assert.equal(file.stat().size, 5n);
    file[Symbol.dispose]();
    assert.equal(
      code(() => dir.openAt({}, "dir/new.txt", { create: true, exclusive: true }, { write: true })),
      "exist",
    );
    const names = [];
    const entries = dir.openAt({}, "dir", { directory: true }, { read: true }).readDirectory();
    for (let e = entries.readDirectoryEntry(); e; e = entries.readDirectoryEntry()) {
      names.push(e.name);
    }
    assert.deepEqual(names.sort(), ["file.txt", "new.txt"]);
    dir.renameAt("dir/new.txt", dir, "renamed.txt");
    assert.equal(await Deno.readTextFile(`${root}/renamed.txt`), "hello");
    dir.unlinkFileAt("renamed.txt");
    assert.equal(code(() => dir.statAt({}, "renamed.txt")), "no-entry");
    assert.equal(code(() => dir.unlinkFileAt("dir")), "is-directory");
    dir.createDirectoryAt("made");
    assert.equal(dir.statAt({}, "made").type, "directory");
    dir.removeDirectoryAt("made");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("descriptors: streams read and write a file", async () => {
  const root = await makeRoot();
  try {
    const dir = preopen(root);
    const file = dir.openAt({}, "streamed.txt", { create: true }, { read: true, write: true });
    const out: OutputStream = file.writeViaStream(0n);
    assert.ok(out.checkWrite() > 0n);
    out.write(new TextEncoder().encode("via "));
    await out.blockingWriteAndFlush(new TextEncoder().encode("streams"));
    out[Symbol.dispose]();
    const input: InputStream = file.readViaStream(4n);
    assert.equal(new TextDecoder().decode(await input.blockingRead(100n)), "streams");
    assert.throws(
      () => input.read(100n),
      (err: unknown) => (err as { tag: string }).tag === "closed",
    );
    input[Symbol.dispose]();
    file[Symbol.dispose]();
    assert.equal(await Deno.readTextFile(`${root}/streamed.txt`), "via streams");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("descriptors: symlinks are not followed unless asked, never out of the root", async () => {
  const root = await makeRoot();
  try {
    const dir = preopen(root);
    assert.equal(dir.statAt({}, "link-rel").type, "symbolic-link");
    assert.equal(dir.statAt({ symlinkFollow: true }, "link-rel").type, "regular-file");
    assert.equal(dir.readlinkAt("link-abs"), "/dir");
    assert.equal(code(() => dir.openAt({}, "link-rel", {}, { read: true })), "loop");
    const f = dir.openAt({ symlinkFollow: true }, "link-rel", {}, { read: true });
    assert.equal(new TextDecoder().decode(f.read(10n, 0n)[0]), "inside");
    assert.equal(
      code(() => dir.openAt({ symlinkFollow: true }, "escape/passwd", {}, { read: true })),
      "not-permitted",
    );
    assert.equal(code(() => dir.symlinkAt("/etc/passwd", "evil")), "not-permitted");
    dir.symlinkAt("dir/file.txt", "fine");
    assert.equal(dir.readlinkAt("fine"), "dir/file.txt");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("createFilesystem without a root has no preopens", () => {
  const fs = createFilesystem(null);
  assert.deepEqual(
    (fs.imports["wasi:filesystem/preopens"].getDirectories as () => unknown[])(),
    [],
  );
});

Deno.test("closing a filesystem closes the files its instance left open", async () => {
  const root = await makeRoot();
  try {
    const fs = createFilesystem(root);
    const [[dir]] =
      (fs.imports["wasi:filesystem/preopens"].getDirectories as () => [Descriptor, string][])();
    const file = dir.openAt({}, "dir/file.txt", {}, { read: true });
    fs.close();
    assert.equal(code(() => file.read(1n, 0n)), "bad-descriptor");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
