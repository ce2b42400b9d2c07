/**
 * Installs the shim the way a node operator does (`scripts/install.sh`), into a
 * temp PREFIX, once per test process. End-to-end tests put `<prefix>/bin` first on
 * the private containerd's PATH.
 *
 * @module
 */

import { runLogged } from "../spawn.ts";

const ROOT = new URL("../..", import.meta.url).pathname;

let installed: Promise<{ prefix: string; binDir: string }> | undefined;

/** Runs scripts/install.sh with PREFIX=`prefix`; throws with its output on failure. */
export async function runInstall(
  prefix: string,
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<string> {
  const out = await runInstallScript(prefix, args, env);
  if (out.code !== 0) throw new Error(`install.sh ${args.join(" ")} failed:\n${out.output}`);
  return out.output;
}

/**
 * Runs scripts/install.sh with PREFIX=`prefix` (the deno running the tests, the
 * launcher form, unless `env` says otherwise): its exit code and output. Fails the
 * test if it leaves a process running.
 */
export async function runInstallScript(
  prefix: string,
  args: string[] = [],
  env: Record<string, string> = {},
  clearEnv = false,
): Promise<{ code: number; output: string }> {
  const base: Record<string, string> = clearEnv
    ? {}
    : { DENO: Deno.execPath(), WASMTIME_SHIM_FORM: "launcher", NO_COLOR: "1" };
  const out = await runLogged("bash", [`${ROOT}scripts/install.sh`, ...args], {
    env: { PREFIX: prefix, ...base, ...env },
    clearEnv,
    timeoutMs: 300_000,
  });
  if (out.timedOut) throw new Error(`install.sh ${args.join(" ")} hung:\n${out.output}`);
  if (out.leftover.length > 0) {
    throw new Error(`install.sh ${args.join(" ")} left ${out.leftover.join(", ")}:\n${out.output}`);
  }
  return { code: out.code, output: out.output };
}

/** The installed shim's bin dir (installing it on first use). */
export function installShim(): Promise<{ prefix: string; binDir: string }> {
  installed ??= (async () => {
    const prefix = await Deno.makeTempDir({ prefix: "shim-prefix-" });
    // ~200 MB (node_modules, Deno, its cache): gone when this test process ends.
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(prefix, { recursive: true });
      } catch {
        // already gone
      }
    });
    await runInstall(prefix);
    return { prefix, binDir: `${prefix}/bin` };
  })();
  return installed;
}

/** Path of a committed test fixture. */
export function fixture(name: string): string {
  return `${ROOT}tests/fixtures/built/${name}`;
}
