import assert from "node:assert/strict";
import {
  ASYNC_EXPORTS,
  JCO_TRANSPILE_VERSION,
  jcoTranspile,
  loadGlue,
  optionsFingerprint,
  patchGlue,
  transpile,
} from "./transpile.ts";
import { COMPONENT_TEST, fixture, FIXTURES } from "./test_util.ts";
import { isLeanGlue } from "./instantiate/mod.ts";

Deno.test("JCO_TRANSPILE_VERSION is the installed jco-transpile", async () => {
  const pkg = JSON.parse(
    await Deno.readTextFile(
      new URL(
        "../../../node_modules/@bytecodealliance/jco-transpile/package.json",
        import.meta.url,
      ),
    ),
  );
  assert.equal(pkg.version, JCO_TRANSPILE_VERSION);
});

Deno.test("optionsFingerprint changes with the async exports", () => {
  assert.notEqual(optionsFingerprint({}), optionsFingerprint({ extraAsyncExports: ["greet"] }));
  assert.equal(optionsFingerprint({}), optionsFingerprint({ extraAsyncExports: [] }));
});

Deno.test("loadGlue evaluates module-shaped glue without importing a file", async () => {
  const instantiate = await loadGlue(
    '"use components";\nexport function instantiate(get, imports) { return { n: imports.x.n + 1 }; }\n' +
      "export const _util = {};\n",
  );
  assert.deepEqual(instantiate(() => ({}) as WebAssembly.Module, { x: { n: 41 } }), { n: 42 });
});

Deno.test("loadGlue falls back to a data: URL import for glue of another shape", async () => {
  const instantiate = await loadGlue(
    "const here = import.meta.url;\n" +
      "export function instantiate() { return { scheme: here.slice(0, 5) }; }\n",
  );
  assert.deepEqual(instantiate(() => ({}) as WebAssembly.Module, {}), { scheme: "data:" });
});

Deno.test({
  name: "jco's glue is sync-instantiation JSPI glue that never reads the environment",
  ...COMPONENT_TEST,
  fn: async () => {
    // A command gets lean glue, unless jco's is asked for.
    assert.ok(isLeanGlue((await transpile(fixture(FIXTURES.command))).glue));
    const out = await transpile(fixture(FIXTURES.command), { glue: "jco" });
    assert.equal(out.glue, (await jcoTranspile(fixture(FIXTURES.command))).glue);
    assert.match(out.glue, /export function instantiate\(getCoreModule, imports/);
    assert.ok(out.glue.includes("WebAssembly.Suspending"), "JSPI glue");
    assert.ok(!out.glue.includes("process?.env"), "patched");
    assert.equal(patchGlue(out.glue), out.glue);
    assert.ok(out.cores.size > 0);
    assert.ok(out.exports.some(([name]) => name === "wasi:cli/run@0.2.12"));
    assert.ok(ASYNC_EXPORTS.includes("wasi:cli/run#run"));
  },
});
