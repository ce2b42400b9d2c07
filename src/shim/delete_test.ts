import assert from "node:assert/strict";
import { ProtoReader } from "../proto/wire.ts";
import { DELETED_EXIT_STATUS } from "./delete.ts";
import { BundleFile, bundlePath } from "../oci/bundle.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

interface Decoded {
  pid: number;
  exit_status: number;
  exited_at?: { seconds: number; nanos: number };
}

/** Decodes a `DeleteResponse` (wire.ts has only the encoder). */
function decodeDeleteResponse(bytes: Uint8Array): Decoded {
  const r = new ProtoReader(bytes);
  const res: Decoded = { pid: 0, exit_status: 0 };
  for (let tag = r.next(); tag; tag = r.next()) {
    if (tag.field === 1) res.pid = r.uint32();
    else if (tag.field === 2) res.exit_status = r.uint32();
    else if (tag.field === 3) {
      const ts = new ProtoReader(r.bytes());
      res.exited_at = { seconds: 0, nanos: 0 };
      for (let t = ts.next(); t; t = ts.next()) {
        if (t.field === 1) res.exited_at.seconds = ts.int64();
        else if (t.field === 2) res.exited_at.nanos = ts.int32();
        else ts.skip(t.wireType);
      }
    } else r.skip(tag.wireType);
  }
  return res;
}

/** Runs the real `delete` action on `bundle`. */
async function runDelete(id: string, bundle: string) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-check",
      MAIN,
      "-namespace",
      "n",
      "-address",
      "/tmp/none.sock",
      "-id",
      id,
      "-bundle",
      bundle,
      "delete",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code, response: decodeDeleteResponse(stdout), stderr: new TextDecoder().decode(stderr) };
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Asserts that `exited_at` is about now. */
function assertRecent(res: Decoded, before: number): void {
  assert.ok(res.exited_at, "exited_at is set");
  const ms = res.exited_at.seconds * 1000 + res.exited_at.nanos / 1e6;
  assert.ok(ms >= before - 1000 && ms <= Date.now() + 1000, `exited_at ${ms} is not now`);
}

Deno.test("delete: a cleaned bundle without a slot answers at once", async () => {
  const bundle = await Deno.makeTempDir({ prefix: "delete-test-bundle-" });
  try {
    Deno.writeTextFileSync(bundlePath(bundle, BundleFile.CLEANED), "");
    Deno.writeTextFileSync(bundlePath(bundle, BundleFile.INIT_PID), "4242");
    const before = Date.now();
    const { code, response, stderr } = await runDelete("t-cleaned", bundle);
    assert.equal(code, 0);
    assert.equal(stderr, "");
    assert.equal(response.pid, 4242);
    assert.equal(response.exit_status, DELETED_EXIT_STATUS);
    assert.equal(response.exit_status, 137);
    assertRecent(response, before);
  } finally {
    await Deno.remove(bundle, { recursive: true });
  }
});

Deno.test("delete: a cleaned bundle whose slot is still there runs the cleanup", async () => {
  const bundle = await Deno.makeTempDir({ prefix: "delete-test-bundle-" });
  const slots = await Deno.makeTempDir({ prefix: "delete-test-slots-" });
  try {
    const slot = `${slots}/slot-1`;
    Deno.mkdirSync(`${slot}/rootfs`, { recursive: true });
    Deno.mkdirSync(`${slot}/io`);
    Deno.writeTextFileSync(bundlePath(bundle, BundleFile.CLEANED), "");
    Deno.writeTextFileSync(bundlePath(bundle, BundleFile.SLOT), slot);
    const { code, response, stderr } = await runDelete("t-slot", bundle);
    assert.equal(code, 0, stderr);
    assert.equal(response.pid, 0);
    assert.equal(response.exit_status, 137);
    assert.equal(exists(slot), false, "the slot directory was removed");
    assert.equal(exists(slots), true, "only the slot itself");
    assert.equal(stderr, "");
  } finally {
    await Deno.remove(bundle, { recursive: true });
    await Deno.remove(slots, { recursive: true });
  }
});

Deno.test("delete: an empty bundle still answers", async () => {
  const bundle = await Deno.makeTempDir({ prefix: "delete-test-bundle-" });
  try {
    const before = Date.now();
    const { code, response, stderr } = await runDelete("t-empty", bundle);
    assert.equal(code, 0, stderr);
    assert.equal(response.pid, 0);
    assert.equal(response.exit_status, 137);
    assertRecent(response, before);
    assert.equal(stderr, "");
  } finally {
    await Deno.remove(bundle, { recursive: true });
  }
});
