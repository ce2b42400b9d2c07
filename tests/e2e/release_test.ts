/**
 * The release (scripts/release.ts) end to end: two builds are the same bytes; the
 * tarball installs with `install.sh --from` with no network and no node, npm or deno
 * on PATH, runs a wasm container under a private containerd and uninstalls to
 * nothing; bad tarballs are refused with nothing installed; the self-extracting
 * one-file shim survives concurrent first starts and runs a wasm container.
 */

import assert from "node:assert/strict";
import { buildImage } from "../../src/oci/image.ts";
import { buildRelease, type Release } from "../../scripts/release.ts";
import { startContainerd } from "./harness.ts";
import { fixture } from "./shim_install.ts";
import { runLogged } from "../spawn.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const RUNTIME = "io.containerd.wasmtime.v1";
const SHIM = "containerd-shim-wasmtime-v1";
const decoder = new TextDecoder();
const opts = { sanitizeOps: false, sanitizeResources: false };

const tmp = await Deno.makeTempDir({ prefix: "shim-release-test-" });
globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(tmp, { recursive: true });
  } catch {
    // already gone
  }
});

let first: Promise<Release> | undefined;
/** The release under test (launcher form: `deno compile` cannot run everywhere). */
function release(): Promise<Release> {
  first ??= buildRelease({ outDir: `${tmp}/dist1`, form: "launcher", log: () => {} });
  return first;
}

/**
 * A PATH with everything this one has but node, npm, npx and deno (symlinks in a
 * directory of its own: /usr/bin also holds tar, sha256sum and containerd).
 */
async function pathWithoutJs(): Promise<string> {
  const dir = `${tmp}/path`;
  try {
    await Deno.stat(dir);
    return dir;
  } catch { /* made below */ }
  await Deno.mkdir(dir);
  const banned = new Set(["node", "nodejs", "npm", "npx", "deno", "corepack"]);
  for (const d of (Deno.env.get("PATH") ?? "").split(":").concat(["/usr/sbin", "/sbin"])) {
    try {
      for await (const e of Deno.readDir(d)) {
        if (banned.has(e.name)) continue;
        await Deno.symlink(`${d}/${e.name}`, `${dir}/${e.name}`).catch(() => {});
      }
    } catch { /* no such directory */ }
  }
  return dir;
}

/** An environment with no network (registries and proxies unreachable) and no JS tools. */
async function offlineEnv(): Promise<Record<string, string>> {
  const nowhere = "http://127.0.0.1:9";
  return {
    PATH: await pathWithoutJs(),
    HOME: `${tmp}/home`,
    npm_config_registry: `${nowhere}/`,
    HTTPS_PROXY: nowhere,
    HTTP_PROXY: nowhere,
    https_proxy: nowhere,
    http_proxy: nowhere,
    ALL_PROXY: nowhere,
    NO_PROXY: "",
    NO_COLOR: "1",
  };
}

/** Runs the tarball's own install.sh (or `script`) offline; its exit code and output. */
async function install(
  prefix: string,
  args: string[],
  script?: string,
): Promise<{ code: number; output: string }> {
  const out = await runLogged("bash", [script ?? `${ROOT}scripts/install.sh`, ...args], {
    env: { ...(await offlineEnv()), PREFIX: prefix },
    clearEnv: true,
    timeoutMs: 300_000,
  });
  assert.deepEqual(out.leftover, [], "install.sh left processes");
  return { code: out.code, output: out.output };
}

/** Whether `path` exists (a dangling symlink counts). */
async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/**
 * Lays out in `root` what earlier releases and killed first starts leave behind: an
 * old release's copy (published two hours ago), another one that a running process
 * (`runner`) executes from, a killed first start's unpacked copy (two hours old) and
 * one still unpacking. Says which entries a prune keeps and which it removes.
 */
async function leftBehind(
  root: string,
): Promise<{ kept: string[]; pruned: string[]; runner: Deno.ChildProcess }> {
  const copy = async (name: string, link: boolean) => {
    const dir = `.containerd-shim-wasmtime-${name}.Abc123`;
    await Deno.mkdir(`${root}/${dir}/top/app`, { recursive: true });
    if (link) await Deno.symlink(`${dir}/top/app`, `${root}/containerd-shim-wasmtime-${name}`);
    return dir;
  };
  const old = await copy("0.0.1-aaaaaaaaaaaa", true);
  const running = await copy("0.0.2-bbbbbbbbbbbb", true);
  const killed = await copy("0.0.3-cccccccccccc", false);
  const unpacking = await copy("0.0.4-dddddddddddd", false);
  await Deno.copyFile("/bin/sleep", `${root}/${running}/top/app/sleep`);
  await Deno.chmod(`${root}/${running}/top/app/sleep`, 0o755);
  const runner = new Deno.Command(`${root}/${running}/top/app/sleep`, { args: ["300"] }).spawn();
  const links = [
    "containerd-shim-wasmtime-0.0.1-aaaaaaaaaaaa",
    "containerd-shim-wasmtime-0.0.2-bbbbbbbbbbbb",
  ];
  // Symlinks' own times (-h): Deno.utime follows them.
  const touched = await new Deno.Command("touch", {
    args: ["-h", "-d", "2 hours ago", ...[old, killed, ...links].map((p) => `${root}/${p}`)],
  }).output();
  assert.ok(touched.success, decoder.decode(touched.stderr));
  return {
    kept: [running, links[1], unpacking],
    pruned: [old, links[0], killed],
    runner,
  };
}

async function entries(dir: string): Promise<string[]> {
  const names = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

/** Runs a wasm container through the shim in `binDir`; returns its stdout. */
async function runContainer(binDir: string, env: Record<string, string> = {}): Promise<string> {
  const cd = await startContainerd({ shimBinDir: binDir, path: await pathWithoutJs(), env });
  try {
    const built = await buildImage({
      name: "release-probe",
      tag: "e2e",
      outPath: `${cd.dir}/probe.tar`,
      config: { entrypoint: ["/probe.wasm"] },
      layers: [{ files: [{ path: "/probe.wasm", hostPath: fixture("probe.wasm") }] }],
    });
    await cd.importImage(built.path);
    const r = await cd.ctr([
      "run",
      "--rm",
      "--runtime",
      RUNTIME,
      built.reference,
      "rel-1",
      "/probe.wasm",
      "hello",
    ], {
      timeoutMs: 120_000,
    });
    assert.equal(r.code, 0, `${r.stderr}\n${(await cd.logs()).slice(-3000)}`);
    return r.stdout;
  } finally {
    const left = await cd.stop();
    assert.deepEqual(left.processes, [], "shim processes left behind");
  }
}

Deno.test({
  name: "release: two builds of the same commit are the same bytes",
  ...opts,
  async fn() {
    const a = await release();
    const b = await buildRelease({ outDir: `${tmp}/dist2`, form: "launcher", log: () => {} });
    assert.equal(a.sha256, b.sha256);
    assert.match(a.tarball, /containerd-shim-wasmtime-\d+\.\d+\.\d+-linux-(amd64|arm64)\.tar\.gz$/);
    const sums = await Deno.readTextFile(`${a.tarball}.sha256`);
    assert.equal(sums, `${a.sha256}  ${a.tarball.split("/").pop()}\n`);
    const one = await Deno.readFile(a.executable);
    assert.deepEqual(one, await Deno.readFile(b.executable));
    // No tests, no test data, no module cache, no dev dependencies, owner 0.
    const list = await new Deno.Command("tar", { args: ["-tvzf", a.tarball], stdout: "piped" })
      .output();
    const lines = decoder.decode(list.stdout).trim().split("\n");
    const names = lines.map((l) => l.split(/\s+/).pop()!);
    assert.ok(names.every((n) => !n.endsWith("_test.ts") && !n.includes("/testdata/")));
    assert.ok(
      names.every((n) =>
        !n.includes("/deno_dir/") && !n.includes("node_modules/@bytecodealliance/jco/")
      ),
    );
    assert.ok(
      names.some((n) => n.endsWith("/app/deno")) && names.some((n) => n.endsWith("/install.sh")),
    );
    assert.ok(lines.every((l) => l.split(/\s+/)[1] === "0/0"));
  },
});

Deno.test({
  name:
    "release: install.sh --from installs offline, runs a wasm container, --uninstall leaves nothing",
  ...opts,
  async fn() {
    const r = await release();
    const prefix = `${tmp}/offline/usr/local`; // does not exist yet
    const inst = await install(prefix, ["--from", r.tarball]);
    assert.equal(inst.code, 0, inst.output);
    assert.match(inst.output, /checksum of .* verified/);
    assert.match(inst.output, /installed launcher/);
    const launcher = await Deno.readTextFile(`${prefix}/bin/${SHIM}`);
    assert.match(launcher, /--cached-only/);
    // The module cache was filled from the tarball's files alone, where they now are.
    await Deno.stat(`${prefix}/lib/containerd-shim-wasmtime/deno_dir`);
    assert.equal(await runContainer(`${prefix}/bin`), "hello from wasm\n");
    // The install.sh inside the unpacked tarball installs it too (idempotent over it).
    const unpacked = `${tmp}/unpacked`;
    await Deno.mkdir(unpacked);
    await new Deno.Command("tar", { args: ["-xzf", r.tarball, "-C", unpacked] }).output();
    const [top] = await entries(unpacked);
    const again = await install(prefix, [], `${unpacked}/${top}/install.sh`);
    assert.equal(again.code, 0, again.output);
    const un = await install(prefix, ["--uninstall"]);
    assert.equal(un.code, 0, un.output);
    // The prefix and everything in it were install.sh's own.
    assert.deepEqual(await entries(tmp).then((n) => n.includes("offline")), false);
  },
});

Deno.test({
  name:
    "release: install.sh --from refuses a truncated or corrupt tarball, a checksum mismatch, another architecture",
  ...opts,
  async fn() {
    const r = await release();
    const bad = `${tmp}/bad`;
    await Deno.mkdir(bad);
    const bytes = await Deno.readFile(r.tarball);
    const name = r.tarball.split("/").pop()!;
    const prefix = `${tmp}/badprefix`;
    const refused = async (file: string, why: RegExp) => {
      const out = await install(prefix, ["--from", file]);
      assert.equal(out.code, 1, out.output);
      assert.match(out.output, why);
      assert.match(out.output, /[Nn]othing was installed/);
      assert.ok(!out.output.includes("unexpected failure"), out.output);
      await Deno.stat(prefix).then(
        () => assert.fail(`${file}: install.sh left ${prefix}`),
        () => {},
      );
    };
    // Truncated, without a checksum beside it: tar notices.
    await Deno.writeFile(`${bad}/truncated.tar.gz`, bytes.subarray(0, bytes.length >> 1));
    await refused(`${bad}/truncated.tar.gz`, /corrupt or truncated; download it again/);
    // Corrupt in the middle, with its (published) checksum beside it.
    const corrupt = bytes.slice();
    corrupt[corrupt.length >> 1] ^= 0xff;
    await Deno.mkdir(`${bad}/sum`);
    await Deno.writeFile(`${bad}/sum/${name}`, corrupt);
    await Deno.copyFile(`${r.tarball}.sha256`, `${bad}/sum/${name}.sha256`);
    await refused(`${bad}/sum/${name}`, /does not match .*\.sha256 .*download both again/);
    // Another architecture: the same release relabelled.
    const other = r.tarball.includes("amd64") ? "arm64" : "amd64";
    const relabel = `${bad}/relabel`;
    await Deno.mkdir(relabel);
    await new Deno.Command("tar", { args: ["-xzf", r.tarball, "-C", relabel] }).output();
    const [top] = await entries(relabel);
    const rel = await Deno.readTextFile(`${relabel}/${top}/RELEASE`);
    await Deno.writeTextFile(
      `${relabel}/${top}/RELEASE`,
      rel.replace(/^arch=.*$/m, `arch=${other}`),
    );
    await new Deno.Command("tar", { args: ["-czf", `${bad}/other.tar.gz`, "-C", relabel, top] })
      .output();
    await refused(
      `${bad}/other.tar.gz`,
      new RegExp(`built for linux-${other}, but this node is linux-`),
    );
    // Not a tarball at all.
    await Deno.writeTextFile(`${bad}/page.tar.gz`, "<html>404</html>\n");
    await refused(`${bad}/page.tar.gz`, /not a complete gzip tar archive/);
  },
});

Deno.test({
  name:
    "release: the one-file shim unpacks once under 8 concurrent first starts and runs a wasm container",
  ...opts,
  async fn() {
    const r = await release();
    const bin = `${tmp}/onefile/bin`;
    await Deno.mkdir(bin, { recursive: true });
    await Deno.copyFile(r.executable, `${bin}/${SHIM}`);
    await Deno.chmod(`${bin}/${SHIM}`, 0o755);
    const appRoot = `${tmp}/onefile/app`;
    const env = { ...(await offlineEnv()), WASMTIME_SHIM_APP_ROOT: appRoot };
    // What earlier releases and killed first starts left: pruned by the first start
    // that publishes, except a copy a process still runs from and recent ones.
    const left = await leftBehind(appRoot);
    const starts = await Promise.all(
      Array.from(
        { length: 8 },
        () =>
          new Deno.Command(`${bin}/${SHIM}`, {
            args: ["-v"],
            env,
            clearEnv: true,
            stdout: "piped",
            stderr: "piped",
          })
            .output(),
      ),
    );
    for (const s of starts) {
      assert.equal(s.code, 0, decoder.decode(s.stderr));
      assert.match(decoder.decode(s.stdout), /Version: /);
    }
    // One published copy; the losers removed theirs.
    const names = (await entries(appRoot)).filter((n) => !left.kept.includes(n));
    assert.equal(names.length, 2, names.join(" "));
    assert.ok((await Deno.lstat(`${appRoot}/${names[1]}`)).isSymlink);
    for (const n of left.kept) assert.ok(await exists(`${appRoot}/${n}`), `${n} was pruned`);
    for (const n of left.pruned) assert.ok(!(await exists(`${appRoot}/${n}`)), `${n} is left`);
    left.runner.kill();
    await left.runner.status;
    assert.equal(
      await runContainer(bin, { WASMTIME_SHIM_APP_ROOT: appRoot }),
      "hello from wasm\n",
    );
    // A corrupt copy is refused on its first start, with nothing published.
    const broken = await Deno.readFile(r.executable);
    broken[broken.length - 1000] ^= 0xff;
    await Deno.writeFile(`${bin}/broken`, broken, { mode: 0o755 });
    const b = await new Deno.Command(`${bin}/broken`, {
      args: ["-v"],
      env: { ...env, WASMTIME_SHIM_APP_ROOT: `${tmp}/onefile/broken` },
      clearEnv: true,
      stderr: "piped",
    }).output();
    assert.equal(b.code, 1);
    assert.match(decoder.decode(b.stderr), /corrupt or truncated .* download it again/);
    assert.deepEqual(await entries(`${tmp}/onefile/broken`), []);
  },
});
