import assert from "node:assert/strict";
import { warmUpPreview1, warmupWasm } from "./warmup.ts";

Deno.test("the warm-up guest runs on a throwaway host and exits 0", () => {
  assert.equal(warmUpPreview1(), 0);
});

Deno.test("the embedded warm-up bytes are warmup.wat's (wat2wasm, when installed)", async () => {
  let out;
  try {
    out = await new Deno.Command("wat2wasm", {
      args: [new URL("./warmup.wat", import.meta.url).pathname, "--output=-"],
    }).output();
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    // Without wabt, at least check what the module imports and exports.
    const module = new WebAssembly.Module(warmupWasm());
    assert.ok(WebAssembly.Module.imports(module).some((i) => i.name === "fd_write"));
    assert.deepEqual(WebAssembly.Module.exports(module).map((e) => e.name), ["memory", "_start"]);
    return;
  }
  assert.equal(out.code, 0);
  assert.deepEqual(warmupWasm(), out.stdout, "run scripts/gen_warmup.ts");
});
