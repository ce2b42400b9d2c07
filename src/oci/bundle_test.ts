import assert from "node:assert/strict";
import { BundleFile, bundlePath } from "./bundle.ts";

/** Where the launcher form's script is written (install.sh and the release use it). */
const LAUNCHER_SCRIPT = new URL("../../scripts/launcher_form.sh", import.meta.url);

/** The shell lines `launcher` emits for `delete`'s fast path. */
function deleteFastPath(script: string): string {
  const start = script.indexOf(`echo 'if [ "$last" = delete ]; then'`);
  const end = script.indexOf("echo 'fi'", start);
  assert.ok(start >= 0 && end > start, "the launcher has a fast path for delete");
  return script.slice(start, end);
}

Deno.test("bundlePath joins the bundle and a file name", () => {
  assert.equal(bundlePath("/run/b", BundleFile.INIT_PID), "/run/b/init.pid");
});

Deno.test("bundle files have distinct plain names", () => {
  const names = Object.values(BundleFile);
  assert.equal(new Set(names).size, names.length);
  for (const name of names) assert.match(name, /^[a-z][a-z0-9.-]*$/, name);
});

Deno.test("the launcher's delete fast path reads the files bundle.ts names", async () => {
  const fastPath = deleteFastPath(await Deno.readTextFile(LAUNCHER_SCRIPT));
  const used = new Set([...fastPath.matchAll(/"\$b\/([^"]+)"/g)].map((m) => m[1]));
  assert.deepEqual(used, new Set([BundleFile.SLOT, BundleFile.CLEANED]));
});
