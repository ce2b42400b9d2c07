/**
 * `deno task build`: the release build, one executable made by `deno compile`
 * into `dist/containerd-shim-wasmtime-v1`.
 *
 * `deno compile` needs Deno's `denort` runtime. Deno downloads it from its own
 * server; where that is impossible, point `DENORT_BIN` at a denort binary of the
 * same Deno version. This script says so plainly instead of failing obscurely.
 *
 * @module
 */

import { DEFAULT_RUNNER_V8_FLAGS } from "../src/runner/spawn.ts";

const root = new URL("..", import.meta.url).pathname;
const out = `${root}dist/containerd-shim-wasmtime-v1`;

async function git(...args: string[]): Promise<string> {
  try {
    const { stdout, success } = await new Deno.Command("git", { args, cwd: root, stderr: "null" })
      .output();
    return success ? new TextDecoder().decode(stdout).trim() : "unknown";
  } catch {
    return "unknown";
  }
}

/**
 * The arguments of `deno compile` that make the shim's single executable `output`
 * from the application in the current directory (shared with scripts/release.ts).
 */
export function compileArgs(output: string): string[] {
  return [
    "compile",
    "-A",
    "--unstable-net",
    "--no-check",
    // Every process of the binary gets the runners' V8 options (fixed at build time).
    `--v8-flags=${DEFAULT_RUNNER_V8_FLAGS}`,
    "--include",
    "build_info.json",
    "--include",
    "src/wasm/component/http_worker.ts",
    // guest_main.ts names the component host at run time (see there).
    "--include",
    "src/wasm/component/mod.ts",
    "--output",
    output,
    "main.ts",
  ];
}

if (import.meta.main) {
  await Deno.mkdir(`${root}dist`, { recursive: true });
  await Deno.writeTextFile(
    `${root}build_info.json`,
    JSON.stringify({ revision: await git("rev-parse", "--short", "HEAD") }) + "\n",
  );
  const args = compileArgs(out);
  console.error(`deno ${args.join(" ")}`);
  const { success, stderr } = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    stdout: "inherit",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(stderr);
  if (!success) {
    await Deno.stderr.write(stderr);
    const download = /denort|download|dl\.deno|network|dns|connect/i.test(text);
    console.error(
      download
        ? "build: deno compile could not get Deno's runtime (denort): this machine cannot download it. " +
          "Set DENORT_BIN=/path/to/denort (same Deno version) and run again, or install the launcher " +
          "form with scripts/install.sh, which works offline."
        : "build: deno compile failed (see above).",
    );
    Deno.exit(1);
  }
  console.error(`build: wrote ${out}`);
}
