import assert from "node:assert/strict";
import { Kind, type ShimError } from "../errdefs/errors.ts";
import {
  DEFAULT_RUNC_ROOT,
  deleteMarkedContainer,
  findRunc,
  lastLoggedError,
  readMarker,
  RUNC_ENV,
  RUNC_ROOT_ENV,
  runcRoot,
  writeMarker,
} from "./runc.ts";
import { BundleFile, bundlePath } from "../oci/bundle.ts";

const env = (vars: Record<string, string>) => ({ get: (name: string) => vars[name] });

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "runc-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function fakeRunc(dir: string, name = "runc", script = "exit 0"): Promise<string> {
  const path = `${dir}/${name}`;
  await Deno.writeTextFile(path, `#!/bin/sh\n${script}\n`, { mode: 0o755 });
  await Deno.chmod(path, 0o755);
  return path;
}

Deno.test("findRunc: runc on PATH, or the path WASMTIME_SHIM_RUNC names", async () => {
  await withTempDir(async (dir) => {
    await Deno.mkdir(`${dir}/bin`);
    const onPath = await fakeRunc(`${dir}/bin`);
    assert.equal(findRunc(env({ PATH: `/nowhere:${dir}/bin` })), onPath);
    const chosen = await fakeRunc(dir, "my-runc");
    assert.equal(findRunc(env({ PATH: `${dir}/bin`, [RUNC_ENV]: chosen })), chosen);
    assert.equal(findRunc(env({ PATH: `${dir}`, [RUNC_ENV]: "my-runc" })), chosen);
  });
});

Deno.test("findRunc: FAILED_PRECONDITION naming what is missing", async () => {
  await withTempDir(async (dir) => {
    const missing = (vars: Record<string, string>, re: RegExp) =>
      assert.throws(
        () => findRunc(env(vars)),
        (e: ShimError) => e.kind === Kind.FAILED_PRECONDITION && re.test(e.message),
      );
    missing({ PATH: dir }, new RegExp(`runc is not on PATH \\(${dir}\\) and ${RUNC_ENV}`));
    missing({ PATH: dir, [RUNC_ENV]: `${dir}/nope` }, new RegExp(`${RUNC_ENV}=${dir}/nope`));
    await Deno.writeTextFile(`${dir}/runc`, "not executable");
    missing({ PATH: dir }, /runc is not on PATH/);
    missing({}, /runc is not on PATH \(\)/);
  });
});

Deno.test("runcRoot: one root per namespace under WASMTIME_SHIM_RUNC_ROOT", () => {
  assert.equal(runcRoot("k8s.io", env({})), `${DEFAULT_RUNC_ROOT}/k8s.io`);
  assert.equal(runcRoot("default", env({ [RUNC_ROOT_ENV]: "/tmp/r/" })), "/tmp/r/default");
  assert.equal(runcRoot("x", env({ [RUNC_ROOT_ENV]: "" })), `${DEFAULT_RUNC_ROOT}/x`);
});

Deno.test("lastLoggedError: the last error of runc's JSON log", () => {
  const log = [
    `{"level":"warning","msg":"a warning","time":"2026-01-01T00:00:00Z"}`,
    `{"level":"error","msg":"first","time":"2026-01-01T00:00:00Z"}`,
    "not json",
    `{"level":"error","msg":"runc create failed: exec: \\"/nope\\": not found"}`,
    "",
  ].join("\n");
  assert.equal(lastLoggedError(log), `runc create failed: exec: "/nope": not found`);
  assert.equal(lastLoggedError(`{"level":"info","msg":"x"}`), undefined);
  assert.equal(lastLoggedError(""), undefined);
});

Deno.test("the bundle marker: written at Create, read and removed by the delete action", async () => {
  await withTempDir(async (dir) => {
    assert.equal(await readMarker(dir), undefined);
    assert.equal(await deleteMarkedContainer(dir, "c1"), false, "not a native task");
    const calls = `${dir}/calls`;
    const runc = await fakeRunc(dir, "runc", `echo "$*" >> ${calls}`);
    await writeMarker(dir, { runc, root: `${dir}/root`, systemdCgroup: false });
    assert.deepEqual(await readMarker(dir), { runc, root: `${dir}/root`, systemdCgroup: false });
    assert.equal(await deleteMarkedContainer(dir, "c1"), true);
    assert.equal(await Deno.readTextFile(calls), `--root ${dir}/root delete --force c1\n`);
    assert.equal(await readMarker(dir), undefined, "the marker is gone");

    const failing = await fakeRunc(dir, "failing", `echo "container is busy" >&2; exit 1`);
    await writeMarker(dir, { runc: failing, root: `${dir}/root`, systemdCgroup: true });
    await assert.rejects(
      () => deleteMarkedContainer(dir, "c1"),
      /runc delete failed \(exit code 1\): container is busy/,
    );
    assert.ok(await readMarker(dir), "kept for another try");
    await Deno.writeTextFile(bundlePath(dir, BundleFile.RUNC_MARKER), "{}");
    await assert.rejects(() => readMarker(dir), /does not name runc/);
  });
});
