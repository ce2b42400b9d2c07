/**
 * End to end: WASI preview1 modules under a real, private containerd, driven by
 * `ctr` with `--runtime io.containerd.wasmtime.v1`.
 */

import assert from "node:assert/strict";
import { CTR_BIN } from "./harness.ts";
import { fixture } from "./shim_install.ts";
import { assertNothingLeft, waitStatus } from "./ctr_util.ts";
import { once, startSuite } from "./suite.ts";

const RUNTIME = "io.containerd.wasmtime.v1";
const MARKER = "SHIM_E2E_LEAK_MARKER";
const opts = { sanitizeOps: false, sanitizeResources: false };

const setup = once(() =>
  startSuite({
    name: "probe",
    config: { entrypoint: ["/probe.wasm"] },
    files: [
      { path: "/probe.wasm", hostPath: fixture("probe.wasm") },
      { path: "/bin/greet.wasm", hostPath: fixture("greet.wasm") },
      { path: "/etc/msg", data: "hello from a file\n" },
      { path: "/work", type: "directory" },
      { path: "/escape", type: "symlink", linkname: "../../../../etc/hostname" },
    ],
    containerd: { env: { [MARKER]: "leaked" } },
  })
);

let seq = 0;
async function run(args: string[], runOpts: string[] = [], stdin?: string) {
  const { cd, image } = await setup();
  const id = `p1-${++seq}`;
  return await cd.ctr(
    ["run", "--rm", "--runtime", RUNTIME, ...runOpts, image, id, ...args],
    { stdin: stdin ?? "", timeoutMs: 60_000 },
  );
}

Deno.test({
  name: "hello: stdout and stderr reach ctr, exit 0",
  ...opts,
  async fn() {
    const r = await run(["/probe.wasm", "hello"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "hello from wasm\n");
    assert.match(r.stderr, /hello on stderr/);
  },
});

Deno.test({
  name: "argv is the spec's whole args, arg0 included",
  ...opts,
  async fn() {
    const r = await run(["/probe.wasm", "args", "a b", "c"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "argv[0]=/probe.wasm\nargv[1]=args\nargv[2]=a b\nargv[3]=c\n");
  },
});

Deno.test({
  name: "the guest sees only the spec's env, never the shim's",
  ...opts,
  async fn() {
    const r = await run(["/probe.wasm", "env"], ["--env", "FOO=bar"]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    assert.ok(lines.includes("FOO=bar"), r.stdout);
    for (const leak of [MARKER, "TTRPC_ADDRESS", "GOMAXPROCS", "DENO_DIR", "HOME="]) {
      assert.ok(!r.stdout.includes(leak), `guest saw ${leak}: ${r.stdout}`);
    }
  },
});

Deno.test({
  name: "cwd comes from the spec: a bare entrypoint is found there",
  ...opts,
  async fn() {
    // WASI preview1 has no cwd (wasi-libc starts at "/"); the spec's cwd is where a
    // bare module name is looked up after PATH.
    const r = await run(["greet.wasm"], ["--cwd", "/bin", "--env", "PATH=/nowhere"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /start called/);
  },
});

Deno.test({
  name: "a file from the image is readable; escapes out of the rootfs are not",
  ...opts,
  async fn() {
    const ok = await run(["/probe.wasm", "cat", "/etc/msg"]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, "hello from a file\n");
    const hostname = (await Deno.readTextFile("/etc/hostname")).trim();
    for (const path of ["/../../../../etc/hostname", "/escape"]) {
      const r = await run(["/probe.wasm", "cat", path]);
      assert.ok(!r.stdout.includes(hostname) || hostname === "", `escaped via ${path}`);
      assert.notEqual(r.code, 0, `reading ${path} should fail`);
    }
  },
});

Deno.test({
  name: "stdin reaches the guest and EOF ends it",
  ...opts,
  async fn() {
    const r = await run(["/probe.wasm", "stdin"], [], "line one\nline two\n");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "line one\nline two\nstdin closed\n");
  },
});

Deno.test({
  name: "exit codes: 42 stays 42, a trap is 137 with its message",
  ...opts,
  async fn() {
    const r = await run(["/probe.wasm", "exit", "42"]);
    assert.equal(r.code, 42, r.stderr);
    const t = await run(["/probe.wasm", "trap"]);
    assert.equal(t.code, 137);
    assert.match(t.stderr, /wasm trap/);
  },
});

Deno.test({
  name: "module.wasm#func calls that export; a bare name is found on PATH",
  ...opts,
  async fn() {
    const r = await run(["/bin/greet.wasm#greet"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /greet called/);
    const s = await run(["greet.wasm"], ["--env", "PATH=/bin"]);
    assert.equal(s.code, 0, s.stderr);
    assert.match(s.stdout, /start called/);
  },
});

Deno.test({
  name: "task ls/ps/kill/delete on a detached looping guest; SIGKILL is immediate",
  ...opts,
  async fn() {
    const { cd, image } = await setup();
    const id = "p1-loop";
    const started = await cd.ctr([
      "run",
      "-d",
      "--runtime",
      RUNTIME,
      image,
      id,
      "/probe.wasm",
      "loop",
    ]);
    assert.equal(started.code, 0, started.stderr);
    await waitStatus(cd, id, "RUNNING");
    const ps = await cd.ctr(["task", "ps", id]);
    assert.equal(ps.code, 0, ps.stderr);
    const pid = (await cd.ctr(["task", "ls"])).stdout.match(new RegExp(`${id}\\s+(\\d+)`))?.[1];
    assert.ok(pid && ps.stdout.includes(pid), ps.stdout);
    const refused = await cd.ctr(["task", "delete", id]);
    assert.notEqual(refused.code, 0, "deleting a running task must fail");
    const kill = await cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
    assert.equal(kill.code, 0, kill.stderr);
    await waitStatus(cd, id, "STOPPED", 2000); // SIGKILL ends even a looping guest at once
    const again = await cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
    assert.notEqual(again.code, 0, "killing an exited task must fail (not found)");
    const del = await cd.ctr(["task", "delete", id]);
    assert.equal(del.code, 0, del.stderr);
    assert.equal((await cd.ctr(["container", "delete", id])).code, 0);
  },
});

async function killWhileRunning(signal: string, args: string[]) {
  const { cd, image } = await setup();
  const id = `p1-${signal.toLowerCase()}`;
  const run = cd.ctr(["run", "--rm", "--runtime", RUNTIME, image, id, ...args], {
    timeoutMs: 30_000,
  });
  await waitStatus(cd, id, "RUNNING");
  const t0 = performance.now();
  const kill = await cd.ctr(["task", "kill", "-s", signal, id]);
  assert.equal(kill.code, 0, kill.stderr);
  const r = await run;
  return { code: r.code, ms: performance.now() - t0 };
}

Deno.test({
  name: "ctr run of a looping guest ends with 137 on SIGKILL",
  ...opts,
  async fn() {
    const r = await killWhileRunning("SIGKILL", ["/probe.wasm", "loop"]);
    assert.equal(r.code, 137);
    assert.ok(r.ms < 2000, `took ${r.ms} ms`);
  },
});

Deno.test({
  name: "SIGTERM ends a sleeping guest with 143, SIGINT with 130",
  ...opts,
  async fn() {
    assert.equal((await killWhileRunning("SIGTERM", ["/probe.wasm", "sleep", "60"])).code, 143);
    assert.equal((await killWhileRunning("SIGINT", ["/probe.wasm", "sleep", "60"])).code, 130);
  },
});

Deno.test({
  name: "ctr events shows create, start, exit and delete",
  ...opts,
  async fn() {
    const { cd } = await setup();
    const events = new Deno.Command(CTR_BIN, {
      args: ["--address", cd.address, "events"],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    await new Promise((r) => setTimeout(r, 300));
    const r = await run(["/probe.wasm", "hello"]);
    assert.equal(r.code, 0, r.stderr);
    await new Promise((r) => setTimeout(r, 500));
    events.kill("SIGTERM");
    const text = new TextDecoder().decode((await events.output()).stdout);
    const id = `p1-${seq}`;
    const topics = text.split("\n").filter((l) => l.includes(id)).map((l) =>
      l.match(/\/tasks\/\w+/)?.[0]
    ).filter(Boolean);
    assert.deepEqual(topics, ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]);
  },
});

Deno.test({
  name: "a missing module or a file that is not wasm fails cleanly",
  ...opts,
  async fn() {
    const missing = await run(["/nope.wasm"]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /nope\.wasm/);
    const notWasm = await run(["/etc/msg"]);
    assert.notEqual(notWasm.code, 0);
    assert.match(notWasm.stderr, /not a WebAssembly/);
    const noExport = await run(["/bin/greet.wasm#nothere"]);
    assert.notEqual(noExport.code, 0);
    assert.match(noExport.stderr, /nothere/);
    // The server kept serving: a good run right after works.
    const ok = await run(["/probe.wasm", "hello"]);
    assert.equal(ok.code, 0, ok.stderr);
  },
});

Deno.test({
  name: "after everything: no leftover mounts, sockets or shim processes",
  ...opts,
  async fn() {
    const { cd, tmp } = await setup();
    await assertNothingLeft(cd, tmp);
  },
});
