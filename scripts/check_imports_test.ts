import assert from "node:assert/strict";
import { checkImports, findCycles, relativeImports } from "./check_imports.ts";

/** Writes `files` (path → source) under a new temporary `src/`. */
async function tree(files: Record<string, string>): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "check_imports_test_" });
  for (const [path, source] of Object.entries(files)) {
    await Deno.mkdir(`${root}/${path.slice(0, path.lastIndexOf("/"))}`, { recursive: true });
    await Deno.writeTextFile(`${root}/${path}`, source);
  }
  return root;
}

const RULES = { top: ["low"], low: [] };

Deno.test("relativeImports: static, re-exported, side-effect and dynamic specifiers", () => {
  const source = [
    `import { a } from "./a.ts";`,
    `import type { B } from "../low/b.ts";`,
    `export { c } from "./c.ts";`,
    `import "./side.ts";`,
    `const d = await import("./d.ts");`,
    `import { parseArgs } from "node:util";`,
    `const text = 'import "well_known.proto";';`,
  ].join("\n");
  assert.deepEqual(relativeImports(source), [
    "./a.ts",
    "../low/b.ts",
    "./c.ts",
    "./side.ts",
    "./d.ts",
  ]);
});

Deno.test("checkImports: an upward import is named with the folders it may use", async () => {
  const root = await tree({
    "top/a.ts": `import { b } from "../low/b.ts";\nexport const a = b;`,
    "low/b.ts": `import { a } from "../top/a.ts";\nexport const b = 1;`,
    "low/b_test.ts": `import { a } from "../top/a.ts";`,
  });
  try {
    const problems = await checkImports(root, RULES);
    assert.deepEqual(problems.filter((p) => !p.startsWith("import cycle")), [
      `src/low/b.ts imports "../top/a.ts": src/low may not import src/top (it may import nothing)`,
    ]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("checkImports: a file cycle within a folder, and an unknown folder", async () => {
  const root = await tree({
    "low/x.ts": `import type { Y } from "./y.ts";`,
    "low/y.ts": `import { z } from "./z.ts";`,
    "low/z.ts": `export * from "./x.ts";`,
    "stray/s.ts": `export const s = 1;`,
  });
  try {
    assert.deepEqual(await checkImports(root, RULES), [
      "src/stray/s.ts: folder src/stray has no entry in check_imports.ts ALLOWED",
      "import cycle: src/low/x.ts → src/low/y.ts → src/low/z.ts → src/low/x.ts",
    ]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("findCycles: each cycle once; imports of files outside the graph are ignored", () => {
  const graph = new Map([
    ["a.ts", ["b.ts", "outside.ts"]],
    ["b.ts", ["a.ts"]],
    ["c.ts", ["c.ts"]],
  ]);
  assert.deepEqual(findCycles(graph), [
    ["src/a.ts", "src/b.ts", "src/a.ts"],
    ["src/c.ts", "src/c.ts"],
  ]);
});

Deno.test("the shim's own src/ has no forbidden import and no cycle", async () => {
  assert.deepEqual(await checkImports(new URL("../src", import.meta.url).pathname), []);
});
