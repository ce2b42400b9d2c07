// Builds the component test fixtures from their sources (run by build.sh, with Node).
//
//   command.wat, cat.wat, http_hello.wat, leaky.wat
//                                core modules written to the canonical ABI of a world in
//                                wit/wat/world.wit; assembled, the world embedded, made
//                                components with jco's wasm-tools.
//   image/*.wat                  core modules (not components) for the memory image tests:
//                                assembled only.
//   abi.wat                      likewise, for the `abi` world of wit/abi/world.wit.
//   http_app.js                  a JS wasi:http proxy; componentize-js (StarlingMonkey).
//
// The WASI WIT comes from the snapshot bundled with jco (lib/wit/builtin/0.2.12): the
// WAT components use WASI 0.2.12; http_app uses it relabelled 0.2.10, the version the
// componentize-js 0.23 engine is built against (0.2.x minors only add items).
//
// Usage: node build.mjs <node_modules holding @bytecodealliance/componentize-js@0.23.0> [wat]
// (`wat`: only the WAT fixtures; http_app.wasm is not byte-reproducible.)
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

const here = new URL(".", import.meta.url).pathname;
const modules = process.argv[2];
if (!modules) throw new Error("usage: node build.mjs <node_modules dir>");
const jco = join(modules, "@bytecodealliance/jco");
const builtin = join(jco, "lib/wit/builtin/0.2.12");
const { parse, componentEmbed, componentNew } = await import(
  join(modules, "@bytecodealliance/jco-transpile/dist/wasm-tools.js")
);
const { componentize } = await import(
  join(modules, "@bytecodealliance/componentize-js/src/componentize.js")
);
console.log(`jco ${JSON.parse(await readFile(join(jco, "package.json"), "utf8")).version}`);

/** The WASI packages, each as `[name, source]`, relabelled to `version`. */
async function wasiPackages(version) {
  const out = [];
  for (const dir of (await readdir(builtin)).sort()) {
    if (!dir.startsWith("wasi-")) continue;
    const text = await readFile(join(builtin, dir, "package.wit"), "utf8");
    out.push([dir, text.replaceAll("@0.2.12", `@${version}`)]);
  }
  return out;
}

/** One WIT source: `world` (a file with a `package` header) plus nested WASI packages. */
async function witSource(world, version) {
  const nested = (await wasiPackages(version)).map(([, text]) =>
    text.replace(/^package ([^;]+);/m, "package $1 {").trimEnd() + "\n}\n"
  );
  return [await readFile(world, "utf8"), ...nested].join("\n");
}

async function write(name, bytes) {
  await writeFile(join(here, name), bytes);
  console.log(`${name}: ${bytes.length} bytes`);
}

// WAT components.
const watWit = await witSource(join(here, "wit/wat/world.wit"), "0.2.12");
for (
  const [source, world] of [
    ["command.wat", "command"],
    ["cat.wat", "cat"],
    ["http_hello.wat", "http-hello"],
    ["leaky.wat", "http-hello"],
  ]
) {
  const core = await parse(await readFile(join(here, source), "utf8"));
  const embedded = await componentEmbed({ binary: core, witSource: watWit, world });
  await write(source.replace(/\.wat$/, ".wasm"), await componentNew(embedded, []));
}

// The glue test component: its own world (wit/abi), no WASI.
{
  const core = await parse(await readFile(join(here, "abi.wat"), "utf8"));
  const witSource = await readFile(join(here, "wit/abi/world.wit"), "utf8");
  const embedded = await componentEmbed({ binary: core, witSource, world: "abi" });
  await write("abi.wasm", await componentNew(embedded, []));
}

// Core modules of the memory image tests.
for (const name of (await readdir(join(here, "image"))).sort()) {
  if (!name.endsWith(".wat")) continue;
  const core = await parse(await readFile(join(here, "image", name), "utf8"));
  await write(join("image", name.replace(/\.wat$/, ".wasm")), core);
}
if (process.argv[3] === "wat") process.exit(0);

// The JS proxy: componentize-js reads WIT from a directory with deps/.
const witDir = join(here, ".build-wit");
await rm(witDir, { recursive: true, force: true });
try {
  await mkdir(join(witDir, "deps"), { recursive: true });
  await writeFile(join(witDir, "world.wit"), await readFile(join(here, "wit/http_app/world.wit")));
  for (const [name, text] of await wasiPackages("0.2.10")) {
    await mkdir(join(witDir, "deps", name));
    await writeFile(join(witDir, "deps", name, "package.wit"), text);
  }
  const { component } = await componentize({
    sourcePath: join(here, "http_app.js"),
    witPath: witDir,
    worldName: "http-app",
  });
  await write("http_app.wasm", component);
} finally {
  await rm(witDir, { recursive: true, force: true });
}
