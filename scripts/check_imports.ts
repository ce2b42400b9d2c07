/**
 * Checks the import graph of `src/`: a folder imports only the folders below it
 * ({@linkcode ALLOWED}), and no file imports itself through others (a cycle). Run by
 * `deno task test` before the tests; exits 1 naming each offending import.
 *
 * Every relative specifier counts: `import … from`, `export … from`, `import "…"`
 * and `import("…")`. Tests (`*_test.ts`) may import across folders (a test of the
 * runner drives it through the task's guest factory), but take part in no cycle
 * check, since nothing imports them.
 *
 * @module
 */

/**
 * The folders of `src/` and the folders each may import (besides itself), from the
 * top (`shim`) down: dependencies run one way.
 */
export const ALLOWED: Readonly<Record<string, readonly string[]>> = {
  shim: [
    "task",
    "runner",
    "native",
    "image",
    "cgroup",
    "wasm",
    "oci",
    "proto",
    "ttrpc",
    "sys",
    "errdefs",
  ],
  task: ["runner", "native", "image", "cgroup", "wasm", "oci", "proto", "ttrpc", "sys", "errdefs"],
  runner: ["cgroup", "wasm", "oci", "sys", "errdefs"],
  native: ["cgroup", "wasm", "oci", "sys", "errdefs"],
  image: ["wasm", "oci", "proto", "sys", "errdefs"],
  cgroup: ["oci", "proto", "sys", "errdefs"],
  wasm: ["oci", "sys", "errdefs"],
  ttrpc: ["proto", "sys", "errdefs"],
  oci: ["sys", "errdefs"],
  proto: ["errdefs"],
  sys: ["errdefs"],
  errdefs: [],
};

const SPECIFIER = /(?:\bimport\s*\(\s*|\bfrom\s*|^\s*import\s+)["'](\.{1,2}\/[^"']+)["']/gm;

/** The relative specifiers a module's source imports or re-exports. */
export function relativeImports(source: string): string[] {
  return [...source.matchAll(SPECIFIER)].map((m) => m[1]);
}

/** `path` without `.` and `..` components (paths relative to the source root). */
function normalize(path: string): string {
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "..") out.pop();
    else if (part !== "." && part !== "") out.push(part);
  }
  return out.join("/");
}

/** The folder of `src/` a file is in ("" for a file outside any). */
function folderOf(path: string): string {
  const slash = path.indexOf("/");
  return slash < 0 ? "" : path.slice(0, slash);
}

/** Every `.ts` file under `dir`, relative to it. */
async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(`${dir}/${prefix}`)) {
    const path = `${prefix}${entry.name}`;
    if (entry.isDirectory) files.push(...await listFiles(dir, `${path}/`));
    else if (entry.isFile && entry.name.endsWith(".ts")) files.push(path);
  }
  return files.sort();
}

/**
 * The import problems of the tree at `root` (a `src/` directory), one sentence each:
 * a folder importing one it must not, a folder {@linkcode ALLOWED} does not know,
 * and each file cycle.
 */
export async function checkImports(
  root: string,
  allowed: Readonly<Record<string, readonly string[]>> = ALLOWED,
): Promise<string[]> {
  const problems: string[] = [];
  const graph = new Map<string, string[]>();
  for (const file of await listFiles(root)) {
    const from = folderOf(file);
    if (!(from in allowed)) {
      problems.push(`src/${file}: folder src/${from} has no entry in check_imports.ts ALLOWED`);
    }
    const dir = file.includes("/") ? file.slice(0, file.lastIndexOf("/") + 1) : "";
    const targets: string[] = [];
    for (const specifier of relativeImports(await Deno.readTextFile(`${root}/${file}`))) {
      const target = normalize(dir + specifier);
      targets.push(target);
      const to = folderOf(target);
      if (file.endsWith("_test.ts") || to === from || !(from in allowed)) continue;
      if (!allowed[from].includes(to)) {
        problems.push(
          `src/${file} imports "${specifier}": src/${from} may not import src/${to}` +
            ` (it may import ${allowed[from].map((f) => `src/${f}`).join(", ") || "nothing"})`,
        );
      }
    }
    if (!file.endsWith("_test.ts")) graph.set(file, targets);
  }
  problems.push(...findCycles(graph).map((cycle) => `import cycle: ${cycle.join(" → ")}`));
  return problems;
}

/** Each cycle of `graph` once, as the files around it (the first repeated at the end). */
export function findCycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  const cycles: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (file: string) => {
    state.set(file, "open");
    stack.push(file);
    for (const next of graph.get(file) ?? []) {
      if (!graph.has(next)) continue;
      if (state.get(next) === "open") {
        cycles.push([...stack.slice(stack.indexOf(next)), next].map((f) => `src/${f}`));
      } else if (state.get(next) === undefined) visit(next);
    }
    stack.pop();
    state.set(file, "done");
  };
  for (const file of [...graph.keys()].sort()) if (!state.has(file)) visit(file);
  return cycles;
}

if (import.meta.main) {
  const root = new URL("../src", import.meta.url).pathname;
  const problems = await checkImports(root);
  for (const problem of problems) console.error(problem);
  if (problems.length > 0) {
    console.error(`check_imports: ${problems.length} problem(s) in the import graph of src/`);
    Deno.exit(1);
  }
}
