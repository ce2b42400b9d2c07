/**
 * End to end: native containers in a wasm pod. A container whose `process.args[0]` is
 * an ELF executable or a `#!` script runs through runc under the wasm shim
 * (`--runtime io.containerd.wasmtime.v1`), with stdio, exit codes, kill, state, pids,
 * metrics and delete as for Wasm — side by side with Wasm containers in the same shim
 * server — and leaves nothing behind.
 *
 * The `#!` case needs a static shell for the image: Debian's `busybox-static`
 * (`/bin/busybox`, installed by `.ci/run`); without it that test is skipped.
 */

import assert from "node:assert/strict";
import { type LayerFile } from "../../src/oci/image.ts";
import { SHARED_GROUP } from "../../src/shim/group.ts";
import { socketPath } from "../../src/shim/socket_path.ts";
import { detectCgroupVersion } from "../../src/cgroup/cgroup.ts";
import { type Containerd, CTR_BIN, startContainerd } from "./harness.ts";
import { fixture, installShim } from "./shim_install.ts";
import { parentOf, removeTask, waitStatus } from "./ctr_util.ts";
import { startSuite } from "./suite.ts";

const RUNTIME = "io.containerd.wasmtime.v1";
/** Debian's busybox-static: a shell for the `#!` script image. */
const BUSYBOX = "/bin/busybox";
/** Every task of this file has an id with this prefix. */
const PREFIX = "nat-";
const opts = { sanitizeOps: false, sanitizeResources: false };
const MIB = 1 << 20;

const hasBusybox = await Deno.stat(BUSYBOX).then((s) => s.isFile, () => false);

/** The OCI architecture of this machine. */
const ARCH = Deno.build.arch === "aarch64" ? "arm64" : "amd64";

/** A shell script (the `#!` case): argv, both streams, and its own exit code. */
const SCRIPT = `#!/bin/sh
echo "script says $1"
echo "script on stderr" >&2
exit 3
`;

let env: Promise<{ cd: Containerd; image: string; tmp: string }> | undefined;

function setup() {
  env ??= (async () => {
    // One image, like a pod's: a native probe, a wasm probe, and (with busybox) a script.
    const files: LayerFile[] = [
      { path: "/native_probe", hostPath: fixture("native_probe"), mode: 0o755 },
      { path: "/probe.wasm", hostPath: fixture("probe.wasm") },
    ];
    if (hasBusybox) {
      files.push(
        { path: "/bin/busybox", hostPath: BUSYBOX, mode: 0o755 },
        { path: "/bin/sh", type: "symlink", linkname: "busybox" },
        { path: "/script.sh", data: SCRIPT, mode: 0o755 },
      );
    }
    return await startSuite({
      name: "native",
      config: { os: "linux", architecture: ARCH, entrypoint: ["/native_probe"] },
      files,
    });
  })();
  return env;
}

let seq = 0;
async function run(args: string[], runOpts: string[] = [], stdin = "") {
  const { cd, image } = await setup();
  const id = `${PREFIX}${++seq}`;
  return await cd.ctr(
    ["run", "--rm", "--runtime", RUNTIME, ...runOpts, image, id, ...args],
    { stdin, timeoutMs: 60_000 },
  );
}

/** The task's pid, from `ctr task ls`. */
async function taskPid(cd: Containerd, id: string): Promise<number> {
  const m = (await cd.ctr(["task", "ls"])).stdout.match(new RegExp(`^${id}\\s+(\\d+)`, "m"));
  assert.ok(m, `task ${id} is not listed`);
  return Number(m[1]);
}

/** The command line of `pid`. */
async function cmdline(pid: number): Promise<string[]> {
  const raw = await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "");
  return raw.split("\0").filter(Boolean);
}

Deno.test({
  name: "a native ELF entrypoint runs through runc: stdout and stderr reach ctr, exit 0",
  ...opts,
  async fn() {
    const r = await run(["/native_probe", "hello"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "hello from native\n");
    assert.match(r.stderr, /native on stderr/);
  },
});

Deno.test({
  name: "native: argv is the spec's args; exit codes are preserved; a bare name is found on PATH",
  ...opts,
  async fn() {
    const args = await run(["/native_probe", "args", "a b", "c"]);
    assert.equal(args.code, 0, args.stderr);
    assert.equal(args.stdout, "argv[0]=/native_probe\nargv[1]=args\nargv[2]=a b\nargv[3]=c\n");
    assert.equal((await run(["/native_probe", "exit", "42"])).code, 42);
    assert.equal((await run(["/native_probe", "exit", "0"])).code, 0);
    const bare = await run(["native_probe", "hello"], ["--env", "PATH=/"]);
    assert.equal(bare.code, 0, bare.stderr);
    assert.equal(bare.stdout, "hello from native\n");
  },
});

Deno.test({
  name: "native: stdin reaches the container",
  ...opts,
  async fn() {
    const r = await run(["/native_probe", "line"], [], "one line\nnot read\n");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "stdin: one line\n");
  },
});

async function killWhileRunning(signal: string): Promise<number> {
  const { cd, image } = await setup();
  const id = `${PREFIX}${signal.toLowerCase()}`;
  const running = cd.ctr(
    ["run", "--rm", "--runtime", RUNTIME, image, id, "/native_probe", "wait"],
    { timeoutMs: 30_000 },
  );
  await waitStatus(cd, id, "RUNNING");
  const kill = await cd.ctr(["task", "kill", "-s", signal, id]);
  assert.equal(kill.code, 0, kill.stderr);
  const r = await running;
  assert.match(r.stdout, /waiting/);
  return r.code;
}

Deno.test({
  name: "native: ctr task kill ends it with 128+signal (SIGTERM 143, SIGKILL 137, SIGINT 130)",
  ...opts,
  async fn() {
    assert.equal(await killWhileRunning("SIGTERM"), 143);
    assert.equal(await killWhileRunning("SIGKILL"), 137);
    assert.equal(await killWhileRunning("SIGINT"), 130);
  },
});

Deno.test({
  name: "native, detached: task ls, ps, metrics, pause/resume, kill and delete",
  ...opts,
  async fn() {
    const { cd, image } = await setup();
    const id = `${PREFIX}detached`;
    const started = await cd.ctr([
      "run",
      "-d",
      "--runtime",
      RUNTIME,
      "--memory-limit",
      String(64 * MIB),
      image,
      id,
      "/native_probe",
      "wait",
    ]);
    assert.equal(started.code, 0, started.stderr);
    await waitStatus(cd, id, "RUNNING");
    const pid = await taskPid(cd, id);
    assert.deepEqual(await cmdline(pid), ["/native_probe", "wait"], "the task pid is the init");

    const ps = await cd.ctr(["task", "ps", id]);
    assert.equal(ps.code, 0, ps.stderr);
    assert.match(ps.stdout, new RegExp(`^${pid}\\b`, "m"));

    const metrics = await cd.ctr(["task", "metrics", "--format", "json", id]);
    assert.equal(metrics.code, 0, metrics.stderr);
    const m = JSON.parse(metrics.stdout);
    assert.equal(m.pids.current, 1, JSON.stringify(m.pids));
    if (detectCgroupVersion() === 1) assert.equal(m.memory.usage.limit, 64 * MIB);
    else assert.equal(m.memory.usage_limit, 64 * MIB);

    assert.equal((await cd.ctr(["task", "pause", id])).code, 0);
    await waitStatus(cd, id, "PAUSED");
    assert.equal((await cd.ctr(["task", "resume", id])).code, 0);
    await waitStatus(cd, id, "RUNNING");

    const refused = await cd.ctr(["task", "delete", id]);
    assert.notEqual(refused.code, 0, "deleting a running task must fail");
    assert.equal((await cd.ctr(["task", "kill", "-s", "SIGKILL", id])).code, 0);
    await waitStatus(cd, id, "STOPPED");
    const again = await cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
    assert.notEqual(again.code, 0, "killing an exited task must fail (not found)");
    await removeTask(cd, id);
  },
});

Deno.test({
  name: "native: a #!/bin/sh script runs with the image's own (static busybox) shell",
  ...opts,
  ignore: !hasBusybox,
  async fn() {
    const r = await run(["/script.sh", "hi"]);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout, "script says hi\n");
    assert.match(r.stderr, /script on stderr/);
  },
});

Deno.test({
  name: "native: ctr events shows create, start, exit and delete as for Wasm",
  ...opts,
  async fn() {
    const { cd } = await setup();
    const events = new Deno.Command(CTR_BIN, {
      args: ["--address", cd.address, "events"],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    await new Promise((r) => setTimeout(r, 300));
    const r = await run(["/native_probe", "exit", "5"]);
    assert.equal(r.code, 5, r.stderr);
    await new Promise((r) => setTimeout(r, 500));
    events.kill("SIGTERM");
    const text = new TextDecoder().decode((await events.output()).stdout);
    const id = `${PREFIX}${seq}`;
    const mine = text.split("\n").filter((l) => l.includes(`"${id}"`) || l.includes(` ${id} `));
    const topics = mine.map((l) => l.match(/\/tasks\/\w+/)?.[0]).filter(Boolean);
    assert.deepEqual(topics, ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]);
    assert.ok(mine.some((l) => l.includes("/tasks/exit") && /exit_status":5/.test(l)), text);
  },
});

Deno.test({
  name: "a wasm and a native container run side by side in one shim server",
  ...opts,
  async fn() {
    const { cd, image } = await setup();
    const wasm = `${PREFIX}side-wasm`;
    const native = `${PREFIX}side-native`;
    const running = [
      [wasm, "/probe.wasm", "sleep", "60"],
      [native, "/native_probe", "wait"],
    ].map(([id, ...args]) =>
      cd.ctr(["run", "--rm", "--runtime", RUNTIME, image, id, ...args], { timeoutMs: 30_000 })
    );
    await waitStatus(cd, wasm, "RUNNING");
    await waitStatus(cd, native, "RUNNING");
    const [wasmServer, nativeServer] = await Promise.all(
      [wasm, native].map(async (id) => parentOf(await taskPid(cd, id))),
    );
    assert.equal(wasmServer, nativeServer, "both are children of one shim server");
    assert.ok((await cmdline(wasmServer)).includes(cd.address), "the server is ours");
    // One more of each through the same server, run to completion meanwhile.
    const more = await Promise.all([
      run(["/probe.wasm", "hello"]),
      run(["/native_probe", "hello"]),
    ]);
    assert.deepEqual(more.map((r) => [r.code, r.stdout]), [
      [0, "hello from wasm\n"],
      [0, "hello from native\n"],
    ]);
    assert.equal(await parentOf(await taskPid(cd, native)), nativeServer);
    assert.equal((await cd.ctr(["task", "kill", "-s", "SIGTERM", native])).code, 0);
    assert.equal((await cd.ctr(["task", "kill", "-s", "SIGKILL", wasm])).code, 0);
    const [w, n] = await Promise.all(running);
    assert.equal(w.code, 137, w.stderr);
    assert.equal(n.code, 143, n.stderr);
    assert.equal(n.stdout, "waiting\n");
  },
});

Deno.test({
  name: "without runc, a native container fails Create with FAILED_PRECONDITION; wasm still runs",
  ...opts,
  async fn() {
    const { image, tmp } = await setup();
    const { binDir } = await installShim();
    const missing = `${tmp}/no-such-runc`;
    const cd = await startContainerd({ shimBinDir: binDir, env: { WASMTIME_SHIM_RUNC: missing } });
    try {
      await cd.importImage(`${tmp}/native.tar`);
      const r = await cd.ctr([
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        image,
        `${PREFIX}norunc`,
        "/native_probe",
        "hello",
      ]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, new RegExp(`WASMTIME_SHIM_RUNC=${missing} is not an executable file`));
      assert.match(r.stderr, /failed precondition/);
      const ok = await cd.ctr([
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        image,
        `${PREFIX}wasm`,
        "/probe.wasm",
        "hello",
      ]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stdout, "hello from wasm\n");
    } finally {
      const left = await cd.stop();
      assert.deepEqual(left.mounts, [], "mounts left");
      assert.deepEqual(left.processes, [], "processes left");
    }
  },
});

Deno.test({
  name: "native: a server killed with SIGKILL; the delete action removes its runc container",
  ...opts,
  async fn() {
    const { cd, image } = await setup();
    const id = `${PREFIX}orphan`;
    const started = await cd.ctr([
      "run",
      "-d",
      "--runtime",
      RUNTIME,
      image,
      id,
      "/native_probe",
      "wait",
    ]);
    assert.equal(started.code, 0, started.stderr);
    await waitStatus(cd, id, "RUNNING");
    const pid = await taskPid(cd, id);
    Deno.kill(await parentOf(pid), "SIGKILL");
    // containerd sees the connection drop and runs the `delete` action, which finds the
    // bundle's runc marker: `runc delete --force` kills the init and removes its state.
    const deadline = Date.now() + 20_000;
    const state = `${cd.runcRoot}/${cd.namespace}/${id}`;
    const gone = async (path: string) => await Deno.stat(path).then(() => false, () => true);
    while (!(await gone(`/proc/${pid}`)) || !(await gone(state))) {
      assert.ok(Date.now() < deadline, "the native container outlived its dead server");
      await new Promise((r) => setTimeout(r, 100));
    }
    await cd.ctr(["task", "delete", id]);
    assert.equal((await cd.ctr(["container", "delete", id])).code, 0);
    // The next container gets a new server.
    const r = await run(["/native_probe", "hello"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "hello from native\n");
  },
});

/** Processes running the native probe (any of this file's containers). */
async function probeProcesses(): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const argv = await cmdline(Number(e.name));
    if (argv[0] === "/native_probe") out.push(`${e.name}: ${argv.join(" ")}`);
  }
  return out;
}

Deno.test({
  name: "after everything: no leftover runc state, processes, mounts, sockets or cgroups",
  ...opts,
  async fn() {
    const { cd, tmp } = await setup();
    const containers = await cd.ctr(["container", "ls", "-q"]);
    assert.equal(containers.stdout.trim(), "", "containers left: " + containers.stdout);
    const states = await Array.fromAsync(Deno.readDir(`${cd.runcRoot}/${cd.namespace}`))
      .catch(() => []);
    assert.deepEqual(states.map((e) => e.name), [], "runc state left");
    assert.deepEqual(await probeProcesses(), [], "native processes left");
    for (let i = 0; i < 50 && (await cd.leftovers()).processes.length > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const left = await cd.stop();
    await Deno.remove(tmp, { recursive: true });
    assert.deepEqual(left.mounts, []);
    // Other engineers' containerds may create sockets meanwhile: look for ours.
    const ours = await socketPath(cd.address, cd.namespace, SHARED_GROUP);
    assert.ok(!left.sockets.includes(ours), `socket left: ${ours}`);
    assert.deepEqual(left.processes, []);
    assert.deepEqual(left.slots, []);
    assert.deepEqual(left.cgroups.filter((c) => c.split("/").pop()!.startsWith(PREFIX)), []);
  },
});
