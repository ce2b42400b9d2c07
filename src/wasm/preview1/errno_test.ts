import assert from "node:assert/strict";
import { PathResolutionError } from "../rootfs_path.ts";
import {
  EACCES,
  EEXIST,
  EINVAL,
  EIO,
  ELOOP,
  ENOENT,
  ENOTCAPABLE,
  ENOTDIR,
  ENOTEMPTY,
  ENOTSUP,
  EPERM,
  errnoOf,
  WasiError,
} from "./errno.ts";

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected an error");
}

Deno.test("errnoOf maps what Deno throws to WASI errnos", () => {
  const dir = Deno.makeTempDirSync({ prefix: "errno-" });
  try {
    Deno.mkdirSync(`${dir}/full`);
    Deno.writeTextFileSync(`${dir}/full/x`, "");
    assert.equal(errnoOf(thrown(() => Deno.lstatSync(`${dir}/nope`))), ENOENT);
    assert.equal(errnoOf(thrown(() => Deno.mkdirSync(`${dir}/full`))), EEXIST);
    assert.equal(errnoOf(thrown(() => Deno.removeSync(`${dir}/full`))), ENOTEMPTY);
    assert.equal(errnoOf(thrown(() => Deno.lstatSync(`${dir}/full/x/y`))), ENOTDIR);
    assert.equal(errnoOf(thrown(() => Deno.readLinkSync(`${dir}/full/x`))), EINVAL);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  // Without a code, by class; Deno's own permission refusals are capabilities.
  assert.equal(errnoOf(new Deno.errors.PermissionDenied("no")), EACCES);
  assert.equal(errnoOf(new Deno.errors.NotCapable("no")), ENOTCAPABLE);
  assert.equal(errnoOf(new Deno.errors.FilesystemLoop("loop")), ELOOP);
  assert.equal(errnoOf(Object.assign(new Error("x"), { code: "EOPNOTSUPP" })), ENOTSUP);
  assert.equal(errnoOf(new Error("Something (os error 200)")), EIO);
});

Deno.test("errnoOf: resolver refusals, WasiError, and bugs that stay errors", () => {
  assert.equal(errnoOf(new PathResolutionError("escape", "..")), ENOTCAPABLE);
  assert.equal(errnoOf(new PathResolutionError("absolute", "/x")), ENOTCAPABLE);
  assert.equal(errnoOf(new PathResolutionError("loop", "a")), ELOOP);
  assert.equal(errnoOf(new PathResolutionError("empty", "")), ENOENT);
  assert.equal(errnoOf(new WasiError(EPERM, "refused")), EPERM);
  // Not host errors: a bug in the host must not become an errno.
  assert.equal(errnoOf(new TypeError("x is undefined")), undefined);
  assert.equal(errnoOf("a string"), undefined);
});
