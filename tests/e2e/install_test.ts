/**
 * scripts/install.sh into a temp PREFIX: idempotent, a working shim, and --uninstall;
 * with --configure-containerd, against temp containerd configs of every version.
 */

import assert from "node:assert/strict";
import { CONTAINERD_BIN } from "./harness.ts";
import { exists } from "./ctr_util.ts";
import { deleteAnswer } from "../../src/shim/delete.ts";
import { runInstall, runInstallScript } from "./shim_install.ts";

/** Runs the `delete` action of `shim` (as containerd does) for task `t` of `bundle`. */
function deleteAction(shim: string, bundle: string): Promise<Deno.CommandOutput> {
  return new Deno.Command(shim, {
    args: [
      "-namespace",
      "n",
      "-address",
      "/tmp/none.sock",
      "-id",
      "t",
      "-bundle",
      bundle,
      "delete",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
}

Deno.test("install.sh installs a working shim, is idempotent, and --uninstall removes it", async () => {
  const prefix = await Deno.makeTempDir({ prefix: "shim-install-" });
  try {
    await runInstall(prefix);
    const again = await runInstall(prefix);
    assert.match(again, /installed (launcher|compiled)/);
    const shim = `${prefix}/bin/containerd-shim-wasmtime-v1`;
    const v = await new Deno.Command(shim, { args: ["-v"], stdout: "piped" }).output();
    assert.equal(v.code, 0);
    assert.match(new TextDecoder().decode(v.stdout), /containerd-shim-wasmtime-v1:\n.*Version: /s);
    const info = await new Deno.Command(shim, { args: ["-info"], stdout: "piped" }).output();
    assert.equal(info.code, 0);
    assert.ok(new TextDecoder().decode(info.stdout).includes("io.containerd.wasmtime.v1"));
    const builder = await new Deno.Command(`${prefix}/bin/oci-tar-builder`, {
      args: ["--help"],
      stdout: "piped",
    }).output();
    assert.equal(builder.code, 0);
    const bad = await new Deno.Command(shim, { args: ["-nope"], stderr: "piped" }).output();
    assert.equal(bad.code, 2);
    assert.match(new TextDecoder().decode(bad.stderr), /flag provided but not defined: -nope/);
    // `delete` through the launcher (the bundled start/delete entry where the install
    // could bundle it): a task the server cleaned up answers at once, pid and 137.
    const launcher = await Deno.readTextFile(shim);
    if (launcher.includes("lifecycle_main.js")) {
      await Deno.stat(`${prefix}/lib/containerd-shim-wasmtime/src/shim/lifecycle_main.js`);
    }
    // The bundled guest runner, where the install could bundle it: it boots, says it
    // is idle, and without a guest configuration on stdin exits 1 (EXIT_NOT_READY).
    const app = `${prefix}/lib/containerd-shim-wasmtime`;
    if (await exists(`${app}/src/wasm/runner_main.js`)) {
      const runner = await new Deno.Command(`${app}/deno`, {
        args: ["run", "--no-prompt", "--cached-only", `--config=${app}/deno.json`, "-A"]
          .concat([`${app}/src/wasm/runner_main.js`, "guest", "t"]),
        env: { DENO_DIR: `${app}/deno_dir` },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(runner.code, 1, new TextDecoder().decode(runner.stderr));
      assert.equal(new TextDecoder().decode(runner.stdout).split("\n")[0], '{"idle":true}');
    }
    const bundle = await Deno.makeTempDir({ dir: prefix });
    await Deno.writeTextFile(`${bundle}/init.pid`, "4242");
    await Deno.writeTextFile(`${bundle}/cleaned`, "");
    const del = await deleteAction(shim, bundle);
    assert.equal(del.code, 0, new TextDecoder().decode(del.stderr));
    // DeleteResponse: field 1 pid 4242 (0x08 0x92 0x21), field 2 exit status 137 (0x10 0x89 0x01).
    assert.deepEqual([...del.stdout.subarray(0, 6)], [0x08, 0x92, 0x21, 0x10, 0x89, 0x01]);
    // With the answer the server leaves in `cleaned`, that answer, as it is (the
    // launcher sends it without Deno); not while the task's slot is still there.
    const answer = deleteAnswer(4343, 1_700_000_000_123);
    await Deno.writeFile(`${bundle}/cleaned`, answer);
    const prepared = await deleteAction(shim, bundle);
    assert.equal(prepared.code, 0, new TextDecoder().decode(prepared.stderr));
    assert.deepEqual(prepared.stdout, answer);
    const slot = await Deno.makeTempDir({ dir: prefix });
    await Deno.writeTextFile(`${bundle}/slot`, `${slot}\n`);
    const busy = await deleteAction(shim, bundle);
    assert.equal(busy.code, 0, new TextDecoder().decode(busy.stderr));
    assert.notDeepEqual(busy.stdout, answer, "a slot still there is cleaned up first");
    assert.deepEqual([...busy.stdout.subarray(0, 6)], [0x08, 0x92, 0x21, 0x10, 0x89, 0x01]);
    await Deno.remove(bundle, { recursive: true });
    await Deno.remove(slot, { recursive: true }).catch(() => {}); // `delete` cleans it up
    await runInstall(prefix, ["--uninstall"]);
    // Also the bin and lib directories install.sh created in the (existing) prefix.
    assert.deepEqual(await entries(prefix), [], "--uninstall left files in the prefix");
  } finally {
    await Deno.remove(prefix, { recursive: true });
  }
});

/** The names in `dir`, sorted. */
async function entries(dir: string): Promise<string[]> {
  const names = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

/** This process's PATH without the directories that hold a `deno`. */
function pathWithoutDeno(): string {
  return (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":").filter((dir) => {
    try {
      Deno.statSync(`${dir}/deno`);
      return false;
    } catch {
      return true;
    }
  }).join(":");
}

Deno.test("install.sh with no deno anywhere: a private Deno, nothing in npm's $PREFIX, --uninstall leaves nothing", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "shim-install-nodeno-" });
  // A prefix that does not exist yet (as /opt/… on a new node): install.sh makes it.
  const prefix = `${tmp}/opt/wasm`;
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(Deno.env.toObject())) {
    if (!k.startsWith("DENO") && !k.startsWith("npm_") && k !== "PREFIX") env[k] = v;
  }
  env.PATH = pathWithoutDeno();
  env.WASMTIME_SHIM_FORM = "launcher";
  env.NO_COLOR = "1";
  try {
    const which = await new Deno.Command("bash", {
      args: ["-c", "command -v deno || true"],
      env,
      clearEnv: true,
      stdout: "piped",
    }).output();
    assert.equal(decoder.decode(which.stdout), "", "deno is still on the PATH of the test");
    const install = await runInstallScript(prefix, [], env, true);
    assert.equal(install.code, 0, install.output);
    assert.match(install.output, /installing a private Deno 2\.9\.6/);
    // npm put nothing where it puts global packages for PREFIX.
    assert.deepEqual(await entries(`${prefix}/bin`), [
      "containerd-shim-wasmtime-v1",
      "oci-tar-builder",
    ]);
    assert.deepEqual(await entries(`${prefix}/lib`), ["containerd-shim-wasmtime"]);
    const app = `${prefix}/lib/containerd-shim-wasmtime`;
    assert.ok(!(await entries(app)).includes(".deno-npm"));
    const deno = await new Deno.Command(`${app}/deno`, { args: ["--version"], stdout: "piped" })
      .output();
    assert.match(decoder.decode(deno.stdout), /^deno 2\.9\.6 /);
    const v = await new Deno.Command(`${prefix}/bin/containerd-shim-wasmtime-v1`, {
      args: ["-v"],
      env,
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(v.code, 0, decoder.decode(v.stderr));
    const uninstall = await runInstallScript(prefix, ["--uninstall"], env, true);
    assert.equal(uninstall.code, 0, uninstall.output);
    // The prefix and everything in it were install.sh's own.
    assert.deepEqual(await entries(tmp), []);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

// --- --configure-containerd ------------------------------------------------------

const RUNTIME_TYPE = "io.containerd.wasmtime.v1";
const MARK_BEGIN =
  "# BEGIN containerd-shim-wasmtime (added by scripts/install.sh --configure-containerd)";
const MARK_END = "# END containerd-shim-wasmtime";
/** The runtime table of each config version, as install.sh writes it. */
const TABLE = {
  1: "[plugins.cri.containerd.runtimes.wasmtime]",
  2: '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmtime]',
  3: '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.wasmtime]',
} as const;
/** install.sh validates with the same containerd as the e2e harness. */
const ENV = { CONTAINERD: CONTAINERD_BIN };

const decoder = new TextDecoder();

async function containerd(args: string[]): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command(CONTAINERD_BIN, { args, stdout: "piped", stderr: "piped" })
    .output();
  return { code: r.code, out: decoder.decode(r.stdout) + decoder.decode(r.stderr) };
}

/** The installed containerd's major version (1 for Debian 12's 1.6). */
async function containerdMajor(): Promise<number> {
  const { out } = await containerd(["--version"]);
  const m = out.match(/ v?(\d+)\.\d+/);
  assert.ok(m, `no version in containerd --version: ${out}`);
  return Number(m[1]);
}

/** install.sh with --configure-containerd (and `extra` args) for `config`; throws on failure. */
function configure(prefix: string, config: string, extra: string[] = []): Promise<string> {
  return runInstall(
    prefix,
    [...extra, "--configure-containerd", "--containerd-config", config],
    ENV,
  );
}

/** install.sh whose failure is expected: its exit code and output. */
async function configureFailing(
  prefix: string,
  config: string,
): Promise<{ code: number; text: string }> {
  const out = await runInstallScript(
    prefix,
    ["--configure-containerd", "--containerd-config", config],
    ENV,
  );
  return { code: out.code, text: out.output };
}

/** `containerd --config FILE config dump` must succeed and show the wasmtime runtime. */
async function assertDumpHasRuntime(config: string): Promise<void> {
  const { code, out } = await containerd(["--config", config, "config", "dump"]);
  assert.equal(code, 0, `containerd config dump failed:\n${out}`);
  // containerd 1.x dumps version 2 names, 2.x version 3 names (migrating older files).
  const m = out.match(
    /\[plugins\."io\.containerd\.(?:grpc\.v1\.cri|cri\.v1\.runtime)"\.containerd\.runtimes\.wasmtime\]\n((?:[ \t]*[^\s\[].*\n)*)/,
  );
  assert.ok(m, `no wasmtime runtime table in the dump:\n${out}`);
  assert.match(m[1], new RegExp(`runtime_type = "${RUNTIME_TYPE.replaceAll(".", "\\.")}"`));
}

async function backups(dir: string): Promise<string[]> {
  const names = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith("config.toml.bak.")) names.push(e.name);
  }
  return names.sort();
}

async function assertNoTempFiles(dir: string): Promise<void> {
  for await (const e of Deno.readDir(dir)) {
    assert.ok(!e.name.startsWith(".config.toml."), `left over: ${dir}/${e.name}`);
  }
}

/** A temp PREFIX and a temp dir for containerd's config, removed afterwards. */
async function withTemp(fn: (prefix: string, dir: string) => Promise<void>): Promise<void> {
  const prefix = await Deno.makeTempDir({ prefix: "shim-install-" });
  const dir = await Deno.makeTempDir({ prefix: "shim-containerd-config-" });
  try {
    await fn(prefix, dir);
  } finally {
    await Deno.remove(prefix, { recursive: true });
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Installs with --configure-containerd into an existing config: the table is appended
 * once (a backup of the original is kept), a second run changes nothing, and
 * --uninstall puts the original bytes back.
 */
async function appendsAndRestores(
  dir: string,
  prefix: string,
  original: string,
  table: string,
): Promise<string> {
  const config = `${dir}/config.toml`;
  await Deno.writeTextFile(config, original);
  const first = await configure(prefix, config);
  assert.match(first, /backed up .*config\.toml to .*config\.toml\.bak\./);
  assert.match(first, /added the runtime wasmtime/);
  const written = await Deno.readTextFile(config);
  assert.equal(
    written,
    `${original}\n${MARK_BEGIN}\n${table}\n  runtime_type = "${RUNTIME_TYPE}"\n${MARK_END}\n`,
  );
  const [backup, ...more] = await backups(dir);
  assert.deepEqual(more, []);
  assert.equal(await Deno.readTextFile(`${dir}/${backup}`), original);

  const second = await configure(prefix, config);
  assert.match(second, /already has the runtime wasmtime: unchanged/);
  assert.deepEqual(await Deno.readFile(config), new TextEncoder().encode(written));
  assert.deepEqual(await backups(dir), [backup]);

  await configure(prefix, config, ["--uninstall"]);
  assert.equal(await Deno.readTextFile(config), original);
  await assertNoTempFiles(dir);
  assert.deepEqual(await entries(prefix), [], "--uninstall left files in the prefix");
  return written;
}

Deno.test("--configure-containerd creates a missing config, once; --uninstall removes it", async () => {
  await withTemp(async (prefix, dir) => {
    // In a directory that does not exist yet, as /etc/containerd on a fresh node.
    const config = `${dir}/etc/containerd/config.toml`;
    const version = (await containerdMajor()) >= 2 ? 3 : 2;
    const first = await configure(prefix, config);
    assert.match(first, /installed (launcher|compiled)/);
    const written = await Deno.readTextFile(config);
    assert.match(written, new RegExp(`^version = ${version}$`, "m"));
    assert.ok(written.includes(`${TABLE[version]}\n  runtime_type = "${RUNTIME_TYPE}"\n`));
    await assertDumpHasRuntime(config);

    const second = await configure(prefix, config);
    assert.match(second, /unchanged/);
    assert.equal(await Deno.readTextFile(config), written);
    assert.deepEqual(await backups(`${dir}/etc/containerd`), []); // nothing to back up

    await configure(prefix, config, ["--uninstall"]);
    await assert.rejects(() => Deno.stat(config), Deno.errors.NotFound);
    assert.deepEqual([...Deno.readDirSync(`${dir}/etc/containerd`)], []);
    assert.deepEqual(await entries(prefix), [], "--uninstall left files in the prefix");
  });
});

Deno.test("--configure-containerd adds the runtime to `containerd config default` and Debian's config", async () => {
  const { code, out: generated } = await containerd(["config", "default"]);
  assert.equal(code, 0);
  const version = Number(generated.match(/^version = (\d+)$/m)?.[1]) as 2 | 3; // 2 from 1.x
  assert.ok(TABLE[version], `containerd config default wrote version ${version}`);
  // /etc/containerd/config.toml as Debian 12's containerd package ships it.
  const debian = [
    "version = 2",
    "",
    "[plugins]",
    '  [plugins."io.containerd.grpc.v1.cri"]',
    '    [plugins."io.containerd.grpc.v1.cri".cni]',
    '      bin_dir = "/usr/lib/cni"',
    '      conf_dir = "/etc/cni/net.d"',
    '  [plugins."io.containerd.internal.v1.opt"]',
    '    path = "/var/lib/containerd/opt"',
    "",
  ].join("\n");
  for (const [original, table] of [[generated, TABLE[version]], [debian, TABLE[2]]]) {
    await withTemp(async (prefix, dir) => {
      await appendsAndRestores(dir, prefix, original, table);
      // appendsAndRestores ends uninstalled; install again for containerd's view.
      await configure(prefix, `${dir}/config.toml`);
      await assertDumpHasRuntime(`${dir}/config.toml`);
    });
  }
});

Deno.test("--configure-containerd adds containerd 2.x's table to a version 3 config", async () => {
  // containerd 1.6 (Debian 12) cannot check a version 3 config beyond its TOML syntax:
  // it does not know the io.containerd.cri.v1.runtime plugin, so its dump never shows
  // the runtime. With containerd 1.x this test checks the text; with 2.x, the dump too.
  await withTemp(async (prefix, dir) => {
    const original = [
      "version = 3",
      'root = "/var/lib/containerd"',
      "",
      '[plugins."io.containerd.cri.v1.runtime".containerd]',
      '  default_runtime_name = "runc"',
      "",
      '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]',
      '  runtime_type = "io.containerd.runc.v2"',
      "",
    ].join("\n");
    await appendsAndRestores(dir, prefix, original, TABLE[3]);
    const out = await configure(prefix, `${dir}/config.toml`);
    if ((await containerdMajor()) >= 2) {
      await assertDumpHasRuntime(`${dir}/config.toml`);
    } else {
      assert.match(out, /does not know config version 3: it checked the TOML syntax/);
    }
  });
});

Deno.test("--configure-containerd uses [plugins.cri] in a config without a version line", async () => {
  // No `version` means version 1 to containerd: 1.x reads the CRI plugin as "cri" there
  // and ignores io.containerd.grpc.v1.cri; 2.x migrates "cri".
  await withTemp(async (prefix, dir) => {
    const original = '# a version 1 config\nroot = "/var/lib/containerd"\n\n[plugins.cri]\n' +
      '  sandbox_image = "registry.k8s.io/pause:3.6"\n';
    await appendsAndRestores(dir, prefix, original, TABLE[1]);
    await configure(prefix, `${dir}/config.toml`);
    await assertDumpHasRuntime(`${dir}/config.toml`);
  });
});

Deno.test("--configure-containerd leaves a config that already has the runtime as is", async () => {
  await withTemp(async (prefix, dir) => {
    const config = `${dir}/config.toml`;
    const original = `version = 2\n\n${TABLE[2]}\n  runtime_type = "${RUNTIME_TYPE}"\n` +
      `\n  ${TABLE[2].replace("]", ".options]")}\n    BinaryName = "x"\n`;
    await Deno.writeTextFile(config, original);
    assert.match(await configure(prefix, config), /already has the runtime wasmtime: unchanged/);
    // --uninstall removes only what install.sh added (between its marker lines).
    assert.match(
      await configure(prefix, config, ["--uninstall"]),
      /not between install\.sh's marker lines: left as is/,
    );
    assert.equal(await Deno.readTextFile(config), original);
    assert.deepEqual(await backups(dir), []);
  });
});

Deno.test("--configure-containerd refuses an invalid config, changes nothing, installs nothing", async () => {
  await withTemp(async (prefix, dir) => {
    const config = `${dir}/config.toml`;
    const original = 'version = 2\n[plugins."io.containerd.grpc.v1.cri"\n  sandbox_image = "x"\n';
    await Deno.writeTextFile(config, original);
    const { code, text } = await configureFailing(prefix, config);
    assert.notEqual(code, 0, text);
    assert.match(text, /error: containerd rejects .*config\.toml as it is/);
    assert.match(text, /refusing to change it/);
    assert.equal(await Deno.readTextFile(config), original);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["config.toml"]);
    await assert.rejects(() => Deno.stat(`${prefix}/bin`), Deno.errors.NotFound);
  });
});

Deno.test("--configure-containerd puts the backup back when containerd rejects the result", async () => {
  await withTemp(async (prefix, dir) => {
    const config = `${dir}/config.toml`;
    // The runtime set through a dotted key, which install.sh's line reader does not see:
    // its appended table then defines runtime_type twice, and containerd says so.
    const original = 'version = 2\n[plugins]\n  "io.containerd.grpc.v1.cri".containerd.runtimes.' +
      'wasmtime.runtime_type = "io.containerd.wasmtime.v1"\n';
    await Deno.writeTextFile(config, original);
    assert.equal((await containerd(["--config", config, "config", "dump"])).code, 0);
    const { code, text } = await configureFailing(prefix, config);
    assert.notEqual(code, 0, text);
    assert.match(text, /error: containerd rejects the changed .*config\.toml \(.*defined twice/);
    assert.match(text, /was restored from .*config\.toml\.bak\./);
    assert.equal(await Deno.readTextFile(config), original);
    const [backup] = await backups(dir);
    assert.equal(await Deno.readTextFile(`${dir}/${backup}`), original);
    await assertNoTempFiles(dir);
  });
});
