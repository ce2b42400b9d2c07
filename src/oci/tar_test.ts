import assert from "node:assert/strict";
import { BLOCK_SIZE, normalizeTarPath, readTar, writeTar } from "./tar.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

async function gnuTar(args: string[], stdin?: Uint8Array): Promise<string> {
  const child = new Deno.Command("tar", {
    args,
    stdin: stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin) {
    const w = child.stdin.getWriter();
    await w.write(stdin);
    await w.close();
  }
  const out = await child.output();
  if (!out.success) throw new Error(`tar ${args.join(" ")} failed: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

Deno.test("writeTar: files, directories, symlinks round-trip through readTar", () => {
  const tar = writeTar([
    { path: "/bin/app", data: enc.encode("#!/bin/sh\n"), mode: 0o755 },
    { path: "etc", type: "directory" },
    { path: "etc/hosts", data: enc.encode("127.0.0.1 localhost\n") },
    { path: "link", type: "symlink", linkname: "bin/app" },
  ], { addParents: true });
  assert.equal(tar.length % BLOCK_SIZE, 0);
  const entries = readTar(tar);
  assert.deepEqual(
    entries.map((e) => [e.path, e.type, e.mode.toString(8), e.uid, e.gid, e.mtime]),
    [
      ["bin", "directory", "755", 0, 0, 0],
      ["bin/app", "file", "755", 0, 0, 0],
      ["etc", "directory", "755", 0, 0, 0],
      ["etc/hosts", "file", "644", 0, 0, 0],
      ["link", "symlink", "777", 0, 0, 0],
    ],
  );
  assert.equal(dec.decode(entries[3].data), "127.0.0.1 localhost\n");
  assert.equal(entries[4].linkname, "bin/app");
});

Deno.test("writeTar: same entries in any order give identical bytes", () => {
  const a = writeTar([
    { path: "b", data: enc.encode("2") },
    { path: "a", data: enc.encode("1") },
  ]);
  const b = writeTar([
    { path: "a", data: enc.encode("1") },
    { path: "b", data: enc.encode("2") },
  ]);
  assert.deepEqual(a, b);
  assert.deepEqual(readTar(a).map((e) => e.path), ["a", "b"]);
});

Deno.test("writeTar: sort:false keeps the given order", () => {
  const tar = writeTar([{ path: "z" }, { path: "a" }], { sort: false });
  assert.deepEqual(readTar(tar).map((e) => e.path), ["z", "a"]);
});

Deno.test("writeTar: long names use the ustar prefix, then pax", () => {
  const dir = "d".repeat(120);
  const viaPrefix = `${dir}/file.txt`; // 129 bytes: fits prefix(120) + name(8)
  const viaPax = `${"x".repeat(60)}/${"y".repeat(130)}`; // last segment > 100: needs pax
  const longLink = "t/".repeat(80);
  const tar = writeTar([
    { path: viaPrefix, data: enc.encode("p") },
    { path: viaPax, data: enc.encode("x") },
    { path: "l", type: "symlink", linkname: longLink },
    { path: `${"q".repeat(150)}/${"r".repeat(50)}`, type: "directory" },
  ]);
  const entries = readTar(tar);
  assert.deepEqual(
    entries.map((e) => e.path).sort(),
    [
      "l",
      `${"q".repeat(150)}/${"r".repeat(50)}`,
      viaPrefix,
      viaPax,
    ].sort(),
  );
  assert.equal(entries.find((e) => e.path === "l")!.linkname, longLink);
  // The pax header ('x') comes right before the entry it describes.
  const typeflags: string[] = [];
  for (let off = 0; off < tar.length; off += BLOCK_SIZE) {
    const t = tar[off + 156];
    if (t === 0x78) typeflags.push("x");
  }
  assert.equal(typeflags.length, 2);
});

Deno.test("writeTar: pax record lengths are right at digit boundaries", () => {
  // A record's length counts its own digits: "<len> path=<990 bytes>\n" is 1001 bytes,
  // one of 989 bytes is 999. Sweep path lengths across that boundary.
  for (let n = 980; n <= 1000; n++) {
    const path = "p".repeat(n - 102) + "/" + "q".repeat(101);
    assert.deepEqual(readTar(writeTar([{ path }])).map((e) => e.path), [path], `length ${n}`);
  }
});

Deno.test("writeTar: GNU tar reads what we write, including long names", async () => {
  const long = `${"a".repeat(70)}/${"b".repeat(70)}/${"c".repeat(110)}.txt`;
  const tar = writeTar([
    { path: "dir/f", data: enc.encode("hello"), mode: 0o600 },
    { path: long, data: enc.encode("long") },
    { path: "s", type: "symlink", linkname: "dir/f" },
  ], { addParents: true });
  const list = await gnuTar(["-tvf", "-"], tar);
  assert.match(list, /-rw------- 0\/0 +5 1970-01-01 00:00 dir\/f/);
  assert.match(list, /lrwxrwxrwx 0\/0 +0 1970-01-01 00:00 s -> dir\/f/);
  assert.ok(list.includes(long), list);
  const content = await gnuTar(["-xOf", "-", long], tar);
  assert.equal(content, "long");
});

Deno.test("readTar: reads GNU tar output (posix format with long names)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const long = "n".repeat(180);
    await Deno.writeTextFile(`${dir}/${long}`, "gnu");
    await Deno.mkdir(`${dir}/sub`);
    await Deno.writeTextFile(`${dir}/sub/x`, "x");
    for (const format of ["posix", "gnu"]) {
      const out = await new Deno.Command("tar", {
        args: ["-C", dir, `--format=${format}`, "-cf", "-", long, "sub"],
        stdout: "piped",
      }).output();
      assert.ok(out.success);
      const entries = readTar(out.stdout);
      const byPath = new Map(entries.map((e) => [e.path, e]));
      assert.equal(dec.decode(byPath.get(long)!.data), "gnu", format);
      assert.equal(byPath.get("sub")!.type, "directory", format);
      assert.equal(dec.decode(byPath.get("sub/x")!.data), "x", format);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeTar: rejects duplicates, escapes and bad modes", () => {
  assert.throws(() => writeTar([{ path: "a" }, { path: "/a" }]), /appears twice/);
  assert.throws(() => writeTar([{ path: "../etc/passwd" }]), /contains ".."/);
  assert.throws(() => writeTar([{ path: "/" }]), /is empty/);
  assert.throws(() => writeTar([{ path: "a", mode: 0o10000 }]), /permission bits/);
  assert.throws(() => writeTar([{ path: "l", type: "symlink" }]), /without a target/);
  assert.throws(
    () => writeTar([{ path: "f", data: enc.encode("x") }, { path: "f/g" }], { addParents: true }),
    /not a directory/,
  );
  // Repeated directories are merged, not an error.
  assert.equal(
    readTar(writeTar([{ path: "d", type: "directory" }, { path: "d/", type: "directory" }])).length,
    1,
  );
});

Deno.test("readTar: detects corruption", () => {
  const tar = writeTar([{ path: "a", data: enc.encode("abc") }]);
  const bad = tar.slice();
  bad[0] = 0x62; // change the name without fixing the checksum
  assert.throws(() => readTar(bad), /checksum/);
  assert.throws(() => readTar(tar.subarray(0, BLOCK_SIZE)), /archive ends first/);
});

Deno.test("normalizeTarPath", () => {
  assert.equal(normalizeTarPath("/a//b/./c/"), "a/b/c");
  assert.equal(normalizeTarPath("./x"), "x");
});
