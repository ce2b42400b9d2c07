import assert from "node:assert/strict";
import { mountAll, parseMountOptions, unmountAll } from "./mount.ts";

Deno.test("parseMountOptions splits flags from data", () => {
  assert.deepEqual(parseMountOptions(["rbind", "rw"]), { flags: 0x5000, data: "" });
  assert.deepEqual(
    parseMountOptions(["index=off", "lowerdir=/a:/b", "upperdir=/u", "workdir=/w"]),
    { flags: 0, data: "index=off,lowerdir=/a:/b,upperdir=/u,workdir=/w" },
  );
  assert.deepEqual(parseMountOptions(["ro", "bind", "nosuid"]), { flags: 0x1003, data: "" });
});

Deno.test({
  name: "mountAll binds and unmountAll removes",
  fn() {
    const src = Deno.makeTempDirSync();
    const dst = Deno.makeTempDirSync();
    try {
      Deno.writeTextFileSync(`${src}/f`, "x");
      mountAll([{ type: "bind", source: src, options: ["rbind", "ro"] }], dst);
      assert.equal(Deno.readTextFileSync(`${dst}/f`), "x");
      assert.throws(() => Deno.writeTextFileSync(`${dst}/g`, "y"));
      assert.equal(unmountAll(dst), 1);
      assert.equal(unmountAll(dst), 0);
      assert.throws(() => Deno.readTextFileSync(`${dst}/f`));
    } finally {
      unmountAll(dst);
      Deno.removeSync(src, { recursive: true });
      Deno.removeSync(dst, { recursive: true });
    }
  },
});

Deno.test({
  name: "mountAll reports a failing mount precisely",
  fn() {
    const dst = Deno.makeTempDirSync();
    try {
      assert.throws(
        () => mountAll([{ type: "bind", source: "/nonexistent-src", options: ["rbind"] }], dst),
        /mount \/nonexistent-src on .*: No such file or directory/,
      );
    } finally {
      Deno.removeSync(dst, { recursive: true });
    }
  },
});
