/**
 * Installs the shim the way a node operator does (`scripts/install.sh`), into a
 * temp PREFIX, once per test process. End-to-end tests put `<prefix>/bin` first on
 * the private containerd's PATH.
 *
 * @module
 */

const ROOT = new URL("../..", import.meta.url).pathname;

let installed: Promise<{ prefix: string; binDir: string }> | undefined;

/** Runs scripts/install.sh with PREFIX=`prefix`; throws with its output on failure. */
export async function runInstall(
  prefix: string,
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<string> {
  const out = await new Deno.Command("bash", {
    args: [`${ROOT}scripts/install.sh`, ...args],
    env: {
      PREFIX: prefix,
      DENO: Deno.execPath(),
      WASMTIME_SHIM_FORM: "launcher",
      NO_COLOR: "1",
      ...env,
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`install.sh ${args.join(" ")} failed:\n${text}`);
  return text;
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
