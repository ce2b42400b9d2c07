/**
 * End to end: what a spec's mounts, `root.readonly`, `process.user` and the default
 * devices mean for a WASI preview1 guest, through `ctr run --mount`, `--read-only` and
 * `--user` (see src/wasm/container_setup.ts).
 */

import assert from "node:assert/strict";
import { POD_NSSWITCH } from "../../src/wasm/container_setup.ts";
import { containerdVersion } from "./harness.ts";
import { fixture } from "./shim_install.ts";
import { assertNothingLeft } from "./ctr_util.ts";
import { once, startSuite } from "./suite.ts";

const RUNTIME = "io.containerd.wasmtime.v1";
const TESTDATA = new URL("../../src/wasm/component/testdata/", import.meta.url).pathname;
const opts = { sanitizeOps: false, sanitizeResources: false };

const setup = once(async () => {
  const suite = await startSuite({
    name: "probe-mounts",
    config: { entrypoint: ["/probe.wasm"] },
    files: [
      { path: "/probe.wasm", hostPath: fixture("probe.wasm") },
      { path: "/cat.wasm", hostPath: `${TESTDATA}cat.wasm` },
      { path: "/etc/msg", data: "hello from the image\n" },
      { path: "/secret", data: "root only\n", mode: 0o600 },
      { path: "/work", type: "directory", mode: 0o777 },
      { path: "/out", type: "symlink", linkname: "../../../../../../tmp" },
      { path: "/abs", type: "symlink", linkname: "/pinned" },
    ],
  });
  const { tmp } = suite;
  // Host side of the mounts.
  await Deno.mkdir(`${tmp}/conf`);
  await Deno.writeTextFile(`${tmp}/conf/app.conf`, "from the node\n");
  await Deno.mkdir(`${tmp}/data`, { mode: 0o777 });
  await Deno.chmod(`${tmp}/data`, 0o777);
  await Deno.writeTextFile(`${tmp}/single`, "a single file\n");
  await Deno.writeTextFile(`${tmp}/hosts`, "10.9.8.7 backend.test\n");
  await Deno.chmod(tmp, 0o755);
  return suite;
});

let seq = 0;
async function run(args: string[], runOpts: string[] = [], stdin = "") {
  const { cd, image } = await setup();
  const id = `mnt-${++seq}`;
  return await cd.ctr(
    [
      "run",
      "--rm",
      "--runtime",
      RUNTIME,
      ...runOpts,
      image,
      id,
      ...(args[0]?.startsWith("/") ? args : ["/probe.wasm", ...args]),
    ],
    { stdin, timeoutMs: 60_000 },
  );
}

const bind = (
  src: string,
  dst: string,
  options = "rbind:rw",
) => ["--mount", `type=bind,src=${src},dst=${dst},options=${options}`];

/**
 * Runs a container from a spec of ctr's defaults with `process.user` set (`args`: the
 * probe's, or a whole command line when the first is a path; ctr 1.6 has no `--user`;
 * `--config` takes a whole spec, without an image): its rootfs is a directory of the
 * node under a directory only root can search.
 */
async function runAs(
  uid: number,
  gid: number,
  args: string[],
  mounts: { source: string; destination: string }[] = [],
  stdin = "",
) {
  const { cd, tmp } = await setup();
  const root = `${tmp}/closed/rootfs`;
  await Deno.mkdir(`${root}/etc`, { recursive: true });
  await Deno.chmod(`${tmp}/closed`, 0o700);
  await Deno.copyFile(fixture("probe.wasm"), `${root}/probe.wasm`);
  await Deno.copyFile(`${TESTDATA}command.wasm`, `${root}/command.wasm`);
  await Deno.copyFile(`${TESTDATA}cat.wasm`, `${root}/cat.wasm`);
  await Deno.writeTextFile(`${root}/etc/msg`, "hello from the image\n");
  await Deno.writeTextFile(`${root}/secret`, "root only\n", { mode: 0o600 });
  const out = await new Deno.Command("ctr", { args: ["oci", "spec"] }).output();
  const spec = JSON.parse(new TextDecoder().decode(out.stdout));
  spec.process.args = args[0]?.startsWith("/") ? args : ["/probe.wasm", ...args];
  spec.process.user = { uid, gid, additionalGids: [gid] };
  spec.process.terminal = false;
  spec.root = { path: root };
  for (const m of mounts) spec.mounts.push({ type: "bind", options: ["rbind", "rw"], ...m });
  const path = `${tmp}/spec-${++seq}.json`;
  await Deno.writeTextFile(path, JSON.stringify(spec));
  return await cd.ctr(
    ["run", "--rm", "--runtime", RUNTIME, "--config", path, `mnt-${seq}`],
    { stdin, timeoutMs: 60_000 },
  );
}

Deno.test({
  name: "bind mounts: a ro dir is read and refuses writes (EROFS), an rw dir writes to the node",
  ...opts,
  async fn() {
    const { tmp } = await setup();
    const ro = bind(`${tmp}/conf`, "/conf", "rbind:ro");
    let r = await run(["cat", "/conf/app.conf"], ro);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "from the node\n");
    r = await run(["write", "/conf/new", "x"], ro);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /error: Read-only file system/);
    r = await run(["write", "/data/written", "by the guest"], bind(`${tmp}/data`, "/data"));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await Deno.readTextFile(`${tmp}/data/written`), "by the guest");
    // A file mount, nested inside a directory mount (spec order), and a tmpfs.
    r = await run(["cat", "/data/inner/single"], [
      ...bind(`${tmp}/data`, "/data"),
      ...bind(`${tmp}/single`, "/data/inner/single", "bind:ro"),
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "a single file\n");
    r = await run(["ls", "/scratch"], ["--mount", "type=tmpfs,dst=/scratch,options=size=1m"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "");
  },
});

Deno.test({
  name: "the default devices exist and behave (runwasi's test_has_default_devices)",
  ...opts,
  async fn() {
    const r = await run(["devices"]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(
      r.stdout,
      [
        "/dev/null: char",
        "/dev/zero: char",
        "/dev/full: char",
        "/dev/random: char",
        "/dev/urandom: char",
        "/dev/tty: char",
        "zero: read 16 zeros",
        "urandom: read 16",
        "null: wrote 1",
        "full: wrote -1 (No space left on device)",
        "",
      ].join("\n"),
    );
  },
});

Deno.test({
  name: "--read-only: the rootfs refuses writes; mounts stay writable",
  ...opts,
  async fn() {
    const { tmp } = await setup();
    let r = await run(["write", "/work/x", "y"], ["--read-only"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /error: Read-only file system/);
    r = await run(["write", "/data/ro-root", "ok"], [
      "--read-only",
      ...bind(`${tmp}/data`, "/data"),
    ]);
    assert.equal(r.code, 0, r.stderr);
    r = await run(["write", "/work/x", "y"]);
    assert.equal(r.code, 0, r.stderr);
  },
});

Deno.test({
  name: "process.user: a root-only file is unreadable, others are; writes are the user's",
  ...opts,
  async fn() {
    const { tmp } = await setup();
    let r = await runAs(1000, 1000, ["cat", "/secret"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /error: Permission denied/);
    r = await runAs(1000, 1000, ["cat", "/etc/msg"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "hello from the image\n");
    r = await runAs(0, 0, ["cat", "/secret"]);
    assert.equal(r.code, 0, r.stderr);
    // A uid the image's /etc/passwd does not know runs as that uid, as under runc.
    r = await runAs(4242, 4242, ["cat", "/etc/msg"]);
    assert.equal(r.code, 0, r.stderr);
    r = await runAs(1000, 1000, ["write", "/data/by-user", "u"], [
      { source: `${tmp}/data`, destination: "/data" },
    ]);
    assert.equal(r.code, 0, r.stderr);
    const st = await Deno.stat(`${tmp}/data/by-user`);
    assert.equal(st.uid, 1000);
    assert.equal(st.gid, 1000);
    const { major, minor } = await containerdVersion();
    if (major > 1 || minor >= 7) {
      // ctr's own --user (1.7 and later): a numeric uid:gid needs no /etc/passwd.
      r = await run(["cat", "/secret"], ["--user", "1000:1000"]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /error: Permission denied/);
      r = await run(["write", "/data/by-flag", "f"], [
        "--user",
        "1000:1000",
        ...bind(`${tmp}/data`, "/data"),
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal((await Deno.stat(`${tmp}/data/by-flag`)).uid, 1000);
    }
    // A component reading its stdin, as uid 0 and as uid 1000.
    r = await run(["/cat.wasm"], [], "line one\nline two\n");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "line one\nline two\n");
    r = await runAs(1000, 1000, ["/cat.wasm"], [], "as a user\n");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "as a user\n");
    // A component (wasi:cli command) as uid 1000: its output reaches ctr, its code too.
    r = await runAs(1000, 1000, ["/command.wasm", "3"]);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout, "hello from a wasi:cli command\n");
    // (ctr 1.7 warns about its --config on stderr first.)
    assert.match(r.stderr, /(^|\n)a line on stderr\n$/);
  },
});

Deno.test({
  name:
    "mounts are never seen on the node while the guest runs; the runner resolves with the pod's /etc/hosts",
  ...opts,
  async fn() {
    const { cd, image, tmp } = await setup();
    const id = "mnt-detached";
    const r = await cd.ctr([
      "run",
      "-d",
      "--runtime",
      RUNTIME,
      ...bind(`${tmp}/conf`, "/conf", "rbind:ro"),
      ...bind(`${tmp}/hosts`, "/etc/hosts", "rbind:ro"),
      image,
      id,
      "/probe.wasm",
      "sleep",
      "30",
    ], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.stderr);
    try {
      const info = await Deno.readTextFile("/proc/self/mountinfo");
      const ours = info.split("\n").filter((l) => l.includes(`${tmp}/conf`) || / \/conf /.test(l));
      assert.deepEqual(ours, []);
      const slots = info.split("\n").filter((l) => l.includes(`${cd.dir}/slots`));
      assert.deepEqual(slots, []);
      // The runner's own /etc/hosts is the container's (pod name resolution).
      const ls = await cd.ctr(["task", "ls"]);
      const pid = ls.stdout.split("\n").find((l) => l.startsWith(id))?.split(/\s+/)[1];
      assert.equal(
        await Deno.readTextFile(`/proc/${pid}/root/etc/hosts`),
        "10.9.8.7 backend.test\n",
      );
      // ctr's default spec masks /proc/keys, /proc/acpi, … and makes /proc/sys read-only, as runc
      // would in the container: so in the runner's view of the node's /proc.
      const runnerMounts = (await Deno.readTextFile(`/proc/${pid}/mountinfo`)).split("\n")
        .map((l) => l.split(" "));
      const at = (point: string) => runnerMounts.filter((f) => f[4] === point);
      assert.ok(at("/proc/sys").some((f) => f[5].split(",").includes("ro")), "/proc/sys ro");
      assert.ok(at("/proc/keys").length > 0, "/proc/keys masked (a file)");
      assert.ok(at("/proc/acpi").length > 0, "/proc/acpi masked (a directory)");
      const node = (await Deno.readTextFile("/proc/self/mountinfo")).split("\n")
        .map((l) => l.split(" ")[4]);
      assert.ok(!node.includes("/proc/keys"), "the node's /proc/keys is not masked");
      // Every thread of the runner (not only the guest's) runs under no_new_privs and
      // the seccomp filter: the setup's capabilities are of no use to any of them.
      const threads = [...Deno.readDirSync(`/proc/${pid}/task`)].map((t) => t.name);
      assert.ok(threads.length > 1, `threads of ${pid}: ${threads}`);
      for (const t of threads) {
        const status = await Deno.readTextFile(`/proc/${pid}/task/${t}/status`);
        assert.match(status, /^NoNewPrivs:\s+1$/m, `thread ${t}`);
        assert.match(status, /^Seccomp:\s+2$/m, `thread ${t}`);
      }
      assert.equal(await Deno.readTextFile(`/proc/${pid}/root/etc/nsswitch.conf`), POD_NSSWITCH);
      // The node's own is untouched.
      assert.notEqual(await Deno.readTextFile("/etc/nsswitch.conf"), POD_NSSWITCH);
    } finally {
      await cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
      await cd.ctr(["task", "delete", "-f", id]);
      await cd.ctr(["container", "delete", id]);
    }
  },
});

Deno.test({
  name: "bad mounts fail Create naming the entry; the server keeps serving",
  ...opts,
  async fn() {
    const { tmp } = await setup();
    let r = await run(["hello"], bind(`${tmp}/missing`, "/m"));
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /bind on \/m\): bind source .*\/missing does not exist/);
    r = await run(["hello"], bind(`${tmp}/conf`, "/out/escaped"));
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /bind on \/out\/escaped\): .*leads outside the container's root/);
    assert.equal(await Deno.stat("/tmp/escaped").then(() => true, () => false), false);
    // An absolute link is the container's path: it stays inside (as runc resolves it).
    r = await run(["cat", "/pinned/conf/app.conf"], bind(`${tmp}/conf`, "/abs/conf", "rbind:ro"));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "from the node\n");
    assert.equal(await Deno.stat("/pinned").then(() => true, () => false), false);
    r = await run(["hello"], ["--mount", `type=ext4,src=${tmp}/conf,dst=/m`]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /ext4 on \/m\): mount type "ext4" is not supported/);
    r = await run(["hello"], bind(`${tmp}/conf`, "/"));
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /bind on \/\): a mount over the container's root is not allowed/);
    r = await run(["hello"], bind(`${tmp}/conf`, "/etc/../../up"));
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /bind on \/etc\/\.\.\/\.\.\/up\): destination .* leads outside/);
    r = await runAs(4294967295, 0, ["hello"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /process\.user\.uid 4294967295 is not a valid uid/);
    r = await run(["hello"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "hello from wasm\n");
  },
});

Deno.test({
  name: "after everything: no leftover mounts, sockets, slots or shim processes",
  ...opts,
  async fn() {
    const { cd, tmp } = await setup();
    await assertNothingLeft(cd, tmp);
  },
});
